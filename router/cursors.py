"""Router cursors: the state of a result that did not fit in its first batch.

A cursor wraps a ``BatchSource`` (a merge of shard streams, or an aggregation's
merge pipeline) and is addressed by an opaque id. ``GetMore`` pulls the next batch;
an exhausted cursor is forgotten; ``KillCursors`` (or 10 minutes without use)
closes it, which kills the shard cursors behind it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from lauradb.errors import ErrorCode, LauraError
from router.merge import DEFAULT_BATCH_BYTES, MergedStream

__all__ = [
    "DEFAULT_FIRST_BATCH",
    "DEFAULT_GETMORE_BATCH",
    "IDLE_TIMEOUT",
    "BatchSource",
    "CursorRegistry",
    "MergeSource",
    "RouterCursor",
]

log = logging.getLogger("lauradb.router.cursors")

DEFAULT_FIRST_BATCH = 101
DEFAULT_GETMORE_BATCH = 1000
IDLE_TIMEOUT = 600.0

KillFn = Callable[[list[tuple[str, str, str]]], Awaitable[None]]


class BatchSource(Protocol):
    @property
    def exhausted(self) -> bool: ...

    async def next_batch(self, max_docs: int, max_bytes: int = DEFAULT_BATCH_BYTES) -> list[bytes]: ...

    def take_examined(self) -> int: ...

    async def aclose(self) -> None: ...


class MergeSource:
    """A ``MergedStream`` as a cursor source; closing it kills its shard cursors."""

    def __init__(self, merged: MergedStream, kill: KillFn) -> None:
        self.merged = merged
        self._kill = kill

    @property
    def exhausted(self) -> bool:
        return self.merged.exhausted

    async def next_batch(self, max_docs: int, max_bytes: int = DEFAULT_BATCH_BYTES) -> list[bytes]:
        try:
            docs = await self.merged.next_batch(max_docs, max_bytes)
        except BaseException:
            await self.aclose()
            raise
        if self.merged.exhausted:
            await self.aclose()  # a limit was reached: release what the shards still hold
        return docs

    def take_examined(self) -> int:
        return self.merged.take_examined()

    async def aclose(self) -> None:
        open_cursors = self.merged.close()
        if open_cursors:
            await self._kill(open_cursors)


@dataclass
class RouterCursor:
    cursor_id: str
    namespace: str
    source: BatchSource
    shards: list[str]
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class CursorRegistry:
    """Open router cursors by id, with an idle reaper."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.idle_timeout = idle_timeout
        self._cursors: dict[str, RouterCursor] = {}
        self._reaper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._cursors)

    def __contains__(self, cursor_id: object) -> bool:
        return cursor_id in self._cursors

    def register(self, source: BatchSource, namespace: str, shards: list[str]) -> str:
        cursor_id = secrets.token_hex(12)
        self._cursors[cursor_id] = RouterCursor(cursor_id, namespace, source, shards)
        return cursor_id

    async def get_more(
        self, cursor_id: str, batch_size: int, max_bytes: int = DEFAULT_BATCH_BYTES
    ) -> tuple[list[bytes], bool, int, RouterCursor]:
        """``(documents, more_available, documents_examined, cursor)``."""
        cursor = self._cursors.get(cursor_id)
        if cursor is None:
            raise LauraError(
                ErrorCode.CURSOR_NOT_FOUND, f"cursor id {cursor_id!r} not found",
                {"cursor_id": cursor_id},
            )
        async with cursor.lock:
            if self._cursors.get(cursor_id) is not cursor:
                raise LauraError(
                    ErrorCode.CURSOR_NOT_FOUND, f"cursor id {cursor_id!r} was killed",
                    {"cursor_id": cursor_id},
                )
            cursor.last_used = time.monotonic()
            n = batch_size if batch_size > 0 else DEFAULT_GETMORE_BATCH
            try:
                docs = await cursor.source.next_batch(n, max_bytes)
            except BaseException:
                self._cursors.pop(cursor_id, None)
                raise
            examined = cursor.source.take_examined()
            more = not cursor.source.exhausted
            if not more:
                self._cursors.pop(cursor_id, None)
            cursor.last_used = time.monotonic()
            return docs, more, examined, cursor

    async def kill(self, cursor_ids: list[str]) -> tuple[list[str], list[str]]:
        """``(killed, not_found)``; kills the shard cursors behind them too."""
        killed: list[str] = []
        not_found: list[str] = []
        closing = []
        for cid in cursor_ids:
            cursor = self._cursors.pop(cid, None)
            if cursor is None:
                not_found.append(cid)
            else:
                killed.append(cid)
                closing.append(cursor.source.aclose())
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)
        return killed, not_found

    async def kill_namespace(self, namespace: str, *, database: bool = False) -> int:
        """Kill the cursors over ``namespace`` (or, with ``database``, over any
        collection of the database ``namespace``); how many there were."""
        prefix = f"{namespace}."
        ids = [
            cid
            for cid, c in list(self._cursors.items())
            if (c.namespace.startswith(prefix) if database else c.namespace == namespace)
        ]
        if ids:
            await self.kill(ids)
        return len(ids)

    # ------------------------------------------------------------------ idle reaper

    async def reap_idle(self) -> int:
        now = time.monotonic()
        idle = [
            cid
            for cid, c in list(self._cursors.items())
            if now - c.last_used > self.idle_timeout and not c.lock.locked()
        ]
        if idle:
            await self.kill(idle)
        return len(idle)

    def start(self, interval: float = 30.0) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_loop(interval))

    async def _reap_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(min(interval, max(self.idle_timeout / 4, 0.05)))
            try:
                n = await self.reap_idle()
                if n:
                    log.info("closed %d idle cursors", n)
            except Exception:
                log.exception("cursor reaper failed")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        await self.kill(list(self._cursors))
