"""The shard's TransactionService, called directly (the test plays the router):
one-phase commit, prepare/commit/abort, idempotent resends, document locks against
other transactions and ordinary writes, locking reads, no dirty reads, prepared
records surviving kill -9, and recovery asking the coordinator shard."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from lauradb.cluster import common_pb2, shard_pb2, transaction_pb2, transaction_pb2_grpc
from lauradb.errors import ErrorCode
from tests.integration.harness import (
    RPC_TIMEOUT,
    Cluster,
    dec,
    enc,
    eventually,
    laura_error,
)

pytestmark = pytest.mark.integration

IGNORE = shard_pb2.ShardVersion(ignore=True)
COLL = "c"

INSERT, UPDATE, DELETE, READ = (
    common_pb2.INSERT, common_pb2.UPDATE, common_pb2.DELETE, common_pb2.READ,
)


def txn(c: Cluster, index: int = 0) -> transaction_pb2_grpc.TransactionServiceStub:
    return transaction_pb2_grpc.TransactionServiceStub(c.channel(c.shards[index].address))


def op(db: str, kind: int, data: dict[str, Any], **kw: Any) -> transaction_pb2.Operation:
    return transaction_pb2.Operation(
        database=db, collection=COLL, op_type=kind, data=enc(data),  # type: ignore[arg-type]
        version=IGNORE, **kw,
    )


async def prepare(
    c: Cluster,
    txn_id: str,
    ops: list[transaction_pb2.Operation],
    *,
    index: int = 0,
    one_phase: bool = False,
    coordinator: int = 0,
    timeout_ms: int = 30_000,
    fp: bytes = b"fp",
) -> transaction_pb2.PrepareResponse:
    req = transaction_pb2.PrepareRequest(
        txn_id=txn_id, coordinator_id=c.shards[coordinator].name, operations=ops,
        timeout_ms=timeout_ms, one_phase=one_phase,
        coordinator_hosts=[c.shards[coordinator].address], fingerprint=fp,
        participants=[c.shards[index].name],
    )
    resp: transaction_pb2.PrepareResponse = await txn(c, index).Prepare(req, timeout=RPC_TIMEOUT)
    return resp


async def commit(c: Cluster, txn_id: str, index: int = 0) -> transaction_pb2.CommitResponse:
    resp: transaction_pb2.CommitResponse = await txn(c, index).Commit(
        transaction_pb2.CommitRequest(txn_id=txn_id, coordinator_id="shard0"), timeout=RPC_TIMEOUT
    )
    return resp


async def abort(c: Cluster, txn_id: str, index: int = 0) -> transaction_pb2.AbortResponse:
    resp: transaction_pb2.AbortResponse = await txn(c, index).Abort(
        transaction_pb2.AbortRequest(txn_id=txn_id, coordinator_id="shard0", reason="test"),
        timeout=RPC_TIMEOUT,
    )
    return resp


async def seed(c: Cluster, db: str, docs: list[dict[str, Any]], index: int = 0) -> None:
    resp = await c.shard_stub(index).Insert(
        shard_pb2.ShardInsertRequest(
            database=db, collection=COLL, documents=[enc(d) for d in docs], ordered=True,
            version=IGNORE,
        ),
        timeout=RPC_TIMEOUT,
    )
    assert resp.inserted_count == len(docs), resp


async def docs(c: Cluster, db: str, index: int = 0) -> dict[Any, dict[str, Any]]:
    resp = await c.shard_stub(index).Find(
        shard_pb2.ShardFindRequest(
            database=db, collection=COLL, filter=enc({}), version=IGNORE, batch_size=10_000
        ),
        timeout=RPC_TIMEOUT,
    )
    return {dec(d)["_id"]: dec(d) for d in resp.documents}


async def update(
    c: Cluster, db: str, filt: dict[str, Any], upd: dict[str, Any], index: int = 0
) -> shard_pb2.ShardUpdateResponse:
    resp: shard_pb2.ShardUpdateResponse = await c.shard_stub(index).Update(
        shard_pb2.ShardUpdateRequest(
            database=db, collection=COLL, filter=enc(filt), update=enc(upd), version=IGNORE
        ),
        timeout=RPC_TIMEOUT,
    )
    return resp


def error_code(resp: Any) -> int:
    return int(resp.error_info.code)


# ---------------------------------------------------------------------- one phase


async def test_one_phase_commits_every_operation_at_once(
    shared_cluster: Cluster, db_name: str
) -> None:
    c = shared_cluster
    await seed(c, db_name, [{"_id": i, "a": i} for i in range(4)])
    ops = [
        op(db_name, INSERT, {"_id": 10, "a": 10}),
        op(db_name, UPDATE, {"q": {"_id": 1}, "u": {"$set": {"a": 100}}}),
        op(db_name, DELETE, {"q": {"_id": 2}, "limit": 1}),
        op(db_name, READ, {"q": {"_id": {"$in": [1, 10]}}}),
        op(db_name, UPDATE, {"q": {"_id": 20}, "u": {"$set": {"b": 1}}, "upsert": True}),
    ]
    resp = await prepare(c, f"{db_name}-one", ops, one_phase=True)
    assert resp.vote and resp.state == transaction_pb2.COMMITTED, resp
    r = resp.results
    assert r[0].inserted == 1
    assert (r[1].matched, r[1].modified) == (1, 1)
    assert r[2].deleted == 1
    # the READ sees the transaction's own earlier writes
    assert sorted((dec(d)["_id"], dec(d)["a"]) for d in r[3].documents) == [(1, 100), (10, 10)]
    assert dec(r[4].upserted_id) == {"_id": 20}
    d = await docs(c, db_name)
    assert sorted(d) == [0, 1, 3, 10, 20] and d[1]["a"] == 100
    # a resend is answered from the outcome row (applied once)
    again = await prepare(c, f"{db_name}-one", ops, one_phase=True)
    assert again.vote and again.state == transaction_pb2.COMMITTED
    assert list(again.results) == list(resp.results)
    assert sorted(await docs(c, db_name)) == [0, 1, 3, 10, 20]
    # the same id with other operations
    reused = await prepare(c, f"{db_name}-one", ops[:1], one_phase=True, fp=b"other")
    assert not reused.vote and error_code(reused) == ErrorCode.TRANSACTION_ID_REUSED


async def test_one_phase_precondition_and_errors_apply_nothing(
    shared_cluster: Cluster, db_name: str
) -> None:
    c = shared_cluster
    await seed(c, db_name, [{"_id": i, "a": i} for i in range(3)])
    resp = await prepare(c, f"{db_name}-pre", [
        op(db_name, UPDATE, {"q": {}, "u": {"$set": {"x": 1}}, "multi": True}),
        op(db_name, DELETE, {"q": {"a": {"$gte": 1}}, "limit": 0},
           has_expected=True, expected_matched=5),
    ], one_phase=True)
    assert not resp.vote and resp.state == transaction_pb2.ABORTED
    assert error_code(resp) == ErrorCode.TRANSACTION_PRECONDITION_FAILED
    assert resp.failed_operation == 1
    dup = [
        op(db_name, UPDATE, {"q": {"_id": 0}, "u": {"$set": {"x": 1}}}),
        op(db_name, INSERT, {"_id": 1}),
    ]
    resp = await prepare(c, f"{db_name}-dup", dup, one_phase=True)
    assert not resp.vote and error_code(resp) == ErrorCode.DUPLICATE_KEY
    assert resp.failed_operation == 1
    assert all("x" not in d for d in (await docs(c, db_name)).values())
    # a resend gets the same vote; the id is not usable any more
    again = await prepare(c, f"{db_name}-dup", dup, one_phase=True)
    assert not again.vote and error_code(again) == ErrorCode.DUPLICATE_KEY
    assert again.failed_operation == 1


# ---------------------------------------------------------------------- two phase


async def test_prepare_commit_locks_and_no_dirty_reads(
    shared_cluster: Cluster, db_name: str
) -> None:
    c = shared_cluster
    await seed(c, db_name, [{"_id": i, "a": i} for i in range(3)])
    ops = [op(db_name, UPDATE, {"q": {"_id": 1}, "u": {"$set": {"a": 50}}}),
           op(db_name, INSERT, {"_id": 9, "a": 9})]
    resp = await prepare(c, f"{db_name}-2pc", ops)
    assert resp.vote and resp.state == transaction_pb2.PREPARED, resp
    assert resp.results[0].modified == 1 and resp.results[1].inserted == 1
    # readers see the committed state only
    d = await docs(c, db_name)
    assert d[1]["a"] == 1 and 9 not in d
    # idempotent resend
    again = await prepare(c, f"{db_name}-2pc", ops)
    assert again.vote and again.state == transaction_pb2.PREPARED
    assert list(again.results) == list(resp.results)
    # another transaction touching a locked document (or the prepared insert's _id)
    other = await prepare(c, f"{db_name}-2pc-other", [
        op(db_name, UPDATE, {"q": {"_id": 1}, "u": {"$inc": {"a": 1}}})
    ])
    assert not other.vote and error_code(other) == ErrorCode.WRITE_CONFLICT
    assert other.failed_operation == 0
    other = await prepare(c, f"{db_name}-2pc-other2", [op(db_name, INSERT, {"_id": 9})])
    assert not other.vote and error_code(other) == ErrorCode.WRITE_CONFLICT
    # an unlocked document is free
    free = await prepare(c, f"{db_name}-2pc-free", [
        op(db_name, UPDATE, {"q": {"_id": 2}, "u": {"$set": {"a": 20}}})
    ], one_phase=True)
    assert free.vote, free
    # an ordinary write to the locked document waits for the commit, then runs
    waiting = asyncio.create_task(update(c, db_name, {"_id": 1}, {"$inc": {"a": 1}}))
    done = await commit(c, f"{db_name}-2pc")
    assert done.success, done
    assert (await waiting).modified_count == 1
    d = await docs(c, db_name)
    assert d[1]["a"] == 51 and d[9] == {"_id": 9, "a": 9}
    # resends after the commit
    assert (await commit(c, f"{db_name}-2pc")).success
    late = await prepare(c, f"{db_name}-2pc", ops)
    assert late.vote and late.state == transaction_pb2.COMMITTED
    assert list(late.results) == list(resp.results)
    refused = await abort(c, f"{db_name}-2pc")
    assert not refused.success


async def test_prepare_abort_releases_and_refuses_late_prepare(
    shared_cluster: Cluster, db_name: str
) -> None:
    c = shared_cluster
    await seed(c, db_name, [{"_id": 1, "a": 1}])
    ops = [op(db_name, DELETE, {"q": {"_id": 1}, "limit": 1})]
    resp = await prepare(c, f"{db_name}-ab", ops)
    assert resp.vote and resp.results[0].deleted == 1
    assert (await abort(c, f"{db_name}-ab")).success
    assert (await abort(c, f"{db_name}-ab")).success  # idempotent
    assert (await docs(c, db_name)) == {1: {"_id": 1, "a": 1}}
    # the lock is gone: an ordinary write runs at once
    assert (await update(c, db_name, {"_id": 1}, {"$set": {"a": 2}})).modified_count == 1
    late = await prepare(c, f"{db_name}-ab", ops)
    assert not late.vote and error_code(late) == ErrorCode.NO_SUCH_TRANSACTION
    failed = await commit(c, f"{db_name}-ab")
    assert not failed.success and error_code(failed) == ErrorCode.NO_SUCH_TRANSACTION
    # unknown transactions: Abort succeeds (and refuses a later Prepare), Commit fails
    assert (await abort(c, f"{db_name}-never")).success
    late = await prepare(c, f"{db_name}-never", ops)
    assert not late.vote and error_code(late) == ErrorCode.NO_SUCH_TRANSACTION
    failed = await commit(c, f"{db_name}-never-2")
    assert not failed.success and error_code(failed) == ErrorCode.NO_SUCH_TRANSACTION


async def test_ordinary_write_on_locked_document_conflicts_after_its_wait(
    shared_cluster: Cluster, db_name: str
) -> None:
    c = shared_cluster
    await seed(c, db_name, [{"_id": 1, "a": 1}, {"_id": 2, "a": 2}])
    resp = await prepare(c, f"{db_name}-wc", [op(db_name, UPDATE, {"q": {"_id": 1}, "u": {"$set": {"a": 5}}})])
    assert resp.vote
    with pytest.raises(grpc.RpcError) as info:
        await update(c, db_name, {}, {"$set": {"z": 1}})  # a multi-less update hits _id 1 first
    assert laura_error(info.value).code == ErrorCode.WRITE_CONFLICT
    with pytest.raises(grpc.RpcError) as info:
        await c.shard_stub(0).Delete(
            shard_pb2.ShardDeleteRequest(
                database=db_name, collection=COLL, filter=enc({}), multi=True, version=IGNORE
            ),
            timeout=RPC_TIMEOUT,
        )
    assert laura_error(info.value).code == ErrorCode.WRITE_CONFLICT
    assert sorted(await docs(c, db_name)) == [1, 2]  # nothing half-done
    assert (await abort(c, f"{db_name}-wc")).success
    assert (await update(c, db_name, {"_id": 1}, {"$set": {"z": 1}})).modified_count == 1


async def test_read_operations_lock_what_they_return(
    shared_cluster: Cluster, db_name: str
) -> None:
    c = shared_cluster
    await seed(c, db_name, [{"_id": 1, "a": 1}, {"_id": 2, "a": 2}])
    reader = await prepare(c, f"{db_name}-rd", [op(db_name, READ, {"q": {"a": {"$lte": 1}}})])
    assert reader.vote and reader.results[0].matched == 1
    assert [dec(d) for d in reader.results[0].documents] == [{"_id": 1, "a": 1}]
    writer = await prepare(c, f"{db_name}-rd-w", [op(db_name, UPDATE, {"q": {"_id": 1}, "u": {"$set": {"a": 3}}})])
    assert not writer.vote and error_code(writer) == ErrorCode.WRITE_CONFLICT
    # reads outside transactions are not blocked; other documents are not locked
    assert (await docs(c, db_name))[1]["a"] == 1
    ok = await prepare(c, f"{db_name}-rd-2", [op(db_name, UPDATE, {"q": {"_id": 2}, "u": {"$set": {"a": 3}}})],
                       one_phase=True)
    assert ok.vote
    assert (await commit(c, f"{db_name}-rd")).success  # a READ-only commit applies nothing
    writer = await prepare(c, f"{db_name}-rd-w2", [op(db_name, UPDATE, {"q": {"_id": 1}, "u": {"$set": {"a": 3}}})],
                           one_phase=True)
    assert writer.vote
    assert (await docs(c, db_name))[1]["a"] == 3


async def test_bad_requests_and_stale_placement(shared_cluster: Cluster, db_name: str) -> None:
    c = shared_cluster
    with pytest.raises(grpc.RpcError) as info:
        await prepare(c, "", [op(db_name, INSERT, {"_id": 1})])
    assert laura_error(info.value).code == ErrorCode.BAD_VALUE
    with pytest.raises(grpc.RpcError) as info:
        await prepare(c, f"{db_name}-empty", [])
    assert laura_error(info.value).code == ErrorCode.BAD_VALUE
    bad = await prepare(c, f"{db_name}-badop", [op(db_name, common_pb2.CREATE_INDEX, {"q": {}})])
    assert not bad.vote and error_code(bad) == ErrorCode.BAD_VALUE and bad.failed_operation == 0
    # placement is checked like an ordinary write's: a version from another epoch
    stale = op(db_name, INSERT, {"_id": 1})
    stale.version.CopyFrom(shard_pb2.ShardVersion(epoch="no-such-epoch", major=1))
    resp = await prepare(c, f"{db_name}-stale", [op(db_name, INSERT, {"_id": 2}), stale])
    assert not resp.vote and error_code(resp) == ErrorCode.STALE_CONFIG, resp
    assert resp.failed_operation == 1


# ---------------------------------------------------------------------- recovery


async def test_recovery_presumes_abort_without_a_coordinator_decision(
    shared_cluster: Cluster, db_name: str
) -> None:
    """The coordinator shard (this one) has no record: the prepared transaction is
    aborted once its timeout passes, and its locks are released."""
    c = shared_cluster
    await seed(c, db_name, [{"_id": 1, "a": 1}])
    ops = [op(db_name, UPDATE, {"q": {"_id": 1}, "u": {"$set": {"a": 7}}})]
    resp = await prepare(c, f"{db_name}-rec-abort", ops, timeout_ms=200)
    assert resp.vote

    async def aborted() -> bool:
        # a resend answers PREPARED while prepared, NO_SUCH_TRANSACTION once aborted
        r = await prepare(c, f"{db_name}-rec-abort", ops, timeout_ms=200)
        return not r.vote and error_code(r) == ErrorCode.NO_SUCH_TRANSACTION

    await eventually(aborted, timeout=20, what="presumed abort by recovery")
    assert (await docs(c, db_name))[1]["a"] == 1
    assert (await update(c, db_name, {"_id": 1}, {"$set": {"a": 2}})).modified_count == 1


async def test_recovery_learns_a_commit_from_another_coordinator_shard(
    shared_cluster: Cluster, db_name: str
) -> None:
    """Participant shard0, coordinator shard1 decided COMMITTED; nobody sends the
    Commit: shard0's recovery asks shard1 and commits."""
    c = shared_cluster
    await seed(c, db_name, [{"_id": 1, "a": 1}])
    coordinate = await txn(c, 1).CoordinateTransaction(
        transaction_pb2.CoordinateRequest(
            txn_id=f"{db_name}-rec-commit", fingerprint=b"fp", timeout_ms=60_000,
            participants=[transaction_pb2.ParticipantInfo(
                shard_id=c.shards[0].name, hosts=[c.shards[0].address]
            )],
        ),
        timeout=RPC_TIMEOUT,
    )
    assert coordinate.state == transaction_pb2.PREPARING
    resp = await prepare(c, f"{db_name}-rec-commit", [
        op(db_name, UPDATE, {"q": {"_id": 1}, "u": {"$set": {"a": 8}}})
    ], coordinator=1, timeout_ms=200)
    assert resp.vote
    decided = await txn(c, 1).DecideTransaction(
        transaction_pb2.DecideRequest(txn_id=f"{db_name}-rec-commit", decision=transaction_pb2.COMMITTED),
        timeout=RPC_TIMEOUT,
    )
    assert decided.state == transaction_pb2.COMMITTED

    async def committed() -> bool:
        return bool((await docs(c, db_name))[1]["a"] == 8)

    await eventually(committed, timeout=20, what="commit learned by recovery")
    assert (await commit(c, f"{db_name}-rec-commit")).success


async def test_prepared_transaction_survives_kill_9(cluster: Any, db_name: str) -> None:
    c: Cluster = await cluster(shards=1)
    db = db_name
    await seed(c, db, [{"_id": 1, "a": 1}, {"_id": 2, "a": 2}])
    resp = await prepare(c, f"{db_name}-kill", [
        op(db, UPDATE, {"q": {"_id": 1}, "u": {"$set": {"a": 10}}}),
        op(db, READ, {"q": {"_id": 2}}),
    ], timeout_ms=120_000)
    assert resp.vote
    c.kill_shard(0)
    await c.close_channels()
    await c.restart_shard(0)
    # the locks are back: writes to either document conflict, others go on
    with pytest.raises(grpc.RpcError) as info:
        await update(c, db, {"_id": 2}, {"$set": {"a": 20}})
    assert laura_error(info.value).code == ErrorCode.WRITE_CONFLICT
    other = await prepare(c, f"{db_name}-kill-2", [op(db, DELETE, {"q": {"_id": 1}, "limit": 1})])
    assert not other.vote and error_code(other) == ErrorCode.WRITE_CONFLICT
    assert (await docs(c, db))[1]["a"] == 1
    # the resend answers the same vote; the commit applies the recorded effects
    again = await prepare(c, f"{db_name}-kill", [
        op(db, UPDATE, {"q": {"_id": 1}, "u": {"$set": {"a": 10}}}),
        op(db, READ, {"q": {"_id": 2}}),
    ], timeout_ms=120_000)
    assert again.vote and list(again.results) == list(resp.results)
    assert (await commit(c, f"{db_name}-kill")).success
    assert (await docs(c, db))[1]["a"] == 10
    assert (await update(c, db, {"_id": 2}, {"$set": {"a": 20}})).modified_count == 1


async def test_replica_set_primary_only_and_failover_keeps_prepared(
    cluster: Any, db_name: str
) -> None:
    """Only the primary serves transactions; a prepared transaction (majority-committed
    before the vote) survives the primary's kill -9: the new primary reloads its locks
    and commits it."""
    c: Cluster = await cluster(shards=1, replicas=3)
    old = await c.primary_of("shard0")
    secondary = next(p for p in c.members("shard0") if p is not old)
    db = db_name
    resp = await c.shard_stub_at(old).Insert(
        shard_pb2.ShardInsertRequest(
            database=db, collection=COLL, documents=[enc({"_id": 1, "a": 1})], version=IGNORE
        ),
        timeout=RPC_TIMEOUT,
    )
    assert resp.inserted_count == 1
    hosts = [p.address for p in c.members("shard0")]
    ops = [op(db, UPDATE, {"q": {"_id": 1}, "u": {"$set": {"a": 10}}})]

    def request(txn_id: str) -> transaction_pb2.PrepareRequest:
        return transaction_pb2.PrepareRequest(
            txn_id=txn_id, coordinator_id="shard0", coordinator_hosts=hosts, operations=ops,
            timeout_ms=120_000, fingerprint=b"fp", participants=["shard0"],
        )

    def stub(proc: Any) -> transaction_pb2_grpc.TransactionServiceStub:
        return transaction_pb2_grpc.TransactionServiceStub(c.channel(proc.address))

    with pytest.raises(grpc.RpcError) as info:
        await stub(secondary).Prepare(request(f"{db}-rs"), timeout=RPC_TIMEOUT)
    assert laura_error(info.value).code == ErrorCode.NOT_WRITABLE_PRIMARY
    prepared = await stub(old).Prepare(request(f"{db}-rs"), timeout=RPC_TIMEOUT)
    assert prepared.vote and prepared.state == transaction_pb2.PREPARED, prepared
    old.kill()
    new = await c.primary_of("shard0")
    assert new is not old

    attempts = 0

    async def conflicting() -> bool:
        nonlocal attempts
        attempts += 1
        r = await stub(new).Prepare(
            transaction_pb2.PrepareRequest(
                txn_id=f"{db}-rs-other-{attempts}", operations=ops, one_phase=True,
                fingerprint=b"x",
            ),
            timeout=RPC_TIMEOUT,
        )
        return not r.vote and error_code(r) == ErrorCode.WRITE_CONFLICT

    await eventually(conflicting, timeout=30, what="the new primary's reloaded locks")
    again = await stub(new).Prepare(request(f"{db}-rs"), timeout=RPC_TIMEOUT)
    assert again.vote and again.state == transaction_pb2.PREPARED
    done = await stub(new).Commit(
        transaction_pb2.CommitRequest(txn_id=f"{db}-rs", coordinator_id="shard0"),
        timeout=RPC_TIMEOUT,
    )
    assert done.success, done
    ids = await c.member_ids(new, db, COLL)
    assert ids == {1}
    found = await c.shard_stub_at(new).Find(
        shard_pb2.ShardFindRequest(
            database=db, collection=COLL, filter=enc({}), version=IGNORE, batch_size=10
        ),
        timeout=RPC_TIMEOUT,
    )
    assert [dec(d) for d in found.documents] == [{"_id": 1, "a": 10}]
    await c.restart(old)  # back as a secondary (a clean stop at the end)
