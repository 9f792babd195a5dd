"""Issue 8: the Python driver (``lauradb.client.Client``) against the shared 3-shard
cluster: every collection method, BSON types both ways, lazy cursors paging 10,000
documents with GetMore and closing server cursors, errors as exceptions, bulk writes,
admin, failover past a dead router, and examples/quickstart.py.

The tests are synchronous (the sync client blocks); the cluster runs in the session
event loop's fixture.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.regex import Regex

from lauradb.client import (
    BulkWriteError,
    Client,
    Collection,
    ConfigurationError,
    CursorNotFound,
    DeleteMany,
    DeleteOne,
    DuplicateKeyError,
    InsertOne,
    InvalidOperation,
    OperationFailure,
    ReplaceOne,
    ServerUnavailable,
    UpdateMany,
    UpdateOne,
    WriteError,
)
from lauradb.cluster import router_ext_pb2, routing_pb2_grpc
from lauradb.errors import ErrorCode
from tests.integration.harness import REPO_ROOT, Cluster, Proc, free_port, unique_name
from tests.integration.tls_pki import Pki, needs_openssl

pytestmark = [pytest.mark.integration]
on_session_loop = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def client(session_cluster: Cluster) -> Iterator[Client]:
    with Client(session_cluster.router_address, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def db_prefix(client: Client) -> Iterator[str]:
    prefix = unique_name("cl", 10)
    yield prefix
    for name in client.list_database_names():
        if name.startswith(prefix):
            client.drop_database(name)


@pytest.fixture
def coll(client: Client, db_prefix: str, request: pytest.FixtureRequest) -> Collection:
    """An unsharded collection of a database of this test's own."""
    name = re.sub(r"\W", "_", request.node.name)[:20]
    return client[f"{db_prefix}_{name}"]["things"]


def _getmore_status(cluster: Cluster, cursor_id: str) -> grpc.StatusCode | None:
    """None if the router still knows the cursor, else the status GetMore fails with."""
    with grpc.insecure_channel(cluster.router_address) as channel:
        stub = routing_pb2_grpc.RouterServiceStub(channel)
        try:
            stub.GetMore(router_ext_pb2.GetMoreRequest(cursor_id=cursor_id, batch_size=1),
                         timeout=30)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return None


# ------------------------------------------------------------------ CRUD


def test_crud_and_results(client: Client, coll: Collection) -> None:
    doc: dict[str, Any] = {"name": "ada", "n": 1}
    one = coll.insert_one(doc)
    assert isinstance(doc["_id"], ObjectId) and one.inserted_id == doc["_id"]
    assert one.acknowledged
    many = coll.insert_many([{"name": f"u{i}", "n": i} for i in range(2, 12)] + [{"_id": "x", "n": 0}])
    assert len(many.inserted_ids) == 11 and many.inserted_ids[-1] == "x"

    assert coll.find_one({"name": "ada"}) == {"_id": doc["_id"], "name": "ada", "n": 1}
    assert coll.find_one("x") == {"_id": "x", "n": 0}  # a non-mapping filter is an _id
    assert coll.find_one({"name": "nobody"}) is None
    assert coll.count_documents({}) == 12
    assert coll.count_documents({"n": {"$gte": 5}}, skip=2, limit=3) == 3
    assert coll.estimated_document_count() == 12
    assert coll.distinct("n", {"n": {"$lt": 3}}) == [0, 1, 2]

    res = coll.update_one({"name": "ada"}, {"$inc": {"n": 10}})
    assert (res.matched_count, res.modified_count, res.upserted_id) == (1, 1, None)
    res = coll.update_many({"n": {"$gte": 10}}, {"$set": {"big": True}})
    assert (res.matched_count, res.modified_count) == (3, 3)
    res = coll.update_one({"name": "new"}, {"$set": {"n": 99}}, upsert=True)
    assert res.matched_count == 0 and isinstance(res.upserted_id, ObjectId)
    assert coll.find_one({"_id": res.upserted_id}) == {"_id": res.upserted_id, "name": "new", "n": 99}
    res = coll.update_one({"name": "nobody"}, {"$set": {"n": 1}})
    assert (res.matched_count, res.modified_count, res.upserted_id) == (0, 0, None)
    res = coll.update_one({"tags": {"$exists": False}, "_id": "x"},
                          {"$set": {"tags": [{"k": 1}, {"k": 2}]}})
    res = coll.update_one({"_id": "x"}, {"$set": {"tags.$[t].k": 5}},
                          array_filters=[{"t.k": 2}])
    assert res.modified_count == 1
    assert coll.find_one("x")["tags"] == [{"k": 1}, {"k": 5}]

    res = coll.replace_one({"_id": "x"}, {"replaced": True})
    assert (res.matched_count, res.modified_count) == (1, 1)
    assert coll.find_one("x") == {"_id": "x", "replaced": True}
    res = coll.replace_one({"_id": "y"}, {"v": 1}, upsert=True)
    assert res.upserted_id == "y"

    assert coll.delete_one({"name": "u2"}).deleted_count == 1
    assert coll.delete_many({"name": {"$regex": "^u"}}).deleted_count == 9
    assert coll.delete_one({"name": "nobody"}).deleted_count == 0
    assert sorted(map(str, coll.distinct("_id"))) == sorted(
        map(str, [doc["_id"], "x", "y", coll.find_one({"name": "new"})["_id"]]))


def test_update_and_replace_argument_rules(coll: Collection) -> None:
    with pytest.raises(ValueError, match=r"\$ operators"):
        coll.update_one({}, {"n": 1})
    with pytest.raises(ValueError):
        coll.replace_one({}, {"$set": {"n": 1}})
    with pytest.raises(TypeError):
        coll.update_many([("a", 1)], {"$set": {"n": 1}})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        coll.insert_one([1, 2])


def test_bson_types_round_trip(client: Client, coll: Collection) -> None:
    when = datetime.datetime(2024, 2, 29, 13, 45, 10, 123000)
    doc = {
        "_id": ObjectId(),
        "when": when,
        "price": Decimal128(Decimal("19.99")),
        "big": Int64(2**40),
        "f": 1.5,
        "blob": Binary(b"\x00\x01", 128),
        "bytes": b"raw",
        "re": Regex("^a", "i"),
        "nested": {"list": [1, "two", {"three": 3}], "none": None, "flag": True},
        "uuid": Binary.from_uuid(uuid.UUID(int=7)),
    }
    coll.insert_one(dict(doc))
    got = coll.find_one({"_id": doc["_id"]})
    assert got == doc
    assert got["when"].tzinfo is None  # pymongo's default: naive UTC
    assert isinstance(got["big"], int) and isinstance(got["price"], Decimal128)
    assert coll.find_one({"price": {"$gt": Decimal128("10")}})["_id"] == doc["_id"]
    assert coll.find_one({"when": {"$gte": when - datetime.timedelta(seconds=1)}}) is not None
    with Client(client.address, tz_aware=True) as aware:
        got = aware[coll.database.name][coll.name].find_one({"_id": doc["_id"]})
        assert got["when"] == when.replace(tzinfo=datetime.UTC)


# ------------------------------------------------------------------ cursors


def test_find_options_and_chaining(coll: Collection) -> None:
    coll.insert_many([{"_id": i, "n": i % 10, "s": f"s{i:03d}"} for i in range(100)])
    docs = list(coll.find({"n": 3}, {"s": 1, "_id": 0}).sort("s", -1).skip(2).limit(3))
    assert docs == [{"s": "s073"}, {"s": "s063"}, {"s": "s053"}]
    docs = coll.find({}, ["n"], sort=[("n", -1), ("_id", 1)], limit=4).to_list()
    assert docs == [{"_id": 9, "n": 9}, {"_id": 19, "n": 9}, {"_id": 29, "n": 9}, {"_id": 39, "n": 9}]
    assert [d["_id"] for d in coll.find({"_id": {"$lt": 5}}, sort={"_id": 1})] == [0, 1, 2, 3, 4]
    assert len(coll.find(batch_size=7).to_list()) == 100
    assert coll.find().to_list(5) != [] and len(coll.find().to_list(5)) == 5
    assert len(list(coll.find(limit=-3, batch_size=10))) == 3  # negative: one batch

    cursor = coll.find({}, batch_size=10)
    assert cursor.cursor_id is None and cursor.batches == 0  # lazy: nothing sent yet
    next(cursor)
    assert cursor.batches == 1 and cursor.cursor_id is not None
    with pytest.raises(InvalidOperation):
        cursor.sort("n")
    with pytest.raises(InvalidOperation):
        cursor.limit(1)
    cursor.close()
    assert not cursor.alive and list(cursor) == []


def test_cursor_pages_10000_documents_with_getmore(client: Client, db_prefix: str) -> None:
    db = f"{db_prefix}_paging"
    client.admin.shard_collection(f"{db}.docs", {"k": "hashed"})
    docs = client[db]["docs"]
    n = 10_000
    result = docs.insert_many([{"_id": i, "k": i, "pad": "x" * 20} for i in range(n)], ordered=False)
    assert len(result.inserted_ids) == n and docs.count_documents({}) == n

    cursor = docs.find({}, {"pad": 0}, batch_size=500)
    ids = [d["_id"] for d in cursor]
    assert sorted(ids) == list(range(n))
    assert cursor.batches == n // 500  # the first batch, then GetMore until exhausted
    assert cursor.cursor_id is None and not cursor.alive

    # Sorted across the three shards, default batch sizes, with a skip.
    cursor = docs.find({"k": {"$gte": 100}}, {"_id": 1}).sort("_id", -1).skip(10)
    ids = [d["_id"] for d in cursor]
    assert ids == list(range(n - 11, 99, -1))
    assert cursor.batches > 1

    agg = docs.aggregate([{"$match": {"k": {"$lt": 3000}}}, {"$sort": {"k": 1}},
                          {"$project": {"k": 1}}], batch_size=250)
    assert [d["k"] for d in agg] == list(range(3000))
    assert agg.batches == 12


def test_cursor_close_and_drop_kill_the_server_cursor(
    session_cluster: Cluster, coll: Collection
) -> None:
    coll.insert_many([{"_id": i} for i in range(50)])
    cursor = coll.find({}, batch_size=5)
    assert next(cursor) == {"_id": 0}
    cursor_id = cursor.cursor_id
    assert cursor_id and _getmore_status(session_cluster, cursor_id) is None
    cursor.close()
    assert _getmore_status(session_cluster, cursor_id) == grpc.StatusCode.NOT_FOUND

    with coll.find({}, batch_size=5) as cursor:
        next(cursor)
        cursor_id = cursor.cursor_id
        assert cursor_id
    assert _getmore_status(session_cluster, cursor_id) == grpc.StatusCode.NOT_FOUND

    cursor = coll.find({}, batch_size=5)
    next(cursor)
    cursor_id = cursor.cursor_id
    assert cursor_id
    del cursor
    gc.collect()
    deadline = time.monotonic() + 15
    while _getmore_status(session_cluster, cursor_id) is None:  # killed without waiting
        assert time.monotonic() < deadline, "dropped cursor never killed"
        time.sleep(0.05)

    # A cursor whose server cursor is gone reports CursorNotFound.
    cursor = coll.find({}, batch_size=5)
    next(cursor)
    assert cursor.cursor_id
    with grpc.insecure_channel(session_cluster.router_address) as channel:
        routing_pb2_grpc.RouterServiceStub(channel).KillCursors(
            router_ext_pb2.KillCursorsRequest(cursor_ids=[cursor.cursor_id]), timeout=30)
    with pytest.raises(CursorNotFound):
        list(cursor)


# ------------------------------------------------------------------ errors


def test_duplicate_keys_and_bad_filters_raise(client: Client, coll: Collection) -> None:
    coll.insert_one({"_id": 1, "a": 1})
    with pytest.raises(DuplicateKeyError) as dup:
        coll.insert_one({"_id": 1})
    assert dup.value.code == ErrorCode.DUPLICATE_KEY and dup.value.details["index"] == 0
    assert isinstance(dup.value, WriteError) and dup.value.address == client.address

    with pytest.raises(BulkWriteError) as bulk:
        coll.insert_many([{"_id": 2}, {"_id": 1}, {"_id": 3}])  # ordered: stops at 1
    details = bulk.value.details
    assert details["nInserted"] == 1
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 11000)]
    assert details["writeErrors"][0]["op"] == {"_id": 1}
    with pytest.raises(BulkWriteError) as bulk:
        coll.insert_many([{"_id": 1}, {"_id": 4}, {"_id": 2}], ordered=False)
    assert bulk.value.details["nInserted"] == 1
    assert [e["index"] for e in bulk.value.details["writeErrors"]] == [0, 2]
    assert coll.count_documents({}) == 3

    with pytest.raises(OperationFailure) as bad:
        list(coll.find({"$foo": 1}))
    assert bad.value.code == ErrorCode.UNKNOWN_OPERATOR and "$foo" in bad.value.message
    assert not isinstance(bad.value, WriteError)
    with pytest.raises(OperationFailure) as bad:
        coll.count_documents({"a": {"$bogus": 1}})
    assert bad.value.code == ErrorCode.UNKNOWN_OPERATOR
    with pytest.raises(WriteError) as werr:
        coll.update_one({"_id": 1}, {"$frobnicate": {"a": 1}})
    assert werr.value.code > 0
    with pytest.raises(WriteError):
        coll.delete_many({"$where": "x"})
    with pytest.raises(OperationFailure) as agg:
        coll.aggregate([{"$nope": {}}])
    assert agg.value.code > 0

    coll.create_index("a", unique=True, sparse=True)
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": 10, "a": 1})
    with pytest.raises(DuplicateKeyError):
        coll.update_one({"_id": 2}, {"$set": {"a": 1}})


def test_unreachable_router_is_server_unavailable() -> None:
    with Client(f"127.0.0.1:{free_port()}", timeout=10) as dead:
        with pytest.raises(ServerUnavailable) as info:
            dead.db.c.insert_one({"a": 1})
        assert info.value.code == ErrorCode.HOST_UNREACHABLE
        with pytest.raises(ServerUnavailable):
            dead.list_database_names()


def test_failover_past_a_dead_router(session_cluster: Cluster, db_prefix: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with Client([dead, session_cluster.router_address], timeout=30) as c:
        coll = c[f"{db_prefix}_failover"]["c"]
        coll.insert_one({"_id": 1, "n": 0})
        assert c.address == session_cluster.router_address  # moved on, and stays there
        # Even an update_many (never retried) goes past a router that never got it.
        with Client([dead, session_cluster.router_address], timeout=30) as c2:
            res = c2[f"{db_prefix}_failover"]["c"].update_many({}, {"$inc": {"n": 1}})
            assert res.modified_count == 1
        assert coll.find_one(1) == {"_id": 1, "n": 1}


# ------------------------------------------------------------------ retryable writes


def _retried_writes(dropper: str, router: str, db: str) -> None:
    """Every write goes first to ``dropper``, which applies it and then fails the call
    with UNAVAILABLE (its reply "lost"); the client retries once through ``router``
    with the same request id, and the cluster answers with the first outcome."""
    with Client(router, timeout=30) as plain:
        plain.admin.shard_collection(f"{db}.c", {"k": "hashed"})
        check = plain[db]["c"]

        def via_dropper(**kw: Any) -> Client:
            return Client([dropper, router], timeout=30, **kw)

        with via_dropper() as c:
            coll = c[db]["c"]
            assert coll.insert_one({"_id": "once", "k": 1, "n": 0}).inserted_id == "once"
            assert c.address == router  # failed over, and stays on the good router
        assert check.count_documents({"_id": "once"}) == 1

        with via_dropper() as c:  # targeted by the shard key
            res = c[db]["c"].update_one({"_id": "once", "k": 1}, {"$inc": {"n": 1}})
            assert (res.matched_count, res.modified_count) == (1, 1)  # the first outcome
        with via_dropper() as c:  # no shard key: the router's two-phase path
            res = c[db]["c"].update_one({"_id": "once"}, {"$inc": {"n": 10}})
            assert (res.matched_count, res.modified_count) == (1, 1)
        assert check.find_one("once") == {"_id": "once", "k": 1, "n": 11}

        with via_dropper() as c:
            docs = [{"_id": i, "k": i} for i in range(200)]
            assert len(c[db]["c"].insert_many(docs, ordered=False).inserted_ids) == 200
        assert check.count_documents({"_id": {"$type": "int"}}) == 200

        with via_dropper() as c:
            res = c[db]["c"].replace_one({"k": 500, "_id": "up"}, {"k": 500, "v": 1}, upsert=True)
            assert res.upserted_id == "up"
            deleted = c[db]["c"].delete_one({"_id": 7, "k": 7})
            assert deleted.deleted_count == 1  # the retry reports what the first attempt did
            bulk = c[db]["c"].bulk_write([InsertOne({"_id": "b1", "k": 1}),
                                          UpdateOne({"_id": "b1", "k": 1}, {"$inc": {"n": 1}})])
            assert (bulk.inserted_count, bulk.modified_count) == (1, 1)
        assert check.count_documents({"_id": {"$in": ["up", 7]}}) == 1
        assert check.find_one("b1") == {"_id": "b1", "k": 1, "n": 1}

        # Without retries the lost reply surfaces, though the write was applied (once).
        with via_dropper(retry_writes=False) as c:
            with pytest.raises(ServerUnavailable):
                c[db]["c"].insert_one({"_id": "lost", "k": 2})
        assert check.count_documents({"_id": "lost"}) == 1
        # update_many is never retried (as in MongoDB): it ran once, then the error.
        with via_dropper() as c:
            with pytest.raises(ServerUnavailable):
                c[db]["c"].update_many({"_id": "lost"}, {"$inc": {"n": 1}})
        assert check.find_one("lost") == {"_id": "lost", "k": 2, "n": 1}


@on_session_loop
async def test_retried_write_through_another_router_applies_once(
    session_cluster: Cluster, db_prefix: str
) -> None:
    dropper = await session_cluster.add_router(["--test-drop-write-replies"])
    try:
        await asyncio.to_thread(
            _retried_writes, dropper.address, session_cluster.router_address,
            f"{db_prefix}_retry",
        )
    finally:
        session_cluster.extra_routers.remove(dropper)
        await asyncio.to_thread(dropper.terminate)
        dropper.forget()


# ------------------------------------------------------------------ TLS


@needs_openssl
def test_tls_and_mutual_tls(tmp_path: Path) -> None:
    """A config server (it serves ConfigService, e.g. ListDatabases) requiring client
    certificates: the client connects with the CA and its certificate, and is refused
    without a certificate or over plaintext."""
    pki = Pki(tmp_path / "pki")
    port = free_port()
    proc = Proc(
        "config", "config_server",
        ["--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path / "config"),
         *pki.flags("require")],
        address=f"127.0.0.1:{port}", data_dir=tmp_path / "config",
        log_path=tmp_path / "config.log",
    )
    proc.start()
    try:
        with Client(proc.address, timeout=5, tls=True, tls_ca_file=str(pki.ca[0]),
                    tls_cert_file=str(pki.client[0]), tls_key_file=str(pki.client[1])) as c:
            deadline = time.monotonic() + 30
            while True:  # until the server listens
                try:
                    assert c.list_database_names() == []
                    break
                except ServerUnavailable:
                    assert proc.alive and time.monotonic() < deadline, proc.log_tail()
                    time.sleep(0.1)
            assert c.admin.list_shards() == []
        with Client(proc.address, timeout=5, tls=True, tls_ca_file=str(pki.ca[0])) as c:
            with pytest.raises(ServerUnavailable):
                c.list_database_names()  # no client certificate
        with Client(proc.address, timeout=5, tls=True, tls_ca_file=str(pki.other_ca[0]),
                    tls_cert_file=str(pki.client[0]), tls_key_file=str(pki.client[1])) as c:
            with pytest.raises(ServerUnavailable):
                c.list_database_names()  # the server's certificate is not trusted
        with Client(proc.address, timeout=5) as c:
            with pytest.raises(ServerUnavailable):
                c.list_database_names()  # plaintext
        with pytest.raises(ConfigurationError):
            Client(proc.address, tls=True, tls_ca_file=str(tmp_path / "missing.pem"))
    finally:
        proc.terminate()
        proc.forget()


# ------------------------------------------------------------------ aggregation, indexes, bulk


def test_aggregate(coll: Collection) -> None:
    coll.insert_many([{"cat": c, "v": i} for i, c in enumerate("abcabcaab")])
    out = list(coll.aggregate([
        {"$group": {"_id": "$cat", "total": {"$sum": "$v"}, "n": {"$sum": 1}}},
        {"$sort": {"_id": 1}},
    ]))
    assert out == [
        {"_id": "a", "total": 0 + 3 + 6 + 7, "n": 4},
        {"_id": "b", "total": 1 + 4 + 8, "n": 3},
        {"_id": "c", "total": 2 + 5, "n": 2},
    ]
    target = coll.database["agg_out"]
    assert list(coll.aggregate([{"$match": {"cat": "c"}}, {"$out": target.name}])) == []
    assert target.count_documents({}) == 2


def test_indexes(coll: Collection) -> None:
    assert coll.list_indexes() == []  # no collection yet: no indexes (as pymongo)
    assert coll.create_index([("a", 1), ("b", -1)]) == "a_1_b_-1"
    assert coll.create_index("c", name="by_c", sparse=True) == "by_c"
    assert coll.create_index({"d": 1}, unique=True) == "d_1"
    indexes = coll.list_indexes()
    assert [i["name"] for i in indexes] == ["_id_", "a_1_b_-1", "by_c", "d_1"]
    assert indexes[1]["key"] == {"a": 1, "b": -1}
    info = coll.index_information()
    assert info["by_c"] == {"v": 2, "key": [("c", 1)], "sparse": True}
    assert info["d_1"]["unique"] is True
    coll.drop_index([("a", 1), ("b", -1)])
    coll.drop_index("by_c")
    assert [i["name"] for i in coll.list_indexes()] == ["_id_", "d_1"]
    coll.drop_indexes()
    assert [i["name"] for i in coll.list_indexes()] == ["_id_"]
    with pytest.raises(OperationFailure) as info_err:
        coll.drop_index("nope_1")
    assert info_err.value.code == ErrorCode.INDEX_NOT_FOUND


def test_bulk_write(coll: Collection) -> None:
    result = coll.bulk_write([
        InsertOne({"_id": 1, "n": 1}),
        InsertOne({"_id": 2, "n": 2}),
        InsertOne({"_id": 3, "n": 3}),
        UpdateOne({"_id": 1}, {"$set": {"n": 10}}),
        UpdateMany({"n": {"$lt": 5}}, {"$inc": {"n": 100}}),
        ReplaceOne({"_id": 4}, {"n": 4}, upsert=True),
        DeleteOne({"_id": 3}),
        DeleteMany({"n": {"$gt": 1000}}),
    ])
    assert (result.inserted_count, result.matched_count, result.modified_count,
            result.deleted_count, result.upserted_count) == (3, 3, 3, 1, 1)
    assert result.upserted_ids == {5: 4}
    assert list(coll.find(sort="_id")) == [
        {"_id": 1, "n": 10}, {"_id": 2, "n": 102}, {"_id": 4, "n": 4}
    ]
    with pytest.raises(BulkWriteError) as ordered:
        coll.bulk_write([InsertOne({"_id": 1}), InsertOne({"_id": 7}), DeleteOne({"_id": 2})])
    assert ordered.value.details["nInserted"] == 0 and ordered.value.details["nRemoved"] == 0
    with pytest.raises(BulkWriteError) as unordered:
        coll.bulk_write([InsertOne({"_id": 1}), InsertOne({"_id": 7}), DeleteOne({"_id": 2})],
                        ordered=False)
    details = unordered.value.details
    assert (details["nInserted"], details["nRemoved"]) == (1, 1)
    assert [e["index"] for e in details["writeErrors"]] == [0]


# ------------------------------------------------------------------ catalog and admin


def test_catalog(client: Client, db_prefix: str) -> None:
    name = f"{db_prefix}_catalog"
    db = client[name]
    assert db.name == name and db.client is client and client.get_database(name) == db
    assert db.list_collection_names() == []
    db.alpha.insert_one({"a": 1})
    db["beta"].insert_one({"b": 1})
    db.gamma.sub.insert_one({"c": 1})  # collection "gamma.sub"
    assert db.gamma.sub.full_name == f"{name}.gamma.sub"
    assert name in client.list_database_names()
    assert db.list_collection_names() == ["alpha", "beta", "gamma.sub"]
    assert db.drop_collection("alpha") is True
    assert db.beta.drop() is True
    assert db.list_collection_names() == ["gamma.sub"]
    assert client.drop_database(db) is True
    assert name not in client.list_database_names()


def test_admin_and_status(session_cluster: Cluster, client: Client, db_prefix: str) -> None:
    shards = client.admin.list_shards()
    assert [s["_id"] for s in shards] == session_cluster.shard_ids
    assert all(s["state"] == "active" for s in shards)
    shard0 = session_cluster.shards[0].address
    assert client.admin.add_shard("shard0", shard0)["shardAdded"] == "shard0"  # idempotent

    db = f"{db_prefix}_admin"
    out = client.admin.shard_collection(f"{db}.orders", "customer", hashed=True,
                                        initial_chunks=6)
    assert out["key"] == {"customer": "hashed"} and out["chunks"] == 6
    client[db].orders.insert_many([{"customer": f"c{i}"} for i in range(30)])
    client[db].plain.insert_one({"x": 1})
    client.admin.shard_collection(f"{db}.ranged", {"a": 1, "b": 1})
    with pytest.raises(OperationFailure) as again:
        client.admin.shard_collection(f"{db}.orders", "customer", hashed=True)
    assert again.value.code == ErrorCode.ALREADY_SHARDED

    status = client.admin.status()
    assert status.router == client.address
    assert [s.id for s in status.shards] == session_cluster.shard_ids
    assert not status.balancer.enabled  # the shared cluster runs --no-balancer
    (mine,) = [d for d in status.databases if d.name == db]
    colls = {c.name: c for c in mine.collections}
    assert set(colls) == {"orders", "plain", "ranged"}
    orders = colls["orders"]
    assert (orders.sharded, orders.key, orders.strategy, orders.documents) == (
        True, {"customer": "hashed"}, "hashed", 30)
    assert orders.total_chunks == 6 and set(orders.chunks) == set(session_cluster.shard_ids)
    assert colls["ranged"].key == {"a": 1, "b": 1} and colls["ranged"].strategy == "compound"
    assert (colls["plain"].sharded, colls["plain"].documents) == (False, 1)
    assert status.to_dict()["shards"][0]["id"] == "shard0"


# ------------------------------------------------------------------ the example


def test_quickstart_example_runs(session_cluster: Cluster) -> None:
    env = {**os.environ, "LAURADB_ADDRESS": session_cluster.router_address}
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "quickstart.py")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "top orders" in proc.stdout and "duplicate" in proc.stdout
    with Client(session_cluster.router_address) as c:
        c.drop_database("quickstart")
