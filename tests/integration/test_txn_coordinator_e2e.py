"""The coordinator shard's record and its interplay with participants and migrations,
against real shard processes (the shared cluster: standalone shards, no balancer).

The test plays the router: it sends TransactionService calls to the shards itself,
so each step of the protocol (and what happens when the router vanishes after one)
is under its control:

* the coordinator record: Coordinate -> Decide -> a query from another shard's client
  (``peers.call_txn``, through an unreachable first host);
* a participant whose coordinator shard's record says COMMITTED commits on its own
  once its prepared transaction times out (no Commit is ever sent to it); one whose
  coordinator shard has no record presumes abort;
* the coordinator shard's driver delivers a decision nobody delivered;
* a chunk holding a prepared document migrates only after the transaction resolved;
* on a replica set, a new primary's driver delivers the decision recorded on the old
  primary's watch (records replicate; the driver starts on step-up).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import bson
import pytest

from lauradb.cluster import routing_pb2, shard_pb2, transaction_pb2, transaction_pb2_grpc
from lauradb.cluster.common_pb2 import UPDATE
from lauradb.rpc.channels import ChannelPool
from shard_stub.transactions.peers import call_txn
from tests.integration.harness import (
    Cluster,
    chunks_of,
    enc,
    eventually,
    free_port,
    get_shard_map,
    insert_many,
    query_all,
    shard_collection,
    split_chunk,
    unique_name,
)

pytestmark = pytest.mark.integration

RPC = 15.0
T = transaction_pb2


def txn_stub(c: Cluster, shard_id: str) -> transaction_pb2_grpc.TransactionServiceStub:
    return transaction_pb2_grpc.TransactionServiceStub(c.channel(address(c, shard_id)))


def address(c: Cluster, shard_id: str) -> str:
    return c.shards[c.shard_index(shard_id)].address


def new_txn() -> str:
    return f"txn-{uuid.uuid4().hex[:12]}"


def update_op(
    db: str, coll: str, filter: dict[str, Any], update: dict[str, Any],
    version: shard_pb2.ShardVersion,
) -> T.Operation:
    return T.Operation(
        database=db, collection=coll, op_type=UPDATE,
        data=enc({"q": filter, "u": update, "multi": False, "upsert": False}),
        version=version,
    )


async def coordinate(
    c: Cluster, coordinator: str, txn_id: str, participants: list[str], timeout_ms: int
) -> T.CoordinateResponse:
    resp: T.CoordinateResponse = await txn_stub(c, coordinator).CoordinateTransaction(
        T.CoordinateRequest(
            txn_id=txn_id, fingerprint=b"fp-" + txn_id.encode(), timeout_ms=timeout_ms,
            participants=[T.ParticipantInfo(shard_id=s, hosts=[address(c, s)])
                          for s in participants],
        ),
        timeout=RPC,
    )
    return resp


async def decide(c: Cluster, coordinator: str, txn_id: str, commit: bool) -> T.CoordinateResponse:
    resp: T.CoordinateResponse = await txn_stub(c, coordinator).DecideTransaction(
        T.DecideRequest(
            txn_id=txn_id, decision=T.COMMITTED if commit else T.ABORTED,
            reason="" if commit else "test abort", results=enc({"r": []}),
        ),
        timeout=RPC,
    )
    return resp


async def prepare(
    c: Cluster, participant: str, coordinator: str, txn_id: str, ops: list[T.Operation],
    timeout_ms: int, participants: list[str],
) -> T.PrepareResponse:
    resp: T.PrepareResponse = await txn_stub(c, participant).Prepare(
        T.PrepareRequest(
            txn_id=txn_id, coordinator_id=coordinator, operations=ops, timeout_ms=timeout_ms,
            coordinator_hosts=[address(c, coordinator)], fingerprint=b"fp-" + txn_id.encode(),
            participants=participants,
        ),
        timeout=RPC,
    )
    assert resp.vote, resp
    assert resp.state == T.PREPARED
    return resp


async def doc_on(c: Cluster, shard_id: str, db: str, coll: str, _id: Any) -> dict[str, Any] | None:
    resp = await c.shard_stub(c.shard_index(shard_id)).Find(
        shard_pb2.ShardFindRequest(
            database=db, collection=coll, filter=enc({"_id": _id}),
            version=shard_pb2.ShardVersion(ignore=True), batch_size=10,
        ),
        timeout=RPC,
    )
    docs = [bson.decode(d) for d in resp.documents]
    return docs[0] if docs else None


async def placed(c: Cluster, db: str, coll: str, docs: int) -> tuple[str, str]:
    """``db.coll`` with ``docs`` documents {_id: i, k: i, v: 0}, unsharded: (its shard,
    another shard)."""
    await insert_many(c.router_stub(), db, coll, [{"_id": i, "k": i, "v": 0} for i in range(docs)])
    for shard in c.shard_ids:
        if await c.shard_count(c.shard_index(shard), db, coll, {}) == docs:
            other = next(s for s in c.shard_ids if s != shard)
            return shard, other
    raise AssertionError("documents not found on a single shard")


UNSHARDED = shard_pb2.ShardVersion(unsharded=True)


# ---------------------------------------------------------------------- the record


async def test_coordinate_decide_then_query_from_another_shard(
    shared_cluster: Cluster,
) -> None:
    c = shared_cluster
    s0, s1 = c.shard_ids[0], c.shard_ids[1]
    txn_id = new_txn()
    first = await coordinate(c, s0, txn_id, [s0, s1], 10_000)
    assert first.state == T.PREPARING
    decided = await decide(c, s0, txn_id, True)
    assert decided.state == T.COMMITTED
    late = await decide(c, s0, txn_id, False)
    assert late.state == T.COMMITTED  # the first decision stands
    # Another shard's client: the first host is unreachable, the next one answers.
    dead = f"127.0.0.1:{free_port()}"
    pool = ChannelPool()
    try:
        answer = await call_txn(
            [dead, address(c, s0)], "QueryTransactionState",
            T.RecoveryRequest(txn_id=txn_id, requesting_node_id=s1, abort_if_undecided=True),
            10.0, pool=pool,
        )
        assert answer.state == T.COMMITTED and answer.coordinator_id == s0
        assert list(answer.participants) == [s0, s1]
        # no record: presumed abort
        ghost = await call_txn(
            [address(c, s0)], "QueryTransactionState",
            T.RecoveryRequest(txn_id=new_txn(), abort_if_undecided=True), 10.0, pool=pool,
        )
        assert ghost.state == T.ABORTED
    finally:
        await pool.close()
    # a resend of the Coordinate answers the decision; another fingerprint is refused
    resend = await coordinate(c, s0, txn_id, [s0, s1], 10_000)
    assert resend.state == T.COMMITTED
    with pytest.raises(Exception) as exc:
        await txn_stub(c, s0).CoordinateTransaction(
            T.CoordinateRequest(txn_id=txn_id, fingerprint=b"other",
                                participants=[T.ParticipantInfo(shard_id=s0)]),
            timeout=RPC,
        )
    assert "TRANSACTION_ID_REUSED" in str(exc.value)


# ---------------------------------------------------------------------- recovery


async def test_prepared_participant_recovers_the_decision_on_its_own(
    shared_cluster: Cluster, db_name: str
) -> None:
    c = shared_cluster
    home, coord = await placed(c, db_name, "c", 3)
    # 1. committed at the coordinator shard, never told to the participant: after its
    #    timeout the participant asks and commits (the record's own timeout is long,
    #    so the coordinator shard's driver does not deliver it first).
    t1 = new_txn()
    assert (await coordinate(c, coord, t1, [home], 60_000)).state == T.PREPARING
    await prepare(c, home, coord, t1,
                  [update_op(db_name, "c", {"_id": 0}, {"$set": {"v": 1}}, UNSHARDED)],
                  timeout_ms=300, participants=[home])
    assert (await decide(c, coord, t1, True)).state == T.COMMITTED

    async def committed() -> bool:
        doc = await doc_on(c, home, db_name, "c", 0)
        return doc is not None and doc["v"] == 1

    await eventually(committed, timeout=20, what="the participant committing on its own")

    # 2. no record at the coordinator shard: the participant presumes abort, its locks
    #    go, and the coordinator shard remembers the abort.
    t2 = new_txn()
    await prepare(c, home, coord, t2,
                  [update_op(db_name, "c", {"_id": 1}, {"$set": {"v": 2}}, UNSHARDED)],
                  timeout_ms=300, participants=[home])

    async def aborted() -> bool:
        resp = await c.shard_stub(c.shard_index(home)).Update(
            shard_pb2.ShardUpdateRequest(
                database=db_name, collection="c", filter=enc({"_id": 1}),
                update=enc({"$set": {"w": 1}}), version=UNSHARDED,
            ),
            timeout=RPC,
        )
        return bool(resp.matched_count == 1)

    await eventually(aborted, timeout=20, what="the prepared document unlocked")
    doc = await doc_on(c, home, db_name, "c", 1)
    assert doc is not None and doc["v"] == 0 and doc["w"] == 1
    assert (await decide(c, coord, t2, True)).state == T.ABORTED


async def test_coordinator_driver_delivers_an_undelivered_decision(
    shared_cluster: Cluster, db_name: str
) -> None:
    c = shared_cluster
    home, coord = await placed(c, db_name, "c", 2)
    t = new_txn()
    # the record's timeout is short, the participant's long: the driver delivers
    assert (await coordinate(c, coord, t, [home], 200)).state == T.PREPARING
    await prepare(c, home, coord, t,
                  [update_op(db_name, "c", {"_id": 1}, {"$set": {"v": 7}}, UNSHARDED)],
                  timeout_ms=120_000, participants=[home])
    assert (await decide(c, coord, t, True)).state == T.COMMITTED

    async def delivered() -> bool:
        doc = await doc_on(c, home, db_name, "c", 1)
        return doc is not None and doc["v"] == 7

    await eventually(delivered, timeout=20, what="the driver's Commit applied")
    # ... and the record is finished (a FinishTransaction changes nothing visible:
    # the decision is still answered)
    resp = await txn_stub(c, coord).FinishTransaction(
        T.FinishTransactionRequest(txn_id=t), timeout=RPC
    )
    assert resp.state == T.COMMITTED


# ---------------------------------------------------------------------- migrations


async def test_chunk_with_a_prepared_document_migrates_after_it_resolves(
    shared_cluster: Cluster, db_name: str
) -> None:
    c = shared_cluster
    config = c.config_server_stub()
    assert (await shard_collection(config, db_name, "m", ["k"], "range")).success
    (whole,) = chunks_of(await get_shard_map(config, db_name, "m"))
    await split_chunk(config, whole.chunk_id, {"k": 10})
    docs = [{"_id": i, "k": i, "v": 0} for i in range(20)]
    assert await insert_many(c.router_stub(), db_name, "m", docs) == 20
    smap = await get_shard_map(config, db_name, "m")
    high = next(ch for ch in chunks_of(smap) if ch.min == {"k": 10})
    home = high.shard
    other = next(s for s in c.shard_ids if s != home)
    best = max(
        (ch.version_major, ch.version_minor)
        for s in smap.shards if s.shard_id == home for ch in s.chunks
    )
    version = shard_pb2.ShardVersion(epoch=smap.epoch, major=best[0], minor=best[1])

    t = new_txn()
    assert (await coordinate(c, home, t, [home], 60_000)).state == T.PREPARING
    await prepare(c, home, home, t,
                  [update_op(db_name, "m", {"k": 15, "_id": 15}, {"$set": {"v": 15}}, version)],
                  timeout_ms=60_000, participants=[home])
    proc = c.shards[c.shard_index(home)]
    mark = proc.log_size()

    async def move() -> routing_pb2.MigrateChunkResponse:
        resp: routing_pb2.MigrateChunkResponse = await config.MigrateChunk(
            routing_pb2.MigrateChunkRequest(
                chunk_id=high.chunk_id, from_shard=home, to_shard=other
            ),
            timeout=120,
        )
        return resp

    migration = asyncio.create_task(move())
    try:
        async def waiting() -> bool:
            return "prepared transaction(s) locking documents" in proc.log_text(mark)

        await eventually(waiting, timeout=30, what="the donor waiting for the transaction")
        assert not migration.done()
        # resolve: decide and deliver the commit (as the router would)
        assert (await decide(c, home, t, True)).state == T.COMMITTED
        commit = await txn_stub(c, home).Commit(
            T.CommitRequest(txn_id=t, coordinator_id=home), timeout=RPC
        )
        assert commit.success, commit
        resp = await asyncio.wait_for(migration, 120)
    finally:
        if not migration.done():
            migration.cancel()
    assert resp.success, resp
    after = chunks_of(await get_shard_map(config, db_name, "m"))
    assert next(ch for ch in after if ch.chunk_id == high.chunk_id).shard == other
    moved = await doc_on(c, other, db_name, "m", 15)
    assert moved is not None and moved["v"] == 15  # the commit travelled with the chunk



# ---------------------------------------------------------------------- replica sets


async def test_new_primary_delivers_a_decision_of_the_old_one(
    cluster: Callable[..., Awaitable[Cluster]],
) -> None:
    """Coordinator shard = participant = a 3-member replica set. The coordinator record
    and the prepared transaction are written on one primary, which is then killed; the
    decision goes to the new primary (``call_txn`` finds it among the members) and
    nobody sends Commit/Abort: the new primary's driver (started on step-up) delivers it
    to the participant (whose locks the new primary reloaded). The decision is COMMITTED
    unless the election outlasted 2x the record's timeout (then the driver presumed
    abort first, and the Decide answers ABORTED): either way the participant ends with
    exactly the standing decision and its lock released."""
    c = await cluster(1, replicas=3)
    old = await c.primary_of("shard0")
    db = unique_name("txn_rs")
    await insert_many(c.router_stub(), db, "c", [{"_id": i, "v": 0} for i in range(2)])
    hosts = [p.address for p in c.members("shard0")]
    t = new_txn()
    old_stub = transaction_pb2_grpc.TransactionServiceStub(c.channel(old.address))
    first = await old_stub.CoordinateTransaction(
        T.CoordinateRequest(
            txn_id=t, fingerprint=b"fp", timeout_ms=5_000,
            participants=[T.ParticipantInfo(shard_id="shard0", hosts=hosts)],
        ),
        timeout=RPC,
    )
    assert first.state == T.PREPARING
    prepared = await old_stub.Prepare(
        T.PrepareRequest(
            txn_id=t, coordinator_id="shard0", coordinator_hosts=hosts, fingerprint=b"fp",
            participants=["shard0"], timeout_ms=120_000,
            operations=[update_op(db, "c", {"_id": 0}, {"$set": {"v": 1}}, UNSHARDED)],
        ),
        timeout=RPC,
    )
    assert prepared.vote and prepared.state == T.PREPARED, prepared
    old.kill()
    pool = ChannelPool()
    try:
        decided = await call_txn(
            hosts, "DecideTransaction",
            T.DecideRequest(txn_id=t, decision=T.COMMITTED, results=enc({"r": []})),
            60.0, pool=pool,
        )
    finally:
        await pool.close()
    assert decided.state in (T.COMMITTED, T.ABORTED), decided
    expected_v = 1 if decided.state == T.COMMITTED else 0

    async def delivered() -> bool:
        # the lock is gone once the decision was applied: a plain write goes through
        resp = await c.router_stub().Update(
            routing_pb2.UpdateRequest(
                database=db, collection="c", query=enc({"_id": 0}),
                update=enc({"$set": {"w": 1}}),
            ),
            timeout=RPC,
        )
        return bool(resp.matched_count == 1)

    await eventually(delivered, timeout=40, what="the new primary's driver delivering")
    assert await query_all(c.router_stub(), db, "c", {"_id": 0}) == [
        {"_id": 0, "v": expected_v, "w": 1}
    ]
    await c.restart(old)  # back as a secondary (a clean stop at the end)
