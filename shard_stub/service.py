"""ShardService: the router's (and config server's) calls into one shard.

Every data call checks the request's placement version against the shard's
metadata first (``ShardMetadata.check``: STALE_CONFIG and nothing touched on a
mismatch), makes sure the stored shard keys follow the collection's current key
pattern, then runs the storage work in a worker thread. Reads and multi-writes see
only documents of chunks this shard owns.

Catalog calls (CreateIndex, DropIndex, ListIndexes, ListCollections,
DropCollection, DropDatabase) carry no placement version: they act on whatever this
shard stores. When a collection first comes into existence here (first insert,
upsert or createIndex), the indexes recorded for it on the config server
(``GetCollectionIndexes``) are built first, so a shard that starts holding a
collection has the same indexes as the others.

Retryable writes (see ``retry_records``): an Insert/Update/Delete with a ``retry_id``
records the outcome of each statement it executes with the write, and answers a
statement it has a record of from that record; a Find with a ``retry_id`` (the query
phase of a multi=false write without the shard key) says whether the statement was
executed here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from grpc import aio

from lauradb.bsonkit.codec import (
    decode_document,
    decode_optional,
    encode_document,
    encode_ordered,
)
from lauradb.cluster import replset_pb2, router_ext_pb2, shard_pb2, shard_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import to_proto
from lauradb.rpc.server import rpc_method
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub.chunk_stats import chunk_stats, split_vector
from shard_stub.critical_section import DEFAULT_WRITE_WAIT_S, run_unblocked
from shard_stub.cursors import DEFAULT_FIRST_BATCH, CursorManager, ShardCursor
from shard_stub.index_keys import IndexDef, parse_index_keys
from shard_stub.metadata import NamespaceMetadata, ShardMetadata, namespace_of
from shard_stub.migration_range import MigrationRange
from shard_stub.migrations import Migrations
from shard_stub.ownership import OwnedRanges
from shard_stub.reads import ResultStream, aggregate_stream, distinct, find_stream
from shard_stub.replica import write_concern
from shard_stub.replica.node import ReplicaNode
from shard_stub.retry_records import RETRIED_STATEMENTS, RetryBatch, RetryStatement
from shard_stub.storage import ShardStorage
from shard_stub.transactions.locks import run_unlocked

log = logging.getLogger("lauradb.shard.service")

Ctx = aio.ServicerContext[Any, Any]

SERVICE_NAME = "lauradb.cluster.ShardService"

T = TypeVar("T")

# Replica sets: a write concern wait without wtimeout ends this long before the call's
# deadline (so the reply, with its write_concern_error, still reaches the caller).
WRITE_CONCERN_DEADLINE_MARGIN_S = 0.25
MIGRATION_MAJORITY_WAIT_S = 30.0
TXN_WRITE_WAIT_S = 1.0

# ConfigService.GetCollectionIndexes(database, collection) -> the recorded indexes.
FetchIndexes = Callable[[str, str], Awaitable[list[router_ext_pb2.IndexSpec]]]


def index_from_spec(spec: router_ext_pb2.IndexSpec) -> IndexDef:
    """An IndexSpec from the wire as an index definition (BAD_VALUE when malformed)."""
    if not spec.name:
        raise LauraError(ErrorCode.BAD_VALUE, "the index name is required")
    if "\x00" in spec.name:
        raise LauraError(ErrorCode.BAD_VALUE, "index names cannot contain NUL bytes")
    if not spec.keys:
        raise LauraError(ErrorCode.BAD_VALUE, "bad index key pattern: the index keys are missing")
    fields = parse_index_keys(decode_document(spec.keys, "index keys"))
    return IndexDef(spec.name, fields, spec.unique, spec.sparse)


def index_to_spec(index: IndexDef) -> router_ext_pb2.IndexSpec:
    return router_ext_pb2.IndexSpec(
        name=index.name,
        keys=encode_ordered(index.keys_document()),
        unique=index.unique,
        sparse=index.sparse,
    )


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


def _retry_statement(
    request: shard_pb2.ShardUpdateRequest | shard_pb2.ShardDeleteRequest,
) -> RetryStatement | None:
    """The retry identity of a single update/delete (multi writes are not retryable)."""
    if not request.retry_id or request.multi:
        return None
    return RetryStatement(
        request.retry_id, request.stmt_id, request.retry_fingerprint, request.history_only
    )


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
        fetch_indexes: FetchIndexes | None = None,
        migrations: Migrations | None = None,
    ) -> None:
        self.shard_id = shard_id
        self.storage = storage
        self.metadata = metadata
        self.cursors = cursors
        self.fetch_indexes = fetch_indexes
        self.migrations = migrations
        self.write_wait_s = migrations.write_wait_s if migrations else DEFAULT_WRITE_WAIT_S
        # A write touching a document locked by a prepared transaction waits this long
        # for the lock (--txn-lock-wait-ms x 10), then fails with WRITE_CONFLICT.
        self.txn_write_wait_s = TXN_WRITE_WAIT_S
        if migrations is not None:
            migrations.set_ensure_indexes(self.ensure_recorded_indexes)
            migrations.primary.ensure_indexes = self.ensure_recorded_indexes
            migrations.primary.index_from_spec = index_from_spec
        # Replica set (see shard_stub.replica); None: a standalone shard, always primary.
        self.replica: ReplicaNode | None = None
        self.node_id = ""
        self.address = ""

    def set_replica(self, node: ReplicaNode) -> None:
        self.replica = node

    def _migrations(self) -> Migrations:
        self._require_primary("chunk migrations")
        if self.migrations is None:
            raise LauraError(ErrorCode.NOT_IMPLEMENTED, "chunk migrations are not enabled here")
        return self.migrations

    # ------------------------------------------------------------------ replica set

    def _require_primary(self, what: str = "writes") -> None:
        """NOT_WRITABLE_PRIMARY on a replica-set member that is not the primary."""
        if self.replica is not None and not self.replica.is_primary:
            self.replica.require_primary(what)

    def _read_check(self, read_concern: replset_pb2.ReadConcern, secondary_ok: bool) -> bool:
        """May this member answer the read? True when a majority read must wait for the
        commit point first (primary only: a secondary's data is majority-committed)."""
        node = self.replica
        if node is None:
            return False
        if node.is_primary:
            return read_concern.level == replset_pb2.READ_CONCERN_MAJORITY
        if secondary_ok and node.readable_secondary:
            return False
        why = "not caught up" if node.role.value == "SECONDARY" else node.role.value
        raise LauraError(
            ErrorCode.NOT_PRIMARY_OR_SECONDARY,
            f"member {node.node_id} cannot serve this read "
            f"({'secondary_ok not set' if not secondary_ok else why}; role {node.role.value})",
            {"primary": node.primary_address} if node.primary_address else None,
        )

    async def _read(self, majority: bool, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run a storage read in a thread (after the commit point for majority reads)."""
        if majority and self.replica is not None:
            node = self.replica
            return await asyncio.to_thread(node.majority_read, lambda: fn(*args, **kw))
        return await asyncio.to_thread(fn, *args, **kw)

    def _concern_spec(self, request: Any) -> write_concern.WriteConcernSpec:
        """The write's concern, validated before anything is written; NOT_WRITABLE_PRIMARY
        on a member that is not the primary."""
        node = self.replica
        wc = request.write_concern if request.HasField("write_concern") else None
        if node is None:
            return write_concern.parse(wc, 1)
        node.require_primary()
        return write_concern.parse(wc, node.data_bearing_members)

    async def _write(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """A storage write in a thread (on a replica set: only while primary)."""
        if self.replica is not None:
            return await self.replica.run_write(fn, *args, **kw)
        return await asyncio.to_thread(fn, *args, **kw)

    async def _with_concern(
        self, resp: Any, op_id: int, spec: write_concern.WriteConcernSpec, context: Ctx
    ) -> Any:
        """Wait for the write concern of ``op_id``; a failure goes in write_concern_error."""
        node = self.replica
        if node is None or op_id <= 0:
            return resp
        remaining = context.time_remaining() if context is not None else None
        max_wait = (
            max(remaining - WRITE_CONCERN_DEADLINE_MARGIN_S, 0.0)
            if remaining is not None
            else None
        )
        error = await node.wait_write_concern(op_id, spec, max_wait)
        if error is not None:
            resp.write_concern_error.CopyFrom(error)
        return resp

    async def wait_majority_of_last_write(self) -> None:
        """(Migration recipient) block until everything written so far is majority-
        committed; WRITE_CONCERN_FAILED after ``MIGRATION_MAJORITY_WAIT_S``."""
        node = self.replica
        if node is None:
            return
        op_id = node.oplog.last().op_id
        error = await node.wait_write_concern(
            op_id, write_concern.WriteConcernSpec(None, MIGRATION_MAJORITY_WAIT_S), None
        )
        if error is not None:
            raise LauraError(ErrorCode.WRITE_CONCERN_FAILED, error.error.message)

    @rpc_method
    async def Hello(self, request: replset_pb2.HelloRequest, context: Ctx) -> Any:
        if self.replica is not None:
            return self.replica.hello()
        return replset_pb2.HelloResponse(
            node_id=self.node_id, role="PRIMARY", is_primary=True,
            primary_address=self.address, members=[self.address] if self.address else [],
            caught_up=True, address=self.address,
        )

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

    async def ensure_recorded_indexes(
        self, database: str, collection: str, skip: str = ""
    ) -> list[str]:
        """Build every index the config server records for the namespace that this
        shard lacks (all but ``skip``); the names created.

        Called when a collection first comes into existence on this shard (not on
        the hot path). A config server that cannot be asked fails the call: a
        collection created without its unique indexes would accept duplicates.
        """
        if self.fetch_indexes is None:
            return []
        ns = namespace_of(database, collection)
        specs = await self.fetch_indexes(database, collection)
        created: list[str] = []
        for spec in specs:
            if spec.name == skip:
                continue
            try:
                index = index_from_spec(spec)
                if await asyncio.to_thread(self.storage.create_index, ns, index):
                    created.append(index.name)
            except LauraError as err:
                log.warning("%s: cannot build recorded index %r: %s", ns, spec.name, err)
        if created:
            log.info("%s: built recorded indexes %s", ns, ", ".join(created))
        return created

    async def _before_create(self, ns: str, database: str, collection: str) -> None:
        """Recorded indexes first when a write is about to create the collection."""
        if self.storage.collection(ns) is None:
            await self.ensure_recorded_indexes(database, collection)

    async def _first_batch(
        self,
        ns: str,
        stream: ResultStream,
        batch_size: int,
        single_batch: bool = False,
        owned: OwnedRanges | None = None,
        majority: bool = False,
    ) -> shard_pb2.ShardCursorBatch:
        cursor = self.cursors.create(ns, stream, owned)
        try:
            docs, examined = await self._read(
                majority, cursor.next_batch, batch_size or DEFAULT_FIRST_BATCH
            )
        except BaseException:
            cursor.close()
            raise
        resp = shard_pb2.ShardCursorBatch(documents=docs, documents_examined=examined)
        if cursor.exhausted or single_batch:
            cursor.close()
        else:
            resp.cursor_id = self.cursors.register(cursor)
        return resp

    async def _next_batch(
        self, cursor: ShardCursor, batch_size: int
    ) -> shard_pb2.ShardCursorBatch:
        try:
            docs, examined = await asyncio.to_thread(cursor.next_batch, batch_size)
        except LauraError:
            self.cursors.release(cursor)  # a failed cursor is dead (as in MongoDB)
            raise
        resp = shard_pb2.ShardCursorBatch(documents=docs, documents_examined=examined)
        if cursor.exhausted:
            self.cursors.release(cursor)
        else:
            resp.cursor_id = cursor.cursor_id
        return resp

    # ------------------------------------------------------------------ reads

    @rpc_method
    async def Find(self, request: shard_pb2.ShardFindRequest, context: Ctx) -> Any:
        majority = self._read_check(request.read_concern, request.secondary_ok)
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
        resp = await self._first_batch(ns, stream, batch_size, single, owned, majority)
        if request.retry_id:
            resp.retry_executed = await asyncio.to_thread(
                self.storage.retry_executed, request.retry_id, request.stmt_id
            )
        return resp

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
        majority = self._read_check(request.read_concern, request.secondary_ok)
        ns, _meta, owned = await self._placement(
            request.database, request.collection, request.version
        )
        spec = decode_optional(request.filter, "filter")
        count = await self._read(majority, self.storage.count, ns, spec, owned=owned)
        return shard_pb2.ShardCountResponse(count=count)

    @rpc_method
    async def Aggregate(self, request: shard_pb2.ShardAggregateRequest, context: Ctx) -> Any:
        majority = self._read_check(request.read_concern, request.secondary_ok)
        ns, _meta, owned = await self._placement(
            request.database, request.collection, request.version
        )
        stages = [
            decode_document(raw, f"pipeline stage {i}") for i, raw in enumerate(request.pipeline)
        ]
        stream = aggregate_stream(self.storage, ns, stages, owned=owned)
        return await self._first_batch(
            ns, stream, _batch_size(request.batch_size), owned=owned, majority=majority
        )

    # ------------------------------------------------------------------ writes

    # Writes that hit a chunk migration's critical section wait for it (bounded) and
    # run again from the placement check (see critical_section).

    # On a replica set: NOT_WRITABLE_PRIMARY unless primary and a bad write concern
    # (BAD_VALUE) before anything is touched; after the write, its write concern wait.
    # A write touching a document locked by a prepared transaction waits for the lock
    # (bounded, ``txn_write_wait_s``) and runs again; then WRITE_CONFLICT.

    @rpc_method
    async def Insert(self, request: shard_pb2.ShardInsertRequest, context: Ctx) -> Any:
        spec = self._concern_spec(request)
        resp, op_id = await self._run_write(request, self._insert)
        return await self._with_concern(resp, op_id, spec, context)

    @rpc_method
    async def Update(self, request: shard_pb2.ShardUpdateRequest, context: Ctx) -> Any:
        spec = self._concern_spec(request)
        resp, op_id = await self._run_write(request, self._update)
        return await self._with_concern(resp, op_id, spec, context)

    @rpc_method
    async def Delete(self, request: shard_pb2.ShardDeleteRequest, context: Ctx) -> Any:
        spec = self._concern_spec(request)
        resp, op_id = await self._run_write(request, self._delete)
        return await self._with_concern(resp, op_id, spec, context)

    async def _run_write(
        self, request: Any, op: Callable[[Any], Awaitable[tuple[Any, int]]]
    ) -> tuple[Any, int]:
        """Run a write: waits (bounded) for a migration's critical section and for
        documents locked by prepared transactions, then runs it again."""
        return await run_unlocked(
            lambda: run_unblocked(lambda: self._primary_guarded(request, op), self.write_wait_s),
            self.storage.txn_locks, self.txn_write_wait_s,
        )

    async def _primary_guarded(self, request: Any, op: Callable[[Any], Awaitable[Any]]) -> Any:
        """An unsharded write waits while a movePrimary of its database copies it."""
        if self.migrations is None:
            return await op(request)
        return await self.migrations.primary.guarded(
            request.database, request.version, lambda: op(request)
        )

    async def _insert(self, request: shard_pb2.ShardInsertRequest) -> tuple[Any, int]:
        ns, meta, owned = await self._placement(
            request.database, request.collection, request.version
        )
        if request.documents:
            await self._before_create(ns, request.database, request.collection)
        retry = (
            RetryBatch(request.retry_id, request.stmt_ids, request.retry_fingerprint)
            if request.retry_id
            else None
        )
        result = await self._write(
            self.storage.insert,
            ns,
            list(request.documents),
            ordered=request.ordered,
            pattern=self._pattern(ns, meta),
            owned=owned,
            unique_key=meta is not None and meta.unique,
            retry=retry,
        )
        resp = shard_pb2.ShardInsertResponse(
            inserted_count=result.inserted, retried_count=result.retried
        )
        if result.retried:
            RETRIED_STATEMENTS.labels("insert").inc(result.retried)
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
        return resp, getattr(result, "op_id", 0)

    async def _update(self, request: shard_pb2.ShardUpdateRequest) -> tuple[Any, int]:
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
        if request.upsert:
            await self._before_create(ns, request.database, request.collection)
        result = await self._write(
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
            retry=_retry_statement(request),
        )
        resp = shard_pb2.ShardUpdateResponse(
            matched_count=result.matched, modified_count=result.modified,
            retried=result.retried,
        )
        if result.upserted:
            resp.upserted_id = encode_document({"_id": result.upserted_id})
        if result.retried:
            RETRIED_STATEMENTS.labels("update").inc()
        return resp, getattr(result, "op_id", 0)

    async def _delete(self, request: shard_pb2.ShardDeleteRequest) -> tuple[Any, int]:
        ns, _meta, owned = await self._placement(
            request.database, request.collection, request.version
        )
        spec = decode_optional(request.filter, "filter")
        retry = _retry_statement(request)
        deleted = await self._write(
            self.storage.delete, ns, spec, multi=request.multi, owned=owned, retry=retry
        )
        retried = retry is not None and retry.retried
        if retried:
            RETRIED_STATEMENTS.labels("delete").inc()
        resp = shard_pb2.ShardDeleteResponse(deleted_count=deleted, retried=retried)
        return resp, getattr(deleted, "op_id", 0)

    # ------------------------------------------------------------------ metadata

    @rpc_method
    async def RefreshMetadata(
        self, request: shard_pb2.RefreshMetadataRequest, context: Ctx
    ) -> Any:
        if request.collection:
            check_namespace(request.database, request.collection)
            meta = await self.metadata.refresh(request.database, request.collection)
            if meta.sharded:  # unsharded (e.g. dropped): re-keyed lazily on next use
                await self._follow_key_pattern(meta.namespace, meta.pattern)
            if self.migrations is not None:
                self.migrations.on_refresh()
            return shard_pb2.RefreshMetadataResponse(
                epoch=meta.epoch, major=meta.shard_version[0], minor=meta.shard_version[1]
            )
        refreshed = await self.metadata.refresh_many(
            request.database, extra=self.storage.namespaces()
        )
        for meta in refreshed:
            if meta.sharded:
                await self._follow_key_pattern(meta.namespace, meta.pattern)
        if self.migrations is not None:
            self.migrations.on_refresh()
        return shard_pb2.RefreshMetadataResponse()

    # ------------------------------------------------------------------ catalog

    @rpc_method
    async def CreateIndex(self, request: shard_pb2.ShardCreateIndexRequest, context: Ctx) -> Any:
        self._require_primary()
        ns = check_namespace(request.database, request.collection)
        index = index_from_spec(request.index)
        if self.storage.collection(ns) is None:
            await self.ensure_recorded_indexes(request.database, request.collection, index.name)
        created = await asyncio.to_thread(self.storage.create_index, ns, index)
        return shard_pb2.ShardCreateIndexResponse(created=created)

    @rpc_method
    async def DropIndex(self, request: shard_pb2.ShardDropIndexRequest, context: Ctx) -> Any:
        self._require_primary()
        ns = check_namespace(request.database, request.collection)
        if not request.name:
            raise LauraError(ErrorCode.BAD_VALUE, "the index name is required ('*' for all)")
        dropped = await asyncio.to_thread(self.storage.drop_index, ns, request.name)
        return shard_pb2.ShardDropIndexResponse(dropped=dropped)

    @rpc_method
    async def ListIndexes(self, request: shard_pb2.ShardListIndexesRequest, context: Ctx) -> Any:
        ns = check_namespace(request.database, request.collection)
        return shard_pb2.ShardListIndexesResponse(
            indexes=[index_to_spec(ix) for ix in self.storage.list_indexes(ns)]
        )

    @rpc_method
    async def ListCollections(
        self, request: shard_pb2.ShardListCollectionsRequest, context: Ctx
    ) -> Any:
        check_namespace(request.database, "-")
        return shard_pb2.ShardListCollectionsResponse(
            collections=self.storage.list_collections(request.database)
        )

    @rpc_method
    async def DropCollection(
        self, request: shard_pb2.ShardDropCollectionRequest, context: Ctx
    ) -> Any:
        self._require_primary()
        ns = check_namespace(request.database, request.collection)
        self.cursors.kill_namespace(ns)
        dropped = await asyncio.to_thread(self.storage.drop_collection, ns)
        self.metadata.forget(request.database, request.collection)
        return shard_pb2.ShardDropCollectionResponse(dropped=dropped)

    @rpc_method
    async def DropDatabase(self, request: shard_pb2.ShardDropDatabaseRequest, context: Ctx) -> Any:
        self._require_primary()
        check_namespace(request.database, "-")
        prefix = f"{request.database}."
        for ns in self.storage.namespaces():
            if ns.startswith(prefix):
                self.cursors.kill_namespace(ns)
        dropped = await asyncio.to_thread(self.storage.drop_database, request.database)
        for ns in {*dropped, *self.metadata.cached_namespaces()}:
            if ns.startswith(prefix):
                self.metadata.forget(request.database, ns[len(prefix):])
        return shard_pb2.ShardDropDatabaseResponse(dropped=bool(dropped))

    # ------------------------------------------------------------------ distinct

    @rpc_method
    async def Distinct(self, request: shard_pb2.ShardDistinctRequest, context: Ctx) -> Any:
        majority = self._read_check(request.read_concern, request.secondary_ok)
        ns, _meta, owned = await self._placement(
            request.database, request.collection, request.version
        )
        spec = decode_optional(request.filter, "filter")
        values = await self._read(
            majority, distinct, self.storage, ns, request.key, spec, owned=owned
        )
        return shard_pb2.ShardDistinctResponse(values=encode_document({"values": values}))

    # ------------------------------------------------------------------ balancer questions

    async def _sharded(self, database: str, collection: str) -> NamespaceMetadata:
        """Fresh metadata of a sharded namespace, stored shard keys following its pattern."""
        ns = check_namespace(database, collection)
        meta = await self.metadata.refresh(database, collection)
        if not meta.sharded or meta.pattern is None:
            raise LauraError(ErrorCode.ILLEGAL_OPERATION, f"{ns} is not sharded")
        await self._follow_key_pattern(ns, meta.pattern)
        return meta

    @rpc_method
    async def ChunkStats(self, request: shard_pb2.ChunkStatsRequest, context: Ctx) -> Any:
        meta = await self._sharded(request.database, request.collection)
        stats = await asyncio.to_thread(chunk_stats, self.storage, meta, self.shard_id)
        return shard_pb2.ChunkStatsResponse(
            chunks=[
                shard_pb2.ChunkStat(
                    chunk_id=c.chunk_id, min_key=encode_ordered(c.min_bound),
                    max_key=encode_ordered(c.max_bound), documents=c.documents, bytes=c.bytes,
                )
                for c in stats
            ]
        )

    @rpc_method
    async def SplitVector(self, request: shard_pb2.SplitVectorRequest, context: Ctx) -> Any:
        meta = await self._sharded(request.database, request.collection)
        assert meta.pattern is not None
        r = MigrationRange.from_bounds(meta.namespace, meta.pattern, request.min_key,
                                       request.max_key)
        result = await asyncio.to_thread(
            split_vector, self.storage, meta.pattern, r, request.max_chunk_bytes
        )
        return shard_pb2.SplitVectorResponse(
            split_points=[encode_ordered(p) for p in result.split_points],
            jumbo=result.jumbo, documents=result.documents, bytes=result.bytes,
        )

    # ------------------------------------------------------------------ migrations

    @rpc_method
    async def MoveRange(self, request: shard_pb2.MoveRangeRequest, context: Ctx) -> Any:
        migrations = self._migrations()
        meta = await self._sharded(request.database, request.collection)
        return await migrations.move_range(meta.namespace, request)

    @rpc_method
    async def RecvChunkStart(
        self, request: shard_pb2.RecvChunkStartRequest, context: Ctx
    ) -> Any:
        ns = check_namespace(request.database, request.collection)
        return await self._migrations().recv_start(ns, request)

    @rpc_method
    async def RecvChunkStatus(
        self, request: shard_pb2.RecvChunkControlRequest, context: Ctx
    ) -> Any:
        return self._migrations().recipient.status(request.migration_id)

    @rpc_method
    async def RecvChunkCommit(
        self, request: shard_pb2.RecvChunkControlRequest, context: Ctx
    ) -> Any:
        return await self._migrations().recipient.commit(request.migration_id)

    @rpc_method
    async def RecvChunkAbort(
        self, request: shard_pb2.RecvChunkControlRequest, context: Ctx
    ) -> Any:
        return await self._migrations().recipient.abort(request.migration_id)

    @rpc_method
    async def MigrateClone(self, request: shard_pb2.MigrateCloneRequest, context: Ctx) -> Any:
        return await asyncio.to_thread(self._migrations().donor.clone_page, request)

    @rpc_method
    async def MigrateTransferMods(
        self, request: shard_pb2.MigrateTransferModsRequest, context: Ctx
    ) -> Any:
        return await asyncio.to_thread(self._migrations().donor.transfer_mods, request)

    @rpc_method
    async def MigrateRetryHistory(
        self, request: shard_pb2.MigrateRetryHistoryRequest, context: Ctx
    ) -> Any:
        return await asyncio.to_thread(self._migrations().donor.retry_history, request)

    @rpc_method
    async def MigrationStatus(
        self, request: shard_pb2.MigrationStatusRequest, context: Ctx
    ) -> Any:
        return self._migrations().status()

    # ------------------------------------------------------------------ movePrimary

    @rpc_method
    async def MovePrimary(self, request: shard_pb2.MovePrimaryRequest, context: Ctx) -> Any:
        check_namespace(request.database, "-")
        return await self._migrations().primary.move(request)

    @rpc_method
    async def ReceivePrimary(
        self, request: shard_pb2.ReceivePrimaryRequest, context: Ctx
    ) -> Any:
        check_namespace(request.database, "-")
        for coll in request.collections:
            check_namespace(request.database, coll)
        return await self._migrations().primary.receive(request)

    @rpc_method
    async def CloneCollectionPage(
        self, request: shard_pb2.CloneCollectionPageRequest, context: Ctx
    ) -> Any:
        check_namespace(request.database, request.collection)
        return await asyncio.to_thread(self._migrations().primary.clone_page, request)
