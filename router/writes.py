"""Insert, Update and Delete at the router.

Inserts are split into per-shard batches (see ``insert_batching``); ordered inserts
send runs of consecutive same-shard documents in order and stop at the first error,
unordered ones send one batch per shard, all shards concurrently. Errors come back
by the caller's index.

Updates/deletes go to the shards the filter targets. ``multi=false`` changes exactly
one document in the cluster: a filter that pins the full shard key (or reaches one
shard) goes to that shard; otherwise the router finds a candidate (``_id``) on the
targeted shards, then updates/deletes it by ``{$and: [filter, {_id: id}]}`` on its
shard, retrying if it lost a race.

Retryable writes (``retry``, see ``router.retryable``): the shard requests carry the
client's request id as ``retry_id`` with statement ids (an insert: each document's
index in the client's request, however the documents are batched; a single
update/delete: 0), and the shards answer statements they executed before from their
records. The two-phase path asks in its query phase whether a shard executed the
statement already; if one did, that shard answers from its record (``history_only``),
so a retried ``multi=false`` write never applies to a second document.

Write concern: the client's ``write_concern`` (unset: the shards' default, majority)
goes to every shard request; a shard that applied the write but could not satisfy it
answers ``write_concern_error``, and the reply carries the worst one (fewest members
acknowledged) next to the write's result.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import bson
from bson.objectid import ObjectId

from lauradb.cluster import error_pb2, replset_pb2, routing_pb2, shard_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.filter import compile_filter
from lauradb.query.update import compile_update
from lauradb.rpc.request_context import current_request_id
from lauradb.sharding.targeting import value_shard
from router import metrics
from router.context import RouterContext
from router.insert_batching import (
    Batch,
    Prepared,
    RoutedDoc,
    ShardGroup,
    WriteErrorInfo,
    group_unordered,
    map_errors,
    ordered_runs,
    prepare_raw,
    route,
    split_batch,
    split_group,
)
from router.namespaces import check_namespace, decode_field, decode_required
from router.retryable import RetryIdentity
from router.routing_table import RoutingTable
from router.shard_client import MAX_STALE_RETRIES, is_stale, stale_backoff
from router.targets import Targets, target_filter

__all__ = [
    "candidate_filter",
    "delete",
    "insert",
    "pick_candidate",
    "update",
]

log = logging.getLogger("lauradb.router.writes")

T = TypeVar("T")

MAX_TWO_PHASE_ATTEMPTS = 5


def worst_write_concern_error(
    answers: Sequence[Any],
) -> replset_pb2.WriteConcernError | None:
    """The write concern error of the shard answers that acknowledged least."""
    worst: replset_pb2.WriteConcernError | None = None
    for a in answers:
        if a.HasField("write_concern_error") and (
            worst is None or a.write_concern_error.acknowledged < worst.acknowledged
        ):
            worst = a.write_concern_error
    return worst


# ============================================================================ insert

# Shard key values ``ShardKeyPattern.key_for_doc`` encodes as they are (never arrays
# or regular expressions, which it refuses).
_PLAIN_KEY_TYPES = frozenset({int, str, float, ObjectId})


def shard_function(table: RoutingTable) -> Callable[[Mapping[str, Any]], str]:
    """``table.shard_for_key_doc`` for routing an insert's documents, with a shortcut
    for a key on one top-level field holding a plain value (an int, string, double or
    ObjectId: the usual ``_id``): the same key (``key_for_doc`` hashes
    ``encode_value(v)`` and encodes the hash as an int) without its generic steps.
    Anything else (missing fields, arrays, documents...) takes the generic path,
    errors included."""
    generic = table.shard_for_key_doc
    pattern, chunk_map = table.pattern, table.chunk_map
    if not table.sharded or pattern is None or chunk_map is None:
        return generic
    shard_of = value_shard(pattern, chunk_map, _PLAIN_KEY_TYPES)
    if shard_of is None:
        return generic
    name = pattern.fields[0]

    def route(doc: Mapping[str, Any]) -> str:
        shard = shard_of(doc.get(name) if type(doc) is dict else None)
        return shard if shard is not None else generic(doc)

    return route


class _InsertRun:
    """Accumulated outcome of one Insert request."""

    def __init__(self, retry: RetryIdentity | None = None) -> None:
        self.retry = retry
        self.inserted = 0
        self.errors: list[WriteErrorInfo] = []
        self.shard_level: list[LauraError] = []  # whole-batch failures (e.g. shard down)
        self.answers: list[shard_pb2.ShardInsertResponse] = []  # with a write concern error

    def batch_failed(self, batch: Batch, err: LauraError, ordered: bool) -> None:
        self.shard_level.append(err)
        items = batch.items[:1] if ordered else batch.items
        self.errors.extend(WriteErrorInfo.of(i.index, err) for i in items)

    def group_failed(self, group: ShardGroup, err: LauraError) -> None:
        """``batch_failed`` of an unordered insert's group."""
        self.shard_level.append(err)
        self.errors.extend(WriteErrorInfo.of(i, err) for i in group.indexes)


async def insert(
    ctx: RouterContext, req: routing_pb2.InsertRequest, retry: RetryIdentity | None = None
) -> routing_pb2.InsertResponse:
    check_namespace(req.database, req.collection)
    out = routing_pb2.InsertResponse(request_id=req.request_id)
    if not req.documents:
        return out
    docs = prepare_raw(req.documents)
    table = await ctx.table_for_write(req.database, req.collection)
    run = _InsertRun(retry)
    if req.ordered:
        await _insert_ordered(ctx, req, table, docs.routed(), run)
    else:
        await _insert_unordered(ctx, req, table, docs, run)
    if run.inserted == 0 and run.shard_level and len(run.errors) == (
        1 if req.ordered else len(docs.datas)
    ) and all(e.code == run.shard_level[0].code for e in run.errors):
        raise run.shard_level[0]  # nothing was written: fail the call itself
    out.inserted_count = run.inserted
    if run.answers:
        wce = worst_write_concern_error(run.answers)
        if wce is not None:
            out.write_concern_error.CopyFrom(wce)
    run.errors.sort(key=lambda e: e.index)
    for e in run.errors:
        out.errors.add(index=e.index, error=e.message, code=e.code, code_name=e.code_name)
    if run.errors:
        first = run.errors[0]
        out.error.CopyFrom(
            error_pb2.Error(code=first.code, code_name=first.code_name, message=first.message)
        )
    return out


async def _send_batch(
    ctx: RouterContext,
    req: routing_pb2.InsertRequest,
    table: RoutingTable,
    batch: Batch | ShardGroup,
    ordered: bool,
    retry: RetryIdentity | None,
) -> shard_pb2.ShardInsertResponse:
    sreq = shard_pb2.ShardInsertRequest(
        request_id=current_request_id(),
        database=req.database,
        collection=req.collection,
        documents=batch.documents,
        ordered=ordered,
        version=table.shard_version(batch.shard),
    )
    if retry is not None:
        sreq.retry_id = retry.retry_id
        if isinstance(batch, ShardGroup):
            sreq.stmt_ids.extend(batch.indexes)
        else:
            sreq.stmt_ids.extend(item.index for item in batch.items)
        sreq.retry_fingerprint = retry.fingerprint
    if req.HasField("write_concern"):
        sreq.write_concern.CopyFrom(req.write_concern)
    address = ctx.shards.address_of(table, batch.shard)
    resp: shard_pb2.ShardInsertResponse = await ctx.shards.call(batch.shard, address, "Insert", sreq)
    return resp


def _shard_errors(resp: shard_pb2.ShardInsertResponse) -> list[tuple[int, int, str, str]]:
    return [(e.index, e.code, e.code_name, e.message) for e in resp.errors]


async def _insert_ordered(
    ctx: RouterContext,
    req: routing_pb2.InsertRequest,
    table: RoutingTable,
    items: list[RoutedDoc],
    run: _InsertRun,
) -> None:
    pos = 0  # items[:pos] are done
    stale_attempts = 0
    while pos < len(items):
        rest = items[pos:]
        route(rest, shard_function(table))
        runs, bad = ordered_runs(rest)
        metrics.record_targeting("insert", len({r.shard for r in runs}))
        pending = deque(piece for r in runs for piece in split_batch(r))
        refreshed = False
        while pending:
            batch = pending.popleft()
            try:
                resp = await _send_batch(ctx, req, table, batch, True, run.retry)
            except LauraError as err:
                if is_stale(err) and stale_attempts < MAX_STALE_RETRIES:
                    table = await ctx.cache.refresh(req.database, req.collection, table)
                    await asyncio.sleep(stale_backoff(stale_attempts))
                    stale_attempts += 1
                    refreshed = True
                    break
                run.batch_failed(batch, err, ordered=True)
                return
            stale_attempts = 0
            run.inserted += resp.inserted_count
            if resp.HasField("write_concern_error"):
                run.answers.append(resp)
            if resp.errors:
                run.errors.extend(map_errors(batch, _shard_errors(resp)[:1]))
                return
            pos += len(batch.items)
        if refreshed:
            continue
        if bad is not None:
            assert bad.error is not None
            run.errors.append(WriteErrorInfo.of(bad.index, bad.error))
        return


async def _insert_unordered(
    ctx: RouterContext,
    req: routing_pb2.InsertRequest,
    table: RoutingTable,
    docs: Prepared,
    run: _InsertRun,
) -> None:
    groups, unroutable = group_unordered(docs, range(len(docs.datas)), shard_function(table))
    metrics.record_targeting("insert", len(groups))
    run.errors.extend(WriteErrorInfo.of(i, err) for i, err in unroutable)
    await asyncio.gather(*(_unordered_shard(ctx, req, table, docs, g, run, 0) for g in groups))


async def _unordered_shard(
    ctx: RouterContext,
    req: routing_pb2.InsertRequest,
    table: RoutingTable,
    docs: Prepared,
    group: ShardGroup,
    run: _InsertRun,
    attempt: int,
) -> None:
    for piece in split_group(group):
        try:
            resp = await _send_batch(ctx, req, table, piece, False, run.retry)
        except LauraError as err:
            if is_stale(err) and attempt < MAX_STALE_RETRIES:
                new_table = await ctx.cache.refresh(req.database, req.collection, table)
                await asyncio.sleep(stale_backoff(attempt))
                regrouped, unroutable = group_unordered(
                    docs, piece.indexes, shard_function(new_table)
                )
                run.errors.extend(WriteErrorInfo.of(i, e) for i, e in unroutable)
                await asyncio.gather(*(
                    _unordered_shard(ctx, req, new_table, docs, g, run, attempt + 1)
                    for g in regrouped
                ))  # fmt: skip
                continue
            run.group_failed(piece, err)
            continue
        run.inserted += resp.inserted_count
        if resp.HasField("write_concern_error"):
            run.answers.append(resp)
        run.errors.extend(map_errors(piece, _shard_errors(resp)))


# ============================================================================ update / delete


def candidate_filter(filter_doc: Mapping[str, Any], doc_id: Any) -> dict[str, Any]:
    """The filter that updates/deletes exactly the chosen candidate (if it still matches)."""
    if not filter_doc:
        return {"_id": doc_id}
    return {"$and": [dict(filter_doc), {"_id": doc_id}]}


def pick_candidate(
    results: Sequence[tuple[str, Sequence[bytes]]],
) -> tuple[str, Any] | None:
    """The first ``(shard, _id)`` found, in the order the shards were asked."""
    for shard, docs in results:
        for data in docs:
            doc = bson.decode(data)
            if "_id" in doc:
                return shard, doc["_id"]
    return None


def _require_upsert_target(table: RoutingTable, targets: Targets) -> None:
    if table.sharded and not targets.exact_single_key:
        fields = list(table.pattern.fields) if table.pattern is not None else []
        raise LauraError(
            ErrorCode.SHARD_KEY_NOT_FOUND,
            f"Failed to target upsert by query :: could not extract exact shard key; "
            f"an upsert on a sharded collection must include the full shard key {fields} "
            f"by equality in its filter",
        )


async def _broadcast(
    ctx: RouterContext,
    database: str,
    collection: str,
    table: RoutingTable,
    targets_of: Callable[[RoutingTable], list[str]],
    send: Callable[[RoutingTable, str], Awaitable[T]],
    first: list[str] | None = None,
) -> list[T]:
    """Send to every targeted shard concurrently; shards answering STALE_CONFIG are
    retried after a refresh (shards that already succeeded are not asked again).
    ``first``: the shards of the first attempt, when the caller has just targeted
    ``table`` (not targeted again)."""
    done: set[str] = set()
    results: list[T] = []
    attempt = 0
    while True:
        if first is not None:
            shards, first = first, None
        else:
            shards = [s for s in targets_of(table) if s not in done]
        answers: list[T | BaseException]
        if len(shards) == 1:
            # One shard (a targeted write): awaited here, no task and no gather.
            try:
                answers = [await send(table, shards[0])]
            except LauraError as err:
                answers = [err]
        else:
            answers = await asyncio.gather(*(send(table, s) for s in shards), return_exceptions=True)
        stale: LauraError | None = None
        failure: BaseException | None = None
        for s, a in zip(shards, answers, strict=True):
            if isinstance(a, LauraError) and is_stale(a):
                stale = stale or a
            elif isinstance(a, BaseException):
                failure = failure or a
            else:
                done.add(s)
                results.append(a)
        if failure is not None:
            raise failure
        if stale is None:
            return results
        if attempt >= MAX_STALE_RETRIES:
            raise stale
        table = await ctx.cache.refresh(database, collection, table)
        await asyncio.sleep(stale_backoff(attempt))
        attempt += 1


class _WriteSpec:
    """The decoded parts of an update/delete request (decoded only when needed)."""

    def __init__(
        self,
        filter_bytes: bytes,
        update_bytes: bytes | None,
        array_filters: Sequence[bytes],
    ) -> None:
        self.filter_bytes = filter_bytes
        self.update_bytes = update_bytes
        self.array_filter_bytes = list(array_filters)
        self._filter: dict[str, Any] | None = None
        self._validated = False

    @property
    def filter(self) -> dict[str, Any]:
        if self._filter is None:
            self._filter = decode_field(self.filter_bytes, "query filter")
        return self._filter

    def validate(self) -> None:
        """Compile filter and update once at the router (before a fan-out)."""
        if self._validated:
            return
        compile_filter(self.filter)
        if self.update_bytes is not None:
            update_doc = decode_required(self.update_bytes, "update")
            afs = [decode_field(a, "array filter") for a in self.array_filter_bytes]
            compile_update(update_doc, array_filters=afs or None)
        self._validated = True


async def update(
    ctx: RouterContext, req: routing_pb2.UpdateRequest, retry: RetryIdentity | None = None
) -> routing_pb2.UpdateResponse:
    check_namespace(req.database, req.collection)
    if req.multi:
        retry = None  # multi updates are not retryable
    if not req.update:
        raise LauraError(ErrorCode.FAILED_TO_PARSE, "update is required")
    spec = _WriteSpec(req.query, req.update, req.array_filters)
    if req.upsert:
        table = await ctx.table_for_write(req.database, req.collection)
    else:
        maybe = ctx.cache.cached(req.database, req.collection) or await ctx.table_or_none(
            req.database, req.collection
        )
        if maybe is None:
            spec.validate()
            return routing_pb2.UpdateResponse(request_id=req.request_id)
        table = maybe
        if not req.multi and table.point_locate is not None:
            shard = table.point_locate(spec.filter)
            if shard is not None:
                try:
                    return await _point_update(ctx, req, table, shard, retry)
                except LauraError as err:
                    if not is_stale(err):
                        raise
                # the general path below, on a refreshed map
                table = await ctx.cache.refresh(req.database, req.collection, table)

    def shard_request(
        table: RoutingTable, shard: str, filter_bytes: bytes, history_only: bool
    ) -> shard_pb2.ShardUpdateRequest:
        sreq = shard_pb2.ShardUpdateRequest(
            request_id=current_request_id(),
            database=req.database,
            collection=req.collection,
            filter=filter_bytes,
            update=req.update,
            version=table.shard_version(shard),
        )
        # Only what is set (a point update sets none of these: fewer fields to copy).
        if req.multi:
            sreq.multi = True
        if req.upsert:
            sreq.upsert = True
        if req.array_filters:
            sreq.array_filters.extend(req.array_filters)
        if retry is not None:
            sreq.retry_id = retry.retry_id
            sreq.retry_fingerprint = retry.fingerprint
            sreq.history_only = history_only
        if req.HasField("write_concern"):
            sreq.write_concern.CopyFrom(req.write_concern)
        return sreq

    async def send(
        table: RoutingTable, shard: str, filter_bytes: bytes = req.query,
        history_only: bool = False,
    ) -> Any:
        address = ctx.shards.address_of(table, shard)
        return await ctx.shards.call(
            shard, address, "Update", shard_request(table, shard, filter_bytes, history_only)
        )

    def finish(answers: list[Any]) -> routing_pb2.UpdateResponse:
        out = routing_pb2.UpdateResponse(request_id=req.request_id)
        for a in answers:
            out.matched_count += a.matched_count
            out.modified_count += a.modified_count
            if a.upserted_id:
                out.upserted_count += 1
                out.upserted_id = a.upserted_id
        wce = worst_write_concern_error(answers)
        if wce is not None:
            out.write_concern_error.CopyFrom(wce)
        return out

    return await _targeted_write(
        ctx, req.database, req.collection, table, spec, req.multi, req.upsert, send, finish,
        retry,
    )


async def _point_update(
    ctx: RouterContext,
    req: routing_pb2.UpdateRequest,
    table: RoutingTable,
    shard: str,
    retry: RetryIdentity | None,
) -> routing_pb2.UpdateResponse:
    """``update`` of a point filter (not multi, not upsert), in fewer steps: one
    shard request, the answer copied (the general path's ``send`` + ``finish``)."""
    sreq = shard_pb2.ShardUpdateRequest(
        request_id=current_request_id(),
        database=req.database,
        collection=req.collection,
        filter=req.query,
        update=req.update,
        version=table.shard_version(shard),
    )
    if req.array_filters:
        sreq.array_filters.extend(req.array_filters)
    if retry is not None:
        sreq.retry_id = retry.retry_id
        sreq.retry_fingerprint = retry.fingerprint
    if req.HasField("write_concern"):
        sreq.write_concern.CopyFrom(req.write_concern)
    client = ctx.shards
    resp = await client.call(shard, client.address_of(table, shard), "Update", sreq)
    _UPDATE_TARGETED.inc()
    _UPDATE_SHARDS.observe(1)
    out = routing_pb2.UpdateResponse(
        request_id=req.request_id,
        matched_count=resp.matched_count,
        modified_count=resp.modified_count,
    )
    if resp.HasField("write_concern_error"):
        out.write_concern_error.CopyFrom(resp.write_concern_error)
    return out


_UPDATE_TARGETED = metrics.TARGETED.labels("update")
_UPDATE_SHARDS = metrics.SHARDS_PER_REQUEST.labels("update")


async def delete(
    ctx: RouterContext, req: routing_pb2.DeleteRequest, retry: RetryIdentity | None = None
) -> routing_pb2.DeleteResponse:
    check_namespace(req.database, req.collection)
    if req.multi:
        retry = None  # multi deletes are not retryable
    spec = _WriteSpec(req.query, None, ())
    maybe = ctx.cache.cached(req.database, req.collection) or await ctx.table_or_none(
        req.database, req.collection
    )
    if maybe is None:
        spec.validate()
        return routing_pb2.DeleteResponse(request_id=req.request_id)
    table = maybe

    async def send(
        table: RoutingTable, shard: str, filter_bytes: bytes = req.query,
        history_only: bool = False,
    ) -> Any:
        address = ctx.shards.address_of(table, shard)
        sreq = shard_pb2.ShardDeleteRequest(
            request_id=current_request_id(),
            database=req.database,
            collection=req.collection,
            filter=filter_bytes,
            multi=req.multi,
            version=table.shard_version(shard),
        )
        if retry is not None:
            sreq.retry_id = retry.retry_id
            sreq.retry_fingerprint = retry.fingerprint
            sreq.history_only = history_only
        if req.HasField("write_concern"):
            sreq.write_concern.CopyFrom(req.write_concern)
        return await ctx.shards.call(shard, address, "Delete", sreq)

    def finish(answers: list[Any]) -> routing_pb2.DeleteResponse:
        out = routing_pb2.DeleteResponse(
            request_id=req.request_id, deleted_count=sum(a.deleted_count for a in answers)
        )
        wce = worst_write_concern_error(answers)
        if wce is not None:
            out.write_concern_error.CopyFrom(wce)
        return out

    return await _targeted_write(
        ctx, req.database, req.collection, table, spec, req.multi, False, send, finish, retry
    )


async def _targeted_write(
    ctx: RouterContext,
    database: str,
    collection: str,
    table: RoutingTable,
    spec: _WriteSpec,
    multi: bool,
    upsert: bool,
    send: Callable[..., Awaitable[Any]],
    finish: Callable[[list[Any]], T],
    retry: RetryIdentity | None,
) -> T:
    operation = "delete" if spec.update_bytes is None else "update"
    attempt = 0
    while not table.sharded:
        metrics.record_targeting(operation, 1)
        # Lean path: the primary shard holds everything and validates the request.
        try:
            return finish([await send(table, table.primary_shard)])
        except LauraError as err:
            if not is_stale(err) or attempt >= MAX_STALE_RETRIES:
                raise
        table = await ctx.cache.refresh(database, collection, table)
        await asyncio.sleep(stale_backoff(attempt))
        attempt += 1

    point = None if upsert or table.point_locate is None else table.point_locate(spec.filter)
    if point is not None:  # a point write: one shard, exactly (no target analysis)
        shards = [point]
        metrics.record_targeting(operation, 1)
    else:
        targets = target_filter(table, spec.filter)
        shards = targets.shards
        metrics.record_targeting(operation, len(shards))
        if upsert:
            _require_upsert_target(table, targets)
        if len(shards) > 1 and not (multi or targets.exact_single_key):
            spec.validate()
            return finish(await _two_phase(ctx, database, collection, table, spec, send, retry))
        if len(shards) > 1:
            spec.validate()

    def targets_of(t: RoutingTable) -> list[str]:
        return target_filter(t, spec.filter).shards

    first: list[str] | None = shards
    if len(shards) == 1:
        # The hot path: one call, no retry loop unless the version was stale.
        try:
            return finish([await send(table, shards[0])])
        except LauraError as err:
            if not is_stale(err):
                raise
        table = await ctx.cache.refresh(database, collection, table)
        await asyncio.sleep(stale_backoff(0))
        first = None
    return finish(await _broadcast(ctx, database, collection, table, targets_of, send, first))


async def _two_phase(
    ctx: RouterContext,
    database: str,
    collection: str,
    table: RoutingTable,
    spec: _WriteSpec,
    send: Callable[..., Awaitable[Any]],
    retry: RetryIdentity | None,
) -> list[Any]:
    """multi=false without the shard key: find one candidate, then write it by _id.

    Retryable: the query phase also asks each shard whether it executed the statement
    already; a shard that did answers from its record instead (nothing is applied).
    """
    stale_attempts = 0
    for _ in range(MAX_TWO_PHASE_ATTEMPTS + MAX_STALE_RETRIES):
        shards = target_filter(table, spec.filter).shards
        fields = {"_id": 1}
        if table.pattern is not None:
            for f in table.pattern.fields:
                if f != "_id" and not f.startswith("_id."):
                    fields[f] = 1
        projection = bson.encode(fields)
        addresses = [ctx.shards.address_of(table, s) for s in shards]
        calls = [
            ctx.shards.call(
                s,
                addr,
                "Find",
                shard_pb2.ShardFindRequest(
                    request_id=current_request_id(),
                    database=database,
                    collection=collection,
                    filter=spec.filter_bytes,
                    projection=projection,
                    limit=1,
                    batch_size=1,
                    version=table.shard_version(s),
                    retry_id=retry.retry_id if retry is not None else "",
                ),
            )
            for s, addr in zip(shards, addresses, strict=True)
        ]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        leftovers = [
            (s, addr, a.cursor_id)
            for s, addr, a in zip(shards, addresses, answers, strict=True)
            if not isinstance(a, BaseException) and a.cursor_id
        ]
        if leftovers:
            await ctx.shards.kill_cursors(leftovers)
        executed = next(
            (
                s for s, a in zip(shards, answers, strict=True)
                if not isinstance(a, BaseException) and a.retry_executed
            ),
            None,
        )
        if executed is not None:
            # A retry of a statement this shard executed: its record answers.
            try:
                return [await send(table, executed, spec.filter_bytes, True)]
            except LauraError as err:
                if is_stale(err) and stale_attempts < MAX_STALE_RETRIES:
                    table = await ctx.cache.refresh(database, collection, table)
                    await asyncio.sleep(stale_backoff(stale_attempts))
                    stale_attempts += 1
                    continue
                raise
        errors = [a for a in answers if isinstance(a, BaseException)]
        stale = next((e for e in errors if isinstance(e, LauraError) and is_stale(e)), None)
        if stale is not None:
            if stale_attempts >= MAX_STALE_RETRIES:
                raise stale
            table = await ctx.cache.refresh(database, collection, table)
            await asyncio.sleep(stale_backoff(stale_attempts))
            stale_attempts += 1
            continue
        if errors:
            raise errors[0]
        found = pick_candidate(
            [(s, list(a.documents)) for s, a in zip(shards, answers, strict=True)]  # type: ignore[union-attr]
        )
        if found is None:
            return []
        shard, doc_id = found
        narrowed = bson.encode(candidate_filter(spec.filter, doc_id))
        try:
            answer = await send(table, shard, narrowed)
        except LauraError as err:
            if is_stale(err) and stale_attempts < MAX_STALE_RETRIES:
                table = await ctx.cache.refresh(database, collection, table)
                await asyncio.sleep(stale_backoff(stale_attempts))
                stale_attempts += 1
                continue
            raise
        matched = getattr(answer, "matched_count", None)
        if matched is None:
            matched = getattr(answer, "deleted_count", 0)
        if matched:
            return [answer]
        log.info("candidate %r on %s no longer matched; retrying", doc_id, shard)
    return []
