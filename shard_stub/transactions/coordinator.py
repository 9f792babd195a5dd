"""The coordinator record of distributed transactions, kept by the coordinator shard.

The router runs two-phase commit; the durable record of a transaction with several
participants lives on its first participant (the "coordinator shard"), in the
``coordinator`` table of ``TxnRecords`` (so it replicates like any shard write and a
router kill loses nothing). One row per ``txn_id``::

    {txn_id, fp: fingerprint, participants: [{id, hosts}], timeout_ms,
     state: "PREPARING" | "COMMITTED" | "ABORTED", created, decided, finished,
     results (COMMITTED: BSON {r: [...]}), reason (ABORTED), tombstone}

RPC semantics (``Coordinator.coordinate/decide/finish/query``):

* CoordinateTransaction: no record -> create it (PREPARING); a record with the same
  fingerprint -> answer it (with its decision and results/reason, if any); another
  fingerprint -> TRANSACTION_ID_REUSED. An ABORTED tombstone (a query found no record)
  answers ABORTED to any fingerprint: that transaction id was presumed aborted.
* DecideTransaction: the first decision recorded wins; every call answers the standing
  decision (a router's COMMITTED after a participant's presumed abort gets ABORTED).
  No record at all -> an ABORTED tombstone is recorded and answered (presumed abort).
* FinishTransaction: every participant acknowledged the decision; the record is pruned
  ``prune_after_s`` later.
* QueryTransactionState: a decision -> it; PREPARING and ``abort_if_undecided`` (a
  participant's prepared transaction timed out) -> ABORTED is recorded ("presumed
  abort") and answered; no record -> ABORTED, recorded as a tombstone.

Every answer is given only once the record it reports is majority-committed on a
replica-set shard (``wait_majority`` after the write, or before answering a record
written earlier whose own wait may have failed): a decision a participant acted on can
never be lost by a failover. Changes of a record are serialized by a lock per txn_id (the
primary is the only writer; ``run_write`` runs the blocking put as a primary write).

The driver (``start``/``stop``; ``role_changed`` on replica sets: it runs while this
member is primary) covers a router that died mid-protocol: a decided record not
finished ``timeout`` after its creation (and at least ``decided_grace_s`` after its
decision) -> Commit/Abort is sent to every participant (``call_txn``, retried with
backoff) and the record is finished; a record still PREPARING ``undecided_factor`` x
its timeout after its creation is presumed aborted the same way (nothing can commit it
any more: the router's deadline passed); finished records and tombstones are pruned
after ``prune_after_s``.

Wiring (``shard_stub/app.py``)::

    coordinator = Coordinator(
        TxnRecords(storage), shard_id, TxnPeers(pool).call,
        wait_majority=servicer.wait_majority_of_last_write if replica else None,
        run_write=replica.run_write if replica else None,
    )
    # standalone: coordinator.start() once storage is open (ShardApp.start)
    # replica set: replica.role_listeners.append(
    #     lambda role: coordinator.role_changed(role is Role.PRIMARY))
    # ShardApp._close: await coordinator.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lauradb.aio import stop_task, wait_event
from lauradb.cluster import transaction_pb2
from lauradb.errors import ErrorCode, LauraError
from shard_stub.transactions.failpoints import CRASH
from shard_stub.transactions.records import COORDINATOR, TxnRecords

__all__ = ["CallTxn", "Coordinator", "CoordinatorSettings", "WriteRunner"]

log = logging.getLogger("lauradb.shard.txn.coordinator")

PREPARING = "PREPARING"
COMMITTED = "COMMITTED"
ABORTED = "ABORTED"
_STATE = {PREPARING: transaction_pb2.PREPARING, COMMITTED: transaction_pb2.COMMITTED,
          ABORTED: transaction_pb2.ABORTED}

# ``call_txn`` bound to the shard's pool: (hosts, method, request, timeout_s) -> response.
CallTxn = Callable[[Sequence[str], str, Any, float], Awaitable[Any]]
# Runs a blocking record write as a primary write (``ReplicaNode.run_write``).
WriteRunner = Callable[[Callable[[], Any]], Awaitable[Any]]


@dataclass(frozen=True)
class CoordinatorSettings:
    interval_s: float = 1.0  # how often the driver looks at the records
    default_timeout_ms: int = 10_000  # a CoordinateRequest without timeout_ms
    decided_grace_s: float = 1.0  # the router's own Commit/Abort go first
    undecided_factor: float = 2.0  # PREPARING this x timeout after creation: abort
    call_timeout_s: float = 5.0  # one Commit/Abort sent by the driver
    retry_min_s: float = 0.5  # backoff between the driver's attempts on one record
    retry_max_s: float = 30.0
    prune_after_s: float = 3600.0  # finished records and tombstones are kept this long
    max_parallel: int = 16  # records the driver pushes at the same time


def _state_name(value: int) -> str:
    name = transaction_pb2.TransactionState.Name(value)
    return str(name)


class Coordinator:
    """The coordinator records of one shard: the four RPCs and the driver."""

    def __init__(
        self,
        records: TxnRecords,
        shard_id: str,
        call: CallTxn,
        *,
        wait_majority: Callable[[], Awaitable[None]] | None = None,
        run_write: WriteRunner | None = None,
        settings: CoordinatorSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.records = records
        self.shard_id = shard_id
        self.call = call
        self.wait_majority = wait_majority
        self.run_write = run_write
        self.settings = settings or CoordinatorSettings()
        self.clock = clock  # wall clock: records carry times to a new primary
        self._busy: dict[str, asyncio.Lock] = {}  # txn_id -> its record's lock
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._acked: dict[str, set[str]] = {}  # txn_id -> participants that acknowledged
        self._backoff: dict[str, tuple[float, float]] = {}  # txn_id -> (next try, delay)
        self.pushed = 0  # decisions the driver delivered (tests, logs)

    # ------------------------------------------------------------------ storage

    @contextlib.asynccontextmanager
    async def _serialized(self, txn_id: str) -> AsyncIterator[None]:
        """One read-modify-write of ``txn_id``'s record at a time."""
        lock = self._busy.get(txn_id)
        if lock is None:
            lock = self._busy[txn_id] = asyncio.Lock()
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._busy.get(txn_id) is lock:
                del self._busy[txn_id]

    async def _get(self, txn_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.records.get, COORDINATOR, txn_id)

    async def _put(self, txn_id: str, doc: Mapping[str, Any] | None) -> None:
        def put() -> int:
            return self.records.put(COORDINATOR, txn_id, doc)

        if self.run_write is not None:
            await self.run_write(put)
        else:
            await asyncio.to_thread(put)

    async def _majority(self) -> None:
        """Everything written so far (the record answered included) is majority-
        committed; WRITE_CONCERN_FAILED (from the callable) after its bound."""
        if self.wait_majority is not None:
            await self.wait_majority()

    def _tombstone(self, txn_id: str, reason: str) -> dict[str, Any]:
        now = self.clock()
        return {
            "txn_id": txn_id, "fp": b"", "participants": [], "timeout_ms": 0,
            "state": ABORTED, "created": now, "decided": now, "finished": now,
            "results": b"", "reason": reason, "tombstone": True,
        }

    # ------------------------------------------------------------------ answers

    @staticmethod
    def _answer(txn_id: str, rec: Mapping[str, Any]) -> transaction_pb2.CoordinateResponse:
        state = str(rec.get("state") or PREPARING)
        resp = transaction_pb2.CoordinateResponse(txn_id=txn_id, state=_STATE[state])
        if state == COMMITTED:
            resp.results = bytes(rec.get("results") or b"")
        elif state == ABORTED:
            resp.reason = str(rec.get("reason") or "")
        return resp

    # ------------------------------------------------------------------ RPCs

    async def coordinate(
        self, req: transaction_pb2.CoordinateRequest
    ) -> transaction_pb2.CoordinateResponse:
        """CoordinateTransaction: create the record (PREPARING) or answer it."""
        txn_id = req.txn_id
        if not txn_id:
            raise LauraError(ErrorCode.BAD_VALUE, "CoordinateTransaction needs a txn_id")
        if not req.participants or any(not p.shard_id for p in req.participants):
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"transaction {txn_id}: CoordinateTransaction needs its participants' shard ids",
            )
        if req.timeout_ms < 0:
            raise LauraError(
                ErrorCode.BAD_VALUE, f"transaction {txn_id}: timeout_ms must be >= 0"
            )
        fingerprint = bytes(req.fingerprint)
        async with self._serialized(txn_id):
            rec = await self._get(txn_id)
            if rec is None:
                rec = {
                    "txn_id": txn_id,
                    "fp": fingerprint,
                    "participants": [
                        {"id": p.shard_id, "hosts": list(p.hosts)} for p in req.participants
                    ],
                    "timeout_ms": int(req.timeout_ms or self.settings.default_timeout_ms),
                    "state": PREPARING,
                    "created": self.clock(),
                    "decided": None,
                    "finished": None,
                    "results": b"",
                    "reason": "",
                    "tombstone": False,
                }
                await self._put(txn_id, rec)
            elif not rec.get("tombstone") and bytes(rec.get("fp") or b"") != fingerprint:
                raise LauraError(
                    ErrorCode.TRANSACTION_ID_REUSED,
                    f"transaction id {txn_id} is already used by another transaction "
                    f"(different operations); use a new txn_id",
                    {"txn_id": txn_id},
                )
        await self._majority()
        return self._answer(txn_id, rec)

    async def decide(
        self, req: transaction_pb2.DecideRequest
    ) -> transaction_pb2.CoordinateResponse:
        """DecideTransaction: the first decision wins; answer the standing one."""
        txn_id = req.txn_id
        if not txn_id:
            raise LauraError(ErrorCode.BAD_VALUE, "DecideTransaction needs a txn_id")
        if req.decision not in (transaction_pb2.COMMITTED, transaction_pb2.ABORTED):
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"transaction {txn_id}: the decision must be COMMITTED or ABORTED, not "
                f"{_state_name(req.decision)}",
            )
        recorded = False
        async with self._serialized(txn_id):
            rec = await self._get(txn_id)
            if rec is None:
                # Never coordinated here (or long pruned): nothing may commit it.
                rec = self._tombstone(
                    txn_id, "presumed abort: the coordinator shard has no record of the "
                    "transaction",
                )
                await self._put(txn_id, rec)
                log.warning("transaction %s: decided with no record: presumed aborted", txn_id)
            elif rec.get("state") == PREPARING:
                rec = dict(rec)
                rec["decided"] = self.clock()
                if req.decision == transaction_pb2.COMMITTED:
                    rec["state"] = COMMITTED
                    rec["results"] = bytes(req.results)
                else:
                    rec["state"] = ABORTED
                    rec["reason"] = req.reason or "aborted"
                await self._put(txn_id, rec)
                self._wake.set()
                recorded = True
        await self._majority()
        if recorded:
            CRASH.hit("after-decision-record", txn_id)
        return self._answer(txn_id, rec)

    async def finish(
        self, req: transaction_pb2.FinishTransactionRequest
    ) -> transaction_pb2.CoordinateResponse:
        """FinishTransaction: every participant has the decision; prune later."""
        txn_id = req.txn_id
        if not txn_id:
            raise LauraError(ErrorCode.BAD_VALUE, "FinishTransaction needs a txn_id")
        async with self._serialized(txn_id):
            rec = await self._get(txn_id)
            if rec is None:
                return transaction_pb2.CoordinateResponse(
                    txn_id=txn_id, state=transaction_pb2.UNKNOWN_STATE
                )
            if rec.get("state") == PREPARING:
                raise LauraError(
                    ErrorCode.ILLEGAL_OPERATION,
                    f"transaction {txn_id} has no decision yet: it cannot be finished",
                )
            if rec.get("finished") is None:
                rec = dict(rec)
                rec["finished"] = self.clock()
                await self._put(txn_id, rec)
            self._forget(txn_id)
        await self._majority()
        return self._answer(txn_id, rec)

    async def query(
        self, req: transaction_pb2.RecoveryRequest
    ) -> transaction_pb2.RecoveryResponse:
        """QueryTransactionState (a participant's recovery)."""
        txn_id = req.txn_id
        if not txn_id:
            raise LauraError(ErrorCode.BAD_VALUE, "QueryTransactionState needs a txn_id")
        who = req.requesting_node_id or "a participant"
        async with self._serialized(txn_id):
            rec = await self._get(txn_id)
            if rec is None:
                rec = self._tombstone(
                    txn_id, f"presumed abort: no coordinator record (asked by {who})"
                )
                await self._put(txn_id, rec)
                log.info("transaction %s: no record: presumed aborted (asked by %s)",
                         txn_id, who)
            elif rec.get("state") == PREPARING and req.abort_if_undecided:
                rec = dict(rec)
                rec["state"] = ABORTED
                rec["decided"] = self.clock()
                rec["reason"] = f"presumed abort: participant {who} timed out"
                await self._put(txn_id, rec)
                self._wake.set()
                log.info("transaction %s: presumed aborted (%s timed out)", txn_id, who)
        await self._majority()
        return transaction_pb2.RecoveryResponse(
            txn_id=txn_id,
            state=_STATE[str(rec.get("state") or PREPARING)],
            participants=[str(p["id"]) for p in rec.get("participants") or []],
            coordinator_id=self.shard_id,
        )

    async def local_query(
        self, txn_id: str, abort_if_undecided: bool
    ) -> transaction_pb2.TransactionState:
        """``query`` for a participant that is its own coordinator shard."""
        resp = await self.query(
            transaction_pb2.RecoveryRequest(
                txn_id=txn_id, requesting_node_id=self.shard_id,
                abort_if_undecided=abort_if_undecided,
            )
        )
        return resp.state

    # ------------------------------------------------------------------ driver

    def start(self) -> None:
        """Run the driver (this member is the primary, or a standalone shard)."""
        if self._task is None or self._task.done():
            self._wake.set()  # a first pass at once: start-up / step-up recovery
            self._task = asyncio.create_task(self._run(), name=f"txn coordinator {self.shard_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task, 5.0)
        self._acked.clear()
        self._backoff.clear()

    def role_changed(self, primary: bool) -> None:
        """(Replica set; event loop) the driver runs only while primary."""
        if primary:
            self.start()
        elif self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            self._acked.clear()
            self._backoff.clear()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            await wait_event(self._wake, self.settings.interval_s)
            self._wake.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except LauraError as err:
                log.info("transaction coordinator %s: pass failed: %s", self.shard_id, err)
            except Exception:
                log.exception("transaction coordinator %s: pass failed", self.shard_id)

    async def run_once(self) -> int:
        """One pass over the records: push due decisions (presuming abort of the
        abandoned undecided ones), prune old finished ones; how many were pushed."""
        s = self.settings
        now = self.clock()
        rows = await asyncio.to_thread(self.records.scan, COORDINATOR)
        due: list[dict[str, Any]] = []
        for txn_id, rec in rows:
            finished = rec.get("finished")
            if finished is not None:
                if now - float(finished) >= s.prune_after_s:
                    await self._prune(txn_id)
                continue
            timeout_s = int(rec.get("timeout_ms") or s.default_timeout_ms) / 1000.0
            created = float(rec.get("created") or 0.0)
            if rec.get("state") == PREPARING:
                if now < created + s.undecided_factor * timeout_s:
                    continue
            else:
                decided = float(rec.get("decided") or created)
                if now < max(created + timeout_s, decided + s.decided_grace_s):
                    continue
            backoff = self._backoff.get(txn_id)
            if backoff is not None and now < backoff[0]:
                continue
            due.append(rec)
        if not due:
            return 0
        limit = asyncio.Semaphore(max(1, s.max_parallel))

        async def one(rec: dict[str, Any]) -> bool:
            async with limit:
                return await self._drive(rec)

        done = await asyncio.gather(*(one(r) for r in due))
        return sum(1 for d in done if d)

    async def _prune(self, txn_id: str) -> None:
        async with self._serialized(txn_id):
            rec = await self._get(txn_id)
            if rec is None or rec.get("finished") is None:
                return
            if self.clock() - float(rec["finished"]) < self.settings.prune_after_s:
                return
            await self._put(txn_id, None)
        self._forget(txn_id)

    def _forget(self, txn_id: str) -> None:
        self._acked.pop(txn_id, None)
        self._backoff.pop(txn_id, None)

    async def _drive(self, rec: dict[str, Any]) -> bool:
        """Deliver ``rec``'s decision to its participants (an undecided record is
        presumed aborted first); finish it when all acknowledged. True when finished."""
        txn_id = str(rec["txn_id"])
        if rec.get("state") == PREPARING:
            answer = await self.decide(
                transaction_pb2.DecideRequest(
                    txn_id=txn_id, decision=transaction_pb2.ABORTED,
                    reason="presumed abort: no decision within the transaction's timeout",
                )
            )
            rec = dict(rec)
            rec["state"] = _state_name(answer.state)
            rec["reason"] = answer.reason
            log.warning("transaction %s: no decision within its timeout: coordinator "
                        "shard %s decided %s", txn_id, self.shard_id, rec["state"])
        commit = rec.get("state") == COMMITTED
        acked = self._acked.setdefault(txn_id, set())
        pending = [p for p in rec.get("participants") or [] if str(p["id"]) not in acked]
        if pending:
            log.info("transaction %s: delivering %s to %s (the router did not finish it)",
                     txn_id, rec["state"], ", ".join(str(p["id"]) for p in pending))
        results = await asyncio.gather(
            *(self._deliver(txn_id, commit, str(rec.get("reason") or ""), p) for p in pending)
        )
        for p, ok in zip(pending, results, strict=True):
            if ok:
                acked.add(str(p["id"]))
        if not all(results):
            prev = self._backoff.get(txn_id)
            delay = self.settings.retry_min_s if prev is None else min(
                prev[1] * 2, self.settings.retry_max_s
            )
            self._backoff[txn_id] = (self.clock() + delay, delay)
            return False
        await self.finish(transaction_pb2.FinishTransactionRequest(txn_id=txn_id))
        self.pushed += 1
        return True

    async def _deliver(
        self, txn_id: str, commit: bool, reason: str, participant: Mapping[str, Any]
    ) -> bool:
        shard = str(participant["id"])
        hosts = [str(h) for h in participant.get("hosts") or []]
        request: Any
        if commit:
            method = "Commit"
            request = transaction_pb2.CommitRequest(txn_id=txn_id, coordinator_id=self.shard_id)
        else:
            method = "Abort"
            request = transaction_pb2.AbortRequest(
                txn_id=txn_id, coordinator_id=self.shard_id, reason=reason
            )
        try:
            await self.call(hosts, method, request, self.settings.call_timeout_s)
        except asyncio.CancelledError:
            raise
        except LauraError as err:
            if commit and err.code == ErrorCode.NO_SUCH_TRANSACTION:
                # Neither prepared nor committed there (its outcome row pruned): nothing
                # left to deliver; retrying would never succeed.
                log.error("transaction %s: participant %s knows nothing of it (%s); "
                          "giving up delivering COMMITTED there", txn_id, shard, err.message)
                return True
            log.info("transaction %s: %s to %s failed (will retry): %s",
                     txn_id, method, shard, err)
            return False
        except Exception as exc:
            log.info("transaction %s: %s to %s failed (will retry): %r",
                     txn_id, method, shard, exc)
            return False
        return True
