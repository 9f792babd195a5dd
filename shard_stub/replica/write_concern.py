"""Write concern: a write's reply waits until enough members have its last op id.

``parse`` turns the request's ``WriteConcern`` into a ``WriteConcernSpec`` (BAD_VALUE
before anything is written when malformed or when ``w`` exceeds the data-bearing members).
``WriteConcernWaiters`` holds the waiting writes keyed by op id; the replica node calls
``notify()`` whenever a member's progress (the primary's own commits, acknowledgements,
the commit point) changes and ``interrupt()`` when it steps down. A wait that times out
(``wtimeout``) or is interrupted yields a ``WriteConcernError`` for the reply's
``write_concern_error`` field; the write itself stays applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from lauradb.cluster import replset_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import to_proto

MAJORITY = "majority"
# Waits without wtimeout are bounded by the call's deadline, or this when it has none.
DEFAULT_MAX_WAIT_S = 60.0


@dataclass(frozen=True)
class WriteConcernSpec:
    """``w``: a member count, or None for "majority"; ``wtimeout_s``: None = no wtimeout."""

    w: int | None = None
    wtimeout_s: float | None = None

    @property
    def majority(self) -> bool:
        return self.w is None

    def describe(self) -> str:
        return MAJORITY if self.w is None else str(self.w)


DEFAULT = WriteConcernSpec()


def parse(
    wc: replset_pb2.WriteConcern | None, data_bearing: int
) -> WriteConcernSpec:
    """The spec of a request's write concern (None/unset: w majority, no wtimeout)."""
    if wc is None:
        return DEFAULT
    timeout = None
    if wc.wtimeout_ms < 0:
        raise LauraError(ErrorCode.BAD_VALUE, f"wtimeout must be >= 0, not {wc.wtimeout_ms}")
    if wc.wtimeout_ms > 0:
        timeout = wc.wtimeout_ms / 1000.0
    w_text = wc.w.strip()
    if w_text in ("", MAJORITY):
        return WriteConcernSpec(None, timeout)
    if not w_text.isdigit():
        raise LauraError(
            ErrorCode.BAD_VALUE,
            f"write concern w must be 'majority' or a number of members, not {wc.w!r}",
        )
    w = int(w_text)
    if w > data_bearing:
        raise LauraError(
            ErrorCode.BAD_VALUE,
            f"write concern w:{w} exceeds the {data_bearing} data-bearing member"
            f"{'s' if data_bearing != 1 else ''} of this replica set",
        )
    return WriteConcernSpec(w, timeout)


def concern_error(
    code: ErrorCode, message: str, acknowledged: int
) -> replset_pb2.WriteConcernError:
    return replset_pb2.WriteConcernError(
        error=to_proto(LauraError(code, message)), acknowledged=acknowledged
    )


# satisfied(op_id, spec) -> bool ; acknowledged(op_id) -> members having op_id
Satisfied = Callable[[int, WriteConcernSpec], bool]
Acknowledged = Callable[[int], int]


@dataclass
class _Waiter:
    op_id: int
    spec: WriteConcernSpec
    future: asyncio.Future[None]


class WriteConcernWaiters:
    """Writes waiting for their write concern (all on the event loop thread)."""

    def __init__(self, satisfied: Satisfied, acknowledged: Acknowledged) -> None:
        self.satisfied = satisfied
        self.acknowledged = acknowledged
        self._waiters: list[_Waiter] = []

    def __len__(self) -> int:
        return len(self._waiters)

    def notify(self) -> None:
        """Progress changed: wake the waiters whose write concern now holds."""
        if not self._waiters:
            return
        keep: list[_Waiter] = []
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            if self.satisfied(waiter.op_id, waiter.spec):
                waiter.future.set_result(None)
            else:
                keep.append(waiter)
        self._waiters = keep

    def interrupt(self, reason: str) -> None:
        """The primary stepped down: every waiter fails with ``reason``."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.future.done():
                waiter.future.set_exception(
                    LauraError(ErrorCode.INTERRUPTED_DUE_TO_REPL_STATE_CHANGE, reason)
                )

    async def wait(
        self, op_id: int, spec: WriteConcernSpec, max_wait_s: float | None = None
    ) -> replset_pb2.WriteConcernError | None:
        """Wait until ``spec`` holds for ``op_id``; None, or the error for the reply.

        ``max_wait_s`` bounds a wait without wtimeout (the call's remaining deadline).
        """
        if op_id <= 0 or self.satisfied(op_id, spec):
            return None
        timeout = spec.wtimeout_s
        if timeout is None:
            timeout = max_wait_s if max_wait_s is not None else DEFAULT_MAX_WAIT_S
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(op_id, spec, future))
        try:
            await asyncio.wait_for(future, max(timeout, 0.0))
        except TimeoutError:
            have = self.acknowledged(op_id)
            return concern_error(
                ErrorCode.WRITE_CONCERN_FAILED,
                f"waiting for replication timed out after {timeout:g}s: write concern "
                f"w:{spec.describe()} not satisfied (op {op_id} on {have} member"
                f"{'s' if have != 1 else ''})",
                have,
            )
        except LauraError as err:
            return concern_error(err.code, err.message, self.acknowledged(op_id))
        finally:
            if not future.done():
                future.cancel()
            self._waiters = [w for w in self._waiters if w.future is not future]
        return None
