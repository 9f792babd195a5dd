"""Cancellation-safe waits of the replica-set code (shard_stub.replica.waits).

Python 3.11's ``asyncio.wait_for`` returns normally when the task is cancelled just as
the awaited future completes: a follower's acknowledgement loop swallowed its cancel
that way when the primary was killed right after a batch, and the follower hung for
ever (the Jepsen test's flake). These tests pin the race deterministically.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest

from shard_stub.replica.waits import run_in_thread, stop_task, wait_event, with_timeout


async def _cancel_as_event_fires(loop_body: Callable[[asyncio.Event], Awaitable[None]]) -> bool:
    """Run ``while True: await loop_body(event)``, set the event and cancel the task in
    the same loop step (the inner wait has finished, the waiter not yet released);
    whether the task stopped."""
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await loop_body(event)
            event.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    event.set()
    await asyncio.sleep(0)  # the inner Event.wait() completes
    task.cancel()
    stopped = await stop_task(task, 1.0)
    if not stopped:
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    return stopped


async def test_wait_event_never_swallows_a_cancellation() -> None:
    async def body(event: asyncio.Event) -> None:
        await wait_event(event, 0.1)

    assert await _cancel_as_event_fires(body)


async def test_with_timeout_never_swallows_a_cancellation() -> None:
    async def body(event: asyncio.Event) -> None:
        try:
            await with_timeout(event.wait(), 0.1)
        except TimeoutError:
            pass

    assert await _cancel_as_event_fires(body)


async def test_wait_event_and_with_timeout_results() -> None:
    event = asyncio.Event()
    assert not await wait_event(event, 0.01)
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 5.0)
    assert await with_timeout(asyncio.sleep(0, "x"), 1.0) == "x"
    with pytest.raises(TimeoutError):
        await with_timeout(asyncio.sleep(10), 0.01)
    with pytest.raises(ValueError):
        await with_timeout(_raise(ValueError("boom")), 1.0)


async def _raise(exc: Exception) -> None:
    raise exc


async def test_run_in_thread_waits_for_the_thread_when_cancelled() -> None:
    release, finished = threading.Event(), threading.Event()

    def work() -> None:
        release.wait(5.0)
        finished.set()

    task = asyncio.create_task(run_in_thread(work))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()
