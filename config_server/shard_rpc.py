"""Config server -> shard calls of migrations and the balancer.

Every call has a deadline and fails fast when the shard is down; failures come back
as ``LauraError`` (the shard's own error when it sent one, HOST_UNREACHABLE naming
the shard when it cannot be reached).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import grpc

from config_server.model import ShardRecord
from lauradb.cluster import shard_pb2, shard_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.replset import ReplicaSets, is_failover_error, pool_hello
from lauradb.rpc.channels import ChannelPool
from lauradb.rpc.errors import ERROR_TRAILER, from_proto, from_rpc_error

log = logging.getLogger("lauradb.config.shard_rpc")

MOVE_RANGE_TIMEOUT_S = 600.0
ABORT_TIMEOUT_S = 5.0
STATS_TIMEOUT_S = 10.0
SPLIT_VECTOR_TIMEOUT_S = 30.0
LIST_TIMEOUT_S = 10.0


def _has_trailer(exc: grpc.RpcError) -> bool:
    try:
        trailers: Any = exc.trailing_metadata()  # type: ignore[attr-defined]
    except Exception:
        return False
    return any(item[0] == ERROR_TRAILER for item in trailers or ())


# NOT_WRITABLE_PRIMARY is answered before anything is applied: safe to send again to
# the new primary (a replica-set shard in a failover), at most this many times.
MAX_PRIMARY_RETRIES = 3


class ShardRpc:
    """Calls go to the shard's primary: ``shard.address`` for a standalone shard, the
    replica set's current primary (``ReplicaSets`` monitor) otherwise."""

    def __init__(self, pool: ChannelPool, replsets: ReplicaSets | None = None) -> None:
        self._pool = pool
        self.replsets = replsets if replsets is not None else ReplicaSets(pool_hello(pool))

    async def address_of(self, shard: ShardRecord) -> str:
        """The address of ``shard``'s primary (waits out a failover's buffer window)."""
        if not shard.members:
            return shard.address
        return await self.replsets.primary_address(shard.shard_id, shard.members, shard.address)

    async def primary_record(self, shard: ShardRecord) -> ShardRecord:
        """``shard`` with host/port of its current primary (what a donor dials)."""
        address = await self.address_of(shard)
        if address == shard.address:
            return shard
        host, _, port = address.rpartition(":")
        return replace(shard, host=host, port=int(port))

    async def _call(
        self, shard: ShardRecord, method: str, request: Any, timeout: float
    ) -> Any:
        attempt = 0
        while True:
            address = await self.address_of(shard)
            try:
                return await self._call_once(shard, address, method, request, timeout)
            except LauraError as err:
                if not shard.members or not is_failover_error(err):
                    raise
                self.replsets.invalidate(shard.shard_id, address)
                if err.code != ErrorCode.NOT_WRITABLE_PRIMARY or attempt >= MAX_PRIMARY_RETRIES:
                    raise
                attempt += 1
                log.info("%s: shard %s at %s is not primary; retrying", method, shard.shard_id, address)

    async def _call_once(
        self, shard: ShardRecord, address: str, method: str, request: Any, timeout: float
    ) -> Any:
        stub = shard_pb2_grpc.ShardServiceStub(self._pool.get(address))
        fn: Callable[..., Awaitable[Any]] = getattr(stub, method)
        try:
            resp = await fn(request, timeout=timeout)
        except grpc.RpcError as exc:
            status = exc.code() if hasattr(exc, "code") else None  # type: ignore[attr-defined]
            if not _has_trailer(exc) and status in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ):
                what = "did not answer in time" if status == grpc.StatusCode.DEADLINE_EXCEEDED \
                    else "is unreachable"
                raise LauraError(
                    ErrorCode.HOST_UNREACHABLE,
                    f"{method}: shard '{shard.shard_id}' at {address} {what}",
                    {"shard": shard.shard_id, "address": address},
                ) from None
            raise from_rpc_error(exc, target=f"shard {shard.shard_id}") from None
        err = getattr(resp, "error", None)
        if err is not None and err.code:
            raise from_proto(err)
        return resp

    async def move_range(
        self,
        donor: ShardRecord,
        request: shard_pb2.MoveRangeRequest,
        timeout: float = MOVE_RANGE_TIMEOUT_S,
    ) -> shard_pb2.MoveRangeResponse:
        resp: shard_pb2.MoveRangeResponse = await self._call(donor, "MoveRange", request, timeout)
        return resp

    async def move_primary(
        self,
        old_primary: ShardRecord,
        request: shard_pb2.MovePrimaryRequest,
        timeout: float = MOVE_RANGE_TIMEOUT_S,
    ) -> shard_pb2.MovePrimaryResponse:
        resp: shard_pb2.MovePrimaryResponse = await self._call(
            old_primary, "MovePrimary", request, timeout
        )
        return resp

    async def abort_receive(self, recipient: ShardRecord, migration_id: str) -> bool:
        """Best effort RecvChunkAbort; whether the recipient confirmed."""
        request = shard_pb2.RecvChunkControlRequest(migration_id=migration_id)
        try:
            await self._call(recipient, "RecvChunkAbort", request, ABORT_TIMEOUT_S)
        except LauraError as err:
            log.info(
                "RecvChunkAbort(%s) on shard %s: %s", migration_id, recipient.shard_id, err
            )
            return False
        return True

    async def chunk_stats(
        self, shard: ShardRecord, database: str, collection: str
    ) -> list[shard_pb2.ChunkStat]:
        request = shard_pb2.ChunkStatsRequest(database=database, collection=collection)
        resp: shard_pb2.ChunkStatsResponse = await self._call(
            shard, "ChunkStats", request, STATS_TIMEOUT_S
        )
        return list(resp.chunks)

    async def split_vector(
        self, shard: ShardRecord, database: str, collection: str, min_key: bytes, max_key: bytes
    ) -> shard_pb2.SplitVectorResponse:
        request = shard_pb2.SplitVectorRequest(
            database=database,
            collection=collection,
            min_key=min_key,
            max_key=max_key,
            max_chunk_bytes=0,
        )
        resp: shard_pb2.SplitVectorResponse = await self._call(
            shard, "SplitVector", request, SPLIT_VECTOR_TIMEOUT_S
        )
        return resp

    async def list_collections(self, shard: ShardRecord, database: str) -> list[str]:
        request = shard_pb2.ShardListCollectionsRequest(database=database)
        resp: shard_pb2.ShardListCollectionsResponse = await self._call(
            shard, "ListCollections", request, LIST_TIMEOUT_S
        )
        return list(resp.collections)
