"""LauraDB config server: the cluster's metadata (shards, databases, sharded
collections and their chunks, nodes) behind ClusterService and ConfigService.

Run with ``lauradb-config --port 27019 --data-dir DIR`` or ``python -m config_server``.
"""
