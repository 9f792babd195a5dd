"""The router against real processes: a config server, two shards and a router.

One cluster for the module; each test uses collections of its own in one database.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from bson.int64 import Int64
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lauradb.cluster import router_ext_pb2, routing_pb2
from lauradb.errors import ErrorCode
from tests.integration.harness import (
    Cluster,
    Proc,
    count,
    dec,
    enc,
    eventually,
    free_port,
    get_shard_map,
    insert_many,
    laura_error,
    query,
    query_all,
    shard_collection,
    unique_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

N = 1000
RPC = 30.0


def make_docs(n: int = N) -> list[dict[str, Any]]:
    return [
        {"_id": i, "k": i, "g": i % 7, "s": f"s{(i * 37) % 101:03d}", "v": (i * 13) % 50}
        for i in range(n)
    ]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def two_shards(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    cluster = Cluster(Path(tmp_path_factory.mktemp("router-basic")), shards=2)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def db(two_shards: Cluster) -> str:
    return unique_name("routerbasic")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hashed(two_shards: Cluster, db: str) -> str:
    """A collection sharded on hashed ``k`` holding ``make_docs()``, plus an unsharded copy."""
    config = two_shards.config_stub()
    resp = await shard_collection(config, db, "hashed", ["k"], "hashed")
    assert resp.success, resp
    router = two_shards.router_stub()
    assert await insert_many(router, db, "hashed", make_docs(), batch=N) == N
    assert await insert_many(router, db, "plain", make_docs(), batch=N) == N
    return "hashed"


async def test_unsharded_insert_and_read_back(two_shards: Cluster, db: str) -> None:
    router = two_shards.router_stub()
    docs = [{"_id": i, "x": i * 2} for i in range(5)]
    assert await insert_many(router, db, "fresh", docs) == 5
    got = await query(router, db, "fresh", {}, sort={"_id": 1})
    assert got.docs == docs
    assert len(got.shards_queried) == 1
    # A document without _id gets an ObjectId first.
    req = routing_pb2.InsertRequest(database=db, collection="fresh", documents=[enc({"y": 1})])
    assert (await router.Insert(req, timeout=RPC)).inserted_count == 1
    (doc,) = await query_all(router, db, "fresh", {"y": 1})
    assert next(iter(doc)) == "_id" and doc["y"] == 1


async def test_reads_of_unknown_database_are_empty(two_shards: Cluster) -> None:
    router = two_shards.router_stub()
    assert await query_all(router, unique_name("nodb"), "c", {"a": 1}) == []
    assert await count(router, unique_name("nodb"), "c", {}) == 0


async def test_shard_map_spreads_over_both_shards(two_shards: Cluster, db: str, hashed: str) -> None:
    shard_map = await get_shard_map(two_shards.router_stub(), db, hashed)
    assert shard_map.sharded
    assert list(shard_map.shard_key_fields) == ["k"]
    owners = {r.shard_id for r in shard_map.shards if r.chunks}
    assert owners == {"shard0", "shard1"}
    per_shard = [await two_shards.shard_count(i, db, hashed, {}) for i in range(2)]
    assert sum(per_shard) == N and all(n > 0 for n in per_shard)


async def test_equality_on_shard_key_asks_one_shard(two_shards: Cluster, db: str, hashed: str) -> None:
    router = two_shards.router_stub()
    for k in (0, 1, 2, 500, 999):
        got = await query(router, db, hashed, {"k": k})
        assert [d["_id"] for d in got.docs] == [k]
        assert len(got.shards_queried) == 1
    got = await query(router, db, hashed, {"k": {"$in": [3, 4, 5, 6, 7, 8]}}, sort={"k": 1})
    assert [d["k"] for d in got.docs] == [3, 4, 5, 6, 7, 8]
    got = await query(router, db, hashed, {"g": 3})
    assert got.shards_queried == {"shard0", "shard1"}


async def test_full_scan_through_getmore_returns_every_document_once(
    two_shards: Cluster, db: str, hashed: str
) -> None:
    router = two_shards.router_stub()
    got = await query(router, db, hashed, {}, batch_size=0)
    assert got.first is not None and len(got.first.documents) == 101
    assert got.first.more_available and got.first.cursor_id
    ids = [d["_id"] for d in got.docs]
    assert len(ids) == N and set(ids) == set(range(N))
    assert got.batches >= 2
    small = await query(router, db, hashed, {"g": {"$lt": 3}}, batch_size=50)
    assert sorted(d["_id"] for d in small.docs) == [i for i in range(N) if i % 7 < 3]
    assert small.batches > 5


@pytest.mark.parametrize(
    ("filt", "sort", "skip", "limit", "projection"),
    [
        ({}, {"s": 1, "_id": 1}, 0, 0, None),
        ({}, {"v": -1, "_id": 1}, 37, 120, None),
        ({"g": {"$in": [1, 2]}}, {"s": -1, "_id": -1}, 5, 10, None),
        ({}, {"v": 1, "k": 1}, 990, 50, {"_id": 1}),
        ({"v": {"$gte": 10}}, {"s": 1, "_id": 1}, 3, 200, {"v": 1, "_id": 0}),
        ({}, {"g": 1, "_id": -1}, 0, -20, None),
    ],
)
async def test_sort_skip_limit_matches_unsharded_copy(
    two_shards: Cluster,
    db: str,
    hashed: str,
    filt: dict[str, Any],
    sort: dict[str, Any],
    skip: int,
    limit: int,
    projection: dict[str, Any] | None,
) -> None:
    router = two_shards.router_stub()
    kw: dict[str, Any] = {"sort": sort, "skip": skip, "limit": limit, "projection": projection}
    sharded = await query(router, db, hashed, filt, batch_size=30, **kw)
    plain = await query(router, db, "plain", filt, batch_size=30, **kw)
    assert sharded.docs == plain.docs
    if limit < 0:
        assert len(sharded.docs) == -limit and sharded.batches == 1
    if projection is not None:
        assert all(set(d) <= set(projection) | {"_id"} for d in sharded.docs)


async def test_update_one_without_shard_key_changes_exactly_one(
    two_shards: Cluster, db: str
) -> None:
    router = two_shards.router_stub()
    config = two_shards.config_stub()
    assert (await shard_collection(config, db, "upd", ["k"], "hashed")).success
    assert await insert_many(router, db, "upd", make_docs(200)) == 200
    req = routing_pb2.UpdateRequest(
        database=db,
        collection="upd",
        query=enc({"g": 3, "hit": {"$exists": False}}),
        update=enc({"$set": {"hit": True}}),
    )
    for expected in (1, 2, 3):
        resp = await router.Update(req, timeout=RPC)
        assert (resp.matched_count, resp.modified_count) == (1, 1)
        assert await count(router, db, "upd", {"hit": True}) == expected
    multi = routing_pb2.UpdateRequest(
        database=db, collection="upd", query=enc({"g": 4}), update=enc({"$inc": {"v": 1000}}),
        multi=True,
    )
    resp = await router.Update(multi, timeout=RPC)
    n4 = len([i for i in range(200) if i % 7 == 4])
    assert (resp.matched_count, resp.modified_count) == (n4, n4)
    # upsert must pin the shard key; with it, it inserts on the owning shard
    bad = routing_pb2.UpdateRequest(
        database=db, collection="upd", query=enc({"g": 99}), update=enc({"$set": {"x": 1}}),
        upsert=True,
    )
    with pytest.raises(grpc.RpcError) as exc:
        await router.Update(bad, timeout=RPC)
    assert laura_error(exc.value).code == ErrorCode.SHARD_KEY_NOT_FOUND
    up = routing_pb2.UpdateRequest(
        database=db, collection="upd", query=enc({"k": 5000}), update=enc({"$set": {"x": 1}}),
        upsert=True,
    )
    resp = await router.Update(up, timeout=RPC)
    assert resp.upserted_count == 1 and resp.upserted_id
    assert await query_all(router, db, "upd", {"k": 5000}, projection={"_id": 0}) == [
        {"k": 5000, "x": 1}
    ]
    # delete one without the shard key: exactly one goes
    delete = routing_pb2.DeleteRequest(database=db, collection="upd", query=enc({"g": 5}))
    assert (await router.Delete(delete, timeout=RPC)).deleted_count == 1
    n5 = len([i for i in range(200) if i % 7 == 5])
    assert await count(router, db, "upd", {"g": 5}) == n5 - 1
    delete.multi = True
    assert (await router.Delete(delete, timeout=RPC)).deleted_count == n5 - 1


async def test_count_is_exact_with_skip_and_limit(two_shards: Cluster, db: str, hashed: str) -> None:
    router = two_shards.router_stub()
    assert await count(router, db, hashed, {}) == N
    n3 = len([i for i in range(N) if i % 7 == 3])
    assert await count(router, db, hashed, {"g": 3}) == n3
    assert await count(router, db, hashed, {"k": 17}) == 1
    req = router_ext_pb2.CountRequest(
        database=db, collection=hashed, query=enc({"g": 3}), skip=10, limit=20
    )
    assert (await router.Count(req, timeout=RPC)).count == 20
    req = router_ext_pb2.CountRequest(database=db, collection=hashed, query=enc({}), skip=N - 5)
    assert (await router.Count(req, timeout=RPC)).count == 5


@pytest.mark.parametrize("ordered", [True, False])
async def test_duplicate_id_reports_code_11000_at_original_index(
    two_shards: Cluster, db: str, hashed: str, ordered: bool
) -> None:
    router = two_shards.router_stub()
    base = 10_000 if ordered else 20_000
    docs = [
        {"_id": base, "k": base},
        {"_id": base + 1, "k": base + 1},
        {"_id": 17, "k": 17},  # already there
        {"_id": base + 2, "k": base + 2},
        {"_id": 18, "k": 18},  # already there
        {"_id": base + 3, "k": base + 3},
    ]
    req = routing_pb2.InsertRequest(
        database=db, collection=hashed, documents=[enc(d) for d in docs], ordered=ordered
    )
    resp = await router.Insert(req, timeout=RPC)
    if ordered:
        assert resp.inserted_count == 2
        assert [(e.index, e.code) for e in resp.errors] == [(2, 11000)]
    else:
        assert resp.inserted_count == 4
        assert [(e.index, e.code) for e in resp.errors] == [(2, 11000), (4, 11000)]
    assert resp.errors[0].code_name == "DUPLICATE_KEY"
    assert resp.error.code == 11000
    expected_new = [base, base + 1] if ordered else [base, base + 1, base + 2, base + 3]
    got = await query_all(router, db, hashed, {"_id": {"$gte": base, "$lt": base + 10}})
    assert sorted(d["_id"] for d in got) == expected_new
    # clean up so other tests see exactly N documents
    delete = routing_pb2.DeleteRequest(
        database=db, collection=hashed, query=enc({"_id": {"$gte": base}}), multi=True
    )
    assert (await router.Delete(delete, timeout=RPC)).deleted_count == len(expected_new)


async def test_aggregate_group_and_sorted_merge(two_shards: Cluster, db: str, hashed: str) -> None:
    router = two_shards.router_stub()

    async def agg(coll: str, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
        req = routing_pb2.AggregationRequest(
            database=db, collection=coll, pipeline=[enc(s) for s in pipeline], batch_size=40
        )
        resp = await router.Aggregate(req, timeout=RPC)
        out = [dec(d) for d in resp.results]
        cursor = resp.cursor_id if resp.more_available else ""
        while cursor:
            more = await router.GetMore(
                router_ext_pb2.GetMoreRequest(cursor_id=cursor), timeout=RPC
            )
            out.extend(dec(d) for d in more.documents)
            cursor = more.cursor_id if more.more_available else ""
        return out

    pipelines: list[list[dict[str, Any]]] = [
        [{"$group": {"_id": "$g", "n": {"$sum": 1}, "avg": {"$avg": "$v"}}}, {"$sort": {"_id": 1}}],
        [{"$match": {"v": {"$lt": 20}}}, {"$sort": {"s": 1, "_id": 1}}, {"$skip": 7}, {"$limit": 90}],
        [{"$match": {"k": 42}}, {"$project": {"_id": 0, "k": 1, "g": 1}}],
        [{"$sort": {"v": -1, "_id": 1}}, {"$project": {"v": 1}}],
        [
            {"$match": {"k": {"$lt": 6}}},
            {"$lookup": {"from": "plain", "localField": "g", "foreignField": "k", "as": "m"}},
            {"$sort": {"_id": 1}},
        ],
    ]
    for pipeline in pipelines:
        assert await agg(hashed, pipeline) == await agg("plain", pipeline), pipeline


async def test_kill_cursors(two_shards: Cluster, db: str, hashed: str) -> None:
    router = two_shards.router_stub()
    req = routing_pb2.QueryRequest(database=db, collection=hashed, query=enc({}), batch_size=10)
    resp = await router.Query(req, timeout=RPC)
    assert resp.more_available and resp.cursor_id
    killed = await router.KillCursors(
        router_ext_pb2.KillCursorsRequest(cursor_ids=[resp.cursor_id, "nope"]), timeout=RPC
    )
    assert list(killed.killed) == [resp.cursor_id] and list(killed.not_found) == ["nope"]
    with pytest.raises(grpc.RpcError) as exc:
        await router.GetMore(router_ext_pb2.GetMoreRequest(cursor_id=resp.cursor_id), timeout=RPC)
    assert laura_error(exc.value).code == ErrorCode.CURSOR_NOT_FOUND


async def test_bad_input_fails_with_codes(two_shards: Cluster, db: str, hashed: str) -> None:
    router = two_shards.router_stub()
    cases: list[tuple[Any, Any, ErrorCode]] = [
        (router.Query, routing_pb2.QueryRequest(database=db, collection=hashed, query=b"\x05\x00"),
         ErrorCode.INVALID_BSON),
        (router.Query, routing_pb2.QueryRequest(database="", collection="c"),
         ErrorCode.INVALID_NAMESPACE),
        (router.Query, routing_pb2.QueryRequest(database=db, collection="a$b"),
         ErrorCode.INVALID_NAMESPACE),
        (router.Query, routing_pb2.QueryRequest(
            database=db, collection=hashed, query=enc({"a": {"$bogus": 1}})),
         ErrorCode.BAD_VALUE),
        (router.Insert, routing_pb2.InsertRequest(
            database=db, collection=hashed, documents=[enc({"_id": -1}), b"\x07\x00\x00\x00"]),
         ErrorCode.INVALID_BSON),
    ]
    for method, request, code in cases:
        with pytest.raises(grpc.RpcError) as exc:
            await method(request, timeout=RPC)
        err = laura_error(exc.value)
        if code == ErrorCode.BAD_VALUE:
            assert err.code in (ErrorCode.BAD_VALUE, ErrorCode.UNKNOWN_OPERATOR), err
        else:
            assert err.code == code, err
    assert await count(router, db, hashed, {"_id": -1}) == 0  # nothing half-written


async def test_config_service_is_forwarded(two_shards: Cluster, db: str) -> None:
    config = two_shards.config_stub()
    shards = await config.ListShards(router_ext_pb2.ListShardsRequest(), timeout=RPC)
    assert {s.shard_id for s in shards.shards} == {"shard0", "shard1"}
    await shard_collection(config, db, "twice", ["k"], "hashed")
    with pytest.raises(grpc.RpcError) as exc:
        await shard_collection(config, db, "twice", ["k"], "hashed")
    assert laura_error(exc.value).code == ErrorCode.ALREADY_SHARDED


async def test_stale_routing_is_refreshed_transparently(two_shards: Cluster, db: str) -> None:
    """The router cached ``late`` as unsharded; it gets sharded and split behind its back."""
    router = two_shards.router_stub()
    assert await insert_many(router, db, "late", make_docs(50)) == 50
    assert await count(router, db, "late", {}) == 50  # cached: unsharded
    direct = two_shards.config_server_stub()
    assert (await shard_collection(direct, db, "late", ["k"], "hashed")).success
    more = [{**d, "_id": d["_id"] + 50, "k": d["k"] + 50} for d in make_docs(150)]
    assert await insert_many(router, db, "late", more) == 150  # STALE_CONFIG -> refresh -> retry
    assert await count(router, db, "late", {}) == 200
    shard_map = await get_shard_map(direct, db, "late")
    route = next(r for r in shard_map.shards if r.chunks)
    chunk = route.chunks[0]
    lo, hi = dec(chunk.min_key)["k"], dec(chunk.max_key)["k"]
    lo_v = -(2**63) if not isinstance(lo, int) else lo
    hi_v = 2**63 - 1 if not isinstance(hi, int) else hi
    split = routing_pb2.SplitChunkRequest(
        chunk_id=chunk.chunk_id, split_point=enc({"k": Int64(lo_v // 2 + hi_v // 2)})
    )
    assert (await direct.SplitChunk(split, timeout=RPC)).success
    for k in (0, 7, 120, 199):
        assert [d["_id"] for d in await query_all(router, db, "late", {"k": k})] == [k]
    assert sorted(d["_id"] for d in await query_all(router, db, "late", {})) == list(range(200))
    assert await count(router, db, "late", {}) == 200


async def test_router_health_follows_the_config_server(
    two_shards: Cluster, tmp_path: Path
) -> None:
    """A router whose config server does not answer stays NOT_SERVING."""
    address = f"127.0.0.1:{free_port()}"
    host, port = address.rsplit(":", 1)
    proc = Proc(
        "router-orphan",
        "router",
        ["--host", host, "--port", port, "--config", f"127.0.0.1:{free_port()}"],
        address=address,
        data_dir=None,
        log_path=tmp_path / "router-orphan.log",
    )
    proc.start()
    try:
        async with aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status() -> int:
                resp = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                return int(resp.status)

            got = await eventually(status, what="router answers health")
            assert got == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        assert proc.terminate() == 0
        proc.forget()


async def test_shard_down_yields_shard_unavailable(two_shards: Cluster, db: str, hashed: str) -> None:
    """Last test of the module: it kills shard1."""
    router = two_shards.router_stub()
    shard_map = await get_shard_map(router, db, hashed)
    owner_of: dict[str, set[int]] = {"shard0": set(), "shard1": set()}
    for k in range(40):
        got = await query(router, db, hashed, {"k": k})
        (sid,) = got.shards_queried
        owner_of[sid].add(k)
    assert owner_of["shard0"] and owner_of["shard1"] and shard_map.sharded
    two_shards.kill_shard(1)
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as exc:
        await query_all(router, db, hashed, {})
    err = laura_error(exc.value)
    assert err.code == ErrorCode.SHARD_UNAVAILABLE and "shard1" in err.message
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - start < 10
    # targeted traffic to the live shard keeps working
    k = min(owner_of["shard0"])
    assert [d["_id"] for d in await query_all(router, db, hashed, {"k": k})] == [k]
    with pytest.raises(grpc.RpcError) as exc:
        await query_all(router, db, hashed, {"k": min(owner_of["shard1"])})
    assert laura_error(exc.value).code == ErrorCode.SHARD_UNAVAILABLE
