"""Aggregate at the router.

* One targeted shard (an unsharded collection, or a leading ``$match`` that targets
  one shard, e.g. an equality on the full shard key): the whole pipeline runs there
  and its cursor is passed through.
* Several shards: ``split_pipeline`` cuts the pipeline; the shard part runs on every
  targeted shard (a leading ``$match`` targets like a query), the shard streams are
  merged (merge-sorted when the split says so) and the merge part runs at the router
  with a memory limit. The merge part is synchronous engine code, so it runs in a
  worker thread that pulls merged shard batches from the event loop on demand:
  nothing is loaded whole unless a stage (e.g. ``$group``) needs it.
* ``$lookup``/``$unionWith`` read their foreign collection through the router (so a
  sharded foreign collection is read whole), never on a single shard.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import bson

from lauradb.cluster import routing_pb2, shard_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.pipeline import Pipeline, compile_pipeline
from lauradb.query.sort import compile_sort
from lauradb.query.split import split_pipeline
from router.context import RouterContext
from router.cursors import DEFAULT_FIRST_BATCH, MergeSource
from router.merge import DEFAULT_BATCH_BYTES, MergedStream, ShardStream, raw_sort_key
from router.namespaces import check_namespace, decode_required
from router.query_exec import find, gather_or_raise, make_fetch
from router.routing_table import RoutingTable
from router.targets import target_filter

__all__ = ["PipelineSource", "aggregate"]

_FOREIGN_MARKERS = (b"$lookup", b"$unionWith")
_INPUT_BATCH = 1000
_BRIDGE_TIMEOUT = 300.0


def _empty_resolver(_name: str) -> Iterable[dict[str, Any]]:
    return iter(())


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
        for doc in self._iter:
            try:
                data = bson.encode(doc)
            except Exception as exc:
                raise LauraError(ErrorCode.BAD_VALUE, f"cannot encode a result: {exc}") from None
            if len(out) >= max_docs or (out and size + len(data) > max_bytes):
                self._pending = data  # there is more: keep it for the next batch
                return out
            out.append(data)
            size += len(data)
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


def _stats(shards: list[str], examined: int, returned: int, start: float) -> routing_pb2.QueryStats:
    return routing_pb2.QueryStats(
        documents_examined=examined,
        documents_returned=returned,
        execution_time_ms=int((time.perf_counter() - start) * 1000),
        shards_queried=shards,
    )


def _has_foreign(raw_stages: Iterable[bytes]) -> bool:
    return any(m in raw for raw in raw_stages for m in _FOREIGN_MARKERS)


async def aggregate(
    ctx: RouterContext, req: routing_pb2.AggregationRequest
) -> routing_pb2.AggregationResponse:
    start = time.perf_counter()
    check_namespace(req.database, req.collection)
    if req.batch_size < 0:
        raise LauraError(ErrorCode.BAD_VALUE, "batch_size must be a non-negative number")
    first = req.batch_size or DEFAULT_FIRST_BATCH
    stages = [decode_required(raw, f"pipeline stage {i}") for i, raw in enumerate(req.pipeline)]
    foreign = _has_foreign(req.pipeline)
    table = await ctx.table_or_none(req.database, req.collection)
    if table is None:
        compile_pipeline(stages, resolver=_empty_resolver)
        return routing_pb2.AggregationResponse(
            request_id=req.request_id, stats=_stats([], 0, 0, start)
        )
    leading: Mapping[str, Any] = {}
    if stages and isinstance(stages[0], Mapping) and list(stages[0]) == ["$match"]:
        if isinstance(stages[0]["$match"], Mapping):
            leading = stages[0]["$match"]

    async def attempt(table: RoutingTable) -> routing_pb2.AggregationResponse:
        shards = target_filter(table, leading).shards
        if len(shards) == 1 and not foreign:
            return await _whole_on_one_shard(ctx, req, table, shards[0], first, start)
        return await _split(ctx, req, table, shards, stages, first, start)

    return await ctx.shards.with_stale_retry(req.database, req.collection, attempt, table)


async def _whole_on_one_shard(
    ctx: RouterContext,
    req: routing_pb2.AggregationRequest,
    table: RoutingTable,
    shard: str,
    first: int,
    start: float,
) -> routing_pb2.AggregationResponse:
    client = ctx.shards
    address = client.address_of(table, shard)
    resp: shard_pb2.ShardCursorBatch = await client.call(
        shard,
        address,
        "Aggregate",
        shard_pb2.ShardAggregateRequest(
            request_id=req.request_id,
            database=req.database,
            collection=req.collection,
            pipeline=req.pipeline,
            batch_size=first,
            version=table.shard_version(shard),
        ),
    )
    out = routing_pb2.AggregationResponse(request_id=req.request_id)
    out.results.extend(resp.documents)
    if resp.cursor_id:
        merged = MergedStream([ShardStream.of(shard, address, (), resp.cursor_id)], make_fetch(client))
        out.cursor_id = ctx.cursors.register(
            MergeSource(merged, client.kill_cursors), table.namespace, [shard]
        )
        out.more_available = True
    out.stats.CopyFrom(_stats([shard], resp.documents_examined, len(resp.documents), start))
    return out


def _resolver(
    ctx: RouterContext, database: str, loop: asyncio.AbstractEventLoop
) -> Any:
    """``name -> documents of database.name`` read through the router (from a thread)."""

    def resolve(name: str) -> Iterator[dict[str, Any]]:
        if not isinstance(name, str) or not name:
            raise LauraError(ErrorCode.BAD_VALUE, "a foreign collection name is required")
        req = routing_pb2.QueryRequest(database=database, collection=name, batch_size=1000)
        resp = asyncio.run_coroutine_threadsafe(find(ctx, req), loop).result(_BRIDGE_TIMEOUT)
        for data in resp.documents:
            yield bson.decode(data)
        cursor_id = resp.cursor_id
        while cursor_id:
            fut = asyncio.run_coroutine_threadsafe(
                ctx.cursors.get_more(cursor_id, 1000), loop
            )
            docs, more, _, _ = fut.result(_BRIDGE_TIMEOUT)
            for data in docs:
                yield bson.decode(data)
            if not more:
                break

    return resolve


async def _split(
    ctx: RouterContext,
    req: routing_pb2.AggregationRequest,
    table: RoutingTable,
    shards: list[str],
    stages: list[dict[str, Any]],
    first: int,
    start: float,
) -> routing_pb2.AggregationResponse:
    client = ctx.shards
    loop = asyncio.get_running_loop()
    split = split_pipeline(stages)
    resolver = _resolver(ctx, req.database, loop)
    merge_pipeline = (
        compile_pipeline(
            split.merge_part, resolver=resolver, memory_limit_bytes=ctx.memory_limit_bytes
        )
        if split.merge_part
        else None
    )
    if split.shard_part:
        # Validate the shard part once here, not once per shard.
        compile_pipeline(split.shard_part, resolver=_empty_resolver)
    shard_stages = [bson.encode(s) for s in split.shard_part]
    addresses = [client.address_of(table, s) for s in shards]
    calls = [
        client.call(
            s,
            addr,
            "Aggregate",
            shard_pb2.ShardAggregateRequest(
                request_id=req.request_id,
                database=req.database,
                collection=req.collection,
                pipeline=shard_stages,
                batch_size=first if merge_pipeline is None else _INPUT_BATCH,
                version=table.shard_version(s),
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
    source: MergeSource | PipelineSource
    if merge_pipeline is None:
        source = MergeSource(merged, client.kill_cursors)
    else:
        source = PipelineSource(merged, merge_pipeline, client.kill_cursors, loop)
    docs = await source.next_batch(first)
    out = routing_pb2.AggregationResponse(request_id=req.request_id)
    out.results.extend(docs)
    if source.exhausted:
        await source.aclose()
    else:
        out.cursor_id = ctx.cursors.register(source, table.namespace, list(shards))
        out.more_available = True
    out.stats.CopyFrom(_stats(list(shards), source.take_examined(), len(docs), start))
    return out
