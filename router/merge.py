"""Merging shard result streams into one, lazily.

Each targeted shard contributes a ``ShardStream``: the documents of its current
batch (raw BSON bytes) and the shard cursor to pull more from. ``MergedStream``
hands out router batches:

* sorted: a k-way merge with a heap holding the head of every stream, keyed by the
  byte sort keys of ``lauradb.query.sort.compile_sort`` (ties: stream order, then
  arrival order, so the merge is stable); a stream whose buffer runs dry is
  refilled (one shard GetMore) before the next document is chosen;
* unsorted: streams in order, refilling all dry streams concurrently.

``skip`` and ``limit`` are applied here (the shards got ``limit = skip + limit`` and
no skip), and ``transform`` (e.g. the router-side projection that strips sort keys
the user did not ask for) is applied to every document handed out. At most one
shard batch per stream is buffered: never the whole result.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bson.raw_bson import RawBSONDocument

from lauradb.errors import ErrorCode, LauraError

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "FetchFn",
    "FetchResult",
    "MergedStream",
    "ShardStream",
    "raw_sort_key",
]

DEFAULT_BATCH_BYTES = 16 * 1024 * 1024


@dataclass
class FetchResult:
    documents: list[bytes]
    cursor_id: str
    examined: int = 0


@dataclass
class ShardStream:
    """One shard's share of a result: buffered documents plus its open cursor."""

    shard_id: str
    address: str
    buffer: deque[bytes] = field(default_factory=deque)
    cursor_id: str = ""

    @classmethod
    def of(cls, shard_id: str, address: str, documents: Iterable[bytes], cursor_id: str) -> ShardStream:
        return cls(shard_id, address, deque(documents), cursor_id)

    @property
    def done(self) -> bool:
        return not self.buffer and not self.cursor_id

    @property
    def needs_fetch(self) -> bool:
        return not self.buffer and bool(self.cursor_id)


FetchFn = Callable[[ShardStream, int], Awaitable[FetchResult]]
SortKey = Callable[[Mapping[str, Any]], bytes]
Transform = Callable[[bytes], bytes]


def raw_sort_key(sort_key: SortKey) -> Callable[[bytes], bytes]:
    """A sort key over raw BSON bytes (decodes lazily with RawBSONDocument)."""

    def key(data: bytes) -> bytes:
        try:
            return sort_key(RawBSONDocument(data))
        except LauraError:
            raise
        except Exception as exc:
            raise LauraError(ErrorCode.INVALID_BSON, f"shard returned invalid BSON: {exc}") from None

    return key


class MergedStream:
    """Router-side merge of shard streams with skip/limit; pulls shard batches lazily."""

    def __init__(
        self,
        streams: list[ShardStream],
        fetch: FetchFn,
        *,
        sort_key: Callable[[bytes], bytes] | None = None,
        skip: int = 0,
        limit: int = 0,
        transform: Transform | None = None,
        fetch_batch: int = 0,
    ) -> None:
        self.streams = streams
        self._fetch = fetch
        self._key = sort_key
        self._to_skip = max(skip, 0)
        self._remaining = limit if limit > 0 else -1  # -1: unlimited
        self._transform = transform
        self.fetch_batch = fetch_batch
        self.examined = 0
        self._heap: list[tuple[bytes, int]] = []
        self._in_heap: set[int] = set()
        self._closed = False
        self._pending: bytes | None = None

    # ------------------------------------------------------------------ state

    @property
    def exhausted(self) -> bool:
        if self._closed or self._remaining == 0:
            return True
        return self._pending is None and all(s.done for s in self.streams)

    def open_cursors(self) -> list[tuple[str, str, str]]:
        """``(shard_id, address, cursor_id)`` of shard cursors still open."""
        return [(s.shard_id, s.address, s.cursor_id) for s in self.streams if s.cursor_id]

    def take_examined(self) -> int:
        n, self.examined = self.examined, 0
        return n

    # ------------------------------------------------------------------ fetching

    async def _refill(self, streams: list[ShardStream], want: int) -> None:
        if not streams:
            return
        size = max(want, self.fetch_batch, 1)
        if len(streams) == 1:
            results = [await self._fetch(streams[0], size)]
        else:
            results = list(await asyncio.gather(*(self._fetch(s, size) for s in streams)))
        for s, r in zip(streams, results, strict=True):
            s.buffer.extend(r.documents)
            s.cursor_id = r.cursor_id
            self.examined += r.examined

    # ------------------------------------------------------------------ batches

    async def next_batch(self, max_docs: int, max_bytes: int = DEFAULT_BATCH_BYTES) -> list[bytes]:
        """Up to ``max_docs`` documents (and about ``max_bytes``); [] once exhausted."""
        out: list[bytes] = []
        size = 0
        max_docs = max(max_docs, 1)
        while len(out) < max_docs and self._remaining != 0 and not self._closed:
            if self._pending is not None:
                doc, self._pending = self._pending, None
            else:
                want = max_docs - len(out) + self._to_skip
                if self._remaining > 0:
                    want = min(want, self._remaining + self._to_skip)
                got = await (
                    self._next_sorted(want) if self._key is not None else self._next_any(want)
                )
                if got is None:
                    break
                if self._to_skip:
                    self._to_skip -= 1
                    continue
                doc = got if self._transform is None else self._transform(got)
            if out and size + len(doc) > max_bytes:
                self._pending = doc  # first of the next batch
                break
            out.append(doc)
            size += len(doc)
            if self._remaining > 0:
                self._remaining -= 1
        return out

    async def _next_any(self, want: int) -> bytes | None:
        while True:
            for s in self.streams:
                if s.buffer:
                    return s.buffer.popleft()
            dry = [s for s in self.streams if s.needs_fetch]
            if not dry:
                return None
            await self._refill(dry, want)

    async def _next_sorted(self, want: int) -> bytes | None:
        assert self._key is not None
        while True:
            dry = [
                s for i, s in enumerate(self.streams) if i not in self._in_heap and s.needs_fetch
            ]
            if dry:
                await self._refill(dry, want)
            for i, s in enumerate(self.streams):
                if i not in self._in_heap and s.buffer:
                    heapq.heappush(self._heap, (self._key(s.buffer[0]), i))
                    self._in_heap.add(i)
            if not self._heap:
                if any(s.needs_fetch for s in self.streams):
                    continue
                return None
            _, i = heapq.heappop(self._heap)
            self._in_heap.discard(i)
            s = self.streams[i]
            doc = s.buffer.popleft()
            if s.buffer:
                heapq.heappush(self._heap, (self._key(s.buffer[0]), i))
                self._in_heap.add(i)
            return doc

    # ------------------------------------------------------------------ closing

    def close(self) -> list[tuple[str, str, str]]:
        """Stop; returns the shard cursors the caller must kill."""
        open_ = self.open_cursors()
        self._closed = True
        self._pending = None
        for s in self.streams:
            s.buffer.clear()
            s.cursor_id = ""
        self._heap.clear()
        self._in_heap.clear()
        return open_
