"""The coordinator record of distributed transactions over a real ShardStorage
(``shard_stub/transactions/coordinator.py``): first decision wins, presumed abort,
transaction id reuse, idempotent resends, and the driver delivering decisions a router
did not (the shard-to-shard call is a fake injected as a parameter)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import bson
import grpc
import pytest

from lauradb.cluster import error_pb2, transaction_pb2_grpc
from lauradb.cluster import transaction_pb2 as tpb
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import ChannelPool
from lauradb.rpc.errors import abort as rpc_abort
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub.critical_section import CriticalSection
from shard_stub.cursors import CursorManager
from shard_stub.metadata import ShardMetadata
from shard_stub.migration_donor import DonorMigration, MigrationDonor
from shard_stub.migration_range import MigrationRange
from shard_stub.migration_settings import MigrationSettings
from shard_stub.migration_store import DonorRecord, MigrationStore
from shard_stub.range_deleter import RangeDeleter
from shard_stub.storage import ShardStorage
from shard_stub.transactions.coordinator import Coordinator, CoordinatorSettings
from shard_stub.transactions.peers import CallFailed, call_txn
from shard_stub.transactions.records import COORDINATOR, TxnRecords
from shard_stub.transfer_log import TransferLog

FP = b"fingerprint-1"
HOSTS = {"s1": ["h1a:1", "h1b:1"], "s2": ["h2:1"]}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeCalls:
    """The injected ``call_txn``: records calls; fails the shards in ``failing``."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], str, Any]] = []
        self.failing: set[str] = set()
        self.no_such: set[str] = set()

    async def __call__(
        self, hosts: Sequence[str], method: str, request: Any, timeout_s: float
    ) -> Any:
        assert timeout_s > 0
        self.calls.append((tuple(hosts), method, request))
        shard = next(s for s, h in HOSTS.items() if list(hosts) == h)
        if shard in self.failing:
            raise LauraError(ErrorCode.HOST_UNREACHABLE, f"{shard} down")
        if shard in self.no_such and method == "Commit":
            raise LauraError(ErrorCode.NO_SUCH_TRANSACTION, "unknown")
        if method == "Commit":
            return tpb.CommitResponse(txn_id=request.txn_id, participant_id=shard, success=True)
        return tpb.AbortResponse(txn_id=request.txn_id, participant_id=shard, success=True)

    def methods(self) -> list[tuple[str, str]]:
        shard_of = {tuple(h): s for s, h in HOSTS.items()}
        return sorted((shard_of[h], m) for h, m, _ in self.calls)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Coordinator, FakeCalls, Clock]]:
    storage = ShardStorage(tmp_path)
    storage.open()
    calls = FakeCalls()
    clock = Clock()
    majority_waits: list[int] = []

    async def wait_majority() -> None:
        majority_waits.append(1)

    coord = Coordinator(
        TxnRecords(storage), "s1", calls,
        wait_majority=wait_majority,
        settings=CoordinatorSettings(interval_s=0.01, retry_min_s=1.0, prune_after_s=3600.0),
        clock=clock,
    )
    coord.majority_waits = majority_waits  # type: ignore[attr-defined]
    yield coord, calls, clock
    await coord.stop()
    storage.close()


def coordinate_req(txn_id: str, fp: bytes = FP, timeout_ms: int = 10_000) -> tpb.CoordinateRequest:
    return tpb.CoordinateRequest(
        txn_id=txn_id, fingerprint=fp, timeout_ms=timeout_ms,
        participants=[tpb.ParticipantInfo(shard_id=s, hosts=h) for s, h in HOSTS.items()],
    )


def decide_req(txn_id: str, commit: bool, reason: str = "", results: bytes = b"") -> tpb.DecideRequest:
    return tpb.DecideRequest(
        txn_id=txn_id, decision=tpb.COMMITTED if commit else tpb.ABORTED,
        reason=reason, results=results,
    )


def query_req(txn_id: str, abort: bool) -> tpb.RecoveryRequest:
    return tpb.RecoveryRequest(txn_id=txn_id, requesting_node_id="s2", abort_if_undecided=abort)


RESULTS = bson.encode({"r": [{"matched": 1}]})


# ---------------------------------------------------------------------- record semantics


async def test_coordinate_creates_then_resends_answer_the_record(env: Any) -> None:
    coord, _, _ = env
    first = await coord.coordinate(coordinate_req("t1"))
    assert first.state == tpb.PREPARING
    again = await coord.coordinate(coordinate_req("t1"))
    assert again.state == tpb.PREPARING
    rec = coord.records.get(COORDINATOR, "t1")
    assert rec["participants"] == [{"id": s, "hosts": h} for s, h in HOSTS.items()]
    assert rec["timeout_ms"] == 10_000 and rec["fp"] == FP
    assert coord.majority_waits  # every answer waits for majority


async def test_other_fingerprint_is_reuse(env: Any) -> None:
    coord, _, _ = env
    await coord.coordinate(coordinate_req("t1"))
    with pytest.raises(LauraError) as exc:
        await coord.coordinate(coordinate_req("t1", fp=b"other"))
    assert exc.value.code == ErrorCode.TRANSACTION_ID_REUSED
    # also after a decision
    await coord.decide(decide_req("t1", True, results=RESULTS))
    with pytest.raises(LauraError) as exc:
        await coord.coordinate(coordinate_req("t1", fp=b"other"))
    assert exc.value.code == ErrorCode.TRANSACTION_ID_REUSED


async def test_first_decision_wins_and_resends_get_it(env: Any) -> None:
    coord, _, _ = env
    await coord.coordinate(coordinate_req("t1"))
    d = await coord.decide(decide_req("t1", True, results=RESULTS))
    assert (d.state, d.results) == (tpb.COMMITTED, RESULTS)
    late = await coord.decide(decide_req("t1", False, reason="too late"))
    assert (late.state, late.results) == (tpb.COMMITTED, RESULTS)
    resend = await coord.coordinate(coordinate_req("t1"))
    assert (resend.state, resend.results) == (tpb.COMMITTED, RESULTS)
    q = await coord.query(query_req("t1", True))
    assert q.state == tpb.COMMITTED and q.coordinator_id == "s1"
    assert list(q.participants) == ["s1", "s2"]


async def test_abort_decision_keeps_its_reason(env: Any) -> None:
    coord, _, _ = env
    await coord.coordinate(coordinate_req("t1"))
    d = await coord.decide(decide_req("t1", False, reason="WRITE_CONFLICT on s2"))
    assert (d.state, d.reason) == (tpb.ABORTED, "WRITE_CONFLICT on s2")
    late = await coord.decide(decide_req("t1", True, results=RESULTS))
    assert (late.state, late.reason, late.results) == (tpb.ABORTED, "WRITE_CONFLICT on s2", b"")


async def test_presumed_abort_beats_a_late_commit(env: Any) -> None:
    coord, _, _ = env
    await coord.coordinate(coordinate_req("t1"))
    peek = await coord.query(query_req("t1", False))
    assert peek.state == tpb.PREPARING  # only a look: nothing recorded
    q = await coord.query(query_req("t1", True))
    assert q.state == tpb.ABORTED
    d = await coord.decide(decide_req("t1", True, results=RESULTS))
    assert d.state == tpb.ABORTED and "presumed abort" in d.reason
    assert await coord.local_query("t1", False) == tpb.ABORTED


async def test_unknown_transaction_is_presumed_aborted_with_a_tombstone(env: Any) -> None:
    coord, _, _ = env
    q = await coord.query(query_req("ghost", False))
    assert q.state == tpb.ABORTED
    rec = coord.records.get(COORDINATOR, "ghost")
    assert rec["tombstone"] and rec["state"] == "ABORTED"
    # a Coordinate arriving after the tombstone (any fingerprint) learns the abort
    late = await coord.coordinate(coordinate_req("ghost"))
    assert late.state == tpb.ABORTED and "presumed abort" in late.reason
    # a decision without any record is an abort too
    d = await coord.decide(decide_req("never", True, results=RESULTS))
    assert d.state == tpb.ABORTED
    assert await coord.local_query("other", True) == tpb.ABORTED


async def test_finish(env: Any) -> None:
    coord, _, clock = env
    unknown = await coord.finish(tpb.FinishTransactionRequest(txn_id="nope"))
    assert unknown.state == tpb.UNKNOWN_STATE
    await coord.coordinate(coordinate_req("t1"))
    with pytest.raises(LauraError) as exc:
        await coord.finish(tpb.FinishTransactionRequest(txn_id="t1"))
    assert exc.value.code == ErrorCode.ILLEGAL_OPERATION
    await coord.decide(decide_req("t1", True, results=RESULTS))
    f = await coord.finish(tpb.FinishTransactionRequest(txn_id="t1"))
    assert (f.state, f.results) == (tpb.COMMITTED, RESULTS)
    assert coord.records.get(COORDINATOR, "t1")["finished"] == clock.now
    again = await coord.finish(tpb.FinishTransactionRequest(txn_id="t1"))
    assert again.state == tpb.COMMITTED


async def test_bad_requests(env: Any) -> None:
    coord, _, _ = env
    bad: list[Any] = [
        coord.coordinate(tpb.CoordinateRequest(txn_id="", participants=[])),
        coord.coordinate(tpb.CoordinateRequest(txn_id="x", participants=[])),
        coord.coordinate(coordinate_req("x", timeout_ms=-1)),
        coord.decide(tpb.DecideRequest(txn_id="x", decision=tpb.PREPARED)),
        coord.query(tpb.RecoveryRequest(txn_id="")),
    ]
    for call in bad:
        with pytest.raises(LauraError) as exc:
            await call
        assert exc.value.code == ErrorCode.BAD_VALUE


async def test_records_survive_a_restart(tmp_path: Path) -> None:
    storage = ShardStorage(tmp_path)
    storage.open()
    coord = Coordinator(TxnRecords(storage), "s1", FakeCalls())
    await coord.coordinate(coordinate_req("t1"))
    await coord.decide(decide_req("t1", True, results=RESULTS))
    storage.close()
    storage = ShardStorage(tmp_path)
    storage.open()
    try:
        again = Coordinator(TxnRecords(storage), "s1", FakeCalls())
        resend = await again.coordinate(coordinate_req("t1"))
        assert (resend.state, resend.results) == (tpb.COMMITTED, RESULTS)
    finally:
        storage.close()


async def test_concurrent_decisions_one_wins(env: Any) -> None:
    coord, _, _ = env
    await coord.coordinate(coordinate_req("t1"))
    answers = await asyncio.gather(
        coord.decide(decide_req("t1", True, results=RESULTS)),
        coord.query(query_req("t1", True)),
        coord.decide(decide_req("t1", False, reason="no")),
    )
    states = {answers[0].state, answers[1].state, answers[2].state}
    assert len(states) == 1  # everybody got the same standing decision


# ---------------------------------------------------------------------- the driver


async def test_driver_delivers_an_unfinished_commit(env: Any) -> None:
    coord, calls, clock = env
    await coord.coordinate(coordinate_req("t1", timeout_ms=5_000))
    await coord.decide(decide_req("t1", True, results=RESULTS))
    assert await coord.run_once() == 0 and calls.calls == []  # the router's turn first
    clock.now += 5.0
    assert await coord.run_once() == 1
    assert calls.methods() == [("s1", "Commit"), ("s2", "Commit")]
    assert all(req.txn_id == "t1" and req.coordinator_id == "s1" for _, _, req in calls.calls)
    assert coord.records.get(COORDINATOR, "t1")["finished"] == clock.now
    calls.calls.clear()
    assert await coord.run_once() == 0 and calls.calls == []  # finished: left alone


async def test_driver_retries_with_backoff_then_finishes(env: Any) -> None:
    coord, calls, clock = env
    await coord.coordinate(coordinate_req("t1", timeout_ms=1_000))
    await coord.decide(decide_req("t1", True, results=RESULTS))
    clock.now += 2.0
    calls.failing.add("s2")
    assert await coord.run_once() == 0
    assert calls.methods() == [("s1", "Commit"), ("s2", "Commit")]
    assert coord.records.get(COORDINATOR, "t1")["finished"] is None
    calls.calls.clear()
    assert await coord.run_once() == 0 and calls.calls == []  # backing off
    clock.now += 1.0
    assert await coord.run_once() == 0
    assert calls.methods() == [("s2", "Commit")]  # s1 acknowledged already
    calls.calls.clear()
    calls.failing.clear()
    clock.now += 1.0
    assert await coord.run_once() == 0  # backoff doubled: not yet
    clock.now += 1.0
    assert await coord.run_once() == 1
    assert calls.methods() == [("s2", "Commit")]
    assert coord.records.get(COORDINATOR, "t1")["finished"] is not None


async def test_driver_presumes_abort_of_an_abandoned_transaction(env: Any) -> None:
    coord, calls, clock = env
    await coord.coordinate(coordinate_req("t1", timeout_ms=1_000))
    clock.now += 1.5
    assert await coord.run_once() == 0  # the router may still decide
    clock.now += 1.0
    assert await coord.run_once() == 1
    assert calls.methods() == [("s1", "Abort"), ("s2", "Abort")]
    assert all("presumed abort" in req.reason for _, _, req in calls.calls)
    d = await coord.decide(decide_req("t1", True, results=RESULTS))
    assert d.state == tpb.ABORTED


async def test_driver_delivers_an_abort_and_gives_up_on_unknown_commit(env: Any) -> None:
    coord, calls, clock = env
    await coord.coordinate(coordinate_req("a", timeout_ms=1_000))
    await coord.decide(decide_req("a", False, reason="conflict"))
    await coord.coordinate(coordinate_req("c", timeout_ms=1_000))
    await coord.decide(decide_req("c", True, results=RESULTS))
    calls.no_such.add("s2")  # s2 knows nothing of "c" (its outcome row is gone)
    clock.now += 2.0
    assert await coord.run_once() == 2
    assert sorted((r.txn_id, m) for _, m, r in calls.calls) == [
        ("a", "Abort"), ("a", "Abort"), ("c", "Commit"), ("c", "Commit"),
    ]
    assert all(r.reason == "conflict" for _, m, r in calls.calls if m == "Abort")


async def test_driver_prunes_finished_records_and_tombstones(env: Any) -> None:
    coord, calls, clock = env
    await coord.coordinate(coordinate_req("t1"))
    await coord.decide(decide_req("t1", True, results=RESULTS))
    await coord.finish(tpb.FinishTransactionRequest(txn_id="t1"))
    await coord.query(query_req("ghost", True))
    clock.now += 3000.0
    await coord.run_once()
    assert coord.records.get(COORDINATOR, "t1") is not None
    clock.now += 601.0
    await coord.run_once()
    assert coord.records.scan(COORDINATOR) == []
    assert calls.calls == []  # finished ones are never pushed


async def test_driver_task_runs_a_pass_at_start(env: Any) -> None:
    coord, calls, clock = env
    await coord.coordinate(coordinate_req("t1", timeout_ms=1_000))
    await coord.decide(decide_req("t1", False, reason="x"))
    clock.now += 5.0
    coord.start()
    assert coord.running
    for _ in range(500):
        if coord.records.get(COORDINATOR, "t1")["finished"] is not None:
            break
        await asyncio.sleep(0.01)
    assert calls.methods() == [("s1", "Abort"), ("s2", "Abort")]
    coord.role_changed(False)
    assert not coord.running
    coord.role_changed(True)
    assert coord.running
    await coord.stop()
    assert not coord.running


# ---------------------------------------------------------------------- migration interplay


def donor_with_locked_doc(
    tmp_path: Path, wait_s: float, locked_k: int
) -> tuple[ShardStorage, MigrationDonor, DonorMigration]:
    """A donor of [10, 30) over a storage where transaction t1 locks the document k."""
    storage = ShardStorage(tmp_path / "shard")
    storage.open()
    storage.ensure_collection(MNS, SK)
    storage.insert(MNS, [bson.encode({"_id": k, "k": k}) for k in (5, 12, 20, 40)])
    r = MigrationRange.from_bounds(MNS, SK, {"k": 10}, {"k": 30})
    store = MigrationStore(tmp_path / "state")
    store.open()
    metadata = ShardMetadata("s0", _no_fetch)
    cursors = CursorManager()
    donor = MigrationDonor(
        "s0", storage, metadata, store, RangeDeleter(storage, store, cursors, metadata),
        cursors, ChannelPool(), None,  # type: ignore[arg-type]
        MigrationSettings(prepared_wait_s=wait_s),
    )
    rec = DonorRecord("m1", r, "c1", "e1", "s1", "127.0.0.1:1", "cloning")
    mig = DonorMigration(rec, CriticalSection(MNS, r.keys), TransferLog(r.keys))
    with storage.write_lock():
        _, _, locked = storage.capture(
            "t1", lambda: storage.update(MNS, {"k": locked_k}, {"$set": {"v": 1}})
        )
        assert len(locked) == 1
        storage.txn_locks.acquire("t1", locked)
    return storage, donor, mig


async def _no_fetch(req: Any) -> Any:
    raise LauraError(ErrorCode.HOST_UNREACHABLE, "no config server in this test")


MNS = "db.m"
SK = ShardKeyPattern(["k"], "range")


async def test_migration_waits_for_a_prepared_document_then_enters(tmp_path: Path) -> None:
    storage, donor, mig = donor_with_locked_doc(tmp_path, 30.0, 12)
    try:
        task = asyncio.create_task(donor._enter_critical_section(mig))
        await asyncio.sleep(0.05)  # let it look (either way the outcome is the same)
        assert not task.done()  # it cannot finish while t1 holds the lock
        with storage.write_lock():
            storage.txn_locks.release("t1")
        await asyncio.wait_for(task, 10.0)
        assert mig.section.active
    finally:
        mig.section.leave()
        storage.close()


async def test_migration_gives_up_on_a_prepared_document(tmp_path: Path) -> None:
    storage, donor, mig = donor_with_locked_doc(tmp_path, 0.2, 20)
    try:
        with pytest.raises(LauraError) as exc:
            await donor._enter_critical_section(mig)
        assert exc.value.code == ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS
        assert "t1" in exc.value.message and exc.value.details["txn_ids"] == ["t1"]
        assert not mig.section.active  # writes to the range go on
    finally:
        storage.close()


async def test_migration_ignores_locks_outside_its_range(tmp_path: Path) -> None:
    storage, donor, mig = donor_with_locked_doc(tmp_path, 0.2, 40)
    try:
        await donor._enter_critical_section(mig)
        assert mig.section.active
    finally:
        mig.section.leave()
        storage.close()


# ---------------------------------------------------------------------- peers.call_txn


class _Member(transaction_pb2_grpc.TransactionServiceServicer):
    """A stand-in replica-set member: the primary answers, others refuse with a hint."""

    def __init__(self, primary_hint: str | None) -> None:
        self.primary_hint = primary_hint  # None: this member is the primary
        self.calls = 0

    async def QueryTransactionState(
        self, request: tpb.RecoveryRequest, context: Any
    ) -> tpb.RecoveryResponse:
        self.calls += 1
        if self.primary_hint is not None:
            details = {"primary": self.primary_hint} if self.primary_hint else None
            await rpc_abort(context, LauraError(
                ErrorCode.NOT_WRITABLE_PRIMARY, "not the primary", details))
        if request.txn_id == "broken":
            return tpb.RecoveryResponse(
                txn_id=request.txn_id,
                error=error_pb2.Error(code=int(ErrorCode.BAD_VALUE), message="bad"),
            )
        return tpb.RecoveryResponse(txn_id=request.txn_id, state=tpb.COMMITTED)


async def _serve(member: _Member) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    transaction_pb2_grpc.add_TransactionServiceServicer_to_server(member, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_call_txn_finds_the_primary() -> None:
    primary = _Member(None)
    p_server, p_addr = await _serve(primary)
    follower = _Member(p_addr)
    f_server, f_addr = await _serve(follower)
    silent = _Member("")  # not primary, knows no primary
    s_server, s_addr = await _serve(silent)
    pool = ChannelPool()
    req = tpb.RecoveryRequest(txn_id="t1")
    try:
        # the follower's hint sends the call to the primary before the silent member
        resp = await call_txn([f_addr, s_addr, p_addr], "QueryTransactionState", req, 5.0,
                              pool=pool)
        assert resp.state == tpb.COMMITTED
        assert (follower.calls, silent.calls, primary.calls) == (1, 0, 1)
        # the primary found is tried first next time
        await call_txn([f_addr, s_addr, p_addr], "QueryTransactionState", req, 5.0, pool=pool)
        assert (follower.calls, silent.calls, primary.calls) == (1, 0, 2)
        # an error in the response is raised (certain: it did not take effect)
        with pytest.raises(CallFailed) as exc:
            await call_txn([p_addr], "QueryTransactionState",
                           tpb.RecoveryRequest(txn_id="broken"), 5.0, pool=pool)
        assert exc.value.code == ErrorCode.BAD_VALUE and not exc.value.uncertain
        # no primary at all: rounds until the deadline, then SHARD_UNAVAILABLE
        with pytest.raises(CallFailed) as exc:
            await call_txn([s_addr], "QueryTransactionState", req, 0.3, pool=pool)
        assert exc.value.code == ErrorCode.SHARD_UNAVAILABLE and not exc.value.uncertain
        assert silent.calls >= 2
        with pytest.raises(CallFailed) as exc:
            await call_txn([], "Commit", tpb.CommitRequest(), 1.0, pool=pool)
        assert exc.value.code == ErrorCode.HOST_UNREACHABLE
        with pytest.raises(LauraError):
            await call_txn([p_addr], "Nope", req, 1.0, pool=pool)
    finally:
        await pool.close()
        for server in (p_server, f_server, s_server):
            await server.stop(None)
