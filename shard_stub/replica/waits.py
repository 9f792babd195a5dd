"""Bounded waits that never swallow a cancellation, and the replication thread pool.

Python 3.11's ``asyncio.wait_for`` loses a cancellation that arrives while the awaited
future has just completed (it returns the result instead of raising CancelledError;
fixed in 3.12). A loop like ``while True: await wait_for(event.wait(), 0.1)`` then keeps
running after ``task.cancel()``, and whoever awaits that task hangs for ever. That hung a
follower: its acknowledgement task swallowed the cancel when the primary was killed right
after a batch woke it, so ``Follower._stream`` never finished and the member never
followed the new primary. The replica-set code uses the helpers of ``lauradb.aio``
instead (re-exported here; built on ``asyncio.wait``, which always propagates a
cancellation).

Storage work of the replication machinery (oplog append/apply/truncate/trim, role
switches, vote persistence) runs in its own small thread pool: request handlers queuing
in the default executor cannot delay it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from lauradb.aio import _retrieve, stop_task, wait_event, with_timeout

T = TypeVar("T")

__all__ = ["executor", "run_in_thread", "stop_task", "wait_event", "with_timeout"]

# Concurrent users: the follower, a role switch, retention, vote/term persistence.
REPLICATION_THREADS = 4
_executor: ThreadPoolExecutor | None = None


def executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(REPLICATION_THREADS, thread_name_prefix="replset")
    return _executor


async def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in the replication thread pool; when cancelled, still wait for the
    thread to finish (storage work never outlives a cancelled loop step), then raise."""
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    fut = loop.run_in_executor(executor(), functools.partial(ctx.run, fn, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.wait({fut})
        _retrieve(fut)
        raise
