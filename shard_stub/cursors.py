"""Shard-side cursors: the rest of a Find/Aggregate result, fetched batch by batch.

A cursor wraps a lazy ``ResultStream``; filling a batch advances it (reading storage
page by page) and runs in a worker thread. A cursor id is handed out only while
results remain; a cursor idle for ``idle_timeout`` seconds (10 minutes, like
MongoDB) is closed by the reaper.

A cursor keeps the ownership snapshot (``OwnedRanges``) its query was created with,
so one opened before a chunk migration committed still returns the moved documents
it was going to return. Every cursor gets a creation sequence number and is tracked
from creation until it closes, so the range deleter can wait for the cursors opened
before a commit (``open_before``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator

from lauradb.errors import ErrorCode, LauraError
from shard_stub.ownership import KeyRange, OwnedRanges
from shard_stub.reads import ResultStream

log = logging.getLogger("lauradb.shard.cursors")

DEFAULT_FIRST_BATCH = 101
MAX_BATCH_BYTES = 16 * 1024 * 1024
IDLE_TIMEOUT_S = 600.0

_END = object()


class ShardCursor:
    """The remaining results of one query (thread-safe: one batch at a time)."""

    def __init__(
        self,
        ns: str,
        stream: ResultStream,
        clock: Callable[[], float],
        seq: int = 0,
        on_close: Callable[[ShardCursor], None] | None = None,
        owned: OwnedRanges | None = None,
    ) -> None:
        self.cursor_id = ""
        self.ns = ns
        self.seq = seq
        self.owned = owned  # the ownership snapshot its query filters with
        self._on_close = on_close
        self._docs: Iterator[bytes] = stream.documents
        self._stats = stream.stats
        self._peeked: object = None
        self._lock = threading.Lock()
        self._clock = clock
        self.exhausted = False
        self.last_used = clock()
        self.busy = False

    def next_batch(self, batch_size: int) -> tuple[list[bytes], int]:
        """Up to ``batch_size`` documents (0: up to the byte limit) and docs examined.

        A batch holds at least one document when any remain and stops before
        exceeding ``MAX_BATCH_BYTES``. Sets ``exhausted`` when nothing remains.
        """
        with self._lock:
            self.busy = True
            try:
                return self._fill(batch_size)
            finally:
                self.busy = False
                self.last_used = self._clock()

    def _fill(self, batch_size: int) -> tuple[list[bytes], int]:
        before = self._stats.examined
        out: list[bytes] = []
        size = 0
        if self.exhausted:
            return out, 0
        while True:
            if self._peeked is not None:
                item = self._peeked
                self._peeked = None
            else:
                item = next(self._docs, _END)
            if item is _END:
                self.exhausted = True
                break
            assert isinstance(item, bytes)
            if out and size + len(item) > MAX_BATCH_BYTES:
                self._peeked = item
                break
            out.append(item)
            size += len(item)
            if batch_size and len(out) >= batch_size:
                # Look one ahead so that an exhausted cursor is reported now.
                nxt = next(self._docs, _END)
                if nxt is _END:
                    self.exhausted = True
                else:
                    self._peeked = nxt
                break
        return out, self._stats.examined - before

    def close(self) -> None:
        self.exhausted = True
        self._peeked = None
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)
        if not self.busy:
            close = getattr(self._docs, "close", None)
            if close is not None:
                try:
                    close()
                except ValueError:  # running in another thread right now
                    pass


class CursorManager:
    """Open cursors by id, with an idle reaper."""

    def __init__(
        self, idle_timeout: float = IDLE_TIMEOUT_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._cursors: dict[str, ShardCursor] = {}
        self._seq = 0
        self._live: dict[int, ShardCursor] = {}  # created and not closed, by sequence number

    def __len__(self) -> int:
        return len(self._cursors)

    def create(
        self, ns: str, stream: ResultStream, owned: OwnedRanges | None = None
    ) -> ShardCursor:
        """A cursor not yet registered (``register`` it if results remain, else close it)."""
        self._seq += 1
        cursor = ShardCursor(ns, stream, self._clock, self._seq, self._closed, owned)
        self._live[cursor.seq] = cursor
        return cursor

    def _closed(self, cursor: ShardCursor) -> None:
        self._live.pop(cursor.seq, None)

    @property
    def last_seq(self) -> int:
        """The sequence number of the latest cursor created."""
        return self._seq

    def open_before(self, ns: str, seq: int) -> int:
        """How many cursors on ``ns`` created at or before ``seq`` are still open."""
        return sum(1 for c in list(self._live.values()) if c.seq <= seq and c.ns == ns)

    def reading_range(self, ns: str, keys: KeyRange) -> int:
        """How many open cursors on ``ns`` may still return documents of ``keys``: those
        whose ownership snapshot includes part of it (created before the range moved)."""
        return sum(
            1
            for c in list(self._live.values())
            if c.ns == ns and c.owned is not None and c.owned.overlaps(keys)
        )

    def register(self, cursor: ShardCursor) -> str:
        cursor_id = secrets.token_hex(12)
        cursor.cursor_id = cursor_id
        cursor.last_used = self._clock()
        self._cursors[cursor_id] = cursor
        return cursor_id

    def get(self, cursor_id: str) -> ShardCursor:
        cursor = self._cursors.get(cursor_id)
        if cursor is None:
            raise LauraError(
                ErrorCode.CURSOR_NOT_FOUND, f"cursor id {cursor_id!r} not found on this shard"
            )
        return cursor

    def release(self, cursor: ShardCursor) -> None:
        """Forget an exhausted cursor."""
        if cursor.cursor_id and self._cursors.get(cursor.cursor_id) is cursor:
            del self._cursors[cursor.cursor_id]
        cursor.close()

    def kill(self, cursor_ids: list[str]) -> int:
        killed = 0
        for cursor_id in cursor_ids:
            cursor = self._cursors.pop(cursor_id, None)
            if cursor is not None:
                cursor.close()
                killed += 1
        return killed

    def kill_namespace(self, ns: str) -> int:
        """Close every cursor reading ``ns`` (its collection is being dropped)."""
        doomed = [cid for cid, c in self._cursors.items() if c.ns == ns]
        return self.kill(doomed)

    def reap(self) -> int:
        """Close cursors idle for longer than ``idle_timeout``; how many."""
        now = self._clock()
        idle = [
            cid
            for cid, c in self._cursors.items()
            if not c.busy and now - c.last_used > self.idle_timeout
        ]
        for cid in idle:
            cursor = self._cursors.pop(cid)
            cursor.close()
        if idle:
            log.info("closed %d idle cursors", len(idle))
        return len(idle)

    async def run_reaper(self, interval: float = 30.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reap()

    def close_all(self) -> None:
        for cursor in list(self._cursors.values()):
            cursor.close()
        self._cursors.clear()
        for cursor in list(self._live.values()):
            cursor.close()
