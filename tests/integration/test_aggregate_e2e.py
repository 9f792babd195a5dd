"""Issue 4 through the router: $lookup, $facet, $bucket, $out, $merge, Distinct,
aggregation cursors and the router's memory budget.

One data set in a database of its own on the shared 3-shard cluster: ``orders``
(hashed on ``_id``, spread over every shard) and its unsharded copy ``orders_plain``;
``customers`` (unsharded) and its hashed copy ``customers_sh``. Expected results come
from running the same pipeline locally with the engine (``compile_pipeline``) over
the same documents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bson
import grpc
import pytest
import pytest_asyncio
from bson.int64 import Int64

from lauradb.bsonkit.order import sort_key
from lauradb.cluster import router_ext_pb2, routing_pb2, routing_pb2_grpc
from lauradb.errors import ErrorCode
from lauradb.query.pipeline import compile_pipeline
from tests.integration.harness import (
    Cluster,
    count,
    dec,
    enc,
    insert_many,
    laura_error,
    query_all,
    shard_collection,
    unique_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

RPC = 60.0
N_ORDERS = 2000
N_CUSTOMERS = 50


def make_orders(n: int = N_ORDERS) -> list[dict[str, Any]]:
    return [
        {
            "_id": i,
            "cust": i % N_CUSTOMERS,
            "amount": (i * 37) % 101,
            "status": "ABC"[i % 3],
            "items": [(i + j) % 5 for j in range(i % 3)],
            "day": i % 7,
        }
        for i in range(n)
    ]


def make_customers() -> list[dict[str, Any]]:
    return [{"_id": c, "name": f"c{c:02d}", "tier": c % 3} for c in range(N_CUSTOMERS)]


@dataclass
class Data:
    cluster: Cluster
    db: str
    orders: list[dict[str, Any]]
    customers: list[dict[str, Any]]

    @property
    def router(self) -> routing_pb2_grpc.RouterServiceStub:
        return self.cluster.router_stub()

    def local(self, pipeline: Sequence[Any], source: str = "orders") -> list[Any]:
        """The pipeline run by the engine in this process (the oracle)."""
        collections = {
            "orders": self.orders,
            "orders_plain": self.orders,
            "customers": self.customers,
            "customers_sh": self.customers,
        }
        compiled = compile_pipeline(pipeline, resolver=lambda name: list(collections[name]))
        return list(compiled.run(iter(collections[source])))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def data(session_cluster: Cluster) -> AsyncIterator[Data]:
    cluster, db = session_cluster, unique_name("agg")
    config, router = cluster.config_stub(), cluster.router_stub()
    assert (await shard_collection(config, db, "orders", ["_id"], "hashed")).success
    assert (await shard_collection(config, db, "customers_sh", ["_id"], "hashed")).success
    orders, customers = make_orders(), make_customers()
    assert await insert_many(router, db, "orders", orders, ordered=False) == N_ORDERS
    assert await insert_many(router, db, "orders_plain", orders) == N_ORDERS
    assert await insert_many(router, db, "customers", customers) == N_CUSTOMERS
    assert await insert_many(router, db, "customers_sh", customers) == N_CUSTOMERS
    yield Data(cluster, db, orders, customers)
    await cluster.router_stub().DropDatabase(
        router_ext_pb2.DropDatabaseRequest(database=db), timeout=RPC
    )


@dataclass
class AggResult:
    docs: list[dict[str, Any]] = field(default_factory=list)
    batches: int = 0
    shards: set[str] = field(default_factory=set)


async def aggregate(
    router: routing_pb2_grpc.RouterServiceStub,
    db: str,
    coll: str,
    pipeline: Sequence[Any],
    *,
    batch_size: int = 0,
    max_memory_bytes: int = 0,
) -> AggResult:
    """Aggregate through the router, following GetMore to the end."""
    request = routing_pb2.AggregationRequest(
        database=db,
        collection=coll,
        pipeline=[enc(s) for s in pipeline],
        batch_size=batch_size,
        max_memory_bytes=max_memory_bytes,
        allow_disk_use=True,
    )
    response = await router.Aggregate(request, timeout=RPC)
    out = AggResult(docs=[dec(d) for d in response.results], batches=1)
    out.shards.update(response.stats.shards_queried)
    cursor_id = response.cursor_id if response.more_available else ""
    while cursor_id:
        more = await router.GetMore(
            router_ext_pb2.GetMoreRequest(cursor_id=cursor_id, batch_size=batch_size), timeout=RPC
        )
        out.docs.extend(dec(d) for d in more.documents)
        out.batches += 1
        cursor_id = more.cursor_id if more.more_available else ""
        assert out.batches < 10_000
    return out


async def agg_error(data: Data, coll: str, pipeline: Sequence[Any], **kw: Any) -> Any:
    with pytest.raises(grpc.RpcError) as info:
        await aggregate(data.router, data.db, coll, pipeline, **kw)
    return laura_error(info.value)


def multiset(docs: Sequence[Mapping[str, Any]]) -> list[bytes]:
    return sorted(bson.encode(d) for d in docs)


def by_id(docs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(docs, key=lambda d: sort_key(d["_id"]))


# --- $lookup ---------------------------------------------------------------------------


@pytest.mark.parametrize("foreign", ["customers", "customers_sh"])
async def test_lookup_equality_into_unsharded_and_sharded(data: Data, foreign: str) -> None:
    pipeline = [
        {"$match": {"amount": {"$lt": 20}}},
        {"$lookup": {"from": foreign, "localField": "cust", "foreignField": "_id", "as": "c"}},
        {"$project": {"cust": 1, "name": {"$first": "$c.name"}, "n": {"$size": "$c"}}},
    ]
    got = await aggregate(data.router, data.db, "orders", pipeline)
    assert got.docs, "the pipeline selects some orders"
    assert all(d["n"] == 1 and d["name"] == f"c{d['cust']:02d}" for d in got.docs)
    assert multiset(got.docs) == multiset(data.local(pipeline))
    assert len(got.shards) == 3


@pytest.mark.parametrize("source", ["orders", "orders_plain"])
async def test_lookup_pipeline_form_reads_sharded_foreign(data: Data, source: str) -> None:
    pipeline = [
        {"$match": {"_id": {"$lt": 30}}},
        {
            "$lookup": {
                "from": "customers_sh",
                "let": {"t": "$day"},
                "pipeline": [
                    {"$match": {"$expr": {"$eq": ["$tier", {"$mod": ["$$t", 3]}]}}},
                    {"$count": "n"},
                ],
                "as": "same_tier",
            }
        },
        {"$project": {"n": {"$first": "$same_tier.n"}}},
    ]
    got = await aggregate(data.router, data.db, source, pipeline)
    expected = data.local(pipeline)
    assert len(expected) == 30 and all(d["n"] > 0 for d in expected)
    assert by_id(got.docs) == by_id(expected)


async def test_lookup_of_missing_collection_is_empty_not_an_error(data: Data) -> None:
    pipeline = [
        {"$match": {"_id": {"$lt": 5}}},
        {"$lookup": {"from": "nope", "localField": "cust", "foreignField": "_id", "as": "x"}},
    ]
    got = await aggregate(data.router, data.db, "orders", pipeline)
    assert len(got.docs) == 5 and all(d["x"] == [] for d in got.docs)


async def test_union_with_sharded_collection(data: Data) -> None:
    pipeline = [
        {"$match": {"_id": {"$lt": 10}}},
        {"$project": {"_id": 1}},
        {"$unionWith": {"coll": "customers_sh", "pipeline": [{"$project": {"_id": 1}}]}},
    ]
    got = await aggregate(data.router, data.db, "orders_plain", pipeline)
    assert multiset(got.docs) == multiset(data.local(pipeline, "orders_plain"))


# --- $facet, $bucket, $group, $count -------------------------------------------------


@pytest.mark.parametrize("source", ["orders", "orders_plain"])
async def test_facet(data: Data, source: str) -> None:
    pipeline = [
        {"$match": {"day": {"$ne": 3}}},
        {
            "$facet": {
                "by_status": [
                    {"$group": {"_id": "$status", "n": {"$sum": 1}, "avg": {"$avg": "$amount"}}},
                    {"$sort": {"_id": 1}},
                ],
                "top": [{"$sort": {"amount": -1, "_id": 1}}, {"$limit": 4}, {"$project": {"amount": 1}}],
                "total": [{"$count": "n"}],
            }
        },
    ]
    got = await aggregate(data.router, data.db, source, pipeline)
    assert got.docs == data.local(pipeline)


@pytest.mark.parametrize("source", ["orders", "orders_plain"])
async def test_bucket_and_bucket_auto(data: Data, source: str) -> None:
    bucket = [
        {
            "$bucket": {
                "groupBy": "$amount",
                "boundaries": [0, 25, 50, 75],
                "default": "rest",
                "output": {"n": {"$sum": 1}, "max": {"$max": "$amount"}},
            }
        }
    ]
    got = await aggregate(data.router, data.db, source, bucket)
    assert got.docs == data.local(bucket)
    assert sum(d["n"] for d in got.docs) == N_ORDERS
    auto = [{"$bucketAuto": {"groupBy": "$_id", "buckets": 4}}]
    got = await aggregate(data.router, data.db, source, auto)
    assert got.docs == data.local(auto)


async def test_group_sort_limit_and_count_match_local(data: Data) -> None:
    pipelines: list[list[dict[str, Any]]] = [
        [
            {"$unwind": "$items"},
            {"$group": {"_id": {"s": "$status", "i": "$items"}, "n": {"$sum": 1}}},
            {"$sort": {"n": -1, "_id.s": 1, "_id.i": 1}},
            {"$limit": 5},
        ],
        [{"$match": {"status": "B"}}, {"$count": "how_many"}],
        [{"$sortByCount": "$day"}, {"$sort": {"count": -1, "_id": 1}}],
        [{"$sort": {"amount": 1, "_id": -1}}, {"$skip": 10}, {"$limit": 7}],
    ]
    for pipeline in pipelines:
        sharded = await aggregate(data.router, data.db, "orders", pipeline)
        plain = await aggregate(data.router, data.db, "orders_plain", pipeline)
        expected = data.local(pipeline)
        assert sharded.docs == expected, pipeline
        assert plain.docs == expected, pipeline


async def test_equality_on_shard_key_runs_on_one_shard(data: Data) -> None:
    pipeline = [{"$match": {"_id": 77}}, {"$project": {"amount": 1}}]
    got = await aggregate(data.router, data.db, "orders", pipeline)
    assert got.docs == [{"_id": 77, "amount": (77 * 37) % 101}]
    assert len(got.shards) == 1
    spread = await aggregate(data.router, data.db, "orders", [{"$match": {"day": 1}}])
    assert len(spread.shards) == 3


# --- cursors -------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["orders", "orders_plain"])
async def test_large_result_comes_in_batches_through_getmore(data: Data, source: str) -> None:
    pipeline = [{"$sort": {"amount": 1, "_id": 1}}, {"$project": {"amount": 1}}]
    got = await aggregate(data.router, data.db, source, pipeline, batch_size=150)
    assert got.docs == data.local(pipeline)
    assert len(got.docs) == N_ORDERS
    assert got.batches >= N_ORDERS // 150
    unsorted = [{"$match": {"amount": {"$gte": 0}}}, {"$addFields": {"x": 1}}]
    got = await aggregate(data.router, data.db, source, unsorted, batch_size=300)
    assert multiset(got.docs) == multiset(data.local(unsorted))
    assert got.batches >= N_ORDERS // 300


async def test_first_batch_is_bounded_and_cursor_can_be_killed(data: Data) -> None:
    request = routing_pb2.AggregationRequest(
        database=data.db, collection="orders", pipeline=[enc({"$match": {}})], batch_size=10
    )
    response = await data.router.Aggregate(request, timeout=RPC)
    assert len(response.results) == 10 and response.more_available and response.cursor_id
    killed = await data.router.KillCursors(
        router_ext_pb2.KillCursorsRequest(cursor_ids=[response.cursor_id]), timeout=RPC
    )
    assert list(killed.killed) == [response.cursor_id]
    with pytest.raises(grpc.RpcError) as info:
        await data.router.GetMore(
            router_ext_pb2.GetMoreRequest(cursor_id=response.cursor_id), timeout=RPC
        )
    assert laura_error(info.value).code == ErrorCode.CURSOR_NOT_FOUND


# --- memory budget and bad input --------------------------------------------------------


@pytest.mark.parametrize("source", ["orders", "orders_plain"])
async def test_group_over_memory_budget_fails_cleanly(data: Data, source: str) -> None:
    pipeline = [{"$group": {"_id": "$_id", "all": {"$push": "$$ROOT"}}}]
    err = await agg_error(data, source, pipeline, max_memory_bytes=20_000)
    assert err.code == ErrorCode.EXCEEDED_MEMORY_LIMIT
    # the router is fine, and the same pipeline within budget works
    got = await aggregate(data.router, data.db, source, pipeline, max_memory_bytes=64 << 20)
    assert len(got.docs) == N_ORDERS


@pytest.mark.parametrize(
    ("pipeline", "code"),
    [
        ([{"$bogus": {}}], ErrorCode.INVALID_PIPELINE),
        ([{"$group": {"_id": "$a", "x": {"$bogusAcc": 1}}}], None),
        ([{"$group": {"n": {"$sum": 1}}}], None),
        ([{"$match": {"a": {"$bogusOp": 1}}}], None),
        ([{"$out": "x"}, {"$match": {}}], ErrorCode.INVALID_PIPELINE),
        ([{"$merge": {"into": "x", "on": "a"}}], ErrorCode.NOT_IMPLEMENTED),
        ([{"$limit": -1}], None),
    ],
)
async def test_bad_pipelines_fail_at_the_router(
    data: Data, pipeline: list[dict[str, Any]], code: ErrorCode | None
) -> None:
    for coll in ("orders", "orders_plain", "no_such_collection"):
        err = await agg_error(data, coll, pipeline)
        assert err.code != ErrorCode.INTERNAL_ERROR, err
        if code is not None:
            assert err.code == code, err
    # a database that does not exist validates the same way
    with pytest.raises(grpc.RpcError):
        await aggregate(data.router, unique_name("nodb"), "c", pipeline)


async def test_unknown_database_gives_no_results(data: Data) -> None:
    got = await aggregate(data.router, unique_name("nodb"), "c", [{"$match": {}}])
    assert got.docs == []


# --- $out --------------------------------------------------------------------------------


SUMMARY = [
    {"$group": {"_id": "$status", "total": {"$sum": "$amount"}, "n": {"$sum": 1}}},
]


async def test_out_replaces_the_target(data: Data) -> None:
    target = unique_name("summary")
    got = await aggregate(data.router, data.db, "orders", [*SUMMARY, {"$out": target}])
    assert got.docs == []
    stored = await query_all(data.router, data.db, target, {})
    assert by_id(stored) == by_id(data.local(SUMMARY))
    again = [{"$match": {"status": "A"}}, *SUMMARY, {"$out": target}]
    await aggregate(data.router, data.db, "orders", again)
    stored = await query_all(data.router, data.db, target, {})
    assert stored == data.local(again[:-1])
    # a failing pipeline leaves the target as it was
    failing = [{"$group": {"_id": "$_id", "d": {"$push": "$$ROOT"}}}, {"$out": target}]
    err = await agg_error(data, "orders", failing, max_memory_bytes=20_000)
    assert err.code == ErrorCode.EXCEEDED_MEMORY_LIMIT
    assert await query_all(data.router, data.db, target, {}) == stored


async def test_out_to_other_database_and_onto_its_source(data: Data) -> None:
    other = unique_name("outdb")
    pipeline = [{"$match": {"day": 2}}, {"$project": {"amount": 1}}]
    await aggregate(
        data.router, data.db, "orders", [*pipeline, {"$out": {"db": other, "coll": "x"}}]
    )
    stored = await query_all(data.router, other, "x", {})
    assert multiset(stored) == multiset(data.local(pipeline))
    # $out onto the collection being read: results are computed first
    await aggregate(data.router, other, "x", [{"$match": {"amount": {"$lt": 50}}}, {"$out": "x"}])
    left = await query_all(data.router, other, "x", {})
    assert multiset(left) == multiset([d for d in stored if d["amount"] < 50])
    await data.router.DropDatabase(router_ext_pb2.DropDatabaseRequest(database=other), timeout=RPC)


async def test_out_errors(data: Data) -> None:
    before = await count(data.router, data.db, "customers_sh")
    err = await agg_error(data, "orders", [*SUMMARY, {"$out": "customers_sh"}])
    assert err.code in (ErrorCode.ILLEGAL_OPERATION, ErrorCode.BAD_VALUE)
    assert await count(data.router, data.db, "customers_sh") == before
    dup = [{"$unwind": "$items"}, {"$project": {"items": 1}}, {"$out": unique_name("dup")}]
    err = await agg_error(data, "orders", dup)
    assert err.code == ErrorCode.DUPLICATE_KEY
    err = await agg_error(data, "orders", [{"$out": ""}])
    assert err.code != ErrorCode.INTERNAL_ERROR


# --- $merge ------------------------------------------------------------------------------


async def _merge_case(data: Data, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """src {0: new, 2: new} merged into target {0: old+keep, 1: old+keep}."""
    src, target = unique_name("src"), unique_name("target")
    await insert_many(data.router, data.db, src, [{"_id": 0, "x": "new"}, {"_id": 2, "x": "new"}])
    await insert_many(
        data.router,
        data.db,
        target,
        [{"_id": 0, "x": "old", "keep": 1}, {"_id": 1, "x": "old", "keep": 1}],
    )
    await aggregate(data.router, data.db, src, [{"$merge": {"into": target, **spec}}])
    return by_id(await query_all(data.router, data.db, target, {}))  # type: ignore[return-value]


OLD1 = {"_id": 1, "x": "old", "keep": 1}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, [{"_id": 0, "x": "new", "keep": 1}, OLD1, {"_id": 2, "x": "new"}]),
        ({"whenMatched": "replace"}, [{"_id": 0, "x": "new"}, OLD1, {"_id": 2, "x": "new"}]),
        (
            {"whenMatched": "keepExisting"},
            [{"_id": 0, "x": "old", "keep": 1}, OLD1, {"_id": 2, "x": "new"}],
        ),
        ({"whenNotMatched": "discard"}, [{"_id": 0, "x": "new", "keep": 1}, OLD1]),
        (
            {"whenMatched": "replace", "whenNotMatched": "discard"},
            [{"_id": 0, "x": "new"}, OLD1],
        ),
    ],
)
async def test_merge_modes(data: Data, spec: dict[str, Any], expected: list[Any]) -> None:
    assert await _merge_case(data, spec) == expected


async def test_merge_fail_modes(data: Data) -> None:
    with pytest.raises(grpc.RpcError) as info:
        await _merge_case(data, {"whenMatched": "fail"})
    assert laura_error(info.value).code == ErrorCode.DUPLICATE_KEY
    with pytest.raises(grpc.RpcError) as info:
        await _merge_case(data, {"whenNotMatched": "fail"})
    assert laura_error(info.value).code != ErrorCode.INTERNAL_ERROR


async def test_merge_many_from_sharded_and_into_sharded_on_id(data: Data) -> None:
    config = data.cluster.config_stub()
    target = unique_name("msh")
    assert (await shard_collection(config, data.db, target, ["_id"], "hashed")).success
    first = [{"$project": {"amount": 1}}, {"$merge": target}]
    await aggregate(data.router, data.db, "orders", first)
    assert await count(data.router, data.db, target) == N_ORDERS
    second = [
        {"$match": {"status": "C"}},
        {"$project": {"double": {"$multiply": ["$amount", 2]}}},
        {"$merge": {"into": target, "whenMatched": "merge", "whenNotMatched": "discard"}},
    ]
    await aggregate(data.router, data.db, "orders", second)
    stored = by_id(await query_all(data.router, data.db, target, {}))
    expected = [
        {"_id": o["_id"], "amount": o["amount"]}
        | ({"double": o["amount"] * 2} if o["status"] == "C" else {})
        for o in data.orders
    ]
    assert stored == expected
    keyed = unique_name("mk")
    assert (await shard_collection(config, data.db, keyed, ["cust"], "hashed")).success
    err = await agg_error(data, "orders", [{"$merge": keyed}])
    assert err.code in (ErrorCode.ILLEGAL_OPERATION, ErrorCode.BAD_VALUE)


# --- Distinct ------------------------------------------------------------------------------


async def distinct(
    data: Data, coll: str, key: str, query: Mapping[str, Any] | None = None, db: str = ""
) -> list[Any]:
    request = router_ext_pb2.DistinctRequest(
        database=db or data.db, collection=coll, key=key, query=enc(query)
    )
    response = await data.router.Distinct(request, timeout=RPC)
    values: list[Any] = dec(response.values)["values"]
    return values


@pytest.mark.parametrize("coll", ["orders", "orders_plain"])
async def test_distinct(data: Data, coll: str) -> None:
    assert await distinct(data, coll, "status") == ["A", "B", "C"]
    assert await distinct(data, coll, "items") == [0, 1, 2, 3, 4]  # arrays are unwound
    assert await distinct(data, coll, "day", {"status": "A"}) == sorted(
        {o["day"] for o in data.orders if o["status"] == "A"}
    )
    assert await distinct(data, coll, "nothing") == []


async def test_distinct_merges_bson_equal_values_across_shards(data: Data) -> None:
    config = data.cluster.config_stub()
    coll = unique_name("mixed")
    assert (await shard_collection(config, data.db, coll, ["_id"], "hashed")).success
    values: list[Any] = [1, 1.0, Int64(1), 2.5, "b", "a", None, {"p": 1}, [3, 1], True, 3]
    docs = [{"_id": i, "v": v} for i, v in enumerate(values * 5)]
    await insert_many(data.router, data.db, coll, docs, ordered=False)
    got = await distinct(data, coll, "v")
    assert got[0] is None
    assert got[1:5] == [1, 2.5, 3, "a"]  # 1, 1.0 and Int64(1) are one value
    assert got[5:] == ["b", {"p": 1}, True]


async def test_distinct_errors_and_unknown_database(data: Data) -> None:
    assert await distinct(data, "c", "a", db=unique_name("nodb")) == []
    for key in ("", "a..b", "$a"):
        with pytest.raises(grpc.RpcError) as info:
            await distinct(data, "orders", key)
        assert laura_error(info.value).code == ErrorCode.BAD_VALUE
    with pytest.raises(grpc.RpcError) as info:
        await distinct(data, "orders", "a", {"a": {"$bogus": 1}})
    assert laura_error(info.value).code != ErrorCode.INTERNAL_ERROR
