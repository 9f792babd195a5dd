"""Calls a migrating shard makes: to the other shard and to the config server.

Every failure becomes ``CallFailed`` (a LauraError) that says whether the outcome is
*uncertain*: the call may or may not have taken effect (the peer was unreachable,
the deadline expired, the call was cancelled or broke). A donor never guesses the
outcome of an uncertain config commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from lauradb.cluster import (
    router_ext_pb2,
    routing_pb2,
    routing_pb2_grpc,
    shard_pb2,
    shard_pb2_grpc,
)
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import ChannelPool
from lauradb.rpc.errors import from_proto, from_rpc_error

UNCERTAIN_STATUSES = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
})


class CallFailed(LauraError):
    """A failed RPC; ``uncertain``: it may have taken effect anyway."""

    def __init__(self, err: LauraError, uncertain: bool) -> None:
        super().__init__(err.code, err.message, err.details)
        self.uncertain = uncertain


async def call(
    method: Callable[..., Awaitable[Any]], request: Any, *, timeout: float, target: str
) -> Any:
    """``await method(request)`` with a deadline; failures as ``CallFailed``."""
    try:
        resp = await method(request, timeout=timeout)
    except grpc.RpcError as exc:
        status = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        raise CallFailed(from_rpc_error(exc, target=target), status in UNCERTAIN_STATUSES) from None
    err = getattr(resp, "error", None)
    if err is not None and err.code:
        raise CallFailed(from_proto(err), False)
    return resp


class ShardPeer:
    """ShardService of another shard (the recipient or the donor of a migration)."""

    def __init__(self, pool: ChannelPool, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._stub = shard_pb2_grpc.ShardServiceStub(pool.get(address))

    async def recv_start(self, req: shard_pb2.RecvChunkStartRequest) -> Any:
        return await call(self._stub.RecvChunkStart, req, timeout=30.0, target=self.address)

    async def recv_status(self, migration_id: str) -> Any:
        req = shard_pb2.RecvChunkControlRequest(migration_id=migration_id)
        return await call(self._stub.RecvChunkStatus, req, timeout=self.timeout,
                          target=self.address)

    async def recv_commit(self, migration_id: str, timeout: float) -> Any:
        req = shard_pb2.RecvChunkControlRequest(migration_id=migration_id)
        return await call(self._stub.RecvChunkCommit, req, timeout=timeout, target=self.address)

    async def recv_abort(self, migration_id: str) -> Any:
        req = shard_pb2.RecvChunkControlRequest(migration_id=migration_id)
        return await call(self._stub.RecvChunkAbort, req, timeout=self.timeout,
                          target=self.address)

    async def clone(self, migration_id: str, after: bytes, batch_size: int) -> Any:
        req = shard_pb2.MigrateCloneRequest(
            migration_id=migration_id, after_id_key=after, batch_size=batch_size
        )
        return await call(self._stub.MigrateClone, req, timeout=30.0, target=self.address)

    async def transfer_mods(self, migration_id: str, max_mods: int) -> Any:
        req = shard_pb2.MigrateTransferModsRequest(migration_id=migration_id, max_mods=max_mods)
        return await call(self._stub.MigrateTransferMods, req, timeout=30.0,
                          target=self.address)

    async def retry_history(self, migration_id: str, after_seq: int, max_records: int) -> Any:
        req = shard_pb2.MigrateRetryHistoryRequest(
            migration_id=migration_id, after_seq=after_seq, max_records=max_records
        )
        return await call(self._stub.MigrateRetryHistory, req, timeout=30.0,
                          target=self.address)

    async def migration_status(self) -> Any:
        return await call(self._stub.MigrationStatus, shard_pb2.MigrationStatusRequest(),
                          timeout=self.timeout, target=self.address)


class ConfigClient:
    """The config server calls of migrations."""

    def __init__(self, pool: ChannelPool, address: str, timeout: float = 10.0) -> None:
        self.pool = pool
        self.address = address
        self.timeout = timeout

    def _stub(self) -> routing_pb2_grpc.ConfigServiceStub:
        return routing_pb2_grpc.ConfigServiceStub(self.pool.get(self.address))

    async def commit(
        self, migration_id: str, chunk_id: str, from_shard: str, to_shard: str, epoch: str
    ) -> Any:
        req = router_ext_pb2.CommitChunkMigrationRequest(
            migration_id=migration_id, chunk_id=chunk_id, from_shard=from_shard,
            to_shard=to_shard, epoch=epoch,
        )
        return await call(self._stub().CommitChunkMigration, req, timeout=self.timeout,
                          target=self.address)

    async def migration_state(self, migration_id: str) -> Any:
        """The config server's record of a migration (None when it has none)."""
        req = router_ext_pb2.GetMigrationStateRequest(migration_id=migration_id)
        try:
            resp = await call(self._stub().GetMigrationState, req, timeout=self.timeout,
                              target=self.address)
        except CallFailed as err:
            if not err.uncertain and err.code in _NOT_FOUND:
                return None
            raise
        if not resp.HasField("migration") or not resp.migration.migration_id:
            return None
        return resp.migration

    async def shard_map(self, database: str, collection: str) -> Any:
        req = routing_pb2.GetShardMapRequest(database=database, collection=collection)
        return await call(self._stub().GetShardMap, req, timeout=self.timeout,
                          target=self.address)


_NOT_FOUND = frozenset({
    ErrorCode.NAMESPACE_NOT_FOUND,
    ErrorCode.NO_SUCH_KEY,
    ErrorCode.CHUNK_NOT_FOUND,
    ErrorCode.NOT_IMPLEMENTED,
})
