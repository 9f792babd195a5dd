"""The router's Prometheus metrics (served by RpcServer's ``--metrics-port``).

Per-RPC counts, errors and latencies are ``lauradb_rpc_*`` (lauradb/rpc/server.py);
these are the routing-specific ones.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from lauradb.fast_metrics import FastCounter, FastHistogram

__all__ = [
    "CACHE_HITS",
    "CACHE_MISSES",
    "CACHE_REFRESHES",
    "FAILOVER_ERRORS",
    "FAILOVER_RETRIES",
    "SCATTER",
    "SHARDS_PER_REQUEST",
    "STALE_RETRIES",
    "TARGETED",
    "record_targeting",
]

TARGETED = FastCounter(
    "lauradb_router_targeted",
    "Operations sent to exactly one shard, by operation",
    ["operation"],
)
SCATTER = FastCounter(
    "lauradb_router_scatter",
    "Operations sent to more than one shard (scatter-gather), by operation",
    ["operation"],
)
SHARDS_PER_REQUEST = FastHistogram(
    "lauradb_router_shards_per_request",
    "Number of shards an operation was sent to, by operation",
    ["operation"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
)
CACHE_HITS = FastCounter(
    "lauradb_router_shard_map_cache_hits", "Shard-map lookups answered from the cache"
)
CACHE_MISSES = FastCounter(
    "lauradb_router_shard_map_cache_misses",
    "Shard-map lookups that had to load the map from the config server",
)
CACHE_REFRESHES = Counter(
    "lauradb_router_shard_map_cache_refreshes",
    "Refreshes of a cached shard map from the config server (after STALE_CONFIG)",
)
STALE_RETRIES = Counter(
    "lauradb_router_stale_retries",
    "Shard requests retried after a STALE_CONFIG answer",
)
FAILOVER_ERRORS = Counter(
    "lauradb_router_replset_failover_errors",
    "Replica-set shard calls that failed as not-primary/unreachable, by method",
    ["method"],
)
FAILOVER_RETRIES = Counter(
    "lauradb_router_replset_failover_retries",
    "Calls sent again after a replica-set failover (a new primary / member), by method",
    ["method"],
)


_children: dict[tuple[str, bool], tuple[Any, Any]] = {}  # (operation, targeted) -> metrics


def record_targeting(operation: str, shards: int) -> None:
    """Count one attempt of ``operation`` sent to ``shards`` shards."""
    if shards <= 0:
        return
    key = (operation, shards == 1)
    children = _children.get(key)
    if children is None:  # labels() once per operation (it takes a lock each call)
        counter = (TARGETED if shards == 1 else SCATTER).labels(operation)
        children = _children[key] = (counter, SHARDS_PER_REQUEST.labels(operation))
    children[0].inc()
    children[1].observe(shards)
