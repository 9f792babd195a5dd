"""Prometheus metrics of chunk migrations on a shard."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DOCUMENTS_CLONED = Counter(
    "lauradb_shard_migration_documents_cloned",
    "Documents cloned by chunk migrations (donor: served, recipient: applied)",
    ["role"],
)
PHASE = Gauge(
    "lauradb_shard_migration_phase",
    "Chunk migrations of this shard currently in each phase",
    ["role", "phase"],
)
OUTCOMES = Counter(
    "lauradb_shard_migrations",
    "Finished chunk migrations by role and outcome",
    ["role", "outcome"],
)
CRITICAL_SECTION = Histogram(
    "lauradb_shard_migration_critical_section_seconds",
    "Duration of donor critical sections",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RANGE_DELETIONS_PENDING = Gauge(
    "lauradb_shard_range_deletions_pending", "Ranges of migrated chunks still to be deleted"
)
RANGE_DELETED_DOCUMENTS = Counter(
    "lauradb_shard_range_deleted_documents", "Documents deleted by the range deleter"
)


def set_phase(role: str, old: str, new: str) -> None:
    """Move one migration of ``role`` from phase ``old`` to ``new`` ("" = none)."""
    if old == new:
        return
    if old:
        PHASE.labels(role, old).dec()
    if new:
        PHASE.labels(role, new).inc()
