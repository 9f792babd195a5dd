"""What every router operation needs: cache, shard client, cursors, config client."""

from __future__ import annotations

import dataclasses

from lauradb.errors import ErrorCode, LauraError
from router.config_client import ConfigClient
from router.cursors import CursorRegistry
from router.routing_cache import RoutingCache
from router.routing_table import RoutingTable
from router.shard_client import ShardClient

__all__ = ["DEFAULT_MEMORY_LIMIT", "RouterContext"]

DEFAULT_MEMORY_LIMIT = 100 * 1024 * 1024  # per blocking stage, like MongoDB


@dataclasses.dataclass
class RouterContext:
    config: ConfigClient
    cache: RoutingCache
    shards: ShardClient
    cursors: CursorRegistry
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT

    async def table_or_none(self, database: str, collection: str) -> RoutingTable | None:
        """The routing table, or None when the database does not exist (reads)."""
        try:
            return await self.cache.get(database, collection)
        except LauraError as err:
            if err.code == ErrorCode.NAMESPACE_NOT_FOUND:
                return None
            raise

    async def table_for_write(self, database: str, collection: str) -> RoutingTable:
        """The routing table, creating the database first if needed (writes)."""
        table = await self.table_or_none(database, collection)
        if table is not None:
            return table
        await self.config.ensure_database(database)
        self.cache.invalidate(f"{database}.{collection}")
        return await self.cache.get(database, collection)
