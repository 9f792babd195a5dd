"""The participant side of distributed transactions: Prepare, Commit, Abort, recovery.

Prepare (two-phase): under the storage write lock, the operations run in a storage
*capture* (``ShardStorage.capture``: one SQLite transaction, rolled back) that yields
their results and their effects (the oplog entries they would have written: post-
images and ``_id`` deletes) and the documents they touched. Placement is checked
first with the ShardService's own logic (``ShardServicer._placement``: STALE_CONFIG),
and inside the capture like any write (ownership, migration fences and critical
sections, document locks). Then, still under the write lock, ONE storage transaction
writes the prepared record (``participant`` row: coordinator, participants,
fingerprint, effects, locks, results, deadline) and the documents are locked
(``LockTable``). On a replica set the vote is given once the record is majority-
committed. READ operations return the matching documents and lock them.

A document locked by another transaction: the Prepare waits (without holding any lock
of its own: nothing was locked yet) up to ``lock_wait_s`` for the lock to clear and
runs again, then votes no with WRITE_CONFLICT. An operation's error (duplicate key,
bad update, shard key change, stale placement, a migration's critical section...)
votes no with that error and ``failed_operation``; an ABORTED outcome row (tombstone)
remembers it, so a resend gets the same vote and a late Prepare is refused.

One-phase (the only participant): the same capture, then the effects are applied at
once (one storage transaction, with a COMMITTED outcome row); expected counts are
enforced here (TRANSACTION_PRECONDITION_FAILED).

Commit applies the recorded effects (``ShardStorage.apply_effects``: logged and seen by
migration transfer logs as ordinary writes), deletes the prepared record and writes a
COMMITTED outcome row, all in one storage transaction, then releases the locks. Abort
drops the record, writes an ABORTED outcome row and releases the locks. Outcome rows
answer resends (idempotent by txn_id) and are pruned after ``outcome_ttl_s``.

Recovery (``start``; on replica sets only while primary): a prepared transaction past
its deadline asks its coordinator shard ``QueryTransactionState(abort_if_undecided)``
(the local ``Coordinator`` when this shard is the coordinator) and applies the answer;
an unreachable coordinator keeps the locks (2PC's blocking window) and is asked again
with backoff. On start-up and when a member becomes primary the prepared records are
reloaded into the lock table first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lauradb.aio import stop_task, wait_event
from lauradb.bsonkit.codec import decode_document, encode_document
from lauradb.cluster import common_pb2, replication_pb2, transaction_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import from_proto, to_proto
from shard_stub.critical_section import RangeBlocked
from shard_stub.ownership import OwnedRanges
from shard_stub.replica import write_concern
from shard_stub.storage import ShardStorage, TxnRowChange
from shard_stub.transactions.failpoints import CRASH
from shard_stub.transactions.locks import DocumentLocked, LockTable, write_conflict
from shard_stub.transactions.records import OUTCOME, PARTICIPANT, TxnRecords, encode_row

if TYPE_CHECKING:
    from lauradb.sharding.shard_key import ShardKeyPattern
    from shard_stub.service import ShardServicer
    from shard_stub.transactions.coordinator import Coordinator

__all__ = ["DEFAULT_LOCK_WAIT_S", "Participant", "ParticipantSettings"]

log = logging.getLogger("lauradb.shard.txn.participant")

DEFAULT_LOCK_WAIT_S = 0.1
DEFAULT_TIMEOUT_MS = 10_000
MAJORITY_WAIT_S = 30.0  # a vote's majority wait without a call deadline
DEADLINE_MARGIN_S = 0.25

COMMITTED = "COMMITTED"
ABORTED = "ABORTED"

# (hosts, method, request, timeout_s) -> response (``TxnPeers.call``).
CallTxn = Callable[[Sequence[str], str, Any, float], Awaitable[Any]]


@dataclass(frozen=True)
class ParticipantSettings:
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S  # --txn-lock-wait-ms
    recovery_interval_s: float = 1.0  # the recovery loop's longest sleep
    query_timeout_s: float = 5.0  # one QueryTransactionState to the coordinator shard
    retry_min_s: float = 0.5  # backoff while the coordinator shard cannot be reached
    retry_max_s: float = 30.0
    outcome_ttl_s: float = 3600.0  # outcome rows (idempotent answers) are kept this long
    prune_interval_s: float = 60.0


class _OpFailed(Exception):
    """Operation ``index`` of a Prepare failed (the vote is no)."""

    def __init__(self, index: int, error: LauraError) -> None:
        super().__init__(error.message)
        self.index = index
        self.error = error


@dataclass
class _Op:
    """One operation of a Prepare, placement checked, ready to run in the capture."""

    index: int
    op: transaction_pb2.Operation
    ns: str
    pattern: ShardKeyPattern | None
    owned: OwnedRanges | None
    unique_key: bool
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Vote:
    vote: bool
    state: int
    results: list[transaction_pb2.TransactionOperationResult] = field(default_factory=list)
    error: LauraError | None = None
    failed_operation: int = -1
    op_id: int = 0


def _result_bytes(results: Sequence[transaction_pb2.TransactionOperationResult]) -> list[bytes]:
    return [r.SerializeToString() for r in results]


def _results_from(raw: Sequence[Any]) -> list[transaction_pb2.TransactionOperationResult]:
    return [transaction_pb2.TransactionOperationResult.FromString(bytes(b)) for b in raw]


def _error_bytes(err: LauraError | None) -> bytes:
    return to_proto(err).SerializeToString() if err is not None else b""


def _error_from(raw: Any) -> LauraError | None:
    if not raw:
        return None
    from lauradb.cluster import error_pb2

    return from_proto(error_pb2.Error.FromString(bytes(raw)))


class Participant:
    """The TransactionService participant of one shard node."""

    def __init__(
        self,
        shard_id: str,
        storage: ShardStorage,
        records: TxnRecords,
        servicer: ShardServicer,
        *,
        call: CallTxn | None = None,
        coordinator: Coordinator | None = None,
        settings: ParticipantSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.shard_id = shard_id
        self.storage = storage
        self.records = records
        self.servicer = servicer
        self.call = call
        self.coordinator = coordinator
        self.settings = settings or ParticipantSettings()
        self.clock = clock  # wall clock: deadlines survive a restart / failover
        self.locks: LockTable = storage.txn_locks
        self._busy: dict[str, list[Any]] = {}  # txn_id -> [asyncio.Lock, users]
        self._deadlines: dict[str, float] = {}  # prepared txn_id -> deadline (wall clock)
        self._retry_at: dict[str, tuple[float, float]] = {}  # txn_id -> (next try, delay)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self.recovered = 0  # prepared transactions resolved by recovery (tests, logs)

    # ------------------------------------------------------------------ plumbing

    @contextlib.asynccontextmanager
    async def _serialized(self, txn_id: str) -> Any:
        """One call at a time per transaction id (Prepare, Commit, Abort, recovery)."""
        entry = self._busy.get(txn_id)
        if entry is None:
            entry = self._busy[txn_id] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0 and self._busy.get(txn_id) is entry:
                del self._busy[txn_id]

    def _require_primary(self) -> None:
        node = self.servicer.replica
        if node is not None and not node.is_primary:
            node.require_primary("transactions")

    async def _write(self, fn: Callable[[], Any]) -> Any:
        """A blocking storage write in a thread (replica set: as the primary)."""
        return await self.servicer._write(fn)

    async def _durable(
        self, op_id: int, request_wc: Any | None, remaining: float | None
    ) -> None:
        """Replica set: wait until ``op_id`` is majority-committed (or meets the
        request's stronger write concern); WRITE_CONCERN_FAILED otherwise."""
        node = self.servicer.replica
        if node is None or op_id <= 0:
            return
        spec = write_concern.WriteConcernSpec(None, None)
        if request_wc is not None:
            asked = write_concern.parse(request_wc, node.data_bearing_members)
            majority = node.data_bearing_members // 2 + 1
            if asked.w is not None and asked.w > majority:
                spec = write_concern.WriteConcernSpec(asked.w, asked.wtimeout_s)
            else:
                spec = write_concern.WriteConcernSpec(None, asked.wtimeout_s)
        max_wait = MAJORITY_WAIT_S
        if remaining is not None:
            max_wait = max(remaining - DEADLINE_MARGIN_S, 0.0)
        error = await node.wait_write_concern(op_id, spec, max_wait)
        if error is not None:
            raise LauraError(ErrorCode.WRITE_CONCERN_FAILED, error.error.message)

    # ------------------------------------------------------------------ records

    def _outcome_row(
        self,
        txn_id: str,
        state: str,
        fingerprint: bytes,
        results: Sequence[transaction_pb2.TransactionOperationResult] = (),
        error: LauraError | None = None,
        failed_operation: int = -1,
        reason: str = "",
    ) -> TxnRowChange:
        return encode_row(OUTCOME, txn_id, {
            "state": state, "fp": fingerprint, "results": _result_bytes(results),
            "error": _error_bytes(error), "failed": failed_operation, "reason": reason,
            "at": self.clock(),
        })

    def _known_answer(
        self, req: transaction_pb2.PrepareRequest
    ) -> _Vote | None:
        """(Blocking) the answer to a Prepare of a transaction this shard already knows."""
        txn_id = req.txn_id
        fp = bytes(req.fingerprint)
        rec = self.records.get(PARTICIPANT, txn_id)
        if rec is not None:
            if bytes(rec.get("fp") or b"") != fp:
                return self._reused(txn_id)
            return _Vote(True, transaction_pb2.PREPARED, _results_from(rec.get("results") or []))
        out = self.records.get(OUTCOME, txn_id)
        if out is None:
            return None
        same = bytes(out.get("fp") or b"") == fp
        if out.get("state") == COMMITTED:
            if not same:
                return self._reused(txn_id)
            return _Vote(True, transaction_pb2.COMMITTED, _results_from(out.get("results") or []))
        error = _error_from(out.get("error"))
        if same and error is not None:
            return _Vote(False, transaction_pb2.ABORTED, error=error,
                         failed_operation=int(out.get("failed", -1)))
        reason = str(out.get("reason") or "")
        return _Vote(False, transaction_pb2.ABORTED, error=LauraError(
            ErrorCode.NO_SUCH_TRANSACTION,
            f"transaction {txn_id} was aborted on shard {self.shard_id}"
            f"{': ' + reason if reason else ''}",
            {"txn_id": txn_id},
        ))

    @staticmethod
    def _reused(txn_id: str) -> _Vote:
        return _Vote(False, transaction_pb2.ABORTED, error=LauraError(
            ErrorCode.TRANSACTION_ID_REUSED,
            f"transaction id {txn_id} is already used by another transaction "
            f"(different operations); use a new txn_id",
            {"txn_id": txn_id},
        ))

    # ------------------------------------------------------------------ Prepare

    async def prepare(
        self, req: transaction_pb2.PrepareRequest, remaining: float | None = None
    ) -> transaction_pb2.PrepareResponse:
        self._require_primary()
        txn_id = req.txn_id
        if not txn_id:
            raise LauraError(ErrorCode.BAD_VALUE, "Prepare needs a txn_id")
        if not req.operations:
            raise LauraError(ErrorCode.BAD_VALUE, f"transaction {txn_id}: no operations")
        if req.timeout_ms < 0:
            raise LauraError(ErrorCode.BAD_VALUE, f"transaction {txn_id}: timeout_ms must be >= 0")
        if not req.one_phase and not req.coordinator_id:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"transaction {txn_id}: a two-phase Prepare needs its coordinator_id",
            )
        if req.HasField("write_concern") and self.servicer.replica is not None:
            write_concern.parse(req.write_concern, self.servicer.replica.data_bearing_members)
        async with self._serialized(txn_id):
            vote = await asyncio.to_thread(self._known_answer, req)
            if vote is None:
                vote = await self._prepare_new(req, remaining)
        return self._response(txn_id, vote)

    def _response(self, txn_id: str, vote: _Vote) -> transaction_pb2.PrepareResponse:
        resp = transaction_pb2.PrepareResponse(
            txn_id=txn_id, participant_id=self.shard_id, vote=vote.vote, state=vote.state,  # type: ignore[arg-type]
            results=vote.results, failed_operation=vote.failed_operation,
        )
        if vote.error is not None:
            resp.error = vote.error.message
            resp.error_info.CopyFrom(to_proto(vote.error))
        return resp

    async def _prepare_new(
        self, req: transaction_pb2.PrepareRequest, remaining: float | None
    ) -> _Vote:
        txn_id = req.txn_id
        fp = bytes(req.fingerprint)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            ops = [await self._plan(i, op) for i, op in enumerate(req.operations)]
            while True:
                try:
                    vote: _Vote = await self._write(lambda: self._prepare_locked(req, ops))
                    break
                except DocumentLocked as exc:
                    waited = loop.time() - start
                    left = self.settings.lock_wait_s - waited
                    if left <= 0 or not await self.locks.wait_released(
                        exc.ns, exc.id_key, exc.txn_id, left
                    ):
                        index = getattr(exc, "op_index", -1)
                        raise _OpFailed(
                            index,
                            write_conflict(exc, loop.time() - start, f"transaction {txn_id}"),
                        ) from None
        except _OpFailed as failed:
            err = failed.error
            if err.code in (ErrorCode.NOT_WRITABLE_PRIMARY,
                            ErrorCode.INTERRUPTED_DUE_TO_REPL_STATE_CHANGE):
                raise err from None
            details = dict(err.details or {})
            details.setdefault("txn_id", txn_id)
            details.setdefault("failed_operation", failed.index)
            err = LauraError(err.code, err.message, details)
            await self._tombstone(txn_id, fp, err, failed.index)
            return _Vote(False, transaction_pb2.ABORTED, error=err,
                         failed_operation=failed.index)
        if vote.op_id:
            try:
                await self._durable(
                    vote.op_id, req.write_concern if req.HasField("write_concern") else None,
                    remaining,
                )
            except LauraError as err:
                if vote.state == transaction_pb2.COMMITTED:
                    raise  # applied locally; the answer is uncertain (like a write's)
                log.warning("transaction %s: prepared record not majority-committed (%s): "
                            "voting no", txn_id, err.message)
                with contextlib.suppress(LauraError):
                    await self._abort_locked(txn_id, f"prepare not replicated: {err.message}")
                return _Vote(False, transaction_pb2.ABORTED, error=err)
        if vote.state == transaction_pb2.PREPARED:
            self._wake.set()
            CRASH.hit("after-prepare-record", txn_id)
        return vote

    async def _tombstone(
        self, txn_id: str, fp: bytes, err: LauraError, index: int
    ) -> None:
        row = self._outcome_row(txn_id, ABORTED, fp, error=err, failed_operation=index,
                                reason=err.message)
        try:
            await self._write(lambda: self.storage.txn_rows_write([row]))
        except LauraError as exc:
            log.info("transaction %s: cannot record the aborted prepare: %s", txn_id, exc)

    async def _plan(self, index: int, op: transaction_pb2.Operation) -> _Op:
        """Decode and placement-check one operation (``ShardServicer._placement``)."""
        try:
            if op.op_type not in (common_pb2.INSERT, common_pb2.UPDATE, common_pb2.DELETE,
                                  common_pb2.READ):
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    f"operation {index}: a transaction operation must be INSERT, UPDATE, "
                    f"DELETE or READ",
                )
            data = decode_document(op.data, f"operation {index}") if op.data else {}
            ns, meta, owned = await self.servicer._placement(
                op.database, op.collection, op.version
            )
            creates = op.op_type == common_pb2.INSERT or (
                op.op_type == common_pb2.UPDATE and bool(data.get("upsert"))
            )
            if creates:
                await self.servicer._before_create(ns, op.database, op.collection)
            self._check_move_primary(op)
            return _Op(
                index, op, ns, self.servicer._pattern(ns, meta), owned,
                meta is not None and meta.unique, data,
            )
        except LauraError as err:
            raise _OpFailed(index, err) from None
        except RangeBlocked as blocked:
            raise _OpFailed(index, blocked.timeout_error(0.0)) from None

    def _check_move_primary(self, op: transaction_pb2.Operation) -> None:
        """An unsharded namespace whose database a movePrimary is copying: vote no."""
        migrations = self.servicer.migrations
        if migrations is None or op.version.ignore or op.version.epoch:
            return
        section = migrations.primary.sections.get(op.database)
        if section is not None and section.active:
            raise section.blocked()

    def _prepare_locked(
        self, req: transaction_pb2.PrepareRequest, ops: Sequence[_Op]
    ) -> _Vote:
        """(Worker thread) capture, then record + lock, or (one phase) apply — all under
        one hold of the storage write lock: between the capture (which computed the
        effects from the documents as they are) and taking the locks (or applying), no
        other write may change those documents, or its change would be lost."""
        with self.storage.write_lock():
            return self._prepare_atomically(req, ops)

    def _prepare_atomically(
        self, req: transaction_pb2.PrepareRequest, ops: Sequence[_Op]
    ) -> _Vote:
        txn_id = req.txn_id
        for o in ops:
            # again under the write lock: a movePrimary looks for prepared documents
            # under it after entering its section, so none can slip in after the look
            try:
                self._check_move_primary(o.op)
            except RangeBlocked as blocked:
                raise _OpFailed(o.index, blocked.timeout_error(0.0)) from None
        results, effects, locked = self.storage.capture(txn_id, lambda: self._run_ops(ops))
        if req.one_phase:
            for o in ops:
                if o.op.has_expected and results[o.index].matched != o.op.expected_matched:
                    raise _OpFailed(o.index, LauraError(
                        ErrorCode.TRANSACTION_PRECONDITION_FAILED,
                        f"transaction {txn_id}: operation {o.index} matched "
                        f"{results[o.index].matched} documents, expected "
                        f"{o.op.expected_matched}",
                        {"matched": results[o.index].matched,
                         "expected": o.op.expected_matched},
                    ))
            op_id = self.storage.apply_effects(
                txn_id, effects,
                [self._outcome_row(txn_id, COMMITTED, bytes(req.fingerprint), results)],
            )
            return _Vote(True, transaction_pb2.COMMITTED, results, op_id=op_id)
        now = self.clock()
        timeout_ms = int(req.timeout_ms or DEFAULT_TIMEOUT_MS)
        deadline = now + timeout_ms / 1000.0
        record: dict[str, Any] = {
            "txn_id": txn_id,
            "coordinator": req.coordinator_id,
            "hosts": list(req.coordinator_hosts),
            "participants": list(req.participants),
            "fp": bytes(req.fingerprint),
            "effects": [e.SerializeToString() for e in effects],
            "locks": [{"n": ns, "i": id_key, "s": shard_key} for ns, id_key, shard_key in locked],
            "results": _result_bytes(results),
            "prepared_at": now,
            "timeout_ms": timeout_ms,
            "deadline": deadline,
        }
        op_id = self.storage.txn_rows_write([encode_row(PARTICIPANT, txn_id, record)])
        self.locks.acquire(txn_id, locked)
        self._deadlines[txn_id] = deadline
        return _Vote(True, transaction_pb2.PREPARED, results, op_id=op_id)

    def _run_ops(
        self, ops: Sequence[_Op]
    ) -> list[transaction_pb2.TransactionOperationResult]:
        """(Inside the capture) run every operation; its results."""
        out: list[transaction_pb2.TransactionOperationResult] = []
        for o in ops:
            try:
                out.append(self._run_op(o))
            except LauraError as err:
                raise _OpFailed(o.index, err) from None
            except RangeBlocked as blocked:
                raise _OpFailed(o.index, blocked.timeout_error(0.0)) from None
            except DocumentLocked as exc:
                exc.op_index = o.index  # type: ignore[attr-defined]
                raise
        return out

    def _run_op(self, o: _Op) -> transaction_pb2.TransactionOperationResult:
        s = self.storage
        kind = o.op.op_type
        d = o.data
        res = transaction_pb2.TransactionOperationResult()
        if kind == common_pb2.INSERT:
            if not o.op.data:
                raise LauraError(ErrorCode.BAD_VALUE, "an INSERT needs its document")
            r = s.insert(
                o.ns, [bytes(o.op.data)], ordered=True, pattern=o.pattern, owned=o.owned,
                unique_key=o.unique_key,
            )
            if r.errors:
                raise r.errors[0].error
            res.inserted = r.inserted
        elif kind == common_pb2.UPDATE:
            update = d.get("u")
            if not isinstance(update, Mapping):
                raise LauraError(ErrorCode.FAILED_TO_PARSE, "an UPDATE needs its update (u)")
            array_filters = d.get("arrayFilters") or None
            u = s.update(
                o.ns, _filter(d), update,
                multi=bool(d.get("multi")), upsert=bool(d.get("upsert")),
                array_filters=array_filters, pattern=o.pattern, owned=o.owned,
                unique_key=o.unique_key,
            )
            res.matched = u.matched
            res.modified = u.modified
            if u.upserted:
                res.upserted_id = encode_document({"_id": u.upserted_id})
        elif kind == common_pb2.DELETE:
            limit = int(d.get("limit", 0) or 0)
            n = s.delete(o.ns, _filter(d), multi=limit == 0, owned=o.owned)
            res.matched = int(n)
            res.deleted = int(n)
        else:  # READ
            docs = s.locking_read(o.ns, _filter(d), owned=o.owned)
            res.matched = len(docs)
            res.documents.extend(docs)
        return res

    # ------------------------------------------------------------------ Commit / Abort

    async def commit(
        self, req: transaction_pb2.CommitRequest, remaining: float | None = None
    ) -> transaction_pb2.CommitResponse:
        resp = transaction_pb2.CommitResponse(txn_id=req.txn_id, participant_id=self.shard_id)
        await self._finish(req.txn_id, "Commit", self._commit_locked, resp, remaining)
        if resp.success:
            CRASH.hit("after-commit-apply", req.txn_id)
        return resp

    async def _finish(
        self,
        txn_id: str,
        what: str,
        apply: Callable[[str], Awaitable[int]],
        resp: transaction_pb2.CommitResponse | transaction_pb2.AbortResponse,
        remaining: float | None,
    ) -> None:
        """Commit or Abort: ``apply`` the decision (serialized per transaction), wait
        until it is durable, and fill ``resp`` (success, or the error). A lost primacy
        is raised (the caller retries on the new primary)."""
        self._require_primary()
        if not txn_id:
            raise LauraError(ErrorCode.BAD_VALUE, f"{what} needs a txn_id")
        async with self._serialized(txn_id):
            try:
                op_id = await apply(txn_id)
                await self._durable(op_id, None, remaining)
            except LauraError as err:
                if err.code in (ErrorCode.NOT_WRITABLE_PRIMARY,
                                ErrorCode.INTERRUPTED_DUE_TO_REPL_STATE_CHANGE):
                    raise
                resp.success = False
                resp.error = err.message
                resp.error_info.CopyFrom(to_proto(err))
                return
        resp.success = True

    async def _commit_locked(self, txn_id: str) -> int:
        def run() -> int:
            rec = self.records.get(PARTICIPANT, txn_id)
            if rec is None:
                out = self.records.get(OUTCOME, txn_id)
                if out is not None and out.get("state") == COMMITTED:
                    return 0
                why = "it was aborted here" if out is not None else "it is not prepared here"
                raise LauraError(
                    ErrorCode.NO_SUCH_TRANSACTION,
                    f"cannot commit transaction {txn_id} on shard {self.shard_id}: {why}",
                    {"txn_id": txn_id},
                )
            effects = [
                replication_pb2.OplogEntry.FromString(bytes(b)) for b in rec.get("effects") or []
            ]
            results = _results_from(rec.get("results") or [])
            op_id = self.storage.apply_effects(txn_id, effects, [
                encode_row(PARTICIPANT, txn_id, None),
                self._outcome_row(txn_id, COMMITTED, bytes(rec.get("fp") or b""), results),
            ])
            self.locks.release(txn_id)
            return op_id

        try:
            op_id: int = await self._write(run)
        except LauraError as err:
            if err.code != ErrorCode.NO_SUCH_TRANSACTION:
                log.error("transaction %s: commit failed on shard %s: %s", txn_id,
                          self.shard_id, err)
            raise
        self._forget(txn_id)
        return op_id

    async def abort(
        self, req: transaction_pb2.AbortRequest, remaining: float | None = None
    ) -> transaction_pb2.AbortResponse:
        resp = transaction_pb2.AbortResponse(txn_id=req.txn_id, participant_id=self.shard_id)
        reason = req.reason or "aborted"
        await self._finish(
            req.txn_id, "Abort", lambda txn_id: self._abort_locked(txn_id, reason), resp,
            remaining,
        )
        return resp

    async def _abort_locked(self, txn_id: str, reason: str) -> int:
        def run() -> int:
            rec = self.records.get(PARTICIPANT, txn_id)
            out = self.records.get(OUTCOME, txn_id) if rec is None else None
            if out is not None:
                if out.get("state") == COMMITTED:
                    raise LauraError(
                        ErrorCode.ILLEGAL_OPERATION,
                        f"transaction {txn_id} is committed on shard {self.shard_id}: "
                        f"it cannot be aborted",
                        {"txn_id": txn_id},
                    )
                return 0  # aborted before
            fp = bytes(rec.get("fp") or b"") if rec is not None else b""
            rows = [self._outcome_row(txn_id, ABORTED, fp, reason=reason)]
            if rec is not None:
                rows.insert(0, encode_row(PARTICIPANT, txn_id, None))
            op_id = self.storage.txn_rows_write(rows)
            self.locks.release(txn_id)
            return op_id

        op_id: int = await self._write(run)
        self._forget(txn_id)
        return op_id

    def _forget(self, txn_id: str) -> None:
        self._deadlines.pop(txn_id, None)
        self._retry_at.pop(txn_id, None)

    # ------------------------------------------------------------------ locks reload

    def reload_locks(self) -> int:
        """(Blocking; call under the storage write lock) rebuild the lock table and the
        deadlines from the prepared records; how many transactions are prepared."""
        self.locks.clear()
        deadlines: dict[str, float] = {}
        for txn_id, rec in self.records.scan(PARTICIPANT):
            self.locks.acquire(txn_id, lock_keys(rec))
            deadlines[txn_id] = float(rec.get("deadline") or 0.0)
        self._deadlines = deadlines
        self._retry_at = {}
        if deadlines:
            log.info("shard %s: %d prepared transactions reloaded (%d documents locked)",
                     self.shard_id, len(deadlines), len(self.locks))
        return len(deadlines)

    def open(self) -> int:
        """(Blocking) start-up: the prepared records' locks, before serving writes."""
        with self.storage.write_lock():
            return self.reload_locks()

    def role_switching(self, primary: bool) -> None:
        """(Replica set; worker thread, storage write lock held, before the new role is
        visible) a new primary reloads its prepared records; others hold no locks."""
        if primary:
            self.reload_locks()
        else:
            self.locks.clear()
            self._deadlines = {}
            self._retry_at = {}

    def role_changed(self, primary: bool) -> None:
        """(Replica set; event loop) recovery runs only while primary."""
        if primary:
            self.start()
        elif self._task is not None:
            task, self._task = self._task, None
            task.cancel()

    # ------------------------------------------------------------------ recovery

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._wake.set()
            self._task = asyncio.create_task(
                self._run(), name=f"txn participant recovery {self.shard_id}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task, 5.0)

    @property
    def prepared(self) -> dict[str, float]:
        """Prepared transaction ids -> their deadlines (wall clock)."""
        return dict(self._deadlines)

    async def _run(self) -> None:
        while True:
            sleep = self.settings.recovery_interval_s
            now = self.clock()
            for txn_id, deadline in list(self._deadlines.items()):
                due = max(deadline, self._retry_at.get(txn_id, (0.0, 0.0))[0])
                sleep = min(sleep, max(due - now, 0.0))
            await wait_event(self._wake, max(sleep, 0.01))
            self._wake.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except LauraError as err:
                log.info("transaction recovery on shard %s: pass failed: %s",
                         self.shard_id, err)
            except Exception:
                log.exception("transaction recovery on shard %s: pass failed", self.shard_id)

    async def run_once(self) -> int:
        """Resolve the prepared transactions past their deadline; how many were."""
        node = self.servicer.replica
        if node is not None and not node.is_primary:
            return 0
        now = self.clock()
        if now - self._last_prune >= self.settings.prune_interval_s:
            self._last_prune = now
            await self._prune_outcomes(now)
        due = [
            t for t, d in list(self._deadlines.items())
            if d <= now and self._retry_at.get(t, (0.0, 0.0))[0] <= now
        ]
        if not due:
            return 0
        done = await asyncio.gather(*(self._recover(t) for t in due))
        return sum(1 for d in done if d)

    async def _recover(self, txn_id: str) -> bool:
        rec = await asyncio.to_thread(self.records.get, PARTICIPANT, txn_id)
        if rec is None:
            self._forget(txn_id)
            return False
        coordinator = str(rec.get("coordinator") or "")
        try:
            state = await self._ask(txn_id, coordinator, [str(h) for h in rec.get("hosts") or []])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            prev = self._retry_at.get(txn_id)
            delay = self.settings.retry_min_s if prev is None else min(
                prev[1] * 2, self.settings.retry_max_s
            )
            self._retry_at[txn_id] = (self.clock() + delay, delay)
            log.warning(
                "transaction %s: prepared past its deadline; coordinator shard %s cannot "
                "be asked (%s): keeping its locks, asking again in %.1fs",
                txn_id, coordinator or "?", exc, delay,
            )
            return False
        async with self._serialized(txn_id):
            if state == transaction_pb2.COMMITTED:
                log.info("transaction %s: recovered decision COMMITTED from %s", txn_id,
                         coordinator)
                try:
                    await self._commit_locked(txn_id)
                except LauraError as err:
                    if err.code != ErrorCode.NO_SUCH_TRANSACTION:
                        raise
            elif state == transaction_pb2.ABORTED:
                log.info("transaction %s: recovered decision ABORTED from %s", txn_id,
                         coordinator)
                await self._abort_locked(txn_id, f"recovered from coordinator {coordinator}")
            else:
                name = transaction_pb2.TransactionState.Name(state)  # type: ignore[arg-type]
                log.warning("transaction %s: coordinator %s answered %s: asking again",
                            txn_id, coordinator, name)
                self._retry_at[txn_id] = (self.clock() + self.settings.retry_min_s,
                                          self.settings.retry_min_s)
                return False
        self.recovered += 1
        return True

    async def _ask(self, txn_id: str, coordinator: str, hosts: Sequence[str]) -> int:
        if (coordinator == self.shard_id or not hosts) and self.coordinator is not None:
            if coordinator != self.shard_id:
                raise LauraError(
                    ErrorCode.HOST_UNREACHABLE,
                    f"no host recorded for coordinator shard {coordinator!r}",
                )
            return int(await self.coordinator.local_query(txn_id, True))
        if self.call is None:
            raise LauraError(ErrorCode.HOST_UNREACHABLE, "no peer client to reach the coordinator")
        resp = await self.call(
            hosts, "QueryTransactionState",
            transaction_pb2.RecoveryRequest(
                txn_id=txn_id, requesting_node_id=self.shard_id, abort_if_undecided=True
            ),
            self.settings.query_timeout_s,
        )
        return int(resp.state)

    async def _prune_outcomes(self, now: float) -> None:
        ttl = self.settings.outcome_ttl_s

        def prune() -> int:
            old = [k for k, row in self.records.scan(OUTCOME) if now - float(row.get("at", 0)) >= ttl]
            if old:
                self.storage.txn_rows_write([(OUTCOME, k, None) for k in old[:1000]])
            return len(old)

        try:
            n = await self._write(prune)
        except LauraError as err:
            log.info("shard %s: pruning transaction outcomes failed: %s", self.shard_id, err)
            return
        if n:
            log.info("shard %s: pruned %d transaction outcome rows", self.shard_id, n)


def _filter(data: Mapping[str, Any]) -> dict[str, Any]:
    q = data.get("q")
    if q is None:
        return {}
    if not isinstance(q, Mapping):
        raise LauraError(ErrorCode.BAD_VALUE, "the filter (q) must be a document")
    return dict(q)


def lock_keys(rec: Mapping[str, Any]) -> Iterator[tuple[str, bytes, bytes | None]]:
    for lk in rec.get("locks") or []:
        yield str(lk["n"]), bytes(lk["i"]), bytes(lk["s"]) if lk.get("s") is not None else None

