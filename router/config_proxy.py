"""ConfigService on the router: every RPC forwarded to the config server unchanged.

Each call has a deadline (MigrateChunk: ``MIGRATE_TIMEOUT_S``, as a migration runs
for as long as the copy takes); the config server's answer is returned as is, its
error passed through with the same code. After ShardCollection / SplitChunk /
MigrateChunk / CommitChunkMigration / MovePrimary / CommitMovePrimary /
DropCollectionMetadata / DropDatabaseMetadata through this router, the cached maps of
the namespaces concerned are dropped.
"""

from __future__ import annotations

from typing import Any

from grpc import aio

from lauradb.cluster import routing_pb2_grpc
from lauradb.rpc.server import rpc_method
from router.config_client import ConfigClient
from router.routing_cache import RoutingCache

__all__ = ["MIGRATE_TIMEOUT_S", "ConfigProxy"]

MIGRATE_TIMEOUT_S = 600.0

Ctx = aio.ServicerContext[Any, Any]


class ConfigProxy(routing_pb2_grpc.ConfigServiceServicer):
    def __init__(self, config: ConfigClient, cache: RoutingCache) -> None:
        self.config = config
        self.cache = cache

    def _drop_chunk(self, chunk_id: str) -> None:
        for ns in self.cache.namespaces_with_chunk(chunk_id):
            self.cache.invalidate(ns)

    @rpc_method
    async def AddShard(self, request: Any, context: Ctx) -> Any:
        return await self.config.call("AddShard", request)

    @rpc_method
    async def RemoveShard(self, request: Any, context: Ctx) -> Any:
        return await self.config.call("RemoveShard", request)

    @rpc_method
    async def SplitChunk(self, request: Any, context: Ctx) -> Any:
        try:
            return await self.config.call("SplitChunk", request)
        finally:
            self._drop_chunk(request.chunk_id)

    @rpc_method
    async def MigrateChunk(self, request: Any, context: Ctx) -> Any:
        try:
            return await self.config.call("MigrateChunk", request, MIGRATE_TIMEOUT_S)
        finally:
            self._drop_chunk(request.chunk_id)

    @rpc_method
    async def CommitChunkMigration(self, request: Any, context: Ctx) -> Any:
        try:
            return await self.config.call("CommitChunkMigration", request)
        finally:
            self._drop_chunk(request.chunk_id)

    @rpc_method
    async def MovePrimary(self, request: Any, context: Ctx) -> Any:
        try:
            return await self.config.call("MovePrimary", request, MIGRATE_TIMEOUT_S)
        finally:
            self.cache.invalidate_database(request.database)

    @rpc_method
    async def CommitMovePrimary(self, request: Any, context: Ctx) -> Any:
        try:
            return await self.config.call("CommitMovePrimary", request)
        finally:
            self.cache.invalidate_database(request.database)

    @rpc_method
    async def GetMigrationState(self, request: Any, context: Ctx) -> Any:
        return await self.config.call("GetMigrationState", request)

    @rpc_method
    async def ListMigrations(self, request: Any, context: Ctx) -> Any:
        return await self.config.call("ListMigrations", request)

    @rpc_method
    async def SetBalancerState(self, request: Any, context: Ctx) -> Any:
        return await self.config.call("SetBalancerState", request)

    @rpc_method
    async def GetBalancerStatus(self, request: Any, context: Ctx) -> Any:
        return await self.config.call("GetBalancerStatus", request)

    @rpc_method
    async def ShardCollection(self, request: Any, context: Ctx) -> Any:
        try:
            return await self.config.call("ShardCollection", request)
        finally:
            self.cache.invalidate(f"{request.database}.{request.collection}")

    @rpc_method
    async def ListShards(self, request: Any, context: Ctx) -> Any:
        return await self.config.call("ListShards", request)

    @rpc_method
    async def GetShardMap(self, request: Any, context: Ctx) -> Any:
        return await self.config.call("GetShardMap", request)

    @rpc_method
    async def EnsureDatabase(self, request: Any, context: Ctx) -> Any:
        return await self.config.call("EnsureDatabase", request)

    @rpc_method
    async def ListDatabases(self, request: Any, context: Ctx) -> Any:
        return await self.config.call("ListDatabases", request)

    @rpc_method
    async def RecordIndex(self, request: Any, context: Ctx) -> Any:
        return await self.config.call("RecordIndex", request)

    @rpc_method
    async def RemoveIndexRecord(self, request: Any, context: Ctx) -> Any:
        return await self.config.call("RemoveIndexRecord", request)

    @rpc_method
    async def GetCollectionIndexes(self, request: Any, context: Ctx) -> Any:
        return await self.config.call("GetCollectionIndexes", request)

    @rpc_method
    async def DropCollectionMetadata(self, request: Any, context: Ctx) -> Any:
        try:
            return await self.config.call("DropCollectionMetadata", request)
        finally:
            self.cache.invalidate(f"{request.database}.{request.collection}")

    @rpc_method
    async def DropDatabaseMetadata(self, request: Any, context: Ctx) -> Any:
        try:
            return await self.config.call("DropDatabaseMetadata", request)
        finally:
            self.cache.invalidate_database(request.database)
