"""Retryable writes, server side: a write whose reply was lost is retried with the same
request id through another router (or after a shard restart, or after its chunk
moved) and is applied exactly once.

The module's cluster has two routers: the harness's router and ``dropper``, started
with ``--test-drop-write-replies`` (every write completes on the shards, then its
reply is replaced by UNAVAILABLE: a lost reply). Raw gRPC stubs, no driver.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from lauradb.cluster import routing_pb2, routing_pb2_grpc, shard_pb2
from lauradb.errors import ErrorCode
from tests.integration.harness import (
    Cluster,
    Proc,
    chunks_of,
    count,
    dec,
    enc,
    eventually,
    get_shard_map,
    insert_many,
    laura_error,
    query_all,
    shard_collection,
    unique_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

RPC = 30.0
COLL = "c"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def two_routers(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Cluster, Proc]]:
    c = Cluster(
        Path(tmp_path_factory.mktemp("retryable")), shards=3,
        extra_config_args=["--no-balancer"],
    )
    try:
        await c.start()
        dropper = await c.add_router(["--test-drop-write-replies"])
        yield c, dropper
    finally:
        await c.stop()


def rid(hint: str) -> str:
    return f"{hint}-{uuid.uuid4().hex}"


async def dropped(call: Awaitable[Any]) -> None:
    """The write ran, its reply was lost: UNAVAILABLE."""
    with pytest.raises(grpc.RpcError) as exc:
        await call
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, exc.value


async def sharded(c: Cluster, db: str, key: str = "k", strategy: str = "hashed") -> None:
    await shard_collection(
        c.config_stub(), db, COLL, [key], strategy,
        initial_chunks=6 if strategy == "hashed" else 0,
    )


def stubs(c: Cluster, dropper: Proc) -> tuple[Any, Any]:
    return c.router_stub(dropper), c.router_stub()


# ------------------------------------------------------------------------ inserts


async def test_insert_reply_lost_retry_through_another_router(
    two_routers: tuple[Cluster, Proc],
) -> None:
    c, dropper = two_routers
    db = unique_name("ins")
    await sharded(c, db)
    first, second = stubs(c, dropper)
    # Half the documents have no _id: each router adds its own ObjectId, so only the
    # statement ids (the documents' indexes) can tell that a retry is the same write.
    docs = [enc({"_id": i, "k": i}) for i in range(20)] + [
        enc({"k": 100 + i, "tag": "noid"}) for i in range(20)
    ]
    req = routing_pb2.InsertRequest(
        request_id=rid("ins"), database=db, collection=COLL, documents=docs, ordered=True
    )
    await dropped(first.Insert(req, timeout=RPC))
    assert await count(second, db, COLL) == 40  # applied, reply lost

    resp = await second.Insert(req, timeout=RPC)
    assert (resp.inserted_count, list(resp.errors)) == (40, [])
    assert resp.request_id == req.request_id
    assert await count(second, db, COLL) == 40
    assert await count(second, db, COLL, {"tag": "noid"}) == 20
    again = await second.Insert(req, timeout=RPC)  # the router's cache answers
    assert (again.inserted_count, list(again.errors)) == (40, [])

    unordered = routing_pb2.InsertRequest(
        request_id=rid("unordered"), database=db, collection=COLL, ordered=False,
        documents=[enc({"k": 200 + i, "tag": "u"}) for i in range(30)],
    )
    await dropped(first.Insert(unordered, timeout=RPC))
    resp = await second.Insert(unordered, timeout=RPC)
    assert (resp.inserted_count, list(resp.errors)) == (30, [])
    assert await count(second, db, COLL, {"tag": "u"}) == 30


async def test_ordered_insert_retried_after_partial_failure(
    two_routers: tuple[Cluster, Proc],
) -> None:
    c, dropper = two_routers
    db = unique_name("ordered")
    await shard_collection(c.config_stub(), db, COLL, ["_id"], "hashed", initial_chunks=6)
    first, second = stubs(c, dropper)
    await insert_many(second, db, COLL, [{"_id": 15, "pre": True}])
    req = routing_pb2.InsertRequest(
        request_id=rid("ordered"), database=db, collection=COLL, ordered=True,
        documents=[enc({"_id": i}) for i in range(30)],
    )
    await dropped(first.Insert(req, timeout=RPC))
    # As in MongoDB: documents 0..14 come from their records (a re-insert would fail
    # with a duplicate key at index 0), the failed one runs again and fails again.
    for _ in range(2):
        resp = await second.Insert(req, timeout=RPC)
        assert resp.inserted_count == 15
        assert [(e.index, e.code) for e in resp.errors] == [(15, ErrorCode.DUPLICATE_KEY)]
        assert await count(second, db, COLL) == 16
    # Once the conflict is gone a retry finishes the write.
    gone = await second.Delete(
        routing_pb2.DeleteRequest(database=db, collection=COLL, query=enc({"_id": 15})),
        timeout=RPC,
    )
    assert gone.deleted_count == 1
    resp = await second.Insert(req, timeout=RPC)
    assert (resp.inserted_count, list(resp.errors)) == (30, [])
    assert sorted(d["_id"] for d in await query_all(second, db, COLL)) == list(range(30))


async def test_without_request_id_nothing_is_deduplicated(
    two_routers: tuple[Cluster, Proc],
) -> None:
    c, dropper = two_routers
    db = unique_name("plain")
    await sharded(c, db)
    first, second = stubs(c, dropper)
    req = routing_pb2.InsertRequest(
        database=db, collection=COLL, documents=[enc({"k": i}) for i in range(10)]
    )
    await dropped(first.Insert(req, timeout=RPC))
    assert (await second.Insert(req, timeout=RPC)).inserted_count == 10
    assert await count(second, db, COLL) == 20
    upd = routing_pb2.UpdateRequest(
        database=db, collection=COLL, query=enc({"k": 3}), update=enc({"$inc": {"n": 1}})
    )
    await dropped(first.Update(upd, timeout=RPC))
    await second.Update(upd, timeout=RPC)
    assert sum(d.get("n", 0) for d in await query_all(second, db, COLL, {"k": 3})) == 2


async def test_reused_request_id_for_another_write_is_refused(
    two_routers: tuple[Cluster, Proc],
) -> None:
    c, dropper = two_routers
    db = unique_name("reuse")
    await sharded(c, db)
    first, second = stubs(c, dropper)
    shared = rid("reuse")
    req = routing_pb2.InsertRequest(
        request_id=shared, database=db, collection=COLL, documents=[enc({"_id": 1, "k": 1})]
    )
    assert (await second.Insert(req, timeout=RPC)).inserted_count == 1
    other = routing_pb2.InsertRequest(
        request_id=shared, database=db, collection=COLL, documents=[enc({"_id": 2, "k": 1})]
    )
    for stub in (second, first):  # the router's cache, then the shard's record
        with pytest.raises(grpc.RpcError) as exc:
            await stub.Insert(other, timeout=RPC)
        assert laura_error(exc.value).code == ErrorCode.ILLEGAL_OPERATION
    assert await count(second, db, COLL) == 1


# ------------------------------------------------------------------------ updates / deletes


async def ids_on(c: Cluster, index: int, db: str) -> set[Any]:
    """The _ids one shard holds (version check skipped)."""
    resp = await c.shard_stub(index).Find(
        shard_pb2.ShardFindRequest(
            database=db, collection=COLL, filter=enc({}), projection=enc({"_id": 1}),
            version=shard_pb2.ShardVersion(ignore=True), batch_size=1000,
        ),
        timeout=RPC,
    )
    return {dec(d)["_id"] for d in resp.documents}


async def test_update_without_shard_key_reply_lost_applies_once(
    two_routers: tuple[Cluster, Proc],
) -> None:
    c, dropper = two_routers
    db = unique_name("twophase")
    await sharded(c, db)
    first, second = stubs(c, dropper)
    await insert_many(second, db, COLL, [{"_id": i, "k": i, "state": "old", "n": 0}
                                         for i in range(30)])
    # Two matching documents on two different shards.
    a, b = [min(await ids_on(c, i, db)) for i in (0, 1)]
    await second.Update(
        routing_pb2.UpdateRequest(database=db, collection=COLL, multi=True,
                                  query=enc({"_id": {"$in": [a, b]}}),
                                  update=enc({"$set": {"state": "new"}})),
        timeout=RPC,
    )
    # multi=false without the shard key: the router picks a candidate, then updates it.
    # The update makes it stop matching, so a naive retry would update the other one,
    # on another shard: the query phase asks the shards whether they executed it.
    req = routing_pb2.UpdateRequest(
        request_id=rid("twophase"), database=db, collection=COLL,
        query=enc({"state": "new"}), update=enc({"$set": {"state": "done"}, "$inc": {"n": 1}}),
    )
    await dropped(first.Update(req, timeout=RPC))
    resp = await second.Update(req, timeout=RPC)
    assert (resp.matched_count, resp.modified_count) == (1, 1)
    assert await count(second, db, COLL, {"state": "new"}) == 1
    assert sum(d["n"] for d in await query_all(second, db, COLL)) == 1

    # The same for a delete.
    gone = routing_pb2.DeleteRequest(
        request_id=rid("twophase-del"), database=db, collection=COLL,
        query=enc({"state": {"$in": ["new", "done"]}}),
    )
    await dropped(first.Delete(gone, timeout=RPC))
    assert (await second.Delete(gone, timeout=RPC)).deleted_count == 1
    assert await count(second, db, COLL, {"state": {"$in": ["new", "done"]}}) == 1

    # A counter: every document matches; incremented exactly once.
    counter = routing_pb2.UpdateRequest(
        request_id=rid("counter"), database=db, collection=COLL,
        query=enc({"n": {"$gte": 0}}), update=enc({"$inc": {"n": 10}}),
    )
    await dropped(first.Update(counter, timeout=RPC))
    resp = await second.Update(counter, timeout=RPC)
    assert (resp.matched_count, resp.modified_count) == (1, 1)
    assert sum(d["n"] for d in await query_all(second, db, COLL)) in (10, 11)
    assert await count(second, db, COLL, {"n": {"$gte": 10}}) == 1


async def test_concurrent_duplicates_on_one_router_run_once(
    two_routers: tuple[Cluster, Proc],
) -> None:
    c, _ = two_routers
    db = unique_name("concurrent")
    await sharded(c, db)
    router = c.router_stub()
    await insert_many(router, db, COLL, [{"_id": i, "k": i, "n": 0} for i in range(10)])
    req = routing_pb2.UpdateRequest(
        request_id=rid("concurrent"), database=db, collection=COLL,
        query=enc({"n": 0}), update=enc({"$inc": {"n": 1}}),
    )
    answers = await asyncio.gather(*(router.Update(req, timeout=RPC) for _ in range(8)))
    assert {(a.matched_count, a.modified_count) for a in answers} == {(1, 1)}
    assert sum(d["n"] for d in await query_all(router, db, COLL)) == 1


async def test_upsert_reply_lost_inserts_once(two_routers: tuple[Cluster, Proc]) -> None:
    c, dropper = two_routers
    db = unique_name("upsert")
    await sharded(c, db)
    first, second = stubs(c, dropper)
    req = routing_pb2.UpdateRequest(
        request_id=rid("upsert"), database=db, collection=COLL, upsert=True,
        query=enc({"k": 500, "name": "x"}), update=enc({"$inc": {"n": 1}}),
    )
    await dropped(first.Update(req, timeout=RPC))
    resp = await second.Update(req, timeout=RPC)
    assert (resp.matched_count, resp.upserted_count) == (0, 1)
    (doc,) = await query_all(second, db, COLL, {"k": 500})
    assert doc["n"] == 1 and dec(resp.upserted_id) == {"_id": doc["_id"]}


async def test_delete_reply_lost_deletes_once(two_routers: tuple[Cluster, Proc]) -> None:
    c, dropper = two_routers
    db = unique_name("delete")
    await sharded(c, db)
    first, second = stubs(c, dropper)
    await insert_many(second, db, COLL, [{"_id": i, "k": i, "g": 1} for i in range(12)])
    req = routing_pb2.DeleteRequest(
        request_id=rid("delete"), database=db, collection=COLL, query=enc({"g": 1})
    )
    await dropped(first.Delete(req, timeout=RPC))
    resp = await second.Delete(req, timeout=RPC)
    assert resp.deleted_count == 1
    assert await count(second, db, COLL) == 11


async def test_multi_writes_are_not_retryable(two_routers: tuple[Cluster, Proc]) -> None:
    c, dropper = two_routers
    db = unique_name("multi")
    await sharded(c, db)
    first, second = stubs(c, dropper)
    await insert_many(second, db, COLL, [{"_id": i, "k": i, "n": 0} for i in range(6)])
    req = routing_pb2.UpdateRequest(
        request_id=rid("multi"), database=db, collection=COLL, multi=True,
        query=enc({}), update=enc({"$inc": {"n": 1}}),
    )
    await dropped(first.Update(req, timeout=RPC))
    assert (await second.Update(req, timeout=RPC)).modified_count == 6
    assert {d["n"] for d in await query_all(second, db, COLL)} == {2}  # as in MongoDB


# ------------------------------------------------------------------------ migrations, restarts


async def test_retry_after_the_chunk_moved_is_answered_by_the_new_owner(
    two_routers: tuple[Cluster, Proc],
) -> None:
    c, dropper = two_routers
    db = unique_name("moved")
    await sharded(c, db, strategy="range")
    first, second = stubs(c, dropper)
    ins = routing_pb2.InsertRequest(
        request_id=rid("moved-ins"), database=db, collection=COLL,
        documents=[enc({"_id": i, "k": i}) for i in range(10)] + [enc({"k": 50, "t": 1})],
    )
    upd = routing_pb2.UpdateRequest(
        request_id=rid("moved-upd"), database=db, collection=COLL,
        query=enc({"k": 3}), update=enc({"$inc": {"n": 1}}),
    )
    await dropped(first.Insert(ins, timeout=RPC))
    await dropped(first.Update(upd, timeout=RPC))

    (chunk,) = chunks_of(await get_shard_map(c.config_server_stub(), db, COLL))
    to = next(s for s in c.shard_ids if s != chunk.shard)
    moved = await c.config_server_stub().MigrateChunk(
        routing_pb2.MigrateChunkRequest(chunk_id=chunk.chunk_id, from_shard=chunk.shard,
                                        to_shard=to),
        timeout=120,
    )
    assert moved.success, moved.error

    # The routers still think the old owner has the chunk: STALE_CONFIG, refresh, and
    # the new owner answers from the records that moved with the documents.
    resp = await second.Insert(ins, timeout=RPC)
    assert (resp.inserted_count, list(resp.errors)) == (11, [])
    assert (await second.Update(upd, timeout=RPC)).matched_count == 1
    assert await count(second, db, COLL) == 11
    (doc,) = await query_all(second, db, COLL, {"k": 3})
    assert doc["n"] == 1
    new_owner = c.shard_stub(c.shard_index(to))
    probe = await new_owner.Find(
        shard_pb2.ShardFindRequest(
            database=db, collection=COLL, filter=enc({"_id": -1}),
            version=shard_pb2.ShardVersion(ignore=True), retry_id=upd.request_id,
        ),
        timeout=RPC,
    )
    assert probe.retry_executed


async def test_shard_killed_between_attempt_and_retry(two_routers: tuple[Cluster, Proc]) -> None:
    c, dropper = two_routers
    db = unique_name("durable")
    await sharded(c, db)
    first, second = stubs(c, dropper)
    await insert_many(second, db, COLL, [{"_id": 1, "k": 1, "n": 0}])
    (owner,) = [i for i in range(len(c.shards)) if await c.shard_count(i, db, COLL, {"k": 1})]
    upd = routing_pb2.UpdateRequest(
        request_id=rid("durable"), database=db, collection=COLL,
        query=enc({"k": 1}), update=enc({"$inc": {"n": 1}}),
    )
    await dropped(first.Update(upd, timeout=RPC))
    c.kill_shard(owner)  # kill -9: only what was committed survives
    await c.restart_shard(owner)

    async def retried() -> tuple[routing_pb2.UpdateResponse]:
        return (await second.Update(upd, timeout=RPC),)

    (resp,) = await eventually(retried, timeout=30, what="retry after the restart")
    assert (resp.matched_count, resp.modified_count) == (1, 1)
    (doc,) = await query_all(second, db, COLL, {"k": 1})
    assert doc["n"] == 1


# ------------------------------------------------------------------------ pruning


async def test_records_are_pruned_after_the_ttl(cluster: Any) -> None:
    c: Cluster = await cluster(1, extra_shard_args=["--retry-history-ttl", "3"])
    db = unique_name("ttl")
    router: routing_pb2_grpc.RouterServiceStub = c.router_stub()
    req = routing_pb2.InsertRequest(
        request_id=rid("ttl"), database=db, collection=COLL, documents=[enc({"_id": 1})]
    )
    assert (await router.Insert(req, timeout=RPC)).inserted_count == 1
    shard = c.shard_stub(0)

    async def recorded() -> bool:
        probe = await shard.Find(
            shard_pb2.ShardFindRequest(
                database=db, collection=COLL, filter=enc({"_id": -1}),
                version=shard_pb2.ShardVersion(ignore=True), retry_id=req.request_id,
            ),
            timeout=RPC,
        )
        return bool(probe.retry_executed)

    assert await recorded()

    async def pruned() -> bool:
        return not await recorded()

    await eventually(pruned, timeout=30, what="the retry record pruned")
    # Without its record the statement runs again (and finds its document: a duplicate).
    again = await shard.Insert(
        shard_pb2.ShardInsertRequest(
            database=db, collection=COLL, documents=[enc({"_id": 1})], ordered=True,
            version=shard_pb2.ShardVersion(ignore=True), retry_id=req.request_id,
            stmt_ids=[0],
        ),
        timeout=RPC,
    )
    assert [e.code for e in again.errors] == [ErrorCode.DUPLICATE_KEY]


# ------------------------------------------------------------------------ log correlation


async def test_shards_log_the_routers_request_id(two_routers: tuple[Cluster, Proc]) -> None:
    c, _ = two_routers
    db = unique_name("rid")
    marks = [p.log_size() for p in c.shards]
    router_mark = c.router.log_size()
    # No request_id from the client: the router generates one for its log lines and
    # the shards' lines of the same request show it too.
    await c.router_stub().Insert(
        routing_pb2.InsertRequest(database=db, collection=COLL, documents=[enc({"_id": 1})]),
        timeout=RPC,
    )
    found = re.search(rf"\[rid=(\w+)\]: loading {db}\.{COLL}", c.router.log_text(router_mark))
    assert found, c.router.log_tail(offset=router_mark)
    tag = f"[rid={found.group(1)}]"
    assert any(tag in p.log_text(m) for p, m in zip(c.shards, marks, strict=True))
