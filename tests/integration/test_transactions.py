"""Issue 10: transactions through the router (ExecuteTransaction) with the Python
client, on the shared 3-shard cluster (standalone shards, no balancer).

* commits on one shard (one phase) and on 2 and 3 shards (two-phase commit), with a
  hashed and a ranged collection (and an unsharded one next to them);
* READ operations return the documents they locked;
* a failed precondition or a duplicate key on one shard aborts everything: nothing
  is applied anywhere;
* bad input (unknown database, too many operations / bytes, timeout 0, a txn_id
  reused with other operations) fails with a clear error and prepares nothing;
* a resend of a committed txn_id answers the same results without applying twice.

"Nothing stays prepared" is checked by an ordinary update of the documents afterwards:
a document still locked by a transaction would make it fail with WRITE_CONFLICT.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import bson
import grpc
import pytest
import pytest_asyncio

from bench.placement import place_ranges, placement
from lauradb.client import (
    AsyncClient,
    AsyncCollection,
    Client,
    InvalidOperation,
    TransactionAborted,
)
from lauradb.cluster import common_pb2, transaction_pb2
from lauradb.errors import ErrorCode
from tests.integration.harness import Cluster, laura_error, shard_collection, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

DOCS = 60


@pytest_asyncio.fixture(loop_scope="session")
async def client(session_cluster: Cluster) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(session_cluster.router_address, timeout=60) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="session")
async def db(client: AsyncClient) -> AsyncIterator[str]:
    name = unique_name("txn", 20)
    yield name
    await client.drop_database(name)


async def hashed(c: Cluster, client: AsyncClient, db: str) -> tuple[AsyncCollection, dict[str, list[int]]]:
    """``db.h`` hashed on ``_id`` with documents ``{_id: i, n: 0}``; the ids of each shard."""
    resp = await shard_collection(c.config_stub(), db, "h", ["_id"], "hashed")
    assert not resp.error.code, resp.error
    coll = client[db]["h"]
    await coll.insert_many([{"_id": i, "n": 0} for i in range(DOCS)])
    place = await placement(c.config_stub(), db, "h")
    owners: dict[str, list[int]] = {}
    for i in range(DOCS):
        owners.setdefault(place.shard_of({"_id": i}), []).append(i)
    assert len(owners) == 3, owners
    return coll, owners


async def ranged(c: Cluster, client: AsyncClient, db: str) -> AsyncCollection:
    """``db.r`` ranged on ``k``: k < 100 on the first shard, [100, 200) on the second,
    >= 200 on the third; documents ``{_id: k, k, n: 0}`` for k in 0, 10, ..., 290."""
    shards = sorted(c.shard_ids)
    await place_ranges(c.config_stub(), db, "r", "k", [100, 200], shards)
    coll = client[db]["r"]
    await coll.insert_many([{"_id": k, "k": k, "n": 0} for k in range(0, 300, 10)])
    return coll


async def no_locks(coll: AsyncCollection, ids: list[Any]) -> None:
    """Ordinary writes on ``ids`` go through (no transaction holds them)."""
    for i in ids:
        res = await coll.update_one({"_id": i}, {"$inc": {"probe": 1}})
        assert res.matched_count == 1, i
        await coll.update_one({"_id": i}, {"$unset": {"probe": ""}})


# ============================================================================ commits


async def test_single_shard_commit_and_reads(client: AsyncClient, db: str) -> None:
    coll = client[db]["plain"]
    await coll.insert_many([{"_id": i, "n": i} for i in range(5)])
    async with client.transaction() as tx:
        tx.insert_one(coll, {"_id": 10, "n": 10})
        tx.update_one(coll, {"_id": 1}, {"$inc": {"n": 100}}, expect_matched=1)
        tx.delete_many(coll, {"n": {"$gte": 3, "$lt": 5}}, expect_matched=2)
        tx.find(coll, {"n": {"$lt": 3}})
        tx.update_one(coll, {"_id": 20}, {"$set": {"n": 20}}, upsert=True)
    result = tx.result
    assert result is not None and result.participants == 1 and len(result) == 5
    assert result[0].inserted_id == 10
    assert (result[1].matched_count, result[1].modified_count) == (1, 1)
    assert result[2].deleted_count == 2
    assert sorted(d["_id"] for d in result[3]) == [0, 2]  # after the update of _id 1
    assert result[4].upserted_id == 20
    docs = {d["_id"]: d["n"] async for d in coll.find({})}
    assert docs == {0: 0, 1: 101, 2: 2, 10: 10, 20: 20}


async def test_two_and_three_shard_commit_hashed(
    session_cluster: Cluster, client: AsyncClient, db: str
) -> None:
    coll, owners = await hashed(session_cluster, client, db)
    a, b, c = (owners[s][0] for s in sorted(owners))
    # Two shards: a transfer.
    async with client.transaction(timeout_ms=10_000) as tx:
        tx.update_one(coll, {"_id": a}, {"$inc": {"n": -5}}, expect_matched=1)
        tx.update_one(coll, {"_id": b}, {"$inc": {"n": 5}}, expect_matched=1)
    assert tx.result is not None and tx.result.participants == 2
    assert [r.modified_count for r in tx.result] == [1, 1]
    # Three shards, with an insert and a locking read of all three.
    async with client.transaction() as tx3:
        tx3.update_one(coll, {"_id": c}, {"$inc": {"n": 1}}, expect_matched=1)
        tx3.insert_one(coll, {"_id": 1000, "n": 7})
        tx3.find(coll, {"_id": {"$in": [a, b, c]}})
    assert tx3.result is not None and tx3.result.participants == 3
    # Operations apply in order: the read sees the update before it.
    assert {d["_id"]: d["n"] for d in tx3.result[2]} == {a: -5, b: 5, c: 1}
    got = {d["_id"]: d["n"] async for d in coll.find({"_id": {"$in": [a, b, c, 1000]}})}
    assert got == {a: -5, b: 5, c: 1, 1000: 7}
    await no_locks(coll, [a, b, c, 1000])


async def test_multi_shard_commit_ranged_and_unsharded(
    session_cluster: Cluster, client: AsyncClient, db: str
) -> None:
    coll = await ranged(session_cluster, client, db)
    log = client[db]["log"]  # unsharded: on the database's primary shard
    async with client.transaction() as tx:
        tx.update_many(coll, {"k": {"$in": [50, 150, 250]}}, {"$inc": {"n": 3}}, expect_matched=3)
        tx.insert_one(log, {"_id": "t1", "what": "bonus"})
        tx.find(coll, {"n": 0, "k": {"$lt": 30}})
    assert tx.result is not None and tx.result.participants == 3
    assert tx.result[0].matched_count == 3 and tx.result[0].modified_count == 3
    assert sorted(d["k"] for d in tx.result[2]) == [0, 10, 20]
    assert {d["k"]: d["n"] async for d in coll.find({"n": 3})} == {50: 3, 150: 3, 250: 3}
    assert await log.find_one("t1") == {"_id": "t1", "what": "bonus"}
    await no_locks(coll, [50, 150, 250])


async def test_one_shard_transactions_right_after_placement_and_load(
    session_cluster: Cluster, client: AsyncClient, db: str
) -> None:
    """Chunks just migrated, documents just inserted through the router: a one-shard
    transaction on each document at once finds it on its owner (a reported flake: an
    update on the recipient of a fresh migration matching nothing)."""
    coll = await ranged(session_cluster, client, db)

    async def bump(k: int) -> None:
        async with client.transaction() as tx:
            tx.update_one(coll, {"k": k}, {"$inc": {"n": 1}}, expect_matched=1)
        assert tx.result is not None and tx.result.participants == 1, k
        assert tx.result[0].matched_count == 1, k

    await asyncio.gather(*(bump(k) for k in range(0, 300, 10)))
    assert {d["k"]: d["n"] async for d in coll.find({})} == {k: 1 for k in range(0, 300, 10)}


async def test_sync_client_transaction(session_cluster: Cluster) -> None:
    await asyncio.to_thread(_sync_client_transaction, session_cluster.router_address)


def _sync_client_transaction(address: str) -> None:
    db = unique_name("txs", 20)
    with Client(address, timeout=60) as client:
        try:
            coll = client[db]["c"]
            coll.insert_one({"_id": 1, "n": 1})
            with client.transaction() as tx:
                tx.update_one(coll, {"_id": 1}, {"$inc": {"n": 1}})
                tx.find(f"{db}.c", {"_id": 1})
            assert tx.result is not None and tx.result[1] == [{"_id": 1, "n": 2}]
            assert coll.find_one(1) == {"_id": 1, "n": 2}
            # An exception inside the block sends nothing.
            with pytest.raises(RuntimeError), client.transaction() as tx2:
                tx2.update_one(coll, {"_id": 1}, {"$inc": {"n": 1}})
                raise RuntimeError("changed my mind")
            assert coll.find_one(1) == {"_id": 1, "n": 2}
            with pytest.raises(InvalidOperation):
                tx2.insert_one(coll, {"_id": 2})
            with pytest.raises(InvalidOperation), client.transaction():
                pass  # no operation
        finally:
            client.drop_database(db)


# ============================================================================ aborts


async def test_precondition_failure_applies_nothing(
    session_cluster: Cluster, client: AsyncClient, db: str
) -> None:
    coll, owners = await hashed(session_cluster, client, db)
    a, b, c = (owners[s][1] for s in sorted(owners))
    with pytest.raises(TransactionAborted) as excinfo:
        async with client.transaction() as tx:
            tx.update_one(coll, {"_id": a}, {"$inc": {"n": 1}}, expect_matched=1)
            tx.insert_one(coll, {"_id": 2000})
            tx.update_many(coll, {"_id": {"$in": [b, c, 999_999]}}, {"$inc": {"n": 1}},
                           expect_matched=3)  # fmt: skip
    err = excinfo.value
    assert err.code == ErrorCode.TRANSACTION_PRECONDITION_FAILED, err
    assert err.failed_operation == 2 and err.details["matched"] == 2
    assert {d["_id"]: d["n"] async for d in coll.find({"_id": {"$in": [a, b, c, 2000]}})} == {
        a: 0, b: 0, c: 0,
    }  # fmt: skip
    await no_locks(coll, [a, b, c])
    # The same check on one shard (one phase: the shard enforces it).
    plain = client[db]["plain"]
    await plain.insert_one({"_id": 1, "n": 0})
    with pytest.raises(TransactionAborted) as one:
        async with client.transaction() as tx1:
            tx1.update_one(plain, {"_id": 1}, {"$inc": {"n": 1}})
            tx1.delete_one(plain, {"_id": 2}, expect_matched=1)
    assert one.value.code == ErrorCode.TRANSACTION_PRECONDITION_FAILED
    assert one.value.failed_operation == 1
    assert await plain.find_one(1) == {"_id": 1, "n": 0}


async def test_duplicate_key_on_one_shard_aborts_everything(
    session_cluster: Cluster, client: AsyncClient, db: str
) -> None:
    coll, owners = await hashed(session_cluster, client, db)
    a, b, c = (owners[s][2] for s in sorted(owners))
    with pytest.raises(TransactionAborted) as excinfo:
        async with client.transaction() as tx:
            tx.update_one(coll, {"_id": a}, {"$set": {"n": 42}})
            tx.update_one(coll, {"_id": b}, {"$set": {"n": 42}})
            tx.insert_one(coll, {"_id": c, "n": 42})  # exists already
    err = excinfo.value
    assert err.code == ErrorCode.DUPLICATE_KEY, err
    assert err.failed_operation == 2
    assert {d["_id"]: d["n"] async for d in coll.find({"_id": {"$in": [a, b, c]}})} == {
        a: 0, b: 0, c: 0,
    }  # fmt: skip
    await no_locks(coll, [a, b, c])


async def test_bad_input_prepares_nothing(
    session_cluster: Cluster, client: AsyncClient, db: str
) -> None:
    coll, owners = await hashed(session_cluster, client, db)
    a, b = (owners[s][3] for s in sorted(owners)[:2])
    router = session_cluster.router_stub()

    def op(i: int, n: int = 1) -> transaction_pb2.TransactionOperation:
        return transaction_pb2.TransactionOperation(
            database=db, collection="h", op_type=common_pb2.UPDATE,
            filter=bson.encode({"_id": i}), update=bson.encode({"$inc": {"n": n}}),
        )  # fmt: skip

    async def fails(req: transaction_pb2.ExecuteTransactionRequest) -> Any:
        with pytest.raises(grpc.RpcError) as excinfo:
            await router.ExecuteTransaction(req, timeout=30)
        return laura_error(excinfo.value)

    # Unknown database.
    with pytest.raises(TransactionAborted) as unknown:
        async with client.transaction() as tx:
            tx.update_one(coll, {"_id": a}, {"$inc": {"n": 1}})
            tx.insert_one(f"{db}_nope.c", {"_id": 1})
    assert unknown.value.code == ErrorCode.NAMESPACE_NOT_FOUND
    assert unknown.value.failed_operation == 1
    # Too many operations (the default limit is 1,000).
    err = await fails(transaction_pb2.ExecuteTransactionRequest(operations=[op(a)] * 1001))
    assert err.code == ErrorCode.TRANSACTION_TOO_LARGE and "1000" in err.message
    # Too many bytes (two 9 MiB documents).
    big = bson.encode({"pad": "x" * (9 * 1024 * 1024)})
    err = await fails(transaction_pb2.ExecuteTransactionRequest(operations=[
        transaction_pb2.TransactionOperation(database=db, collection="h",
                                             op_type=common_pb2.INSERT, document=big)
    ] * 2))  # fmt: skip
    assert err.code == ErrorCode.TRANSACTION_TOO_LARGE
    # Timeout 0.
    err = await fails(transaction_pb2.ExecuteTransactionRequest(operations=[op(a)], timeout_ms=0))
    assert err.code == ErrorCode.BAD_VALUE and "timeout" in err.message
    # A txn_id reused with other operations (multi-shard and single-shard).
    txn_id = unique_name("reuse", 30)
    first = await router.ExecuteTransaction(
        transaction_pb2.ExecuteTransactionRequest(txn_id=txn_id, operations=[op(a), op(b)]),
        timeout=30,
    )
    assert first.state == transaction_pb2.COMMITTED and first.participants == 2
    err = await fails(
        transaction_pb2.ExecuteTransactionRequest(txn_id=txn_id, operations=[op(a, 5), op(b)])
    )
    assert err.code == ErrorCode.TRANSACTION_ID_REUSED, err
    single = unique_name("reuse1", 30)
    await router.ExecuteTransaction(
        transaction_pb2.ExecuteTransactionRequest(txn_id=single, operations=[op(a)]), timeout=30
    )
    err = await fails(transaction_pb2.ExecuteTransactionRequest(txn_id=single, operations=[op(a, 7)]))
    assert err.code == ErrorCode.TRANSACTION_ID_REUSED, err
    # Only the two committed transactions were applied; nothing stays locked.
    assert {d["_id"]: d["n"] async for d in coll.find({"_id": {"$in": [a, b]}})} == {a: 2, b: 1}
    await no_locks(coll, [a, b])


async def test_resend_of_a_committed_transaction(
    session_cluster: Cluster, client: AsyncClient, db: str
) -> None:
    coll, owners = await hashed(session_cluster, client, db)
    a, b = (owners[s][4] for s in sorted(owners)[:2])
    for ids, participants in (([a, b], 2), ([a], 1)):
        txn_id = unique_name("again", 30)
        results = []
        for _ in range(2):
            async with client.transaction(txn_id=txn_id) as tx:
                for i in ids:
                    tx.update_one(coll, {"_id": i}, {"$inc": {"n": 1}}, expect_matched=1)
                tx.find(coll, {"_id": {"$in": ids}})
            assert tx.result is not None and tx.result.txn_id == txn_id
            assert tx.result.participants == participants
            results.append(
                ([(r.matched_count, r.modified_count) for r in list(tx.result)[:-1]],
                 sorted((d["_id"], d["n"]) for d in tx.result[-1]))
            )  # fmt: skip
        assert results[0] == results[1]
    # a: +1 (two shards) +1 (one shard); b: +1 — each once, however often resent.
    assert {d["_id"]: d["n"] async for d in coll.find({"_id": {"$in": [a, b]}})} == {a: 2, b: 1}



async def test_dead_participant_aborts_without_hanging(cluster: Any) -> None:
    """A participant that is down: the transaction aborts within its deadline
    (SHARD_UNAVAILABLE after the client's retries), the live participant releases its
    locks, and transactions work again once the shard is back."""
    c = await cluster(2)
    db = unique_name("txk", 20)
    async with AsyncClient(c.router_address, timeout=60) as client:
        resp = await shard_collection(c.config_stub(), db, "h", ["_id"], "hashed")
        assert not resp.error.code, resp.error
        coll = client[db]["h"]
        await coll.insert_many([{"_id": i, "n": 0} for i in range(20)])
        place = await placement(c.config_stub(), db, "h")
        live = next(i for i in range(20) if place.shard_of({"_id": i}) == c.shard_ids[0])
        dead = next(i for i in range(20) if place.shard_of({"_id": i}) == c.shard_ids[1])
        c.kill_shard(1)

        async def transfer(timeout_ms: int) -> None:
            async with client.transaction(timeout_ms=timeout_ms) as tx:
                tx.update_one(coll, {"_id": live}, {"$inc": {"n": 1}})
                tx.update_one(coll, {"_id": dead}, {"$inc": {"n": -1}})

        with pytest.raises(TransactionAborted) as excinfo:
            await asyncio.wait_for(transfer(2000), timeout=60)
        assert excinfo.value.code == ErrorCode.SHARD_UNAVAILABLE, excinfo.value
        await no_locks(coll, [live])
        assert (await coll.find_one(live))["n"] == 0
        await c.restart_shard(1)
        await asyncio.wait_for(transfer(10_000), timeout=60)
        got = {d["_id"]: d["n"] async for d in coll.find({"_id": {"$in": [live, dead]}})}
        assert got == {live: 1, dead: -1}
