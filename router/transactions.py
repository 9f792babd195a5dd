"""RouterService.ExecuteTransaction: the router runs two-phase commit over the shards.

1. Validate (``txn_plan.validate``): nothing reaches a shard on bad input; the
   databases must exist.
2. Target every operation with the normal write targeting (``txn_plan.target``).
3. One participant: ``Prepare(one_phase)`` — the shard applies every operation in one
   storage transaction (or none) and enforces the preconditions itself.
4. Several: the coordinator shard (the first operation's shard) records the
   transaction (CoordinateTransaction; a resend with a decision is answered from the
   record), every participant prepares in parallel, the preconditions are checked on
   the summed matches, the decision is recorded (DecideTransaction: the first decision
   recorded stands) and sent out (Commit/Abort, retried until the deadline), then
   FinishTransaction. A COMMITTED decision is reported COMMITTED even when a Commit did
   not get through: the decision is durable and the participants recover it.

Every shard call has a deadline inside the transaction's ``timeout_ms`` (the decision
and its delivery get a short grace beyond it). The protocol runs shielded from the
client's cancellation, so a client that gives up never leaves it half done. When the
router cannot learn whether its COMMITTED decision was recorded (the coordinator shard
stopped answering), the call fails with SHARD_UNAVAILABLE and ``details.outcome ==
"unknown"``: the client resends under the same txn_id to learn the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from prometheus_client import Counter, Histogram

from lauradb.cluster import transaction_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.request_context import current_request_id
from router.context import RouterContext
from router.routing_table import RoutingTable
from router.shard_client import is_stale
from router.txn_failpoints import CRASH
from router.txn_plan import (
    ShardOps,
    TxnPlan,
    TxnSettings,
    check_preconditions,
    decode_results,
    encode_results,
    error_from_reason,
    merge_results,
    reason_of,
    shard_operations,
    target,
    validate,
)
from router.txn_rpc import TxnCaller, call_error

__all__ = ["TRANSACTIONS", "TRANSACTION_SECONDS", "TransactionRunner"]

log = logging.getLogger("lauradb.router.transactions")

TRANSACTIONS = Counter(
    "lauradb_router_transactions",
    "Transactions by outcome (committed, aborted, rejected, unknown) and participant count",
    ["outcome", "participants"],
)
TRANSACTION_SECONDS = Histogram(
    "lauradb_router_transaction_seconds",
    "Transaction latency at the router, by outcome",
    ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

GRACE_S = 2.0  # the decision and its delivery may run this long past the deadline
FINISH_TIMEOUT_S = 2.0
ABORT_WAIT_S = 1.0  # an abort's first delivery round, awaited before answering
MAX_BACKOFF_S = 0.5

_TRANSIENT_DELIVERY = frozenset(
    {
        ErrorCode.SHARD_UNAVAILABLE,
        ErrorCode.HOST_UNREACHABLE,
        ErrorCode.EXCEEDED_TIME_LIMIT,
        ErrorCode.NOT_WRITABLE_PRIMARY,
        ErrorCode.NOT_PRIMARY_OR_SECONDARY,
        ErrorCode.INTERRUPTED_DUE_TO_REPL_STATE_CHANGE,
        ErrorCode.WRITE_CONCERN_FAILED,
        ErrorCode.LOCK_TIMEOUT,
        ErrorCode.WRITE_CONFLICT,
    }
)
_STATE = transaction_pb2.TransactionState


def _participants_label(n: int) -> str:
    return str(n) if n <= 8 else "9+"


def _backoff(attempt: int) -> float:
    return float(min(0.02 * (2**attempt), MAX_BACKOFF_S))


class TransactionRunner:
    """Runs ExecuteTransaction requests for one router."""

    def __init__(self, ctx: RouterContext, settings: TxnSettings | None = None) -> None:
        self.ctx = ctx
        self.settings = settings or TxnSettings()
        self.caller = TxnCaller(ctx.shards)
        self._tasks: set[asyncio.Task[Any]] = set()

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` (bounded by its own deadline) without waiting for it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_consume)

    async def execute(
        self, req: transaction_pb2.ExecuteTransactionRequest
    ) -> transaction_pb2.ExecuteTransactionResponse:
        started = time.monotonic()
        try:
            plan = validate(req, self.settings)
        except LauraError as err:
            self._record("rejected", 0, req.txn_id, len(req.operations), started, err)
            raise
        # Shielded: the protocol ends by its own deadlines even if the client goes away.
        task = asyncio.get_running_loop().create_task(self._run(plan, req, started))
        task.add_done_callback(_consume)
        return await asyncio.shield(task)

    async def _run(
        self,
        plan: TxnPlan,
        req: transaction_pb2.ExecuteTransactionRequest,
        started: float,
    ) -> transaction_pb2.ExecuteTransactionResponse:
        deadline = started + plan.timeout_ms / 1000.0
        participants: list[str] = []
        try:
            tables = await self._tables(plan)
            target(plan, tables)
            participants = plan.participants()
            run = _Run(self, plan, req, tables, deadline)
            if len(participants) == 1:
                resp = await run.one_phase(participants[0])
            else:
                resp = await run.two_phase(participants)
        except LauraError as err:
            err.details = {"failed_operation": -1, **err.details, "txn_id": plan.txn_id}
            outcome = "unknown" if err.details.get("outcome") == "unknown" else (
                "aborted" if participants else "rejected"
            )
            self._record(outcome, len(participants), plan.txn_id, len(plan.ops), started, err)
            raise
        self._record("committed", len(participants), plan.txn_id, len(plan.ops), started, None)
        return resp

    async def _tables(self, plan: TxnPlan) -> dict[str, RoutingTable]:
        tables: dict[str, RoutingTable] = {}
        for database, collection in plan.namespaces:
            table = await self.ctx.table_or_none(database, collection)
            if table is None:
                index = next(op.index for op in plan.ops if op.database == database)
                raise LauraError(
                    ErrorCode.NAMESPACE_NOT_FOUND,
                    f"operation {index}: database {database!r} does not exist",
                    {"failed_operation": index, "database": database},
                )
            tables[f"{database}.{collection}"] = table
        return tables

    def _record(
        self,
        outcome: str,
        participants: int,
        txn_id: str,
        ops: int,
        started: float,
        err: LauraError | None,
    ) -> None:
        elapsed = time.monotonic() - started
        TRANSACTIONS.labels(outcome, _participants_label(participants)).inc()
        TRANSACTION_SECONDS.labels(outcome).observe(elapsed)
        if err is None:
            log.debug(
                "transaction txn_id=%s outcome=%s participants=%d ops=%d ms=%.1f",
                txn_id, outcome, participants, ops, elapsed * 1000,
            )  # fmt: skip
        else:
            log.info(
                "transaction txn_id=%s outcome=%s participants=%d ops=%d ms=%.1f code=%s "
                "failed_operation=%s error=%r",
                txn_id, outcome, participants, ops, elapsed * 1000, err.code_name,
                err.details.get("failed_operation", -1), err.message,
            )  # fmt: skip


class _Run:
    """One execution of one transaction."""

    def __init__(
        self,
        runner: TransactionRunner,
        plan: TxnPlan,
        req: transaction_pb2.ExecuteTransactionRequest,
        tables: dict[str, RoutingTable],
        deadline: float,
    ) -> None:
        self.runner = runner
        self.ctx = runner.ctx
        self.caller = runner.caller
        self.plan = plan
        self.req = req
        self.tables = tables
        self.deadline = deadline
        self.request_id = req.request_id or current_request_id()

    # ------------------------------------------------------------------ helpers

    def table_of(self, shard: str) -> RoutingTable | None:
        """A routing table that knows ``shard`` (for its address/members)."""
        for table in self.tables.values():
            if shard in table.shards:
                return table
        return next(iter(self.tables.values()), None)

    def _prepare_request(
        self, ops: ShardOps, coordinator: str, participants: Sequence[str], one_phase: bool
    ) -> transaction_pb2.PrepareRequest:
        preq = transaction_pb2.PrepareRequest(
            txn_id=self.plan.txn_id,
            coordinator_id=coordinator,
            operations=ops.operations,
            timeout_ms=self.plan.timeout_ms,
            one_phase=one_phase,
            coordinator_hosts=self.caller.hosts(self.table_of(coordinator), coordinator),
            request_id=self.request_id,
            fingerprint=self.plan.fingerprint,
            participants=list(participants),
        )
        if self.req.HasField("write_concern"):
            preq.write_concern.CopyFrom(self.req.write_concern)
        return preq

    def _vote_error(self, shard: str, ops: ShardOps, resp: Any) -> LauraError:
        err = call_error(resp) or LauraError(
            ErrorCode.OPERATION_FAILED, resp.error or f"shard {shard} voted no"
        )
        details = {**err.details, "shard": shard}
        failed = int(resp.failed_operation)
        local = details.pop("failed_operation", None)  # the shard's index, if it gave one
        if failed < 0 and isinstance(local, int):
            failed = local
        if 0 <= failed < len(ops.indexes):
            details["failed_operation"] = ops.indexes[failed]
            message = f"operation {ops.indexes[failed]} on shard {shard}: {err.message}"
        else:
            details.setdefault("failed_operation", -1)
            message = f"shard {shard}: {err.message}"
        return LauraError(err.code, message, details)

    async def _refresh_if_stale(self, errors: Sequence[LauraError]) -> None:
        """After a STALE_CONFIG vote: refresh the transaction's namespaces so that the
        client's retry targets correctly."""
        if not any(is_stale(e) for e in errors):
            return
        for database, collection in self.plan.namespaces:
            table = self.tables.get(f"{database}.{collection}")
            with contextlib.suppress(LauraError):
                await self.ctx.cache.refresh(database, collection, table)

    def _response(
        self,
        results: Sequence[transaction_pb2.TransactionOperationResult],
        participants: int,
    ) -> transaction_pb2.ExecuteTransactionResponse:
        return transaction_pb2.ExecuteTransactionResponse(
            txn_id=self.plan.txn_id,
            state=_STATE.COMMITTED,
            results=list(results),
            participants=participants,
        )

    def _unknown(self, shard: str, why: str) -> LauraError:
        return LauraError(
            ErrorCode.SHARD_UNAVAILABLE,
            f"the outcome of transaction {self.plan.txn_id} is unknown ({why}); resend it "
            f"with the same txn_id to learn it",
            {"shard": shard, "outcome": "unknown", "txn_id": self.plan.txn_id},
        )

    # ------------------------------------------------------------------ one phase

    async def one_phase(self, shard: str) -> transaction_pb2.ExecuteTransactionResponse:
        sops = shard_operations(self.plan, self.tables, one_phase=True)[shard]
        preq = self._prepare_request(sops, shard, [shard], one_phase=True)
        try:
            resp = await self.caller.call(
                self.table_of(shard), shard, "Prepare", preq, self.deadline
            )
        except LauraError as err:
            if err.code in (ErrorCode.SHARD_UNAVAILABLE, ErrorCode.EXCEEDED_TIME_LIMIT) and (
                err.details.get("address") or err.code == ErrorCode.EXCEEDED_TIME_LIMIT
            ):
                # The request may have reached the shard and committed.
                raise self._unknown(shard, err.message) from None
            await self._refresh_if_stale([err])
            raise
        if not resp.vote or resp.state != _STATE.COMMITTED:
            if resp.vote:
                raise LauraError(
                    ErrorCode.INTERNAL_ERROR,
                    f"shard {shard} answered a one-phase transaction with state "
                    f"{_STATE.Name(resp.state)}",
                    {"shard": shard},
                )
            vote_err = self._vote_error(shard, sops, resp)
            await self._refresh_if_stale([vote_err])
            raise vote_err
        merged = merge_results(len(self.plan.ops), [(sops, list(resp.results))])
        return self._response(merged, 1)

    # ------------------------------------------------------------------ two phase

    async def two_phase(self, participants: list[str]) -> transaction_pb2.ExecuteTransactionResponse:
        plan = self.plan
        coord = participants[0]
        coord_table = self.table_of(coord)
        creq = transaction_pb2.CoordinateRequest(
            txn_id=plan.txn_id,
            participants=[
                transaction_pb2.ParticipantInfo(
                    shard_id=s, hosts=self.caller.hosts(self.table_of(s), s)
                )
                for s in participants
            ],
            fingerprint=plan.fingerprint,
            timeout_ms=plan.timeout_ms,
            request_id=self.request_id,
        )
        if self.req.HasField("write_concern"):
            creq.write_concern.CopyFrom(self.req.write_concern)
        cresp = await self.caller.call(
            coord_table, coord, "CoordinateTransaction", creq, self.deadline
        )
        err = call_error(cresp)
        if err is not None:
            raise err
        if cresp.state == _STATE.COMMITTED:  # a resend: the recorded answer
            return self._response(decode_results(cresp.results), len(participants))
        if cresp.state == _STATE.ABORTED:
            raise error_from_reason(cresp.reason, plan.txn_id)
        CRASH.hit("after-coordinate", plan.txn_id)

        # Prepare everywhere.
        by_shard = shard_operations(plan, self.tables, one_phase=False)
        order = list(participants)
        answers = await self.caller.each(
            [
                (
                    self.table_of(s),
                    s,
                    "Prepare",
                    self._prepare_request(by_shard[s], coord, participants, one_phase=False),
                )
                for s in order
            ],
            self.deadline,
            on_answer=CRASH.first("after-first-prepare", plan.txn_id),
        )
        CRASH.hit("after-prepares", plan.txn_id)
        failures: list[LauraError] = []
        votes: list[tuple[ShardOps, list[transaction_pb2.TransactionOperationResult]]] = []
        for s, a in zip(order, answers, strict=True):
            if isinstance(a, LauraError):
                failures.append(a)
            elif isinstance(a, BaseException):
                failures.append(
                    LauraError(ErrorCode.INTERNAL_ERROR, f"Prepare on shard {s}: {a!r}", {"shard": s})
                )
            elif not a.vote:
                failures.append(self._vote_error(s, by_shard[s], a))
            else:
                votes.append((by_shard[s], list(a.results)))
        merged: list[transaction_pb2.TransactionOperationResult] = []
        if not failures:
            try:
                merged = merge_results(len(plan.ops), votes)
                pre = check_preconditions(plan, merged, votes)
            except LauraError as e:
                pre = e
            if pre is not None:
                failures.append(pre)

        if failures:
            failure = _pick_failure(failures)
            await self._decide_abort(coord, participants, failure)
            await self._refresh_if_stale(failures)
            raise failure

        decided = await self._decide(coord, _STATE.COMMITTED, "", encode_results(merged))
        if decided is None:
            raise self._unknown(coord, f"coordinator shard {coord} did not answer the decision")
        if decided.state == _STATE.COMMITTED:
            await self._deliver(coord, participants, "Commit")
            return self._response(merged, len(participants))
        # Another decision stood (a participant timed out and presumed abort).
        await self._deliver(coord, participants, "Abort", decided.reason, wait=False)
        raise error_from_reason(decided.reason, plan.txn_id)

    async def _decide(
        self, coord: str, decision: int, reason: str, results: bytes
    ) -> transaction_pb2.CoordinateResponse | None:
        """Record the decision on the coordinator shard (retried until the deadline plus
        the grace); the decision that stands, or None if it could not be learnt."""
        dreq = transaction_pb2.DecideRequest(
            txn_id=self.plan.txn_id, decision=decision, reason=reason, results=results  # type: ignore[arg-type]
        )
        if self.req.HasField("write_concern"):
            dreq.write_concern.CopyFrom(self.req.write_concern)
        until = max(self.deadline, time.monotonic()) + GRACE_S
        attempt = 0
        while True:
            try:
                resp = await self.caller.call(self.table_of(coord), coord, "DecideTransaction", dreq, until)
            except LauraError as err:
                if err.code not in _TRANSIENT_DELIVERY or time.monotonic() + _backoff(attempt) >= until:
                    log.warning(
                        "transaction %s: DecideTransaction(%s) on %s failed: %s",
                        self.plan.txn_id, _STATE.Name(decision), coord, err,  # type: ignore[arg-type]
                    )  # fmt: skip
                    return None
                await asyncio.sleep(_backoff(attempt))
                attempt += 1
                continue
            answered = call_error(resp)
            if answered is not None:
                log.warning(
                    "transaction %s: DecideTransaction on %s answered %s",
                    self.plan.txn_id, coord, answered,
                )  # fmt: skip
                return None
            CRASH.hit("after-decision", self.plan.txn_id)
            return resp  # type: ignore[no-any-return]

    async def _decide_abort(self, coord: str, participants: list[str], failure: LauraError) -> None:
        decided = await self._decide(coord, _STATE.ABORTED, reason_of(failure), b"")
        if decided is not None and decided.state == _STATE.COMMITTED:
            # Impossible by the protocol (only this router decides COMMITTED, and it did
            # not): say so loudly rather than abort a committed transaction.
            log.error(
                "transaction %s: the coordinator recorded COMMITTED though the router aborted",
                self.plan.txn_id,
            )
            return
        await self._deliver(coord, participants, "Abort", reason_of(failure),
                            finish=decided is not None, wait=False)  # fmt: skip

    async def _deliver(
        self,
        coord: str,
        participants: list[str],
        method: str,
        reason: str = "",
        finish: bool = True,
        *,
        wait: bool = True,
    ) -> None:
        """Send the decision (``Commit`` / ``Abort``) to every participant, retrying the
        ones that failed until the deadline (at least the grace); then Finish.
        ``wait=False`` (aborts): only the first round is awaited (at most
        ``ABORT_WAIT_S``), the retries run in the background — the client's answer
        does not depend on them, and live participants have released their locks."""
        until = max(self.deadline, time.monotonic() + GRACE_S)
        pending = list(participants)
        attempt = 0
        complete = True
        while pending:
            round_until = until if wait else min(until, time.monotonic() + ABORT_WAIT_S)
            if method == "Commit":
                reqs: list[Any] = [
                    transaction_pb2.CommitRequest(txn_id=self.plan.txn_id, coordinator_id=coord)
                    for _ in pending
                ]
            else:
                reqs = [
                    transaction_pb2.AbortRequest(
                        txn_id=self.plan.txn_id, coordinator_id=coord, reason=reason
                    )
                    for _ in pending
                ]
            answers = await self.caller.each(
                [(self.table_of(s), s, method, r) for s, r in zip(pending, reqs, strict=True)],
                round_until,
                on_answer=CRASH.first("after-first-commit", self.plan.txn_id)
                if method == "Commit" else None,
            )
            retry: list[str] = []
            for s, a in zip(pending, answers, strict=True):
                err = a if isinstance(a, BaseException) else call_error(a)
                if err is None and not a.success:
                    err = LauraError(ErrorCode.OPERATION_FAILED, a.error or "success=false")
                if err is None:
                    continue
                if isinstance(err, LauraError) and err.code in _TRANSIENT_DELIVERY:
                    retry.append(s)
                else:
                    complete = False
                    log.error(
                        "transaction %s: %s on shard %s failed: %s (the participant recovers "
                        "the decision from the coordinator shard)", self.plan.txn_id, method, s, err,
                    )  # fmt: skip
            pending = retry
            if pending and not wait:
                self.runner.background(
                    self._deliver(coord, pending, method, reason, finish and complete)
                )
                return
            if pending and time.monotonic() + _backoff(attempt) < until:
                await asyncio.sleep(_backoff(attempt))
                attempt += 1
                continue
            if pending:
                complete = False
                log.warning(
                    "transaction %s: %s not acknowledged by %s before the deadline (they "
                    "recover the decision from the coordinator shard %s)",
                    self.plan.txn_id, method, pending, coord,
                )  # fmt: skip
            break
        if complete and finish:
            # Not awaited: the client's answer does not depend on it (an unfinished
            # record is finished by the coordinator shard's driver).
            self.runner.background(self._finish(coord))

    async def _finish(self, coord: str) -> None:
        with contextlib.suppress(LauraError):
            await self.caller.call(
                self.table_of(coord), coord, "FinishTransaction",
                transaction_pb2.FinishTransactionRequest(txn_id=self.plan.txn_id),
                time.monotonic() + FINISH_TIMEOUT_S,
            )  # fmt: skip


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: the caller may have gone away


def _pick_failure(failures: Sequence[LauraError]) -> LauraError:
    """The error to report: the first caused by an operation, else the first."""
    for f in failures:
        if isinstance(f.details.get("failed_operation"), int) and f.details["failed_operation"] >= 0:
            return f
    return failures[0]
