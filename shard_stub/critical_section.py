"""The donor's critical section: writes to the migrating range wait, reads go on.

From the final catch-up until the config server has recorded the new owner, no
write may change the documents of the migrating range on the donor. A write that
would touch such a document (the storage write path asks ``write_guard``, under the
write lock, per document) raises ``RangeBlocked`` instead and its transaction rolls
back; the service waits for the section to end (bounded, ``DEFAULT_WRITE_WAIT_S``)
and runs the write again from the placement check, which then answers STALE_CONFIG
if the chunk moved (the router refreshes and goes to the new owner). A write still
blocked when the bound expires fails with a retryable STALE_CONFIG. Writes outside
the range and all reads are never blocked.

``CriticalSection`` must be created, entered and left on the event loop thread;
``active`` is read by writer threads (a plain attribute read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from lauradb.aio import wait_event
from lauradb.errors import ErrorCode, LauraError
from shard_stub.ownership import KeyRange

DEFAULT_WRITE_WAIT_S = 5.0

T = TypeVar("T")


class CriticalSection:
    """Blocks writes to one key range of one namespace while ``active``."""

    def __init__(self, ns: str, keys: KeyRange, description: str = "") -> None:
        self.ns = ns
        self.keys = keys
        self.description = description or ns
        self.active = False
        self._left = asyncio.Event()
        self._left.set()
        self.entered_at = 0.0
        self.blocked_writes = 0

    def enter(self) -> None:
        self._left.clear()
        self.active = True
        self.entered_at = time.monotonic()

    def leave(self) -> float:
        """End the section (blocked writers retry); how long it lasted in seconds."""
        was_active = self.active
        self.active = False
        self._left.set()
        return time.monotonic() - self.entered_at if was_active else 0.0

    async def wait_left(self, timeout: float) -> bool:
        """Wait until the section ends; False when it is still active after ``timeout``."""
        if not self.active:
            return True
        if not await wait_event(self._left, timeout):
            return not self.active
        return True

    def blocked(self) -> RangeBlocked:
        self.blocked_writes += 1
        return RangeBlocked(self)


class RangeBlocked(Exception):
    """A write touched a document of a range in a critical section (nothing written)."""

    def __init__(self, section: CriticalSection) -> None:
        super().__init__(f"writes to {section.description} are blocked by a chunk migration")
        self.section = section

    def timeout_error(self, waited: float) -> LauraError:
        s = self.section
        return LauraError(
            ErrorCode.STALE_CONFIG,
            f"writes to {s.description} are blocked by a chunk migration's critical section "
            f"(waited {waited:.1f}s); refresh the routing table and retry",
            {"namespace": s.ns, "migration_critical_section": True},
        )


async def run_unblocked(
    op: Callable[[], Awaitable[T]], max_wait: float = DEFAULT_WRITE_WAIT_S
) -> T:
    """Run ``op``; while it hits a critical section, wait for it to end and run it again.

    Gives up with a retryable STALE_CONFIG once ``max_wait`` seconds were spent waiting.
    """
    start = time.monotonic()
    while True:
        try:
            return await op()
        except RangeBlocked as blocked:
            waited = time.monotonic() - start
            remaining = max_wait - waited
            if remaining <= 0 or not await blocked.section.wait_left(remaining):
                raise blocked.timeout_error(time.monotonic() - start) from None
