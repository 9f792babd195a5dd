"""Config server -> shard calls of migrations and the balancer.

Every call has a deadline and fails fast when the shard is down; failures come back
as ``LauraError`` (the shard's own error when it sent one, HOST_UNREACHABLE naming
the shard when it cannot be reached).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from config_server.model import ShardRecord
from lauradb.cluster import shard_pb2, shard_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
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


class ShardRpc:
    def __init__(self, pool: ChannelPool) -> None:
        self._pool = pool

    def _stub(self, shard: ShardRecord) -> shard_pb2_grpc.ShardServiceStub:
        return shard_pb2_grpc.ShardServiceStub(self._pool.get(shard.address))

    async def _call(
        self, shard: ShardRecord, method: str, request: Any, timeout: float
    ) -> Any:
        fn: Callable[..., Awaitable[Any]] = getattr(self._stub(shard), method)
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
                    f"{method}: shard '{shard.shard_id}' at {shard.address} {what}",
                    {"shard": shard.shard_id, "address": shard.address},
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
