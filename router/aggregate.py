"""Aggregate at the router (RouterService.Aggregate).

* The pipeline is validated once here (unknown stage or accumulator, ``$group``
  without ``_id``...) before anything is sent to a shard.
* It then runs as ``router.agg_pipeline`` describes: whole on one targeted shard, or
  split between the shards and the router, whose merge part runs under a memory
  budget (``max_memory_bytes``, default ``--memory-limit-mb``): a blocking stage over
  budget fails with EXCEEDED_MEMORY_LIMIT. A request that sets ``max_memory_bytes``
  always runs its merge part at the router, so that the budget it asks for applies.
* A final ``$out``/``$merge`` is executed by the router (``router.agg_output``).
* Results come in batches: ``cursor_id``/``more_available`` on the response, more
  with RouterService.GetMore like a query.
"""

from __future__ import annotations

import time

from lauradb.cluster import routing_pb2
from lauradb.errors import ErrorCode, LauraError
from router import agg_output
from router.agg_pipeline import PipelineSource, open_pipeline, stats, validate_pipeline
from router.context import RouterContext
from router.cursors import DEFAULT_FIRST_BATCH
from router.namespaces import check_namespace, decode_required

__all__ = ["PipelineSource", "aggregate"]


async def aggregate(
    ctx: RouterContext, req: routing_pb2.AggregationRequest
) -> routing_pb2.AggregationResponse:
    start = time.perf_counter()
    check_namespace(req.database, req.collection)
    if req.batch_size < 0:
        raise LauraError(ErrorCode.BAD_VALUE, "batch_size must be a non-negative number")
    if req.max_memory_bytes < 0:
        raise LauraError(ErrorCode.BAD_VALUE, "max_memory_bytes must be a non-negative number")
    budget = req.max_memory_bytes or ctx.memory_limit_bytes
    first = req.batch_size or DEFAULT_FIRST_BATCH
    stages = [decode_required(raw, f"pipeline stage {i}") for i, raw in enumerate(req.pipeline)]
    inner, output = agg_output.split_output(stages, req.database)
    validate_pipeline(inner, budget)
    if output is not None:
        return await agg_output.run_output(ctx, req, inner, output, budget, start)
    raw = list(req.pipeline)
    opened = await open_pipeline(
        ctx, req, inner, raw, budget=budget, first=first, at_router=bool(req.max_memory_bytes)
    )
    out = routing_pb2.AggregationResponse(request_id=req.request_id)
    if opened is None:  # unknown database: no documents
        out.stats.CopyFrom(stats([], 0, 0, start))
        return out
    source = opened.source
    docs = await source.next_batch(first)
    out.results.extend(docs)
    if source.exhausted:
        await source.aclose()
    else:
        out.cursor_id = ctx.cursors.register(source, opened.namespace, opened.shards)
        out.more_available = True
    out.stats.CopyFrom(stats(opened.shards, source.take_examined(), len(docs), start))
    return out
