"""RouterService: the application-facing API of the router.

Insert/Update/Delete with a client ``request_id`` are retryable writes: they run
through the ``RetryCache`` (see ``router.retryable``). ``drop_write_replies`` is a
testing-only hook (``--test-drop-write-replies``): a write that completed on the
shards fails with UNAVAILABLE instead of answering, as if its reply had been lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from grpc import aio

from lauradb.cluster import router_ext_pb2, routing_pb2, routing_pb2_grpc, transaction_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.server import rpc_method
from router import aggregate as aggregate_mod
from router import catalog, distinct, indexes, query_exec, writes
from router.context import RouterContext
from router.namespaces import check_namespace
from router.retryable import (
    RetryCache,
    RetryIdentity,
    delete_identity,
    insert_identity,
    update_identity,
)
from router.transactions import TransactionRunner
from router.txn_plan import TxnSettings

__all__ = ["RouterService"]

Ctx = aio.ServicerContext[Any, Any]
W = TypeVar("W")


def _insert_complete(resp: routing_pb2.InsertResponse) -> bool:
    return not resp.errors


class RouterService(routing_pb2_grpc.RouterServiceServicer):
    def __init__(
        self,
        ctx: RouterContext,
        retries: RetryCache | None = None,
        drop_write_replies: bool = False,
        txn_settings: TxnSettings | None = None,
    ) -> None:
        self.ctx = ctx
        self.retries = retries if retries is not None else RetryCache()
        self.drop_write_replies = drop_write_replies
        self.transactions = TransactionRunner(ctx, txn_settings)

    async def _write(
        self,
        ident: RetryIdentity | None,
        run: Callable[[RetryIdentity | None], Awaitable[W]],
        complete: Callable[[W], bool] = lambda _: True,
    ) -> W:
        if ident is None:
            resp = await run(None)
        else:
            resp = await self.retries.run(ident, lambda: run(ident), complete)
        if self.drop_write_replies:
            raise LauraError(
                ErrorCode.HOST_UNREACHABLE,
                "reply dropped after the write completed (--test-drop-write-replies, "
                "testing only)",
            )
        return resp

    @rpc_method
    async def Query(self, request: routing_pb2.QueryRequest, context: Ctx) -> routing_pb2.QueryResponse:
        return await query_exec.find(self.ctx, request)

    @rpc_method
    async def GetMore(
        self, request: router_ext_pb2.GetMoreRequest, context: Ctx
    ) -> routing_pb2.QueryResponse:
        return await query_exec.get_more(self.ctx, request)

    @rpc_method
    async def KillCursors(
        self, request: router_ext_pb2.KillCursorsRequest, context: Ctx
    ) -> router_ext_pb2.KillCursorsResponse:
        killed, not_found = await self.ctx.cursors.kill(list(request.cursor_ids))
        return router_ext_pb2.KillCursorsResponse(killed=killed, not_found=not_found)

    @rpc_method
    async def Count(
        self, request: router_ext_pb2.CountRequest, context: Ctx
    ) -> router_ext_pb2.CountResponse:
        return await query_exec.count(self.ctx, request)

    @rpc_method
    async def Insert(
        self, request: routing_pb2.InsertRequest, context: Ctx
    ) -> routing_pb2.InsertResponse:
        return await self._write(
            insert_identity(request),
            lambda ident: writes.insert(self.ctx, request, ident),
            _insert_complete,
        )

    @rpc_method
    async def Update(
        self, request: routing_pb2.UpdateRequest, context: Ctx
    ) -> routing_pb2.UpdateResponse:
        return await self._write(
            update_identity(request), lambda ident: writes.update(self.ctx, request, ident)
        )

    @rpc_method
    async def Delete(
        self, request: routing_pb2.DeleteRequest, context: Ctx
    ) -> routing_pb2.DeleteResponse:
        return await self._write(
            delete_identity(request), lambda ident: writes.delete(self.ctx, request, ident)
        )

    @rpc_method
    async def ExecuteTransaction(
        self, request: transaction_pb2.ExecuteTransactionRequest, context: Ctx
    ) -> transaction_pb2.ExecuteTransactionResponse:
        return await self.transactions.execute(request)

    @rpc_method
    async def Aggregate(
        self, request: routing_pb2.AggregationRequest, context: Ctx
    ) -> routing_pb2.AggregationResponse:
        return await aggregate_mod.aggregate(self.ctx, request)

    @rpc_method
    async def Distinct(
        self, request: router_ext_pb2.DistinctRequest, context: Ctx
    ) -> router_ext_pb2.DistinctResponse:
        return await distinct.distinct(self.ctx, request)

    # ------------------------------------------------------------------ indexes and catalog

    @rpc_method
    async def CreateIndex(
        self, request: router_ext_pb2.CreateIndexRequest, context: Ctx
    ) -> router_ext_pb2.CreateIndexResponse:
        return await indexes.create_index(self.ctx, request)

    @rpc_method
    async def DropIndex(
        self, request: router_ext_pb2.DropIndexRequest, context: Ctx
    ) -> router_ext_pb2.DropIndexResponse:
        return await indexes.drop_index(self.ctx, request)

    @rpc_method
    async def ListIndexes(
        self, request: router_ext_pb2.ListIndexesRequest, context: Ctx
    ) -> router_ext_pb2.ListIndexesResponse:
        return await indexes.list_indexes(self.ctx, request)

    @rpc_method
    async def ListCollections(
        self, request: router_ext_pb2.ListCollectionsRequest, context: Ctx
    ) -> router_ext_pb2.ListCollectionsResponse:
        return await catalog.list_collections(self.ctx, request)

    @rpc_method
    async def DropCollection(
        self, request: router_ext_pb2.DropCollectionRequest, context: Ctx
    ) -> router_ext_pb2.DropCollectionResponse:
        return await catalog.drop_collection(self.ctx, request)

    @rpc_method
    async def DropDatabase(
        self, request: router_ext_pb2.DropDatabaseRequest, context: Ctx
    ) -> router_ext_pb2.DropDatabaseResponse:
        return await catalog.drop_database(self.ctx, request)

    @rpc_method
    async def GetShardMap(
        self, request: routing_pb2.GetShardMapRequest, context: Ctx
    ) -> routing_pb2.GetShardMapResponse:
        check_namespace(request.database, request.collection)
        table = await self.ctx.table_or_none(request.database, request.collection)
        if table is None:
            raise LauraError(
                ErrorCode.NAMESPACE_NOT_FOUND, f"database {request.database!r} not found"
            )
        if request.version > table.version or (
            request.version and request.epoch and request.epoch != table.epoch
        ):
            # The caller has seen a newer map than ours: catch up first.
            table = await self.ctx.cache.refresh(request.database, request.collection, table)
        return table.to_response(
            since_version=request.version,
            since_epoch=request.epoch,
            incremental=request.incremental,
        )
