"""Calls from the router to the config server, each with a deadline.

A failed call becomes the ``LauraError`` the config server sent (same code); a
config server that cannot be reached becomes HOST_UNREACHABLE naming its address.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio

from lauradb.cluster import router_ext_pb2, routing_pb2, routing_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import ERROR_TRAILER, from_proto, from_rpc_error

__all__ = ["ConfigClient", "has_error_trailer"]

T = TypeVar("T")

DEFAULT_CONFIG_TIMEOUT = 30.0


def has_error_trailer(exc: grpc.RpcError) -> bool:
    """True when a failed call carries our structured Error trailer."""
    try:
        trailers: Any = exc.trailing_metadata()  # type: ignore[attr-defined]
    except Exception:
        return False
    return any(item[0] == ERROR_TRAILER for item in trailers or ())


class ConfigClient:
    """A thin ConfigService client; every call has a deadline."""

    def __init__(self, channel: aio.Channel, address: str, timeout: float = DEFAULT_CONFIG_TIMEOUT):
        self.address = address
        self.timeout = timeout
        self.stub = routing_pb2_grpc.ConfigServiceStub(channel)

    async def call(
        self, method: str, request: Any, timeout: float | None = None
    ) -> Any:
        """Invoke ConfigService ``method`` with ``request``; errors -> LauraError."""
        fn: Callable[..., Awaitable[Any]] = getattr(self.stub, method)
        try:
            return await fn(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: grpc.RpcError) -> LauraError:
        if not has_error_trailer(exc):
            status = exc.code() if hasattr(exc, "code") else None  # type: ignore[attr-defined]
            if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return LauraError(
                    ErrorCode.HOST_UNREACHABLE,
                    f"config server at {self.address} is unreachable ({status.name})",
                    {"address": self.address},
                )
        return from_rpc_error(exc, target=f"config server {self.address}")

    async def get_shard_map(
        self,
        database: str,
        collection: str,
        *,
        version: int = 0,
        epoch: str = "",
        incremental: bool = False,
    ) -> routing_pb2.GetShardMapResponse:
        req = routing_pb2.GetShardMapRequest(
            database=database,
            collection=collection,
            version=version,
            epoch=epoch,
            incremental=incremental,
        )
        resp: routing_pb2.GetShardMapResponse = await self.call("GetShardMap", req)
        return resp

    async def ensure_database(self, database: str) -> router_ext_pb2.EnsureDatabaseResponse:
        req = router_ext_pb2.EnsureDatabaseRequest(database=database)
        resp: router_ext_pb2.EnsureDatabaseResponse = await self.call("EnsureDatabase", req)
        return resp

    async def list_shards(self, timeout: float | None = None) -> router_ext_pb2.ListShardsResponse:
        resp: router_ext_pb2.ListShardsResponse = await self.call(
            "ListShards", router_ext_pb2.ListShardsRequest(), timeout
        )
        return resp

    # ------------------------------------------------------------------ catalog

    async def checked(self, method: str, request: Any) -> Any:
        """``call``, also raising the ``error`` field of an OK answer."""
        resp = await self.call(method, request)
        err = getattr(resp, "error", None)
        if err is not None and err.code:
            raise from_proto(err)
        return resp

    async def list_databases(self) -> router_ext_pb2.ListDatabasesResponse:
        resp: router_ext_pb2.ListDatabasesResponse = await self.checked(
            "ListDatabases", router_ext_pb2.ListDatabasesRequest()
        )
        return resp

    async def record_index(
        self, database: str, collection: str, index: router_ext_pb2.IndexSpec
    ) -> router_ext_pb2.RecordIndexResponse:
        req = router_ext_pb2.RecordIndexRequest(
            database=database, collection=collection, index=index
        )
        resp: router_ext_pb2.RecordIndexResponse = await self.checked("RecordIndex", req)
        return resp

    async def remove_index_record(
        self, database: str, collection: str, name: str
    ) -> router_ext_pb2.RemoveIndexRecordResponse:
        req = router_ext_pb2.RemoveIndexRecordRequest(
            database=database, collection=collection, name=name
        )
        resp: router_ext_pb2.RemoveIndexRecordResponse = await self.checked(
            "RemoveIndexRecord", req
        )
        return resp

    async def collection_indexes(
        self, database: str, collection: str
    ) -> router_ext_pb2.GetCollectionIndexesResponse:
        req = router_ext_pb2.GetCollectionIndexesRequest(database=database, collection=collection)
        resp: router_ext_pb2.GetCollectionIndexesResponse = await self.checked(
            "GetCollectionIndexes", req
        )
        return resp

    async def drop_collection_metadata(
        self, database: str, collection: str
    ) -> router_ext_pb2.DropCollectionMetadataResponse:
        req = router_ext_pb2.DropCollectionMetadataRequest(
            database=database, collection=collection
        )
        resp: router_ext_pb2.DropCollectionMetadataResponse = await self.checked(
            "DropCollectionMetadata", req
        )
        return resp

    async def drop_database_metadata(
        self, database: str
    ) -> router_ext_pb2.DropDatabaseMetadataResponse:
        req = router_ext_pb2.DropDatabaseMetadataRequest(database=database)
        resp: router_ext_pb2.DropDatabaseMetadataResponse = await self.checked(
            "DropDatabaseMetadata", req
        )
        return resp
