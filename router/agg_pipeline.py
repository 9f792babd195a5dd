"""Running an aggregation pipeline over a collection: the shard/router execution.

``open_pipeline`` starts a (validated) pipeline and returns a cursor source:

* one targeted shard (an unsharded collection, or a leading ``$match`` that targets
  one shard, e.g. an equality on the full shard key): the whole pipeline runs there
  and its cursor is passed through;
* several shards: ``split_pipeline`` cuts the pipeline; the shard part runs on every
  targeted shard, the shard streams are merged (merge-sorted when the split says so)
  and the merge part runs at the router under a memory budget. The merge part is
  synchronous engine code, so it runs in a worker thread that pulls merged shard
  batches from the event loop on demand (``PipelineSource``): nothing is loaded
  whole unless a stage (e.g. ``$group``) needs it. ``at_router`` forces this path
  even for one shard (a request that sets its own memory budget);
* ``$lookup``/``$unionWith`` (anywhere, sub-pipelines included) read their foreign
  collection through the router's own find path, so sharded and unsharded foreign
  collections both work; such pipelines never run whole on a shard.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import bson

from lauradb.cluster import routing_pb2, shard_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.pipeline import Pipeline, compile_pipeline
from lauradb.query.sort import compile_sort
from lauradb.query.split import split_pipeline
from router import metrics
from router.context import RouterContext
from router.cursors import BatchSource, MergeSource
from router.merge import DEFAULT_BATCH_BYTES, MergedStream, ShardStream, raw_sort_key
from router.namespaces import check_namespace
from router.query_exec import find, gather_or_raise, make_fetch
from router.routing_table import RoutingTable
from router.shard_client import read_preference, set_read_options
from router.targets import target_filter

__all__ = [
    "Opened",
    "PipelineSource",
    "foreign_collections",
    "open_pipeline",
    "stats",
    "validate_pipeline",
]

_INPUT_BATCH = 1000
_BRIDGE_TIMEOUT = 300.0


def _unused_resolver(_name: str) -> Iterable[dict[str, Any]]:
    return iter(())


def foreign_collections(stages: Any) -> set[str]:
    """Names read by ``$lookup``/``$unionWith`` anywhere in ``stages`` (nested too)."""
    found: set[str] = set()
    todo: list[Any] = [stages]
    while todo:
        value = todo.pop()
        if isinstance(value, Mapping):
            lookup = value.get("$lookup")
            if isinstance(lookup, Mapping) and isinstance(lookup.get("from"), str):
                found.add(lookup["from"])
            union = value.get("$unionWith")
            if isinstance(union, str):
                found.add(union)
            elif isinstance(union, Mapping) and isinstance(union.get("coll"), str):
                found.add(union["coll"])
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
    return found


def _reads_foreign(stages: list[dict[str, Any]]) -> bool:
    todo: list[Any] = [stages]
    while todo:
        value = todo.pop()
        if isinstance(value, Mapping):
            if "$lookup" in value or "$unionWith" in value:
                return True
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
    return False


def validate_pipeline(stages: list[dict[str, Any]], budget: int) -> None:
    """Compile once at the router: bad input fails here, before any fan-out."""
    compile_pipeline(stages, resolver=_unused_resolver, memory_limit_bytes=budget)


class PipelineSource:
    """Router cursor source: a merge pipeline over a merged shard stream.

    ``next_batch`` runs the (synchronous) pipeline in a worker thread; the
    pipeline's input iterator fetches merged shard batches back on the event loop.
    """

    def __init__(
        self,
        merged: MergedStream,
        pipeline: Pipeline,
        kill: Any,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._merged = merged
        self._pipeline = pipeline
        self._kill = kill
        self._loop = loop
        self._iter: Iterator[dict[str, Any]] | None = None
        self._pending: bytes | None = None
        self._done = False
        self.examined = 0

    @property
    def exhausted(self) -> bool:
        return self._done and self._pending is None

    def take_examined(self) -> int:
        n = self.examined + self._merged.take_examined()
        self.examined = 0
        return n

    def _input(self) -> Iterator[dict[str, Any]]:
        while True:
            fut = asyncio.run_coroutine_threadsafe(
                self._merged.next_batch(_INPUT_BATCH), self._loop
            )
            try:
                batch = fut.result(timeout=_BRIDGE_TIMEOUT)
            except concurrent.futures.TimeoutError:
                fut.cancel()
                raise LauraError(
                    ErrorCode.EXCEEDED_TIME_LIMIT, "shards did not deliver aggregation input"
                ) from None
            if not batch:
                return
            for data in batch:
                yield bson.decode(data)

    def _pull(self, max_docs: int, max_bytes: int) -> list[bytes]:
        out: list[bytes] = []
        size = 0
        if self._pending is not None:
            out.append(self._pending)
            size = len(self._pending)
            self._pending = None
        if self._done:
            return out
        if self._iter is None:
            self._iter = self._pipeline.run(self._input())
        try:
            for doc in self._iter:
                try:
                    data = bson.encode(doc)
                except Exception as exc:
                    raise LauraError(
                        ErrorCode.BAD_VALUE, f"cannot encode a result: {exc}"
                    ) from None
                if len(out) >= max_docs or (out and size + len(data) > max_bytes):
                    self._pending = data  # there is more: keep it for the next batch
                    return out
                out.append(data)
                size += len(data)
        except MemoryError:
            self._iter = None
            raise LauraError(
                ErrorCode.EXCEEDED_MEMORY_LIMIT,
                "the router ran out of memory running the aggregation's merge stages",
            ) from None
        self._done = True
        return out

    async def next_batch(self, max_docs: int, max_bytes: int = DEFAULT_BATCH_BYTES) -> list[bytes]:
        try:
            docs = await self._loop.run_in_executor(None, self._pull, max(max_docs, 1), max_bytes)
        except BaseException:
            await self.aclose()
            raise
        if self._done:
            await self._close_shards()
        return docs

    async def _close_shards(self) -> None:
        open_cursors = self._merged.close()
        if open_cursors:
            await self._kill(open_cursors)

    async def aclose(self) -> None:
        self._done = True
        self._pending = None
        self._iter = None
        await self._close_shards()


@dataclasses.dataclass
class Opened:
    """A running aggregation: where its results come from and who was asked."""

    source: BatchSource
    shards: list[str]
    namespace: str


def stats(shards: list[str], examined: int, returned: int, start: float) -> routing_pb2.QueryStats:
    return routing_pb2.QueryStats(
        documents_examined=examined,
        documents_returned=returned,
        execution_time_ms=int((time.perf_counter() - start) * 1000),
        shards_queried=shards,
    )


def _leading_match(stages: list[dict[str, Any]]) -> Mapping[str, Any]:
    if stages and isinstance(stages[0], Mapping) and list(stages[0]) == ["$match"]:
        if isinstance(stages[0]["$match"], Mapping):
            return stages[0]["$match"]
    return {}


async def open_pipeline(
    ctx: RouterContext,
    req: routing_pb2.AggregationRequest,
    stages: list[dict[str, Any]],
    raw_stages: list[bytes],
    *,
    budget: int,
    first: int,
    at_router: bool = False,
) -> Opened | None:
    """Start ``stages`` (already validated) on the shards; None for an unknown database.

    ``raw_stages`` are the same stages as sent by the client (passed through
    unchanged when the whole pipeline runs on one shard); ``first`` is the size of
    the first batch the caller will ask for; ``at_router`` forces the split path.
    """
    table = await ctx.table_or_none(req.database, req.collection)
    if table is None:
        return None
    foreign = _reads_foreign(stages)
    leading = _leading_match(stages)

    async def attempt(table: RoutingTable) -> Opened:
        shards = target_filter(table, leading).shards
        metrics.record_targeting("aggregate", len(shards))
        if len(shards) == 1 and not foreign and not at_router:
            return await _open_on_one_shard(ctx, req, table, shards[0], raw_stages, first)
        return await _open_split(ctx, req, table, shards, stages, budget, first)

    return await ctx.shards.with_stale_retry(req.database, req.collection, attempt, table)


async def _open_on_one_shard(
    ctx: RouterContext,
    req: routing_pb2.AggregationRequest,
    table: RoutingTable,
    shard: str,
    raw_stages: list[bytes],
    first: int,
) -> Opened:
    client = ctx.shards
    preference = read_preference(req)
    if preference is None:
        address = client.address_of(table, shard)
    else:
        address = await client.read_address(table, shard, preference)
    resp: shard_pb2.ShardCursorBatch = await client.call(
        shard,
        address,
        "Aggregate",
        set_read_options(
            shard_pb2.ShardAggregateRequest(
                request_id=req.request_id,
                database=req.database,
                collection=req.collection,
                pipeline=raw_stages,
                batch_size=first,
                version=table.shard_version(shard),
            ),
            req,
            preference,
        ),
    )
    merged = MergedStream(
        [ShardStream.of(shard, address, resp.documents, resp.cursor_id)], make_fetch(client)
    )
    merged.examined = resp.documents_examined
    return Opened(MergeSource(merged, client.kill_cursors), [shard], table.namespace)


def _resolver(ctx: RouterContext, database: str, loop: asyncio.AbstractEventLoop) -> Any:
    """``name -> documents of database.name`` read through the router (from a thread)."""

    def resolve(name: str) -> Iterator[dict[str, Any]]:
        if not isinstance(name, str) or not name:
            raise LauraError(ErrorCode.BAD_VALUE, "a foreign collection name is required")
        check_namespace(database, name)
        req = routing_pb2.QueryRequest(database=database, collection=name, batch_size=1000)
        resp = asyncio.run_coroutine_threadsafe(find(ctx, req), loop).result(_BRIDGE_TIMEOUT)
        cursor_id = resp.cursor_id if resp.more_available else ""
        try:
            for data in resp.documents:
                yield bson.decode(data)
            while cursor_id:
                fut = asyncio.run_coroutine_threadsafe(ctx.cursors.get_more(cursor_id, 1000), loop)
                docs, more, _, _ = fut.result(_BRIDGE_TIMEOUT)
                if not more:
                    cursor_id = ""
                for data in docs:
                    yield bson.decode(data)
        finally:
            if cursor_id:  # abandoned half way: release the router cursor
                asyncio.run_coroutine_threadsafe(ctx.cursors.kill([cursor_id]), loop)

    return resolve


async def _open_split(
    ctx: RouterContext,
    req: routing_pb2.AggregationRequest,
    table: RoutingTable,
    shards: list[str],
    stages: list[dict[str, Any]],
    budget: int,
    first: int,
) -> Opened:
    client = ctx.shards
    loop = asyncio.get_running_loop()
    split = split_pipeline(stages)
    merge_pipeline = (
        compile_pipeline(
            split.merge_part,
            resolver=_resolver(ctx, req.database, loop),
            memory_limit_bytes=budget,
        )
        if split.merge_part
        else None
    )
    shard_stages = [bson.encode(s) for s in split.shard_part]
    preference = read_preference(req)
    addresses = (
        [client.address_of(table, s) for s in shards] if preference is None
        else await client.read_addresses(table, shards, preference)
    )
    calls = [
        client.call(
            s,
            addr,
            "Aggregate",
            set_read_options(
                shard_pb2.ShardAggregateRequest(
                    request_id=req.request_id,
                    database=req.database,
                    collection=req.collection,
                    pipeline=shard_stages,
                    batch_size=first if merge_pipeline is None else _INPUT_BATCH,
                    version=table.shard_version(s),
                ),
                req,
                preference,
            ),
        )
        for s, addr in zip(shards, addresses, strict=True)
    ]
    results: list[shard_pb2.ShardCursorBatch] = await gather_or_raise(
        client, list(zip(shards, addresses, strict=True)), calls
    )
    streams = [
        ShardStream.of(s, addr, r.documents, r.cursor_id)
        for s, addr, r in zip(shards, addresses, results, strict=True)
    ]
    sort_key = raw_sort_key(compile_sort(split.merge_sort)) if split.merge_sort else None
    merged = MergedStream(streams, make_fetch(client), sort_key=sort_key)
    merged.examined = sum(r.documents_examined for r in results)
    source: BatchSource
    if merge_pipeline is None:
        source = MergeSource(merged, client.kill_cursors)
    else:
        source = PipelineSource(merged, merge_pipeline, client.kill_cursors, loop)
    return Opened(source, list(shards), table.namespace)
