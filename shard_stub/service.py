"""ShardService: the router's (and config server's) calls into one shard.

Every data call checks the request's placement version against the shard's
metadata first (``ShardMetadata.check``: STALE_CONFIG and nothing touched on a
mismatch), makes sure the stored shard keys follow the collection's current key
pattern, then runs the storage work in a worker thread. Reads and multi-writes see
only documents of chunks this shard owns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from grpc import aio

from lauradb.bsonkit.codec import decode_document, decode_optional, encode_document
from lauradb.cluster import shard_pb2, shard_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import to_proto
from lauradb.rpc.server import rpc_method
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub.cursors import DEFAULT_FIRST_BATCH, CursorManager, ShardCursor
from shard_stub.metadata import NamespaceMetadata, ShardMetadata, namespace_of
from shard_stub.ownership import OwnedRanges
from shard_stub.reads import ResultStream, aggregate_stream, find_stream
from shard_stub.storage import ShardStorage

log = logging.getLogger("lauradb.shard.service")

Ctx = aio.ServicerContext[Any, Any]

SERVICE_NAME = "lauradb.cluster.ShardService"


def check_namespace(database: str, collection: str) -> str:
    if not database:
        raise LauraError(ErrorCode.INVALID_NAMESPACE, "database name must not be empty")
    if not collection:
        raise LauraError(ErrorCode.INVALID_NAMESPACE, "collection name must not be empty")
    if "." in database or "\x00" in database or "/" in database or " " in database:
        raise LauraError(ErrorCode.INVALID_NAMESPACE, f"invalid database name {database!r}")
    if "\x00" in collection or collection.startswith("$"):
        raise LauraError(ErrorCode.INVALID_NAMESPACE, f"invalid collection name {collection!r}")
    return namespace_of(database, collection)


def _batch_size(value: int) -> int:
    if value < 0:
        raise LauraError(ErrorCode.BAD_VALUE, f"batch size must be non-negative, not {value}")
    return value


class ShardServicer(shard_pb2_grpc.ShardServiceServicer):
    """The ShardService of one shard over its storage, metadata cache and cursors."""

    def __init__(
        self,
        shard_id: str,
        storage: ShardStorage,
        metadata: ShardMetadata,
        cursors: CursorManager,
    ) -> None:
        self.shard_id = shard_id
        self.storage = storage
        self.metadata = metadata
        self.cursors = cursors

    # ------------------------------------------------------------------ helpers

    async def _placement(
        self, database: str, collection: str, version: shard_pb2.ShardVersion
    ) -> tuple[str, NamespaceMetadata | None, OwnedRanges | None]:
        """Namespace, metadata (None when ignored) and owned ranges of a request."""
        ns = check_namespace(database, collection)
        meta = await self.metadata.check(database, collection, version)
        if meta is None:
            return ns, None, None
        await self._follow_key_pattern(ns, meta.pattern)
        return ns, meta, meta.owned

    async def _follow_key_pattern(self, ns: str, pattern: ShardKeyPattern | None) -> None:
        if self.storage.needs_rekey(ns, pattern):
            await asyncio.to_thread(self.storage.set_key_pattern, ns, pattern)

    def _pattern(self, ns: str, meta: NamespaceMetadata | None) -> ShardKeyPattern | None:
        return meta.pattern if meta is not None else self.storage.key_pattern(ns)

    async def _first_batch(
        self, ns: str, stream: ResultStream, batch_size: int, single_batch: bool = False
    ) -> shard_pb2.ShardCursorBatch:
        cursor = self.cursors.create(ns, stream)
        docs, examined = await asyncio.to_thread(
            cursor.next_batch, batch_size or DEFAULT_FIRST_BATCH
        )
        resp = shard_pb2.ShardCursorBatch(documents=docs, documents_examined=examined)
        if cursor.exhausted or single_batch:
            cursor.close()
        else:
            resp.cursor_id = self.cursors.register(cursor)
        return resp

    async def _next_batch(
        self, cursor: ShardCursor, batch_size: int
    ) -> shard_pb2.ShardCursorBatch:
        docs, examined = await asyncio.to_thread(cursor.next_batch, batch_size)
        resp = shard_pb2.ShardCursorBatch(documents=docs, documents_examined=examined)
        if cursor.exhausted:
            self.cursors.release(cursor)
        else:
            resp.cursor_id = cursor.cursor_id
        return resp

    # ------------------------------------------------------------------ reads

    @rpc_method
    async def Find(self, request: shard_pb2.ShardFindRequest, context: Ctx) -> Any:
        ns, _meta, owned = await self._placement(
            request.database, request.collection, request.version
        )
        batch_size = _batch_size(request.batch_size)
        stream = find_stream(
            self.storage,
            ns,
            decode_optional(request.filter, "filter"),
            projection=decode_optional(request.projection, "projection") or None,
            sort=decode_optional(request.sort, "sort") or None,
            skip=request.skip,
            limit=request.limit,
            owned=owned,
        )
        single = request.limit < 0
        if single:
            batch_size = min(batch_size, -request.limit) if batch_size else -request.limit
        return await self._first_batch(ns, stream, batch_size, single)

    @rpc_method
    async def GetMore(self, request: shard_pb2.ShardGetMoreRequest, context: Ctx) -> Any:
        cursor = self.cursors.get(request.cursor_id)
        return await self._next_batch(cursor, _batch_size(request.batch_size))

    @rpc_method
    async def KillCursors(self, request: shard_pb2.ShardKillCursorsRequest, context: Ctx) -> Any:
        return shard_pb2.ShardKillCursorsResponse(
            killed=self.cursors.kill(list(request.cursor_ids))
        )

    @rpc_method
    async def Count(self, request: shard_pb2.ShardCountRequest, context: Ctx) -> Any:
        ns, _meta, owned = await self._placement(
            request.database, request.collection, request.version
        )
        spec = decode_optional(request.filter, "filter")
        count = await asyncio.to_thread(self.storage.count, ns, spec, owned=owned)
        return shard_pb2.ShardCountResponse(count=count)

    @rpc_method
    async def Aggregate(self, request: shard_pb2.ShardAggregateRequest, context: Ctx) -> Any:
        ns, _meta, owned = await self._placement(
            request.database, request.collection, request.version
        )
        stages = [
            decode_document(raw, f"pipeline stage {i}") for i, raw in enumerate(request.pipeline)
        ]
        stream = aggregate_stream(self.storage, ns, stages, owned=owned)
        return await self._first_batch(ns, stream, _batch_size(request.batch_size))

    # ------------------------------------------------------------------ writes

    @rpc_method
    async def Insert(self, request: shard_pb2.ShardInsertRequest, context: Ctx) -> Any:
        ns, meta, owned = await self._placement(
            request.database, request.collection, request.version
        )
        result = await asyncio.to_thread(
            self.storage.insert,
            ns,
            list(request.documents),
            ordered=request.ordered,
            pattern=self._pattern(ns, meta),
            owned=owned,
            unique_key=meta is not None and meta.unique,
        )
        resp = shard_pb2.ShardInsertResponse(inserted_count=result.inserted)
        for e in result.errors:
            resp.errors.append(
                shard_pb2.ShardWriteError(
                    index=e.index,
                    code=int(e.error.code),
                    code_name=e.error.code_name,
                    message=e.error.message,
                )
            )
        if result.errors:
            resp.error.CopyFrom(to_proto(result.errors[0].error))
        return resp

    @rpc_method
    async def Update(self, request: shard_pb2.ShardUpdateRequest, context: Ctx) -> Any:
        ns, meta, owned = await self._placement(
            request.database, request.collection, request.version
        )
        if not request.update:
            raise LauraError(ErrorCode.FAILED_TO_PARSE, "the update document is missing")
        spec = decode_optional(request.filter, "filter")
        update = decode_document(request.update, "update")
        array_filters: list[Mapping[str, Any]] = [
            decode_document(raw, f"array filter {i}")
            for i, raw in enumerate(request.array_filters)
        ]
        result = await asyncio.to_thread(
            self.storage.update,
            ns,
            spec,
            update,
            multi=request.multi,
            upsert=request.upsert,
            array_filters=array_filters or None,
            pattern=self._pattern(ns, meta),
            owned=owned,
            unique_key=meta is not None and meta.unique,
        )
        resp = shard_pb2.ShardUpdateResponse(
            matched_count=result.matched, modified_count=result.modified
        )
        if result.upserted:
            resp.upserted_id = encode_document({"_id": result.upserted_id})
        return resp

    @rpc_method
    async def Delete(self, request: shard_pb2.ShardDeleteRequest, context: Ctx) -> Any:
        ns, _meta, owned = await self._placement(
            request.database, request.collection, request.version
        )
        spec = decode_optional(request.filter, "filter")
        deleted = await asyncio.to_thread(
            self.storage.delete, ns, spec, multi=request.multi, owned=owned
        )
        return shard_pb2.ShardDeleteResponse(deleted_count=deleted)

    # ------------------------------------------------------------------ metadata

    @rpc_method
    async def RefreshMetadata(
        self, request: shard_pb2.RefreshMetadataRequest, context: Ctx
    ) -> Any:
        if request.collection:
            check_namespace(request.database, request.collection)
            meta = await self.metadata.refresh(request.database, request.collection)
            await self._follow_key_pattern(meta.namespace, meta.pattern)
            return shard_pb2.RefreshMetadataResponse(
                epoch=meta.epoch, major=meta.shard_version[0], minor=meta.shard_version[1]
            )
        refreshed = await self.metadata.refresh_many(
            request.database, extra=self.storage.namespaces()
        )
        for meta in refreshed:
            await self._follow_key_pattern(meta.namespace, meta.pattern)
        return shard_pb2.RefreshMetadataResponse()
