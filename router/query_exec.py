"""Find and Count at the router: target, scatter, merge, batch.

The targeted single-shard path is kept lean: no config call, no decoding of result
documents, one shard RPC (skip/limit/sort/projection pushed down unchanged). Several
shards: all asked concurrently, results merged (merge-sort by the sort keys when
sorted), skip/limit applied at the router, the rest kept in a router cursor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import bson

from lauradb.cluster import router_ext_pb2, routing_pb2, shard_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.filter import compile_filter
from lauradb.query.projection import compile_projection
from lauradb.query.sort import compile_sort, validate_sort
from lauradb.rpc.request_context import current_request_id
from router import metrics
from router.context import RouterContext
from router.cursors import DEFAULT_FIRST_BATCH, MergeSource
from router.find_plan import plan_find, plan_projection
from router.merge import FetchResult, MergedStream, ShardStream, raw_sort_key
from router.namespaces import check_namespace, decode_field
from router.routing_table import RoutingTable
from router.shard_client import ShardClient, is_stale, read_preference, set_read_options
from router.targets import Targets, target_filter, target_shard_key

__all__ = ["count", "find", "gather_or_raise", "make_fetch"]


def make_fetch(client: ShardClient) -> Callable[[ShardStream, int], Any]:
    async def fetch(stream: ShardStream, n: int) -> FetchResult:
        resp = await client.get_more(stream.shard_id, stream.address, stream.cursor_id, n)
        return FetchResult(list(resp.documents), resp.cursor_id, resp.documents_examined)

    return fetch


def _cursor_of(result: Any) -> str:
    if isinstance(result, BaseException):
        return ""
    return str(getattr(result, "cursor_id", "") or "")


async def gather_or_raise(
    client: ShardClient, targets: list[tuple[str, str]], calls: list[Any]
) -> list[Any]:
    """Await shard calls (one per ``(shard, address)``) concurrently. On failure: kill
    the shard cursors the others opened and raise (a STALE_CONFIG first, so the
    caller refreshes and retries)."""
    results: list[Any] = list(await asyncio.gather(*calls, return_exceptions=True))
    errors = [r for r in results if isinstance(r, BaseException)]
    if not errors:
        return results
    opened = [
        (sid, addr, _cursor_of(r)) for (sid, addr), r in zip(targets, results, strict=True)
    ]
    opened = [o for o in opened if o[2]]
    if opened:
        await client.kill_cursors(opened)
    for e in errors:
        if isinstance(e, LauraError) and is_stale(e):
            raise e
    for e in errors:
        if not isinstance(e, Exception):
            raise e  # cancellation
    raise errors[0]


def _stats(shards: list[str], examined: int, returned: int, start: float) -> routing_pb2.QueryStats:
    return routing_pb2.QueryStats(
        documents_examined=examined,
        documents_returned=returned,
        execution_time_ms=int((time.perf_counter() - start) * 1000),
        shards_queried=shards,
    )


def _targets(table: RoutingTable, filter_doc: Callable[[], Mapping[str, Any]], shard_key: bytes) -> Targets:
    if not table.sharded:
        return Targets([table.primary_shard], True)
    if shard_key:
        key_doc = decode_field(shard_key, "shard_key")
        if key_doc:
            return target_shard_key(table, key_doc)
    return target_filter(table, filter_doc())


class _Lazy:
    """A BSON field decoded at most once, only if needed."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.what = what
        self._doc: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        if self._doc is None:
            self._doc = decode_field(self.data, self.what)
        return self._doc


def _router_projection(spec: Mapping[str, Any]) -> Callable[[bytes], bytes]:
    proj = compile_projection(spec)

    def transform(data: bytes) -> bytes:
        return bson.encode(proj.apply(bson.decode(data)))

    return transform


def _point_read_shard(ctx: RouterContext, req: routing_pb2.QueryRequest) -> tuple[RoutingTable, str] | None:
    """``(table, shard)`` when ``req`` is a plain point read — ``{key: value}`` on a
    cached sharded collection's one-field shard key, no option but limit/batch size,
    a standalone shard — else None (the general path)."""
    if (
        req.shard_key or req.projection or req.sort or req.skip or req.limit < 0
        or req.batch_size < 0 or req.HasField("read_preference") or req.HasField("read_concern")
    ):  # fmt: skip
        return None
    table = ctx.cache.cached(req.database, req.collection)
    if table is None or table.point_locate is None:
        return None
    shard = table.point_locate(decode_field(req.query, "query filter"))
    if shard is None:
        return None
    return (table, shard) if ctx.shards.standalone(shard) else None


async def _point_read(
    ctx: RouterContext, req: routing_pb2.QueryRequest, table: RoutingTable, shard: str, start: float
) -> routing_pb2.QueryResponse:
    """The general path's one-shard find, for a plain point read, in fewer steps."""
    client = ctx.shards
    address = client.address_of(table, shard)
    first = req.batch_size or DEFAULT_FIRST_BATCH
    limit = req.limit
    sreq = shard_pb2.ShardFindRequest(
        request_id=req.request_id or current_request_id(),
        database=req.database,
        collection=req.collection,
        filter=req.query,
        batch_size=min(first, limit) if limit else first,
        version=table.shard_version(shard),
    )
    if limit:
        sreq.limit = limit
    resp: shard_pb2.ShardCursorBatch = await client.call(shard, address, "Find", sreq)
    _FIND_TARGETED.inc()
    _FIND_SHARDS.observe(1)
    return _one_shard_answer(ctx, req, table, shard, address, resp, resp.cursor_id, start)


_FIND_TARGETED = metrics.TARGETED.labels("find")
_FIND_SHARDS = metrics.SHARDS_PER_REQUEST.labels("find")


async def find(ctx: RouterContext, req: routing_pb2.QueryRequest) -> routing_pb2.QueryResponse:
    start = time.perf_counter()
    check_namespace(req.database, req.collection)
    failed: LauraError | None = None
    point = _point_read_shard(ctx, req)
    if point is not None:
        try:
            return await _point_read(ctx, req, point[0], point[1], start)
        except LauraError as err:
            if not ctx.shards.retryable(err):
                raise
            failed = err  # the general path refreshes and retries
    if req.skip < 0:
        raise LauraError(ErrorCode.BAD_VALUE, "skip must be a non-negative number")
    if req.batch_size < 0:
        raise LauraError(ErrorCode.BAD_VALUE, "batch_size must be a non-negative number")
    first = req.batch_size or DEFAULT_FIRST_BATCH
    filter_doc = _Lazy(req.query, "query filter")
    table = ctx.cache.cached(req.database, req.collection) or await ctx.table_or_none(
        req.database, req.collection
    )
    if table is None:
        _validate_read(filter_doc(), decode_field(req.sort, "sort"), req.projection)
        return routing_pb2.QueryResponse(request_id=req.request_id, stats=_stats([], 0, 0, start))

    async def attempt(table: RoutingTable) -> routing_pb2.QueryResponse:
        targets = _targets(table, filter_doc, req.shard_key)
        metrics.record_targeting("find", len(targets.shards))
        if len(targets.shards) == 1:
            return await _find_one_shard(ctx, req, table, targets.shards[0], first, start)
        return await _find_many(ctx, req, table, targets.shards, filter_doc(), first, start)

    if failed is None:
        try:  # one attempt without the retry loop
            return await attempt(table)
        except LauraError as err:
            if not ctx.shards.retryable(err):
                raise
            failed = err
    return await ctx.shards.with_stale_retry(req.database, req.collection, attempt, table, failed)


def _validate_read(filter_doc: Mapping[str, Any], sort_doc: Mapping[str, Any], projection: bytes) -> None:
    compile_filter(filter_doc)
    validate_sort(sort_doc)
    if projection:
        compile_projection(decode_field(projection, "projection"))


async def _find_one_shard(
    ctx: RouterContext,
    req: routing_pb2.QueryRequest,
    table: RoutingTable,
    shard: str,
    first: int,
    start: float,
) -> routing_pb2.QueryResponse:
    client = ctx.shards
    preference = read_preference(req)
    if preference is None:
        address = client.address_of(table, shard)
    else:
        address = await client.read_address(table, shard, preference)
    limit = abs(req.limit)
    single_batch = req.limit < 0
    batch_size = min(first, limit) if limit else first
    sreq = shard_pb2.ShardFindRequest(
        request_id=req.request_id or current_request_id(),
        database=req.database,
        collection=req.collection,
        filter=req.query,
        batch_size=batch_size,
        version=table.shard_version(shard),
    )
    # Only what is set (a point read sets none of these: fewer fields to copy).
    if req.projection:
        sreq.projection = req.projection
    if req.sort:
        sreq.sort = req.sort
    if limit:
        sreq.limit = limit
    if req.skip:
        sreq.skip = req.skip
    if preference is not None or req.HasField("read_concern"):
        set_read_options(sreq, req, preference)
    resp: shard_pb2.ShardCursorBatch = await client.call(shard, address, "Find", sreq)
    cursor_id = resp.cursor_id
    if cursor_id and single_batch:
        await client.kill_cursors([(shard, address, cursor_id)])
        cursor_id = ""
    return _one_shard_answer(ctx, req, table, shard, address, resp, cursor_id, start)


def _one_shard_answer(
    ctx: RouterContext,
    req: routing_pb2.QueryRequest,
    table: RoutingTable,
    shard: str,
    address: str,
    resp: shard_pb2.ShardCursorBatch,
    cursor_id: str,
    start: float,
) -> routing_pb2.QueryResponse:
    """The answer to a one-shard find: the shard's batch, and a router cursor over the
    shard's ``cursor_id`` when it has more."""
    docs = resp.documents
    out = routing_pb2.QueryResponse(request_id=req.request_id, documents=docs)
    if cursor_id:
        client = ctx.shards
        merged = MergedStream([ShardStream.of(shard, address, (), cursor_id)], make_fetch(client))
        out.cursor_id = ctx.cursors.register(
            MergeSource(merged, client.kill_cursors), table.namespace, [shard]
        )
        out.more_available = True
    stats = out.stats  # set in place (no QueryStats built and copied)
    stats.documents_examined = resp.documents_examined
    stats.documents_returned = len(docs)
    stats.execution_time_ms = int((time.perf_counter() - start) * 1000)
    stats.shards_queried.append(shard)
    return out


async def _find_many(
    ctx: RouterContext,
    req: routing_pb2.QueryRequest,
    table: RoutingTable,
    shards: list[str],
    filter_doc: Mapping[str, Any],
    first: int,
    start: float,
) -> routing_pb2.QueryResponse:
    client = ctx.shards
    compile_filter(filter_doc)  # a bad filter fails here once, not once per shard
    sort_doc = decode_field(req.sort, "sort")
    sort_fields = validate_sort(sort_doc)
    sort_key = raw_sort_key(compile_sort(sort_doc)) if sort_fields else None
    projection = req.projection
    transform = None
    if projection and sort_fields:
        spec = decode_field(projection, "projection")
        paths = [p for p, _ in sort_fields]
        proj = compile_projection(spec)
        if not all(proj.keeps(p) for p in paths):
            shard_spec, reproject = plan_projection(spec, paths)
            projection = bson.encode(shard_spec) if shard_spec else b""
            if reproject:
                transform = _router_projection(spec)
    plan = plan_find(req.skip, req.limit, len(shards))
    want = first + plan.router_skip
    batch_size = min(want, plan.shard_limit) if plan.shard_limit else want
    preference = read_preference(req)
    addresses = (
        [client.address_of(table, s) for s in shards] if preference is None
        else await client.read_addresses(table, shards, preference)
    )
    calls = [
        client.call(
            s,
            addr,
            "Find",
            set_read_options(
                shard_pb2.ShardFindRequest(
                    request_id=req.request_id,
                    database=req.database,
                    collection=req.collection,
                    filter=req.query,
                    projection=projection,
                    sort=req.sort,
                    limit=plan.shard_limit,
                    skip=plan.shard_skip,
                    batch_size=batch_size,
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
    merged = MergedStream(
        streams,
        make_fetch(client),
        sort_key=sort_key,
        skip=plan.router_skip,
        limit=plan.router_limit,
        transform=transform,
    )
    merged.examined = sum(r.documents_examined for r in results)
    source = MergeSource(merged, client.kill_cursors)
    docs = await source.next_batch(first)
    out = routing_pb2.QueryResponse(request_id=req.request_id)
    out.documents.extend(docs)
    if plan.single_batch or source.exhausted:
        await source.aclose()
    else:
        out.cursor_id = ctx.cursors.register(source, table.namespace, list(shards))
        out.more_available = True
    out.stats.CopyFrom(_stats(list(shards), source.take_examined(), len(docs), start))
    return out


async def get_more(
    ctx: RouterContext, req: router_ext_pb2.GetMoreRequest
) -> routing_pb2.QueryResponse:
    start = time.perf_counter()
    if not req.cursor_id:
        raise LauraError(ErrorCode.BAD_VALUE, "cursor_id is required")
    if req.batch_size < 0:
        raise LauraError(ErrorCode.BAD_VALUE, "batch_size must be a non-negative number")
    docs, more, examined, cursor = await ctx.cursors.get_more(req.cursor_id, req.batch_size)
    out = routing_pb2.QueryResponse(request_id=req.request_id, more_available=more)
    out.documents.extend(docs)
    if more:
        out.cursor_id = req.cursor_id
    out.stats.CopyFrom(_stats(cursor.shards, examined, len(docs), start))
    return out


async def count(ctx: RouterContext, req: router_ext_pb2.CountRequest) -> router_ext_pb2.CountResponse:
    check_namespace(req.database, req.collection)
    if req.skip < 0:
        raise LauraError(ErrorCode.BAD_VALUE, "skip must be a non-negative number")
    filter_doc = _Lazy(req.query, "query filter")
    table = await ctx.table_or_none(req.database, req.collection)
    if table is None:
        compile_filter(filter_doc())
        return router_ext_pb2.CountResponse(count=0)

    async def attempt(table: RoutingTable) -> int:
        shards = _targets(table, filter_doc, b"").shards
        metrics.record_targeting("count", len(shards))
        if len(shards) > 1:
            compile_filter(filter_doc())
        preference = read_preference(req)
        addresses = (
            [ctx.shards.address_of(table, s) for s in shards] if preference is None
            else await ctx.shards.read_addresses(table, shards, preference)
        )
        targets = list(zip(shards, addresses, strict=True))
        calls = [
            ctx.shards.call(
                s,
                addr,
                "Count",
                set_read_options(
                    shard_pb2.ShardCountRequest(
                        request_id=req.request_id,
                        database=req.database,
                        collection=req.collection,
                        filter=req.query,
                        version=table.shard_version(s),
                    ),
                    req,
                    preference,
                ),
            )
            for s, addr in targets
        ]
        if len(calls) == 1:
            return int((await calls[0]).count)
        results = await gather_or_raise(ctx.shards, targets, calls)
        return sum(int(r.count) for r in results)

    total = await ctx.shards.with_stale_retry(req.database, req.collection, attempt, table)
    n = max(total - req.skip, 0)
    limit = abs(req.limit)
    if limit:
        n = min(n, limit)
    return router_ext_pb2.CountResponse(count=n)
