"""Distinct at the router: target like a query, ask each shard, merge the values.

Each shard answers ``{"values": [...]}`` (its owned documents' distinct values, in
BSON order); the router merges them, keeping one value of each BSON-equal group
(``1``, ``1.0`` and ``Int64(1)`` are one value, as in MongoDB), in BSON order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lauradb.bsonkit.codec import MAX_DOCUMENT_BYTES, decode_document, encode_document
from lauradb.bsonkit.order import sort_key
from lauradb.cluster import router_ext_pb2, shard_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.filter import compile_filter
from router import metrics
from router.context import RouterContext
from router.namespaces import check_namespace, decode_field
from router.query_exec import gather_or_raise
from router.routing_table import RoutingTable
from router.shard_client import read_preference, set_read_options
from router.targets import target_filter

__all__ = ["check_distinct_key", "distinct", "merge_distinct"]


def check_distinct_key(key: str) -> None:
    """A distinct key is a non-empty dotted path without empty parts or ``$``."""
    if not key:
        raise LauraError(ErrorCode.BAD_VALUE, "distinct requires a non-empty 'key'")
    if "\0" in key:
        raise LauraError(ErrorCode.BAD_VALUE, "the distinct key may not contain a null byte")
    for part in key.split("."):
        if not part:
            raise LauraError(
                ErrorCode.BAD_VALUE, f"distinct key {key!r} has an empty path component"
            )
        if part.startswith("$"):
            raise LauraError(
                ErrorCode.BAD_VALUE, f"distinct key {key!r} may not contain a '$' field name"
            )


def merge_distinct(shard_values: Iterable[Sequence[Any]]) -> list[Any]:
    """Every shard's sorted values merged in BSON order, BSON-equal values once."""
    lists = [list(v) for v in shard_values]
    keyed = [[(sort_key(v), i, v) for v in values] for i, values in enumerate(lists)]
    for entries in keyed:
        entries.sort(key=lambda e: e[0])  # shards sort already; cheap when they did
    out: list[Any] = []
    last: Any = None
    have_last = False
    for key, _, value in heapq.merge(*keyed, key=lambda e: e[0]):
        if have_last and key == last:
            continue
        out.append(value)
        last, have_last = key, True
    return out


def _values_of(data: bytes, shard: str) -> list[Any]:
    doc = decode_document(data, f"distinct values from shard {shard}") if data else {}
    values = doc.get("values", [])
    if not isinstance(values, list):
        raise LauraError(
            ErrorCode.INTERNAL_ERROR, f"shard {shard} sent distinct values that are not an array"
        )
    return values


def _response(values: list[Any]) -> router_ext_pb2.DistinctResponse:
    data = encode_document({"values": values})
    if len(data) > MAX_DOCUMENT_BYTES:
        raise LauraError(
            ErrorCode.BSON_OBJECT_TOO_LARGE,
            f"distinct result is {len(data)} bytes, over the 16 MiB document limit; "
            "use an aggregation with $group instead",
        )
    return router_ext_pb2.DistinctResponse(values=data)


async def distinct(
    ctx: RouterContext, req: router_ext_pb2.DistinctRequest
) -> router_ext_pb2.DistinctResponse:
    check_namespace(req.database, req.collection)
    check_distinct_key(req.key)
    filter_doc: Mapping[str, Any] = decode_field(req.query, "query filter")
    table = await ctx.table_or_none(req.database, req.collection)
    if table is None:
        compile_filter(filter_doc)
        return _response([])

    async def attempt(table: RoutingTable) -> list[Any]:
        shards = target_filter(table, filter_doc).shards
        metrics.record_targeting("distinct", len(shards))
        if len(shards) > 1:
            compile_filter(filter_doc)  # a bad filter fails here once, not once per shard
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
                "Distinct",
                set_read_options(
                    shard_pb2.ShardDistinctRequest(
                        request_id=req.request_id,
                        database=req.database,
                        collection=req.collection,
                        key=req.key,
                        filter=req.query,
                        version=table.shard_version(s),
                    ),
                    req,
                    preference,
                ),
            )
            for s, addr in targets
        ]
        results = await gather_or_raise(ctx.shards, targets, calls)
        return merge_distinct(
            _values_of(r.values, s) for (s, _), r in zip(targets, results, strict=True)
        )

    values = await ctx.shards.with_stale_retry(req.database, req.collection, attempt, table)
    return _response(values)
