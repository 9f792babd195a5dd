"""The router's shard-map cache: namespace -> RoutingTable.

Steady state: a dict lookup, no config-server call. A miss loads the full map; a
refresh (after STALE_CONFIG) asks for the chunks changed since the cached version
(``incremental``) and falls back to a full load when that fails or does not add up.
Concurrent loads/refreshes of one namespace share one in-flight call.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.chunk_map import combined_version
from router import metrics
from router.config_client import ConfigClient
from router.routing_table import (
    RoutingTable,
    ShardAddress,
    apply_incremental,
    table_from_response,
)

__all__ = ["RoutingCache"]

log = logging.getLogger("lauradb.router.cache")

DEFAULT_MAX_NAMESPACES = 10_000
_CACHE_HIT = metrics.CACHE_HITS.labels()


class RoutingCache:
    """Cached routing tables, keyed by ``"db.coll"``, with single-flight refresh."""

    def __init__(self, config: ConfigClient, maxsize: int = DEFAULT_MAX_NAMESPACES) -> None:
        self.config = config
        # A plain dict (a lookup is one C call, on every request); bounded by evicting the
        # table loaded longest ago when full (a reload puts a table back at the end).
        self._tables: dict[str, RoutingTable] = {}
        self.maxsize = maxsize
        self._inflight: dict[str, asyncio.Task[RoutingTable]] = {}
        self.loads = 0  # full loads from the config server (observability/tests)
        self.refreshes = 0  # incremental refresh attempts

    # ------------------------------------------------------------------ lookups

    def peek(self, ns: str) -> RoutingTable | None:
        return self._tables.get(ns)

    def cached(self, database: str, collection: str) -> RoutingTable | None:
        """The cached table, without loading it (counted as a hit when there)."""
        table = self._tables.get(f"{database}.{collection}")
        if table is not None:
            _CACHE_HIT.inc()
        return table

    async def get(self, database: str, collection: str) -> RoutingTable:
        """The cached table (loading it on a miss). Unknown database -> NAMESPACE_NOT_FOUND."""
        ns = f"{database}.{collection}"
        table = self._tables.get(ns)
        if table is not None:
            _CACHE_HIT.inc()
            return table
        metrics.CACHE_MISSES.inc()
        return await self._single_flight(ns, database, collection, None)

    async def refresh(self, database: str, collection: str, seen: RoutingTable | None) -> RoutingTable:
        """Refresh after ``seen`` proved stale; a no-op if someone already replaced it."""
        ns = f"{database}.{collection}"
        current = self._tables.get(ns)
        if current is not None and current is not seen:
            return current
        return await self._single_flight(ns, database, collection, current)

    def invalidate(self, ns: str) -> None:
        self._tables.pop(ns, None)

    def invalidate_database(self, database: str) -> None:
        """Drop every cached table of ``database``."""
        prefix = f"{database}."
        for ns in [ns for ns in list(self._tables) if ns.startswith(prefix)]:
            self._tables.pop(ns, None)

    def invalidate_all(self) -> None:
        self._tables.clear()

    def namespaces_with_chunk(self, chunk_id: str) -> list[str]:
        """Cached namespaces that hold a chunk with this id."""
        out = []
        for ns, table in list(self._tables.items()):
            if table.chunk_map is not None and table.chunk_map.chunk_by_id(chunk_id) is not None:
                out.append(ns)
        return out

    def known_shards(self) -> dict[str, ShardAddress]:
        """Every shard address seen in any cached table."""
        out: dict[str, ShardAddress] = {}
        for table in list(self._tables.values()):
            out.update(table.shards)
        return out

    # ------------------------------------------------------------------ loading

    async def _single_flight(
        self, ns: str, database: str, collection: str, base: RoutingTable | None
    ) -> RoutingTable:
        task = self._inflight.get(ns)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(ns, database, collection, base))
            self._inflight[ns] = task
            task.add_done_callback(functools.partial(self._forget, ns))
        # shield: one caller being cancelled must not cancel the shared load
        return await asyncio.shield(task)

    def _forget(self, ns: str, task: asyncio.Task[RoutingTable]) -> None:
        if self._inflight.get(ns) is task:
            del self._inflight[ns]
        if not task.cancelled():
            task.exception()  # mark retrieved

    async def _load(
        self, ns: str, database: str, collection: str, base: RoutingTable | None
    ) -> RoutingTable:
        table: RoutingTable | None = None
        log.info(
            "%s %s (cached version %s)",
            "refreshing" if base is not None else "loading",
            ns,
            base.version if base is not None else "-",
        )
        if base is not None:
            metrics.CACHE_REFRESHES.inc()
        if base is not None and base.sharded and base.chunk_map is not None:
            table = await self._incremental(database, collection, base)
        if table is None:
            self.loads += 1
            resp = await self.config.get_shard_map(database, collection)
            if resp.HasField("error") and resp.error.code:
                raise LauraError(ErrorCode(resp.error.code), resp.error.message)
            table = table_from_response(database, collection, resp)
        self._store(ns, table)
        return table

    def _store(self, ns: str, table: RoutingTable) -> None:
        self._tables.pop(ns, None)
        while len(self._tables) >= self.maxsize:
            del self._tables[next(iter(self._tables))]
        self._tables[ns] = table

    async def _incremental(
        self, database: str, collection: str, base: RoutingTable
    ) -> RoutingTable | None:
        self.refreshes += 1
        try:
            resp = await self.config.get_shard_map(
                database, collection, version=base.version, epoch=base.epoch, incremental=True
            )
        except LauraError as err:
            if err.code == ErrorCode.HOST_UNREACHABLE:
                raise
            return None
        if resp.not_modified:
            return base
        if not resp.incremental or not resp.sharded or resp.epoch != base.epoch:
            if resp.shards or not resp.sharded:
                try:
                    return table_from_response(database, collection, resp)
                except LauraError:
                    return None
            return None
        try:
            table = apply_incremental(base, resp)
        except LauraError as err:
            log.info("incremental refresh of %s.%s failed (%s); full reload", database, collection, err)
            return None
        assert table.chunk_map is not None
        if resp.version and combined_version(*table.chunk_map.version) != resp.version:
            log.info("incremental refresh of %s.%s does not add up; full reload", database, collection)
            return None
        return table
