"""LauraDB router (mongos-like): caches shard maps, targets, scatters and merges.

The router owns nothing durable. ``python -m router --port 27017 --config HOST:PORT``
serves RouterService (queries, writes, aggregation, cursors) and ConfigService
(forwarded to the config server).
"""
