"""Issue 8: the asyncio twin (``lauradb.client.AsyncClient``) on the shared cluster: a
smaller set than test_client.py proving parity (CRUD and results, cursor paging and
closing, errors, aggregation, indexes, bulk writes, admin, retried writes)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from bson.objectid import ObjectId

from lauradb.client import (
    AsyncClient,
    AsyncCollection,
    BulkWriteError,
    DeleteOne,
    DuplicateKeyError,
    InsertOne,
    InvalidOperation,
    OperationFailure,
    UpdateOne,
)
from lauradb.cluster import router_ext_pb2
from lauradb.errors import ErrorCode
from tests.integration.harness import Cluster, eventually, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def client(session_cluster: Cluster) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(session_cluster.router_address, timeout=60) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="session")
async def coll(client: AsyncClient) -> AsyncIterator[AsyncCollection]:
    db = unique_name("acl", 20)
    yield client[db]["things"]
    await client.drop_database(db)


async def _cursor_known(cluster: Cluster, cursor_id: str) -> bool:
    try:
        await cluster.router_stub().GetMore(
            router_ext_pb2.GetMoreRequest(cursor_id=cursor_id, batch_size=1), timeout=30
        )
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        return False
    return True


async def test_crud_parity(coll: AsyncCollection) -> None:
    doc: dict[str, object] = {"name": "ada", "n": 1}
    assert (await coll.insert_one(doc)).inserted_id == doc["_id"]
    assert isinstance(doc["_id"], ObjectId)
    ids = (await coll.insert_many([{"_id": i, "n": i} for i in range(2, 7)])).inserted_ids
    assert ids == [2, 3, 4, 5, 6]
    assert await coll.find_one(3) == {"_id": 3, "n": 3}
    assert await coll.count_documents({"n": {"$gt": 2}}) == 4
    assert await coll.distinct("n", {"n": {"$lt": 4}}) == [1, 2, 3]
    res = await coll.update_one({"_id": 2}, {"$inc": {"n": 10}})
    assert (res.matched_count, res.modified_count) == (1, 1)
    res = await coll.update_many({"n": {"$gte": 5}}, {"$set": {"big": True}})
    assert res.modified_count == 3
    res = await coll.replace_one({"_id": 99}, {"n": 99}, upsert=True)
    assert res.upserted_id == 99
    assert (await coll.delete_one({"_id": 3})).deleted_count == 1
    assert (await coll.delete_many({"big": True})).deleted_count == 3
    assert await coll.estimated_document_count() == 3


async def test_cursor_paging_and_close(session_cluster: Cluster, client: AsyncClient) -> None:
    db = unique_name("acur", 20)
    try:
        await client.admin.shard_collection(f"{db}.docs", "k", hashed=True)
        docs = client[db].docs
        await docs.insert_many([{"_id": i, "k": i} for i in range(2000)], ordered=False)
        cursor = docs.find({}, batch_size=300)
        assert cursor.batches == 0  # lazy
        seen = [d["_id"] async for d in cursor]
        assert sorted(seen) == list(range(2000)) and cursor.batches == 7
        assert cursor.cursor_id is None

        top = await docs.find({}, {"_id": 1}).sort("_id", -1).skip(5).limit(3).to_list()
        assert top == [{"_id": 1994}, {"_id": 1993}, {"_id": 1992}]

        cursor = docs.find(batch_size=10)
        await cursor.next()
        with pytest.raises(InvalidOperation):
            cursor.skip(1)
        cursor_id = cursor.cursor_id
        assert cursor_id and await _cursor_known(session_cluster, cursor_id)
        await cursor.close()
        assert not await _cursor_known(session_cluster, cursor_id)

        async with docs.find(batch_size=10) as cursor:
            await cursor.next()
            cursor_id = cursor.cursor_id
            assert cursor_id
        assert not await _cursor_known(session_cluster, cursor_id)

        cursor = docs.find(batch_size=10)
        await cursor.next()
        cursor_id = cursor.cursor_id
        assert cursor_id
        del cursor
        gc.collect()

        async def killed() -> bool:
            return not await _cursor_known(session_cluster, cursor_id)

        await eventually(killed, what="dropped cursor killed")

        agg = await docs.aggregate([{"$match": {"k": {"$lt": 500}}}, {"$sort": {"k": -1}}],
                                   batch_size=100)
        assert [d["k"] async for d in agg] == list(range(499, -1, -1))
        assert agg.batches == 5
    finally:
        await client.drop_database(db)


async def test_errors_parity(coll: AsyncCollection) -> None:
    await coll.insert_one({"_id": 1})
    with pytest.raises(DuplicateKeyError) as dup:
        await coll.insert_one({"_id": 1})
    assert dup.value.code == 11000
    with pytest.raises(BulkWriteError) as bulk:
        await coll.insert_many([{"_id": 2}, {"_id": 1}], ordered=False)
    assert bulk.value.details["nInserted"] == 1
    with pytest.raises(OperationFailure) as bad:
        await coll.find({"$foo": 1}).to_list()
    assert bad.value.code == ErrorCode.UNKNOWN_OPERATOR
    with pytest.raises(ValueError):
        await coll.update_one({}, {"n": 1})


async def test_indexes_bulk_and_catalog(client: AsyncClient, coll: AsyncCollection) -> None:
    assert await coll.create_index([("b", -1), ("a", 1)]) == "b_-1_a_1"
    assert [i["name"] for i in await coll.list_indexes()] == ["_id_", "b_-1_a_1"]
    assert (await coll.index_information())["b_-1_a_1"]["key"] == [("b", -1), ("a", 1)]
    await coll.drop_index([("b", -1), ("a", 1)])
    result = await coll.bulk_write([
        InsertOne({"_id": 1, "a": 1}),
        UpdateOne({"_id": 1}, {"$set": {"a": 2}}),
        UpdateOne({"_id": 2}, {"$set": {"a": 3}}, upsert=True),
        DeleteOne({"_id": 1}),
    ])
    assert (result.inserted_count, result.modified_count, result.deleted_count,
            result.upserted_ids) == (1, 1, 1, {2: 2})
    db = coll.database
    assert await db.list_collection_names() == ["things"]
    assert db.name in await client.list_database_names()
    assert await coll.drop() is True
    assert await db.list_collection_names() == []


async def test_admin_status_parity(session_cluster: Cluster, client: AsyncClient) -> None:
    shards = await client.admin.list_shards()
    assert [s["_id"] for s in shards] == session_cluster.shard_ids
    status = await client.admin.status()
    assert [s.id for s in status.shards] == session_cluster.shard_ids
    assert status.router == client.address


async def test_retried_writes_apply_once(session_cluster: Cluster) -> None:
    dropper = await session_cluster.add_router(["--test-drop-write-replies"])
    router = session_cluster.router_address
    db = unique_name("aretry", 20)
    try:
        async with AsyncClient([dropper.address, router], timeout=30) as c:
            coll = c[db].c
            await coll.insert_one({"_id": 1, "n": 0})
            res = await coll.update_one({"_id": 1}, {"$inc": {"n": 1}})
            assert (res.matched_count, res.modified_count) == (1, 1)
            assert c.address == router
        async with AsyncClient(router) as c:
            assert await c[db].c.find({}).to_list() == [{"_id": 1, "n": 1}]
            await c.drop_database(db)
    finally:
        session_cluster.extra_routers.remove(dropper)
        await asyncio.to_thread(dropper.terminate)
        dropper.forget()
