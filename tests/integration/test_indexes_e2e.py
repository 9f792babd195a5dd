"""Issue 4 through the router: index, collection and database administration.

CreateIndex / DropIndex / ListIndexes, ListCollections, DropCollection and
DropDatabase on RouterService, checked against what every shard (ShardService,
directly) and the config server hold. The point-query test inserts 100,000
documents (unordered batches of 1000) into a collection hashed over the 3 shards
and checks that an index turns a full scan into examining only the matches.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from lauradb.cluster import router_ext_pb2, routing_pb2, routing_pb2_grpc, shard_pb2
from lauradb.errors import ErrorCode
from tests.integration.harness import (
    Cluster,
    count,
    dec,
    enc,
    get_shard_map,
    insert_many,
    laura_error,
    query,
    query_all,
    shard_collection,
    unique_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

RPC = 120.0
N_BIG = 100_000
BIG_MOD = 20_000  # a = _id % 20000: each value of a is in 5 documents


@dataclass
class Env:
    cluster: Cluster
    db: str

    @property
    def router(self) -> routing_pb2_grpc.RouterServiceStub:
        return self.cluster.router_stub()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(session_cluster: Cluster) -> AsyncIterator[Env]:
    db = unique_name("idx")
    yield Env(session_cluster, db)
    await session_cluster.router_stub().DropDatabase(
        router_ext_pb2.DropDatabaseRequest(database=db), timeout=RPC
    )


async def create_index(
    env: Env,
    coll: str,
    keys: Mapping[str, Any],
    *,
    name: str = "",
    unique: bool = False,
    sparse: bool = False,
    db: str = "",
) -> router_ext_pb2.CreateIndexResponse:
    request = router_ext_pb2.CreateIndexRequest(
        database=db or env.db,
        collection=coll,
        index=router_ext_pb2.IndexSpec(name=name, keys=enc(keys), unique=unique, sparse=sparse),
    )
    response: router_ext_pb2.CreateIndexResponse = await env.router.CreateIndex(
        request, timeout=RPC
    )
    return response


async def create_error(env: Env, coll: str, keys: Mapping[str, Any], **kw: Any) -> Any:
    with pytest.raises(grpc.RpcError) as info:
        await create_index(env, coll, keys, **kw)
    return laura_error(info.value)


async def list_indexes(env: Env, coll: str) -> dict[str, router_ext_pb2.IndexSpec]:
    request = router_ext_pb2.ListIndexesRequest(database=env.db, collection=coll)
    response = await env.router.ListIndexes(request, timeout=RPC)
    return {i.name: i for i in response.indexes}


async def drop_index(env: Env, coll: str, name: str) -> list[str]:
    request = router_ext_pb2.DropIndexRequest(database=env.db, collection=coll, name=name)
    return list((await env.router.DropIndex(request, timeout=RPC)).dropped)


async def shard_index_names(env: Env, coll: str) -> list[set[str]]:
    """The index names each shard holds for the collection (asked directly)."""
    out: list[set[str]] = []
    for i in range(len(env.cluster.shards)):
        request = shard_pb2.ShardListIndexesRequest(database=env.db, collection=coll)
        try:
            response = await env.cluster.shard_stub(i).ListIndexes(request, timeout=RPC)
        except grpc.RpcError as exc:
            assert laura_error(exc).code == ErrorCode.NAMESPACE_NOT_FOUND
            out.append(set())
            continue
        out.append({ix.name for ix in response.indexes})
    return out


async def recorded_index_names(env: Env, coll: str) -> set[str]:
    request = router_ext_pb2.GetCollectionIndexesRequest(database=env.db, collection=coll)
    response = await env.cluster.config_server_stub().GetCollectionIndexes(request, timeout=RPC)
    return {ix.name for ix in response.indexes} - {"_id_"}


# --- create, list, drop -----------------------------------------------------------------


async def test_create_list_drop_on_unsharded(env: Env) -> None:
    coll = unique_name("plain")
    await insert_many(env.router, env.db, coll, [{"_id": i, "a": i % 10, "b": i} for i in range(50)])
    single = await create_index(env, coll, {"a": 1})
    assert (single.name, single.created) == ("a_1", True)
    again = await create_index(env, coll, {"a": 1.0})
    assert (again.name, again.created) == ("a_1", False)
    compound = await create_index(env, coll, {"a": 1, "b": -1})
    assert compound.name == "a_1_b_-1"
    sparse = await create_index(env, coll, {"s": 1}, sparse=True, name="s_sparse")
    assert sparse.name == "s_sparse"
    indexes = await list_indexes(env, coll)
    assert set(indexes) == {"_id_", "a_1", "a_1_b_-1", "s_sparse"}
    assert dec(indexes["a_1_b_-1"].keys) == {"a": 1, "b": -1}
    assert indexes["s_sparse"].sparse and not indexes["a_1"].unique
    assert await recorded_index_names(env, coll) == {"a_1", "a_1_b_-1", "s_sparse"}
    holders = [names for names in await shard_index_names(env, coll) if names - {"_id_"}]
    assert holders == [{"_id_", "a_1", "a_1_b_-1", "s_sparse"}]  # the primary only

    assert await drop_index(env, coll, "a_1") == ["a_1"]
    assert "a_1" not in await list_indexes(env, coll)
    with pytest.raises(grpc.RpcError) as info:
        await drop_index(env, coll, "a_1")
    assert laura_error(info.value).code == ErrorCode.INDEX_NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        await drop_index(env, coll, "_id_")
    assert laura_error(info.value).code != ErrorCode.INTERNAL_ERROR
    assert sorted(await drop_index(env, coll, "*")) == ["a_1_b_-1", "s_sparse"]
    assert set(await list_indexes(env, coll)) == {"_id_"}
    assert await recorded_index_names(env, coll) == set()
    assert await count(env.router, env.db, coll) == 50  # the data is untouched


async def test_unique_index_on_unsharded_collection(env: Env) -> None:
    coll = unique_name("uniq")
    await insert_many(env.router, env.db, coll, [{"_id": i, "email": f"u{i}"} for i in range(20)])
    response = await create_index(env, coll, {"email": 1}, unique=True)
    assert response.created and (await list_indexes(env, coll))["email_1"].unique
    request = routing_pb2.InsertRequest(
        database=env.db,
        collection=coll,
        documents=[enc({"_id": 100, "email": "new"}), enc({"_id": 101, "email": "u3"})],
        ordered=True,
    )
    result = await env.router.Insert(request, timeout=RPC)
    assert result.inserted_count == 1
    assert [(e.index, e.code) for e in result.errors] == [(1, int(ErrorCode.DUPLICATE_KEY))]


async def test_index_on_collection_that_does_not_exist_yet(env: Env) -> None:
    coll = unique_name("fresh")
    response = await create_index(env, coll, {"x": 1}, unique=True)
    assert response.created
    assert "x_1" in await list_indexes(env, coll)
    listed = await env.router.ListCollections(
        router_ext_pb2.ListCollectionsRequest(database=env.db), timeout=RPC
    )
    assert coll in {c.name for c in listed.collections}
    await insert_many(env.router, env.db, coll, [{"_id": 1, "x": 1}])
    result = await env.router.Insert(
        routing_pb2.InsertRequest(
            database=env.db, collection=coll, documents=[enc({"_id": 2, "x": 1})]
        ),
        timeout=RPC,
    )
    assert result.errors and result.errors[0].code == int(ErrorCode.DUPLICATE_KEY)


@pytest.mark.parametrize(
    ("keys", "kw"),
    [
        ({}, {}),
        ({"a": 2}, {}),
        ({"a": "text"}, {}),
        ({"a": True}, {}),
        ({"": 1}, {}),
        ({"$a": 1}, {}),
        ({"a": 1}, {"name": "*"}),
        ({"a": 1}, {"name": "_id_"}),
        ({"_id": 1}, {"unique": True}),
    ],
)
async def test_invalid_index_specs(env: Env, keys: dict[str, Any], kw: dict[str, Any]) -> None:
    db = unique_name("baddb")
    err = await create_error(env, "c", keys, db=db, **kw)
    assert err.code == ErrorCode.CANNOT_CREATE_INDEX, err
    assert await list_collections(env, db) == {}  # nothing was created, not even the database


# --- sharded collections -------------------------------------------------------------------


async def test_indexes_on_every_chunk_owner_of_a_sharded_collection(env: Env) -> None:
    coll = unique_name("hsh")
    config = env.cluster.config_stub()
    assert (await shard_collection(config, env.db, coll, ["k"], "hashed")).success
    await insert_many(env.router, env.db, coll, [{"_id": i, "k": i, "v": i % 3} for i in range(300)])
    assert (await create_index(env, coll, {"v": 1})).created
    assert (await create_index(env, coll, {"k": 1, "v": 1}, unique=True)).created
    per_shard = await shard_index_names(env, coll)
    assert per_shard == [{"_id_", "v_1", "k_1_v_1"}] * 3
    assert set(await list_indexes(env, coll)) == {"_id_", "v_1", "k_1_v_1"}
    assert await drop_index(env, coll, "v_1") == ["v_1"]
    assert await shard_index_names(env, coll) == [{"_id_", "k_1_v_1"}] * 3


async def test_unique_not_prefixed_by_shard_key_is_refused(env: Env) -> None:
    coll = unique_name("refuse")
    config = env.cluster.config_stub()
    assert (await shard_collection(config, env.db, coll, ["k"], "hashed")).success
    await insert_many(env.router, env.db, coll, [{"_id": i, "k": i, "e": i} for i in range(30)])
    err = await create_error(env, coll, {"e": 1}, unique=True)
    assert err.code == ErrorCode.CANNOT_CREATE_INDEX
    assert all("e_1" not in names for names in await shard_index_names(env, coll))
    assert await recorded_index_names(env, coll) == set()
    assert (await create_index(env, coll, {"e": 1})).created  # not unique: fine


async def test_unique_violation_on_one_shard_leaves_no_index_anywhere(env: Env) -> None:
    coll = unique_name("viol")
    config = env.cluster.config_stub()
    assert (await shard_collection(config, env.db, coll, ["k"], "hashed")).success
    docs = [{"_id": i, "k": i, "v": 0} for i in range(60)]
    docs.append({"_id": 1000, "k": 7, "v": 0})  # the same (k, v) as _id 7: same shard
    await insert_many(env.router, env.db, coll, docs)
    err = await create_error(env, coll, {"k": 1, "v": 1}, unique=True)
    assert err.code == ErrorCode.DUPLICATE_KEY
    assert all("k_1_v_1" not in names for names in await shard_index_names(env, coll))
    assert await recorded_index_names(env, coll) == set()
    assert "k_1_v_1" not in await list_indexes(env, coll)
    # once the duplicate is gone the same index builds everywhere
    await env.router.Delete(
        routing_pb2.DeleteRequest(database=env.db, collection=coll, query=enc({"_id": 1000})),
        timeout=RPC,
    )
    assert (await create_index(env, coll, {"k": 1, "v": 1}, unique=True)).created
    assert all("k_1_v_1" in names for names in await shard_index_names(env, coll))


# --- the index is used ------------------------------------------------------------------------


async def test_point_query_examines_only_matches_with_index(env: Env) -> None:
    coll = "big"
    config = env.cluster.config_stub()
    assert (await shard_collection(config, env.db, coll, ["_id"], "hashed")).success
    started = time.perf_counter()
    docs = [{"_id": i, "a": i % BIG_MOD, "pad": "p" * 16} for i in range(N_BIG)]
    assert await insert_many(env.router, env.db, coll, docs, ordered=False) == N_BIG
    inserted = time.perf_counter() - started
    scan = await query(env.router, env.db, coll, {"a": 5})
    assert scan.first is not None
    assert scan.first.stats.documents_examined == N_BIG
    started = time.perf_counter()
    assert (await create_index(env, coll, {"a": 1})).created
    built = time.perf_counter() - started
    point = await query(env.router, env.db, coll, {"a": 5})
    assert sorted(d["_id"] for d in point.docs) == [5 + BIG_MOD * j for j in range(5)]
    assert point.first is not None
    assert point.first.stats.documents_examined == 5
    print(f"inserted {N_BIG} in {inserted:.1f}s, built the index in {built:.1f}s")


# --- collections and databases -------------------------------------------------------------------


async def list_collections(env: Env, db: str) -> dict[str, router_ext_pb2.CollectionInfo]:
    request = router_ext_pb2.ListCollectionsRequest(database=db)
    response = await env.router.ListCollections(request, timeout=RPC)
    return {c.name: c for c in response.collections}


async def test_list_and_drop_collections_and_database(env: Env) -> None:
    db = unique_name("catalog")
    config = env.cluster.config_stub()
    assert (await shard_collection(config, db, "hashed", ["k"], "hashed")).success
    assert (await shard_collection(config, db, "ranged", ["r"], "range")).success
    assert (await shard_collection(config, db, "empty", ["e"], "range")).success
    await insert_many(env.router, db, "hashed", [{"_id": i, "k": i} for i in range(100)])
    await insert_many(env.router, db, "ranged", [{"_id": i, "r": i} for i in range(10)])
    await insert_many(env.router, db, "plain", [{"_id": 1}])
    listed = await list_collections(env, db)
    assert set(listed) == {"hashed", "ranged", "empty", "plain"}
    assert listed["hashed"].sharded and list(listed["hashed"].shard_key_fields) == ["k"]
    assert listed["hashed"].strategy == "hashed"
    assert listed["ranged"].strategy == "range" and listed["empty"].sharded
    assert not listed["plain"].sharded and listed["plain"].strategy == ""

    drop = await env.router.DropCollection(
        router_ext_pb2.DropCollectionRequest(database=db, collection="hashed"), timeout=RPC
    )
    assert drop.dropped
    assert "hashed" not in await list_collections(env, db)
    assert await query_all(env.router, db, "hashed", {}) == []
    assert not (await get_shard_map(env.cluster.config_stub(), db, "hashed")).sharded
    for i in range(len(env.cluster.shards)):
        assert await env.cluster.shard_count(i, db, "hashed", {}) == 0
    again = await env.router.DropCollection(
        router_ext_pb2.DropCollectionRequest(database=db, collection="hashed"), timeout=RPC
    )
    assert not again.dropped
    # the name can be used again, unsharded this time
    await insert_many(env.router, db, "hashed", [{"_id": 1, "k": 1}, {"_id": 2, "k": 1}])
    assert await count(env.router, db, "hashed", {"k": 1}) == 2

    dropped = await env.router.DropDatabase(
        router_ext_pb2.DropDatabaseRequest(database=db), timeout=RPC
    )
    assert dropped.dropped
    assert await list_collections(env, db) == {}
    assert await count(env.router, db, "ranged") == 0
    assert not (
        await env.router.DropDatabase(router_ext_pb2.DropDatabaseRequest(database=db), timeout=RPC)
    ).dropped


async def test_list_collections_of_unknown_database_is_empty(env: Env) -> None:
    assert await list_collections(env, unique_name("nodb")) == {}


# --- a shard down ---------------------------------------------------------------------------------


async def test_shard_down_fails_admin_calls_and_leaves_nothing_half_built(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path / "down", shards=2)
    await cluster.start()
    try:
        env = Env(cluster, unique_name("down"))
        config = cluster.config_stub()
        assert (await shard_collection(config, env.db, "c", ["k"], "hashed")).success
        await insert_many(env.router, env.db, "c", [{"_id": i, "k": i} for i in range(40)])
        cluster.kill_shard(1)
        err = await create_error(env, "c", {"v": 1})
        assert err.code == ErrorCode.SHARD_UNAVAILABLE and "shard1" in err.message
        assert await recorded_index_names(env, "c") == set()
        listed = await cluster.shard_stub(0).ListIndexes(
            shard_pb2.ShardListIndexesRequest(database=env.db, collection="c"), timeout=RPC
        )
        assert {ix.name for ix in listed.indexes} == {"_id_"}
        for call in (
            env.router.ListCollections(
                router_ext_pb2.ListCollectionsRequest(database=env.db), timeout=RPC
            ),
            env.router.DropCollection(
                router_ext_pb2.DropCollectionRequest(database=env.db, collection="c"),
                timeout=RPC,
            ),
        ):
            with pytest.raises(grpc.RpcError) as info:
                await call
            assert laura_error(info.value).code == ErrorCode.SHARD_UNAVAILABLE
        assert (await get_shard_map(config, env.db, "c")).sharded  # metadata kept
        assert await cluster.shard_count(0, env.db, "c", {}) > 0  # and shard0's documents
        await cluster.restart_shard(1)
        assert (await create_index(env, "c", {"v": 1})).created
        dropped = await env.router.DropCollection(
            router_ext_pb2.DropCollectionRequest(database=env.db, collection="c"), timeout=RPC
        )
        assert dropped.dropped and await count(env.router, env.db, "c") == 0
    finally:
        await cluster.stop()


async def test_key_order_with_id_not_first_survives_every_hop(env: Env) -> None:
    """``bson.encode`` moves a top-level ``_id`` first; index key patterns, sorts and
    chunk bounds must keep the order the user gave (``{a: 1, _id: 1}`` is not
    ``{_id: 1, a: 1}``)."""
    from lauradb.bsonkit.codec import encode_ordered

    coll = unique_name("order")
    await insert_many(env.router, env.db, coll, [{"_id": i, "a": i % 3} for i in range(30)])
    request = router_ext_pb2.CreateIndexRequest(
        database=env.db, collection=coll,
        index=router_ext_pb2.IndexSpec(keys=encode_ordered({"a": 1, "_id": -1})),
    )
    created = await env.router.CreateIndex(request, timeout=RPC)
    assert created.name == "a_1__id_-1"
    listed = await list_indexes(env, coll)
    assert list(dec(listed["a_1__id_-1"].keys)) == ["a", "_id"]
    recorded = await env.cluster.config_server_stub().GetCollectionIndexes(
        router_ext_pb2.GetCollectionIndexesRequest(database=env.db, collection=coll), timeout=RPC
    )
    assert [list(dec(ix.keys)) for ix in recorded.indexes if ix.name == "a_1__id_-1"] == [["a", "_id"]]

    # a sort whose second key is _id: a ascending, then _id descending
    sorted_docs = await query_all(
        env.router, env.db, coll, {}, sort={"a": 1, "_id": -1}
    )
    ids = [d["_id"] for d in sorted_docs]
    assert ids[:3] == [27, 24, 21] and ids[-1] == 2

    # chunk bounds of a compound shard key with _id second
    ranged = unique_name("bounds")
    await shard_collection(env.cluster.config_server_stub(), env.db, ranged, ["a", "_id"], "range")
    shard_map = await get_shard_map(env.cluster.config_server_stub(), env.db, ranged)
    bounds = [c.min_key for s in shard_map.shards for c in s.chunks]
    assert bounds and all(list(dec(b)) == ["a", "_id"] for b in bounds)
