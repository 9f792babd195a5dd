"""The config server's Prometheus metrics (served by RpcServer's metrics port)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge

BALANCER_ROUNDS = Counter("lauradb_config_balancer_rounds", "Balancer rounds run")
MIGRATIONS = Counter(
    "lauradb_config_migrations", "Chunk migrations finished, by result", ["result"]
)
SPLITS = Counter("lauradb_config_auto_splits", "Chunks split by the balancer")
TOPOLOGY_VERSION = Gauge("lauradb_config_topology_version", "The cluster topology version")


def track_topology_version(read: Callable[[], int]) -> None:
    """Report ``read()`` as the topology version whenever metrics are scraped."""
    TOPOLOGY_VERSION.set_function(lambda: float(read()))
