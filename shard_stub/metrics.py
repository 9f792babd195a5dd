"""The shard's Prometheus metrics: documents, bytes and owned chunks per collection.

Computed at scrape time by a custom collector, at most once per ``min_interval``
seconds (5 s; scrapes in between get the cached values): one ``COUNT(*)`` /
``SUM(LENGTH(doc))`` per collection on a read-only SQLite connection of the
collector's own (never the storage's locks), and the owned chunk counts from the
metadata cache (namespaces this shard has loaded). Migration progress is in
``shard_stub/migration_metrics.py``; per-RPC metrics are ``lauradb_rpc_*``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from shard_stub.metadata import ShardMetadata
from shard_stub.storage import ShardStorage

__all__ = ["DEFAULT_MIN_INTERVAL_S", "ShardCollector", "track_shard"]

log = logging.getLogger("lauradb.shard.metrics")

DEFAULT_MIN_INTERVAL_S = 5.0


class ShardCollector(Collector):
    """``lauradb_shard_documents``, ``lauradb_shard_bytes``, ``lauradb_shard_owned_chunks``."""

    def __init__(
        self,
        shard_id: str,
        storage: ShardStorage,
        metadata: ShardMetadata,
        min_interval: float = DEFAULT_MIN_INTERVAL_S,
    ) -> None:
        self.shard_id = shard_id
        self.storage = storage
        self.metadata = metadata
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._at = 0.0
        self._sizes: dict[str, tuple[int, int]] = {}

    def describe(self) -> Iterator[Metric]:
        """The families without samples (so registering does not count anything)."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        docs, size, chunks = self._families()
        for ns, (n, b) in sorted(self._collection_sizes().items()):
            docs.add_metric([self.shard_id, ns], n)
            size.add_metric([self.shard_id, ns], b)
        for ns, owned in sorted(self._owned_chunks().items()):
            chunks.add_metric([self.shard_id, ns], owned)
        yield docs
        yield size
        yield chunks

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        docs = GaugeMetricFamily(
            "lauradb_shard_documents",
            "Documents stored per collection (orphans not yet range-deleted included)",
            labels=["shard", "namespace"],
        )
        size = GaugeMetricFamily(
            "lauradb_shard_bytes",
            "BSON bytes stored per collection",
            labels=["shard", "namespace"],
        )
        chunks = GaugeMetricFamily(
            "lauradb_shard_owned_chunks",
            "Chunks this shard owns per sharded collection (per its metadata cache)",
            labels=["shard", "namespace"],
        )
        return docs, size, chunks

    # ------------------------------------------------------------------ sources

    def _collection_sizes(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            now = time.monotonic()
            if self._at and now - self._at < self.min_interval:
                return self._sizes
            try:
                self._sizes = self._count()
            except (sqlite3.Error, OSError) as exc:
                log.info("cannot count documents for metrics: %s", exc)
                self._close()
            self._at = now
            return self._sizes

    def _count(self) -> dict[str, tuple[int, int]]:
        if not self.storage.is_open:
            self._close()
            return {}
        conn = self._connection(self.storage.path)
        out: dict[str, tuple[int, int]] = {}
        for ns in self.storage.namespaces():
            c = self.storage.collection(ns)
            if c is None:
                continue
            try:
                n, b = conn.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(LENGTH(doc)), 0) FROM {c.table}"
                ).fetchone()
            except sqlite3.OperationalError:  # dropped meanwhile
                continue
            out[ns] = (int(n), int(b))
        return out

    def _connection(self, path: Path) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=1.0
            )
            self._conn.execute("PRAGMA query_only=ON")
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _owned_chunks(self) -> dict[str, int]:
        out: dict[str, int] = {}
        try:
            namespaces = self.metadata.cached_namespaces()
        except RuntimeError:  # the cache changed while this thread copied it
            return out
        for ns in namespaces:
            database, _, collection = ns.partition(".")
            meta = self.metadata.cached(database, collection)
            if meta is None or not meta.sharded or meta.chunk_map is None:
                continue
            out[ns] = sum(1 for c in meta.chunk_map.chunks if c.shard == self.shard_id)
        return out


_registered: ShardCollector | None = None


def track_shard(
    shard_id: str,
    storage: ShardStorage,
    metadata: ShardMetadata,
    min_interval: float = DEFAULT_MIN_INTERVAL_S,
) -> ShardCollector:
    """Report this shard's collections on the default registry (replacing any earlier one)."""
    global _registered
    collector = ShardCollector(shard_id, storage, metadata, min_interval)
    if _registered is not None:
        REGISTRY.unregister(_registered)
        _registered._close()
    REGISTRY.register(collector)
    _registered = collector
    return collector
