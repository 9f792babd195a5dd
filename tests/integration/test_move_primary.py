"""movePrimary: a database's unsharded collections move to another primary shard.

Through the router: MovePrimary while a client keeps writing (no error seen, every
document on the new primary exactly once, none left on the old one, indexes
rebuilt), bad input refused without change, and RemoveShard of a primary with
unsharded data completes (the balancer moves the primary).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import bson
import grpc
import pytest

from lauradb.cluster import router_ext_pb2, routing_pb2, shard_pb2
from lauradb.errors import ErrorCode
from tests.integration.harness import (
    Cluster,
    count,
    enc,
    eventually,
    insert_many,
    laura_error,
    query_all,
    unique_name,
)

pytestmark = pytest.mark.timeout(240)

RPC = 30.0
MakeCluster = Callable[..., Awaitable[Cluster]]


async def ensure_db(c: Cluster, db: str) -> str:
    resp = await c.config_stub().EnsureDatabase(
        router_ext_pb2.EnsureDatabaseRequest(database=db), timeout=RPC
    )
    return str(resp.primary_shard)


async def primary_of(c: Cluster, db: str) -> str:
    resp = await c.config_stub().ListDatabases(router_ext_pb2.ListDatabasesRequest(), timeout=RPC)
    return next(d.primary_shard for d in resp.databases if d.name == db)


async def move_primary(c: Cluster, db: str, to_shard: str) -> Any:
    return await c.config_stub().MovePrimary(
        router_ext_pb2.MovePrimaryConfigRequest(database=db, to_shard=to_shard), timeout=120
    )


async def shard_ids_of(c: Cluster, index: int, db: str, coll: str) -> list[Any]:
    request = shard_pb2.ShardFindRequest(
        database=db, collection=coll, filter=enc({}),
        version=shard_pb2.ShardVersion(ignore=True), batch_size=100_000,
    )
    resp = await c.shard_stub(index).Find(request, timeout=RPC)
    assert not resp.cursor_id
    return [bson.decode(d)["_id"] for d in resp.documents]


async def shard_collections(c: Cluster, index: int, db: str) -> list[str]:
    resp = await c.shard_stub(index).ListCollections(
        shard_pb2.ShardListCollectionsRequest(database=db), timeout=RPC
    )
    return list(resp.collections)


async def expect_error(call: Awaitable[Any], code: ErrorCode) -> None:
    with pytest.raises(grpc.RpcError) as info:
        await call
    assert laura_error(info.value).code == code, laura_error(info.value)


async def test_move_primary_while_writing(cluster: MakeCluster) -> None:
    c = await cluster(shards=2)
    router = c.router_stub()
    db = unique_name("mp")
    old = await ensure_db(c, db)
    new = next(s for s in c.shard_ids if s != old)
    old_i, new_i = c.shard_index(old), c.shard_index(new)
    await insert_many(router, db, "a", [{"_id": i, "x": i % 7} for i in range(3000)])
    await insert_many(router, db, "b", [{"_id": f"b{i}", "y": i} for i in range(200)])
    await router.CreateIndex(
        router_ext_pb2.CreateIndexRequest(
            database=db, collection="a",
            index=router_ext_pb2.IndexSpec(keys=enc({"x": 1})),
        ),
        timeout=RPC,
    )

    written: list[int] = []
    stop = asyncio.Event()
    errors: list[str] = []

    async def writer() -> None:
        i = 100_000
        while not stop.is_set():
            resp = await router.Insert(
                routing_pb2.InsertRequest(
                    database=db, collection="a", documents=[enc({"_id": i, "x": -1})]
                ),
                timeout=60,
            )
            if resp.errors or resp.inserted_count != 1:
                errors.append(f"{i}: {resp}")
                return
            written.append(i)
            i += 1
            await asyncio.sleep(0.002)

    task = asyncio.create_task(writer())
    try:
        await _move_while_writing(c, db, old, new, written, stop, task)
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
    assert not errors
    await _check_moved(c, db, old_i, new_i, written, old)


async def _move_while_writing(
    c: Cluster, db: str, old: str, new: str, written: list[int], stop: asyncio.Event,
    task: asyncio.Task[None],
) -> None:
    await eventually(lambda: _truthy(len(written) >= 20), what="writes before the move")
    resp = await move_primary(c, db, new)
    assert resp.success and resp.from_shard == old and resp.to_shard == new
    assert sorted(resp.collections_moved) == ["a", "b"]
    assert resp.documents_moved >= 3200
    before = len(written)
    await eventually(lambda: _truthy(len(written) >= before + 20), what="writes after the move")
    stop.set()
    await task  # the client never saw an error (STALE_CONFIG retried by the router)


async def _check_moved(
    c: Cluster, db: str, old_i: int, new_i: int, written: list[int], old: str
) -> None:
    router = c.router_stub()
    new = c.shard_ids[new_i]
    assert await primary_of(c, db) == new
    shard_map = await c.config_stub().GetShardMap(
        routing_pb2.GetShardMapRequest(database=db, collection="a"), timeout=RPC
    )
    assert not shard_map.sharded and shard_map.primary_shard == new
    expected = sorted([*range(3000), *written])
    on_new = await shard_ids_of(c, new_i, db, "a")
    assert sorted(on_new) == expected  # every document exactly once
    assert len(await shard_ids_of(c, new_i, db, "b")) == 200
    assert "a" not in await shard_collections(c, old_i, db)
    assert "b" not in await shard_collections(c, old_i, db)
    indexes = await c.shard_stub(new_i).ListIndexes(
        shard_pb2.ShardListIndexesRequest(database=db, collection="a"), timeout=RPC
    )
    assert "x_1" in [ix.name for ix in indexes.indexes]
    # through the router
    docs = await query_all(router, db, "a", {})
    assert sorted(d["_id"] for d in docs) == expected
    assert await count(router, db, "a", {"x": -1}) == len(written)
    assert await count(router, db, "b", {}) == 200
    await router.Update(
        routing_pb2.UpdateRequest(
            database=db, collection="b", query=enc({"_id": "b1"}),
            update=enc({"$set": {"y": -5}}),
        ),
        timeout=RPC,
    )
    assert [d["y"] for d in await query_all(router, db, "b", {"_id": "b1"})] == [-5]
    # and back again
    back = await move_primary(c, db, old)
    assert back.success and await primary_of(c, db) == old
    assert await count(router, db, "a", {}) == len(expected)
    assert "a" not in await shard_collections(c, new_i, db)


async def _truthy(value: bool) -> bool:
    return value


async def test_move_primary_bad_input(cluster: MakeCluster) -> None:
    c = await cluster(shards=3)
    router = c.router_stub()
    db = unique_name("bad")
    primary = await ensure_db(c, db)
    await insert_many(router, db, "u", [{"_id": i} for i in range(50)])
    other = next(s for s in c.shard_ids if s != primary)

    await expect_error(move_primary(c, unique_name("nodb"), other), ErrorCode.NAMESPACE_NOT_FOUND)
    await expect_error(move_primary(c, db, "ghost"), ErrorCode.SHARD_NOT_FOUND)
    await expect_error(move_primary(c, db, primary), ErrorCode.ILLEGAL_OPERATION)
    await expect_error(move_primary(c, "", other), ErrorCode.BAD_VALUE)
    # a draining shard cannot become a primary (the balancer is off: it stays draining)
    keeper = unique_name("keep")
    third = next(s for s in c.shard_ids if s not in (primary,))
    for _ in range(3):  # make `third` the primary of a database with data
        name = unique_name("keep")
        if await ensure_db(c, name) == third:
            keeper = name
            break
    else:
        pytest.skip("could not place a database on the third shard")
    await insert_many(router, keeper, "k", [{"_id": 1}])
    removal = await c.config_stub().RemoveShard(
        routing_pb2.RemoveShardRequest(shard_id=third), timeout=RPC
    )
    assert removal.state == "started"
    await expect_error(move_primary(c, db, third), ErrorCode.ILLEGAL_OPERATION)
    # nothing changed
    assert await primary_of(c, db) == primary
    assert await count(router, db, "u", {}) == 50
    assert len(await shard_ids_of(c, c.shard_index(primary), db, "u")) == 50


async def test_remove_shard_moves_primary(cluster: MakeCluster) -> None:
    c = await cluster(shards=2, extra_config_args=["--balancer-interval", "0.2"])
    router = c.router_stub()
    db = unique_name("rm")
    victim = await ensure_db(c, db)
    keeper = next(s for s in c.shard_ids if s != victim)
    await insert_many(router, db, "u", [{"_id": i, "v": i} for i in range(500)])
    await insert_many(router, db, "w", [{"_id": i} for i in range(10)])

    async def completed() -> bool:
        resp = await c.config_stub().RemoveShard(
            routing_pb2.RemoveShardRequest(shard_id=victim), timeout=RPC
        )
        return resp.state == "completed"

    await eventually(completed, timeout=90, interval=0.3, what="removal completed")
    assert await primary_of(c, db) == keeper
    assert sorted(d["_id"] for d in await query_all(router, db, "u", {})) == list(range(500))
    assert await count(router, db, "w", {}) == 10
    assert len(await shard_ids_of(c, c.shard_index(keeper), db, "u")) == 500


async def test_move_primary_to_unreachable_shard_changes_nothing(cluster: MakeCluster) -> None:
    c = await cluster(shards=2)
    router = c.router_stub()
    db = unique_name("down")
    primary = await ensure_db(c, db)
    other = next(s for s in c.shard_ids if s != primary)
    await insert_many(router, db, "u", [{"_id": i} for i in range(100)])
    c.kill_shard(c.shard_index(other))
    with pytest.raises(grpc.RpcError) as info:
        await move_primary(c, db, other)
    assert laura_error(info.value).code != ErrorCode.OK
    # the old primary stays primary, keeps every document and takes writes again
    assert await primary_of(c, db) == primary
    await insert_many(router, db, "u", [{"_id": 100}])
    assert await count(router, db, "u", {}) == 101
    assert len(await shard_ids_of(c, c.shard_index(primary), db, "u")) == 101
    await c.restart_shard(c.shard_index(other))
    resp = await move_primary(c, db, other)  # and it works once the shard is back
    assert resp.success and await primary_of(c, db) == other
    assert await count(router, db, "u", {}) == 101
