"""Which member of a shard's replica set to talk to: the primary, or a member chosen
by read preference (used by the router and the config server alike).

* A one-member "set" (today's standalone shards) is answered from the member list:
  no Hello is ever sent, no task is started, ``primary()`` returns at once.
* Several members: the primary is cached. ``primary()`` returns the cached one or
  discovers it by asking every member ``ShardService.Hello`` concurrently (short
  deadline), every ``poll_interval`` until one says it is primary (the highest term
  wins if two do; a claimant whose term is below another member's is deposed) or the
  buffer window ends: callers WAIT during a failover instead of failing (like Vitess
  buffering), then get NOT_WRITABLE_PRIMARY (members answer, none is primary) or
  SHARD_UNAVAILABLE (no member answers), naming the shard.
* ``invalidate(address)``: a call to the cached primary failed with
  NOT_WRITABLE_PRIMARY / INTERRUPTED_DUE_TO_REPL_STATE_CHANGE / UNAVAILABLE.
* ``select(read_preference)``: primary / primaryPreferred / secondary /
  secondaryPreferred / nearest (by measured Hello round-trip time, within
  ``LOCAL_THRESHOLD_MS`` of the nearest, randomly), honouring ``max_staleness_ms``
  (MongoDB's formula on the members' ``last_write_ms``), only caught-up members.
* While a multi-member set is in use (asked within ``idle_after``), a background task
  refreshes every member's state every ``refresh_interval`` (default 1 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lauradb.cluster import replset_pb2
from lauradb.errors import ErrorCode, LauraError

__all__ = [
    "DEFAULT_BUFFER_WINDOW_S",
    "FAILOVER_CODES",
    "LOCAL_THRESHOLD_MS",
    "HelloFn",
    "MemberState",
    "ReplicaSetMonitor",
    "choose_member",
    "elect_primary",
    "is_failover_error",
    "mode_name",
    "parse_mode",
]

log = logging.getLogger("lauradb.replset")

DEFAULT_BUFFER_WINDOW_S = 5.0
DEFAULT_POLL_INTERVAL_S = 0.05
DEFAULT_HELLO_TIMEOUT_S = 0.5
DEFAULT_REFRESH_INTERVAL_S = 1.0
DEFAULT_IDLE_AFTER_S = 60.0
LOCAL_THRESHOLD_MS = 15.0

# Errors after which the member that answered is not (or no longer) the primary.
FAILOVER_CODES = frozenset(
    {
        ErrorCode.NOT_WRITABLE_PRIMARY,
        ErrorCode.NOT_PRIMARY_OR_SECONDARY,
        ErrorCode.INTERRUPTED_DUE_TO_REPL_STATE_CHANGE,
        ErrorCode.SHARD_UNAVAILABLE,
        ErrorCode.HOST_UNREACHABLE,
    }
)

Mode = replset_pb2.ReadPreferenceMode
PRIMARY = replset_pb2.READ_PRIMARY
PRIMARY_PREFERRED = replset_pb2.READ_PRIMARY_PREFERRED
SECONDARY = replset_pb2.READ_SECONDARY
SECONDARY_PREFERRED = replset_pb2.READ_SECONDARY_PREFERRED
NEAREST = replset_pb2.READ_NEAREST

_MODE_NAMES: dict[int, str] = {
    PRIMARY: "primary",
    PRIMARY_PREFERRED: "primaryPreferred",
    SECONDARY: "secondary",
    SECONDARY_PREFERRED: "secondaryPreferred",
    NEAREST: "nearest",
}
_MODES_BY_NAME = {name.lower(): mode for mode, name in _MODE_NAMES.items()}

# ``hello(address, timeout)`` -> the member's HelloResponse (raises on failure).
HelloFn = Callable[[str, float], Awaitable[replset_pb2.HelloResponse]]


def mode_name(mode: int) -> str:
    return _MODE_NAMES.get(mode, str(mode))


def parse_mode(name: str) -> int:
    """``"secondaryPreferred"`` (any case, ``_``/``-`` ignored) -> the enum value."""
    key = name.replace("_", "").replace("-", "").lower()
    if key not in _MODES_BY_NAME:
        raise LauraError(
            ErrorCode.BAD_VALUE,
            f"unknown read preference mode {name!r} (choose from {', '.join(_MODE_NAMES.values())})",
        )
    return _MODES_BY_NAME[key]


def is_failover_error(err: LauraError) -> bool:
    return err.code in FAILOVER_CODES


@dataclass
class MemberState:
    """The last known state of one member (from its last Hello answer)."""

    address: str
    ok: bool = False              # answered the last Hello
    is_primary: bool = False
    role: str = ""
    term: int = 0
    replset: str = ""
    caught_up: bool = False
    last_applied_op_id: int = 0
    last_write_ms: int = 0        # wall time of its last applied entry
    measured_ms: int = 0          # wall time when the Hello was answered
    rtt_ms: float = float("inf")  # smoothed round-trip time of Hello
    primary_hint: str = ""
    node_id: str = ""
    error: str = ""

    def update(self, resp: replset_pb2.HelloResponse, rtt_ms: float, now_ms: int) -> None:
        self.ok = not resp.error.code
        self.is_primary = resp.is_primary and self.ok
        self.role = resp.role
        self.term = resp.term
        self.replset = resp.replset
        self.caught_up = resp.caught_up
        self.last_applied_op_id = resp.last_applied_op_id
        self.last_write_ms = resp.last_write_ms
        self.measured_ms = now_ms
        self.primary_hint = resp.primary_address
        self.node_id = resp.node_id
        self.error = resp.error.message if resp.error.code else ""
        # exponentially weighted like MongoDB's server selection (alpha 0.2)
        self.rtt_ms = rtt_ms if self.rtt_ms == float("inf") else 0.8 * self.rtt_ms + 0.2 * rtt_ms

    def failed(self, message: str) -> None:
        self.ok = False
        self.is_primary = False
        self.caught_up = False
        self.error = message


def elect_primary(states: Sequence[MemberState]) -> MemberState | None:
    """The member that is primary: claims it with the highest term, and no answering
    member knows of a higher term (that one has been deposed)."""
    answering = [s for s in states if s.ok]
    claims = [s for s in answering if s.is_primary]
    if not claims:
        return None
    best = max(claims, key=lambda s: s.term)
    if any(s.term > best.term for s in answering):
        return None
    return best


def staleness_ms(
    member: MemberState, primary: MemberState | None, states: Sequence[MemberState], heartbeat_ms: float
) -> float | None:
    """MongoDB's staleness estimate of a secondary (None: not enough data)."""
    if not member.last_write_ms:
        return None
    if primary is not None and primary.last_write_ms:
        return (
            (member.measured_ms - member.last_write_ms)
            - (primary.measured_ms - primary.last_write_ms)
            + heartbeat_ms
        )
    newest = max((s.last_write_ms for s in states if s.ok and s.last_write_ms), default=0)
    if not newest:
        return None
    return newest - member.last_write_ms + heartbeat_ms


def choose_member(
    states: Sequence[MemberState],
    mode: int,
    max_staleness_ms: int = 0,
    heartbeat_ms: float = DEFAULT_REFRESH_INTERVAL_S * 1000,
    rng: random.Random | None = None,
) -> MemberState | None:
    """The member a read with this preference goes to (None: none suitable now)."""
    primary = elect_primary(states)

    def fresh(s: MemberState) -> bool:
        if not max_staleness_ms:
            return True
        st = staleness_ms(s, primary, states, heartbeat_ms)
        return st is None or st <= max_staleness_ms

    secondaries = [
        s for s in states
        if s.ok and s is not primary and not s.is_primary and s.caught_up
        and s.role in ("SECONDARY", "") and fresh(s)
    ]

    def nearest(candidates: list[MemberState]) -> MemberState | None:
        if not candidates:
            return None
        best = min(c.rtt_ms for c in candidates)
        window = [c for c in candidates if c.rtt_ms <= best + LOCAL_THRESHOLD_MS]
        return (rng or random).choice(window)

    if mode == PRIMARY:
        return primary
    if mode == PRIMARY_PREFERRED:
        return primary if primary is not None else nearest(secondaries)
    if mode == SECONDARY:
        return nearest(secondaries)
    if mode == SECONDARY_PREFERRED:
        return nearest(secondaries) or primary
    if mode == NEAREST:
        return nearest(secondaries + ([primary] if primary is not None else []))
    raise LauraError(ErrorCode.BAD_VALUE, f"unknown read preference mode {mode}")


class ReplicaSetMonitor:
    """The members of one shard and which of them is primary."""

    def __init__(
        self,
        shard_id: str,
        members: Sequence[str],
        hello: HelloFn | None = None,
        *,
        buffer_window: float = DEFAULT_BUFFER_WINDOW_S,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT_S,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL_S,
        idle_after: float = DEFAULT_IDLE_AFTER_S,
    ) -> None:
        if not members:
            raise LauraError(ErrorCode.BAD_VALUE, f"shard {shard_id!r} has no members")
        self.shard_id = shard_id
        self.members: tuple[str, ...] = tuple(dict.fromkeys(members))
        self.is_replset = len(self.members) > 1
        if self.is_replset and hello is None:
            raise LauraError(ErrorCode.INTERNAL_ERROR, "a replica-set monitor needs a Hello function")
        self._hello = hello
        self.buffer_window = buffer_window
        self.poll_interval = poll_interval
        self.hello_timeout = hello_timeout
        self.refresh_interval = refresh_interval
        self.idle_after = idle_after
        self.states: dict[str, MemberState] = {a: MemberState(a) for a in self.members}
        self._primary: str | None = None if self.is_replset else self.members[0]
        self.term = 0
        self._discovery: asyncio.Future[str] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._last_used = 0.0
        self._closed = False

    # ------------------------------------------------------------------ primary

    @property
    def seed(self) -> str:
        return self.members[0]

    def cached_primary(self) -> str | None:
        return self._primary

    def current(self) -> str:
        """The cached primary, or the best guess (a hint, or the seed): sync, no RPC.
        Marks the monitor in use, so its background refresh runs and finds a new
        primary even when only callers that never wait (``primary()``) use it."""
        if self.is_replset:
            self._touch()
        if self._primary is not None:
            return self._primary
        for s in self.states.values():
            hinted = self.states.get(s.primary_hint) if s.ok else None
            if hinted is not None and (hinted.ok or not hinted.measured_ms):
                return hinted.address
        return self.seed

    async def primary(self) -> str:
        """The primary's address (waits up to the buffer window during a failover)."""
        p = self._primary
        if p is not None:
            if self.is_replset:
                self._touch()
            return p
        self._touch()
        return await asyncio.shield(self._discovering())

    def rediscover(self) -> None:
        """Start looking for the primary now, without waiting (a caller that will not
        resend after a failover: the next call then finds the new primary)."""
        if self.is_replset and self._primary is None:
            self._touch()
            self._discovering()

    def _discovering(self) -> asyncio.Future[str]:
        fut = self._discovery
        if fut is None or fut.done():
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            fut.add_done_callback(_consume)
            self._discovery = fut
            task = loop.create_task(self._discover(fut))
            task.add_done_callback(_consume)
        return fut

    def invalidate(self, address: str) -> None:
        """A call to ``address`` proved it is not (or no longer) reachable as primary."""
        if not self.is_replset:
            return
        state = self.states.get(address)
        if state is not None:
            state.is_primary = False
        if self._primary == address:
            log.info("shard %s: primary %s invalidated; rediscovering", self.shard_id, address)
            self._primary = None

    async def _discover(self, fut: asyncio.Future[str]) -> None:
        deadline = time.monotonic() + self.buffer_window
        try:
            while True:
                await self.refresh()
                if self._primary is not None:
                    fut.set_result(self._primary)
                    return
                if time.monotonic() >= deadline:
                    fut.set_exception(self._no_primary_error())
                    return
                await asyncio.sleep(self.poll_interval)
        except BaseException as exc:  # cancellation / a bug: never leave waiters hanging
            if not fut.done():
                fut.set_exception(
                    exc if isinstance(exc, Exception) else LauraError(
                        ErrorCode.SHARD_UNAVAILABLE, f"shard {self.shard_id}: discovery cancelled"
                    )
                )
            if not isinstance(exc, Exception):
                raise

    def _no_primary_error(self) -> LauraError:
        answering = [s for s in self.states.values() if s.ok]
        members = ", ".join(self.members)
        details = {"shard": self.shard_id, "members": list(self.members), "replset_wait": True}
        if not answering:
            errors = "; ".join(f"{s.address}: {s.error}" for s in self.states.values() if s.error)
            return LauraError(
                ErrorCode.SHARD_UNAVAILABLE,
                f"shard {self.shard_id}: no member of [{members}] answered within "
                f"{self.buffer_window:g}s" + (f" ({errors})" if errors else ""),
                details,
            )
        roles = ", ".join(f"{s.address}={s.role or '?'}" for s in answering)
        return LauraError(
            ErrorCode.NOT_WRITABLE_PRIMARY,
            f"shard {self.shard_id}: no primary among [{members}] after waiting "
            f"{self.buffer_window:g}s ({roles})",
            details,
        )

    # ------------------------------------------------------------------ reads

    async def select(self, mode: int = PRIMARY, max_staleness_ms: int = 0) -> str:
        """The member a read with this preference goes to; waits (buffer window) for a
        suitable one."""
        if not self.is_replset:
            return self.members[0]
        if mode == PRIMARY:
            return await self.primary()
        self._touch()
        deadline = time.monotonic() + self.buffer_window
        if not any(s.measured_ms for s in self.states.values()):
            await self.refresh()
        while True:
            chosen = choose_member(
                list(self.states.values()), mode, max_staleness_ms, self.refresh_interval * 1000
            )
            if chosen is not None:
                return chosen.address
            if mode in (PRIMARY_PREFERRED, SECONDARY_PREFERRED) and self._primary is not None:
                return self._primary
            if time.monotonic() >= deadline:
                raise LauraError(
                    ErrorCode.NOT_PRIMARY_OR_SECONDARY,
                    f"shard {self.shard_id}: no member of [{', '.join(self.members)}] matches "
                    f"read preference {mode_name(mode)}"
                    + (f" with max staleness {max_staleness_ms} ms" if max_staleness_ms else ""),
                    {"shard": self.shard_id, "replset_wait": True},
                )
            await asyncio.sleep(self.poll_interval)
            await self.refresh()

    def mark_failed(self, address: str, message: str = "call failed") -> None:
        """A read on ``address`` failed as unreachable: not selected until it answers."""
        state = self.states.get(address)
        if state is not None:
            state.failed(message)
        self.invalidate(address)

    # ------------------------------------------------------------------ refresh

    async def refresh(self) -> None:
        """One Hello round: every member concurrently, each with a short deadline."""
        if not self.is_replset or self._hello is None:
            return
        await asyncio.gather(*(self._hello_one(a) for a in self.members))
        primary = elect_primary(list(self.states.values()))
        new = primary.address if primary is not None else None
        if new != self._primary:
            if new is not None:
                log.info(
                    "shard %s: primary is %s (term %d)", self.shard_id, new, primary.term if primary else 0
                )
            self._primary = new
        if primary is not None:
            self.term = max(self.term, primary.term)

    async def _hello_one(self, address: str) -> None:
        assert self._hello is not None
        state = self.states[address]
        start = time.perf_counter()
        try:
            resp = await self._hello(address, self.hello_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # unreachable, deadline, not implemented, ...
            state.failed(str(exc) or type(exc).__name__)
            return
        state.update(resp, (time.perf_counter() - start) * 1000, int(time.time() * 1000))

    def _touch(self) -> None:
        self._last_used = time.monotonic()
        if self._refresher is None and not self._closed:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._refresher = loop.create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        try:
            while not self._closed and time.monotonic() - self._last_used < self.idle_after:
                await asyncio.sleep(self.refresh_interval)
                with contextlib.suppress(Exception):
                    await self.refresh()
        finally:
            self._refresher = None

    def snapshot(self) -> list[MemberState]:
        return [MemberState(**vars(s)) for s in self.states.values()]

    async def close(self) -> None:
        self._closed = True
        task = self._refresher
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._refresher = None


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
