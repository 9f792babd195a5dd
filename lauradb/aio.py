"""Bounded asyncio waits that never swallow a cancellation.

Python 3.11's ``asyncio.wait_for`` loses a cancellation that arrives while the awaited
future has just completed (it returns the result instead of raising CancelledError;
fixed in 3.12). A loop like ``while True: await wait_for(event.wait(), 0.1)`` then keeps
running after ``task.cancel()``, and whoever awaits that task hangs for ever (this hung
a replica-set follower, see ``shard_stub/replica/waits.py``). Background loops use
``wait_event`` instead; ``with_timeout`` replaces ``wait_for`` on an awaitable. Both are
built on ``asyncio.wait``, which always propagates a cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["stop_task", "wait_event", "with_timeout"]

T = TypeVar("T")


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # no "exception was never retrieved" for abandoned tasks


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; whether it is set."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=max(timeout, 0.0))
    finally:
        if not waiter.done():
            waiter.cancel()
            waiter.add_done_callback(_retrieve)
    return event.is_set()


async def with_timeout(aw: Awaitable[T], timeout: float, cancel_wait_s: float = 1.0) -> T:
    """``asyncio.wait_for`` without its flaws: raises TimeoutError after ``timeout``;
    a cancellation of the caller always propagates. The inner awaitable is cancelled in
    both cases and waited for at most ``cancel_wait_s`` (an awaitable that ignores its
    cancellation is left behind instead of hanging the caller)."""
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(timeout, 0.0))
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise
    if done:
        return task.result()
    task.cancel()
    await asyncio.wait({task}, timeout=cancel_wait_s)
    if not task.done():
        task.add_done_callback(_retrieve)
    elif not task.cancelled():
        task.exception()
    raise TimeoutError


async def stop_task(task: asyncio.Task[Any] | None, timeout: float) -> bool:
    """Cancel ``task`` and wait for it at most ``timeout``; whether it finished."""
    if task is None:
        return True
    if not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=timeout)
    if not task.done():
        task.add_done_callback(_retrieve)
        return False
    _retrieve(task)
    return True
