"""``$out`` and ``$merge``: an aggregation's results written to a collection.

Both are executed by the router (the pipeline engine only validates their place):
the rest of the pipeline runs as usual, and its results are written through the
router's own write path, so the target may live on any shard.

* ``$out: "coll"`` or ``{db, coll}`` replaces the target's contents. There is no
  rename to make that atomic, so the router deletes every document of the target
  and then inserts the results (ordered batches of 1000); the target's indexes
  stay. Results are first collected in memory up to the pipeline's memory budget,
  so a pipeline that fails (or an over-budget ``$group``) leaves the target
  untouched; a larger result is streamed into the target after the delete (then
  a failure half way leaves the target partly written). When the pipeline itself
  reads the target (it is the source collection, or a ``$lookup``/``$unionWith``
  reads it) the whole result must fit in the budget, else EXCEEDED_MEMORY_LIMIT.
  A sharded target is refused (ILLEGAL_OPERATION), as in MongoDB.
* ``$merge: "coll"`` or ``{into, on: "_id", whenMatched, whenNotMatched}`` merges
  each result into the target by ``_id``: whenMatched ``merge`` (default: the
  result's top-level fields are set on the existing document), ``replace``,
  ``keepExisting`` or ``fail`` (DUPLICATE_KEY); whenNotMatched ``insert``
  (default), ``discard`` or ``fail``. For each batch of results the router reads
  the matching target documents (one ``_id: {$in: [...]}`` query), then inserts
  the new ones in one batch and replaces the matched ones by ``_id``. Only
  ``on: "_id"`` and the string forms of whenMatched are supported
  (NOT_IMPLEMENTED otherwise). A sharded target must be sharded on ``_id``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import bson
from bson.objectid import ObjectId

from lauradb.bsonkit.codec import encode_document
from lauradb.bsonkit.keys import encode_value
from lauradb.cluster import routing_pb2
from lauradb.errors import ErrorCode, LauraError
from router import writes
from router.agg_pipeline import Opened, foreign_collections, open_pipeline, stats
from router.context import RouterContext
from router.namespaces import check_namespace
from router.query_exec import find

__all__ = ["OutputSpec", "run_output", "split_output"]

OUTPUT_STAGES = ("$out", "$merge")
OUTPUT_BATCH = 1000
UPDATE_CONCURRENCY = 32
WHEN_MATCHED = ("merge", "replace", "keepExisting", "fail")
WHEN_NOT_MATCHED = ("insert", "discard", "fail")


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    stage: str  # "$out" or "$merge"
    database: str
    collection: str
    when_matched: str = "merge"
    when_not_matched: str = "insert"

    @property
    def namespace(self) -> str:
        return f"{self.database}.{self.collection}"


def _bad(message: str) -> LauraError:
    return LauraError(ErrorCode.INVALID_PIPELINE, message)


def _target(stage: str, value: Any, database: str) -> tuple[str, str]:
    if isinstance(value, str):
        if not value:
            raise _bad(f"{stage} needs a non-empty collection name")
        check_namespace(database, value)
        return database, value
    if isinstance(value, Mapping):
        extra = [k for k in value if k not in ("db", "coll")]
        if extra:
            raise _bad(f"{stage}: unknown field {extra[0]!r} (expected 'db' and 'coll')")
        db, coll = value.get("db"), value.get("coll")
        if not isinstance(db, str) or not isinstance(coll, str) or not db or not coll:
            raise _bad(f"{stage} needs 'db' and 'coll' as non-empty strings")
        check_namespace(db, coll)
        return db, coll
    raise _bad(f"{stage} takes a collection name or a document {{db, coll}}")


def _parse_merge(arg: Any, database: str) -> OutputSpec:
    if isinstance(arg, str):
        db, coll = _target("$merge", arg, database)
        return OutputSpec("$merge", db, coll)
    if not isinstance(arg, Mapping):
        raise _bad("$merge takes a collection name or a document")
    known = ("into", "on", "whenMatched", "whenNotMatched", "let")
    extra = [k for k in arg if k not in known]
    if extra:
        raise _bad(f"$merge: unknown field {extra[0]!r}")
    if "into" not in arg:
        raise _bad("$merge requires 'into'")
    db, coll = _target("$merge", arg["into"], database)
    on = arg.get("on", "_id")
    if on not in ("_id", ["_id"]):
        raise LauraError(ErrorCode.NOT_IMPLEMENTED, "$merge supports only on: '_id'")
    if "let" in arg:
        raise LauraError(ErrorCode.NOT_IMPLEMENTED, "$merge does not support 'let'")
    matched = arg.get("whenMatched", "merge")
    if isinstance(matched, list):
        raise LauraError(
            ErrorCode.NOT_IMPLEMENTED, "$merge does not support a pipeline for whenMatched"
        )
    if matched not in WHEN_MATCHED:
        raise _bad(f"$merge: whenMatched must be one of {', '.join(WHEN_MATCHED)}")
    not_matched = arg.get("whenNotMatched", "insert")
    if not_matched not in WHEN_NOT_MATCHED:
        raise _bad(f"$merge: whenNotMatched must be one of {', '.join(WHEN_NOT_MATCHED)}")
    return OutputSpec("$merge", db, coll, matched, not_matched)


def split_output(
    stages: list[dict[str, Any]], database: str
) -> tuple[list[dict[str, Any]], OutputSpec | None]:
    """``(stages before the output stage, its parsed spec)``; (stages, None) without one."""
    for spec in stages[:-1]:
        if isinstance(spec, Mapping) and len(spec) == 1 and next(iter(spec)) in OUTPUT_STAGES:
            raise _bad(f"{next(iter(spec))} can only be the final stage in the pipeline")
    if not stages:
        return stages, None
    last = stages[-1]
    if not isinstance(last, Mapping) or len(last) != 1:
        return stages, None
    name = next(iter(last))
    if name == "$out":
        db, coll = _target("$out", last[name], database)
        return stages[:-1], OutputSpec("$out", db, coll)
    if name == "$merge":
        return stages[:-1], _parse_merge(last[name], database)
    return stages, None


# ============================================================================ running


async def run_output(
    ctx: RouterContext,
    req: routing_pb2.AggregationRequest,
    inner: list[dict[str, Any]],
    output: OutputSpec,
    budget: int,
    start: float,
) -> routing_pb2.AggregationResponse:
    target = await ctx.table_or_none(output.database, output.collection)
    if target is not None and target.sharded:
        fields = list(target.pattern.fields) if target.pattern is not None else []
        if output.stage == "$out":
            raise LauraError(
                ErrorCode.ILLEGAL_OPERATION,
                f"$out cannot write to the sharded collection {output.namespace}",
            )
        if fields != ["_id"]:
            raise LauraError(
                ErrorCode.ILLEGAL_OPERATION,
                f"$merge into the sharded collection {output.namespace} needs 'on' to "
                f"include its shard key {fields}; only on: '_id' is supported",
            )
    reads_target = output.database == req.database and (
        output.collection == req.collection
        or output.collection in foreign_collections(inner)
    )
    raw = [encode_document(s) for s in inner]
    opened = await open_pipeline(
        ctx, req, inner, raw, budget=budget, first=OUTPUT_BATCH,
        at_router=bool(req.max_memory_bytes),
    )
    writer = _OutWriter(ctx, output) if output.stage == "$out" else _MergeWriter(ctx, output)
    examined = await _drain(opened, writer, budget, reads_target, output)
    out = routing_pb2.AggregationResponse(request_id=req.request_id)
    out.stats.CopyFrom(stats(opened.shards if opened is not None else [], examined, 0, start))
    return out


class _Writer:
    async def begin(self) -> None:
        """Called once, before the first write (even when there are no results)."""

    async def write(self, batch: list[bytes]) -> None:
        raise NotImplementedError


async def _drain(
    opened: Opened | None, writer: _Writer, budget: int, reads_target: bool, output: OutputSpec
) -> int:
    """Pull every result and hand it to ``writer``; the documents examined."""
    if opened is None:
        await writer.begin()
        return 0
    source = opened.source
    examined = 0
    buffered: list[bytes] = []
    size = 0
    streaming = False
    try:
        while not source.exhausted:
            batch = await source.next_batch(OUTPUT_BATCH)
            examined += source.take_examined()
            if streaming:
                await writer.write(batch)
                continue
            buffered.extend(batch)
            size += sum(len(d) for d in batch)
            if size > budget:
                if reads_target:
                    raise LauraError(
                        ErrorCode.EXCEEDED_MEMORY_LIMIT,
                        f"{output.stage} into {output.namespace}, which the pipeline reads, "
                        f"must hold its whole result in memory, and it exceeds the "
                        f"{budget} byte budget",
                    )
                streaming = True
                await writer.begin()
                for i in range(0, len(buffered), OUTPUT_BATCH):
                    await writer.write(buffered[i : i + OUTPUT_BATCH])
                buffered = []
    finally:
        if not source.exhausted:
            await source.aclose()
    if not streaming:
        await writer.begin()
        for i in range(0, len(buffered), OUTPUT_BATCH):
            await writer.write(buffered[i : i + OUTPUT_BATCH])
    return examined


def _insert_error(resp: routing_pb2.InsertResponse, output: OutputSpec) -> LauraError:
    first = resp.errors[0]
    try:
        code = ErrorCode(first.code)
    except ValueError:
        code = ErrorCode.OPERATION_FAILED
    return LauraError(code, f"{output.stage} into {output.namespace} failed: {first.error}")


async def _insert(ctx: RouterContext, output: OutputSpec, docs: Sequence[bytes]) -> None:
    if not docs:
        return
    resp = await writes.insert(
        ctx,
        routing_pb2.InsertRequest(
            database=output.database,
            collection=output.collection,
            documents=list(docs),
            ordered=True,
        ),
    )
    if resp.errors:
        raise _insert_error(resp, output)


class _OutWriter(_Writer):
    """``$out``: delete everything in the target, then insert the results."""

    def __init__(self, ctx: RouterContext, output: OutputSpec) -> None:
        self.ctx = ctx
        self.output = output

    async def begin(self) -> None:
        await writes.delete(
            self.ctx,
            routing_pb2.DeleteRequest(
                database=self.output.database,
                collection=self.output.collection,
                query=encode_document({}),
                multi=True,
            ),
        )

    async def write(self, batch: list[bytes]) -> None:
        await _insert(self.ctx, self.output, batch)


class _MergeWriter(_Writer):
    """``$merge`` by ``_id``."""

    def __init__(self, ctx: RouterContext, output: OutputSpec) -> None:
        self.ctx = ctx
        self.output = output

    async def _existing(self, ids: list[Any]) -> dict[bytes, dict[str, Any]]:
        req = routing_pb2.QueryRequest(
            database=self.output.database,
            collection=self.output.collection,
            query=encode_document({"_id": {"$in": ids}}),
            batch_size=len(ids) + 1,
        )
        resp = await find(self.ctx, req)
        out: dict[bytes, dict[str, Any]] = {}
        docs = list(resp.documents)
        cursor_id = resp.cursor_id if resp.more_available else ""
        while cursor_id:
            more_docs, more, _, _ = await self.ctx.cursors.get_more(cursor_id, OUTPUT_BATCH)
            docs.extend(more_docs)
            cursor_id = cursor_id if more else ""
        for data in docs:
            doc = bson.decode(data)
            out[encode_value(doc["_id"])] = doc
        return out

    async def write(self, batch: list[bytes]) -> None:
        docs = [bson.decode(d) for d in batch]
        for i, doc in enumerate(docs):
            if "_id" not in doc:
                docs[i] = {"_id": ObjectId(), **doc}
        state = await self._existing([d["_id"] for d in docs])
        existed = set(state)
        changed: dict[bytes, dict[str, Any]] = {}  # key -> final document, in order
        failure: LauraError | None = None
        for doc in docs:
            key = encode_value(doc["_id"])
            current = state.get(key)
            if current is None:
                if self.output.when_not_matched == "discard":
                    continue
                if self.output.when_not_matched == "fail":
                    failure = LauraError(
                        ErrorCode.OPERATION_FAILED,
                        f"$merge: no document with _id {doc['_id']!r} in {self.output.namespace}"
                        " and whenNotMatched is 'fail'",
                    )
                    break
                new = doc
            else:
                mode = self.output.when_matched
                if mode == "keepExisting":
                    continue
                if mode == "fail":
                    failure = LauraError(
                        ErrorCode.DUPLICATE_KEY,
                        f"$merge: a document with _id {doc['_id']!r} already exists in "
                        f"{self.output.namespace} and whenMatched is 'fail'",
                        {"keyValue": {"_id": doc["_id"]}},
                    )
                    break
                new = doc if mode == "replace" else {**current, **doc}
            state[key] = new
            changed.pop(key, None)
            changed[key] = new
        await self._apply(changed, existed)
        if failure is not None:
            raise failure

    async def _apply(self, changed: dict[bytes, dict[str, Any]], existed: set[bytes]) -> None:
        inserts = [encode_document(d) for k, d in changed.items() if k not in existed]
        replaces = [d for k, d in changed.items() if k in existed]
        await _insert(self.ctx, self.output, inserts)
        await _bounded([functools.partial(self._replace, d) for d in replaces], UPDATE_CONCURRENCY)

    async def _replace(self, doc: dict[str, Any]) -> None:
        await writes.update(
            self.ctx,
            routing_pb2.UpdateRequest(
                database=self.output.database,
                collection=self.output.collection,
                query=encode_document({"_id": doc["_id"]}),
                update=encode_document(doc),
                multi=False,
                upsert=False,
            ),
        )


async def _bounded(jobs: list[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run ``jobs`` with at most ``limit`` at a time; the first failure is raised."""
    for i in range(0, len(jobs), limit):
        await asyncio.gather(*(job() for job in jobs[i : i + limit]))
