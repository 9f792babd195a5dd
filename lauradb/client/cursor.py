"""Lazy cursors over a query or an aggregation.

``CursorCore`` is the pure state machine both flavours share: the first call (Query
or Aggregate, sent when the first document is wanted), then GetMore calls pinned to
the router that opened the cursor (router cursors live in one router), until the
router reports no more. ``Cursor`` (sync) and ``AsyncCursor`` wrap it.

A cursor that is closed, leaves a ``with`` block or is dropped while the router still
holds more sends KillCursors (a dropped one without waiting); an exhausted one sends
nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions

from lauradb.client import _common as c
from lauradb.client.errors import InvalidOperation
from lauradb.client.ops import Call
from lauradb.cluster import router_ext_pb2 as ext
from lauradb.cluster import routing_pb2 as r

if TYPE_CHECKING:
    from lauradb.client._async import AsyncTransport
    from lauradb.client._transport import SyncTransport

__all__ = ["AsyncCursor", "Cursor", "CursorCore", "FindSpec"]


class FindSpec:
    """The options of a find, settable until the cursor starts (pymongo's chaining)."""

    def __init__(
        self,
        db: str,
        coll: str,
        filter: Any = None,
        projection: Any = None,
        skip: int = 0,
        limit: int = 0,
        sort: Any = None,
        batch_size: int = 0,
    ) -> None:
        if filter is not None and not isinstance(filter, Mapping):
            raise TypeError(f"filter must be a mapping, not {type(filter).__name__}")
        self.db = db
        self.coll = coll
        self.filter = filter
        self.projection = c.projection_doc(projection)
        self.skip = c.check_int("skip", skip)
        self.limit = c.check_int("limit", limit, non_negative=False)
        self.sort: list[tuple[str, Any]] | None = c.sort_list(sort) if sort is not None else None
        self.batch_size = c.check_int("batch_size", batch_size)
        self.concerns: Any = None  # lauradb.client.concern.Concerns: read preference/concern

    def request(self, codec: CodecOptions[Any]) -> r.QueryRequest:
        req = r.QueryRequest(
            request_id=c.new_request_id(),
            database=self.db,
            collection=self.coll,
            query=c.encode_filter(self.filter, codec),
            limit=self.limit,
            skip=self.skip,
            batch_size=self.batch_size,
        )
        if self.projection is not None:
            req.projection = c.encode(self.projection, codec, "projection")
        sort = c.sort_doc(self.sort)
        if sort is not None:
            req.sort = c.encode_ordered(sort, codec, "sort")
        if self.concerns is not None:
            self.concerns.set_on(req, "read")
        return req


class CursorCore:
    """Buffer, server cursor id and router of one cursor; which call comes next."""

    def __init__(self, first: Call | None, codec: CodecOptions[Any], batch_size: int = 0,
                 limit: int = 0) -> None:
        self.first = first
        self.codec = codec
        self.batch_size = batch_size
        self.limit = abs(limit)
        self.buffer: deque[bytes] = deque()
        self.started = False
        self.cursor_id = ""  # the router's cursor while it has more
        self.address = ""  # the router that holds it
        self.retrieved = 0
        self.batches = 0
        self.closed = False

    def next_call(self) -> Call | None:
        """The call that fetches the next batch, or None when nothing is left."""
        if self.closed:
            return None
        if not self.started:
            assert self.first is not None
            return self.first
        if not self.cursor_id:
            return None
        req = ext.GetMoreRequest(
            cursor_id=self.cursor_id, batch_size=self.batch_size, request_id=c.new_request_id()
        )
        return Call("router", "GetMore", req, address=self.address)

    def absorb(self, call: Call, resp: Any) -> None:
        """A batch arrived (a QueryResponse or an AggregationResponse)."""
        self.started = True
        self.batches += 1
        docs = resp.documents if hasattr(resp, "documents") else resp.results
        self.buffer.extend(docs)
        self.address = call.served_by or call.address
        self.cursor_id = resp.cursor_id if (resp.more_available and resp.cursor_id) else ""

    def failed(self) -> None:
        """A call failed: the cursor is dead (a router cursor is not retried elsewhere)."""
        self.started = True
        self.cursor_id = ""
        self.closed = True

    def pop(self) -> bytes | None:
        """The next document's bytes; None when the buffer is empty. After ``limit``
        documents the cursor is done (its server cursor, if any, is to be killed)."""
        if self.closed or (self.limit and self.retrieved >= self.limit) or not self.buffer:
            return None
        self.retrieved += 1
        return self.buffer.popleft()

    @property
    def done(self) -> bool:
        return self.closed or bool(self.limit and self.retrieved >= self.limit)

    def take_kill(self) -> tuple[str, str] | None:
        """Close; ``(router, cursor_id)`` to kill if the router still holds more."""
        self.closed = True
        self.buffer.clear()
        if not self.cursor_id or not self.address:
            self.cursor_id = ""
            return None
        out = (self.address, self.cursor_id)
        self.cursor_id = ""
        return out

    @property
    def alive(self) -> bool:
        """pymongo's ``alive``: more documents may come."""
        if self.done:
            return False
        return not self.started or bool(self.buffer) or bool(self.cursor_id)


class _CursorBase:
    """What both flavours share: options before the start, state after."""

    def __init__(self, core: CursorCore, spec: FindSpec | None) -> None:
        self._core = core
        self._spec = spec

    def _check_unstarted(self, what: str) -> FindSpec:
        if self._core.started or self._spec is None:
            raise InvalidOperation(f"cannot set {what} once the cursor has been used")
        return self._spec

    def _rebuild(self) -> None:
        spec = self._spec
        assert spec is not None
        first = self._core.first
        assert first is not None
        first.request = spec.request(self._core.codec)
        self._core.batch_size = spec.batch_size
        self._core.limit = abs(spec.limit)

    @property
    def cursor_id(self) -> str | None:
        """The router's cursor id while it holds more documents."""
        return self._core.cursor_id or None

    @property
    def address(self) -> str | None:
        """The router serving this cursor (once started)."""
        return self._core.address or None

    @property
    def alive(self) -> bool:
        return self._core.alive

    @property
    def retrieved(self) -> int:
        """Documents returned so far."""
        return self._core.retrieved

    @property
    def batches(self) -> int:
        """Batches fetched so far (the first call and each GetMore)."""
        return self._core.batches

    def sort(self, key_or_list: Any, direction: Any = None) -> Any:
        spec = self._check_unstarted("sort")
        spec.sort = c.sort_list(key_or_list, direction)
        self._rebuild()
        return self

    def skip(self, skip: int) -> Any:
        spec = self._check_unstarted("skip")
        spec.skip = c.check_int("skip", skip)
        self._rebuild()
        return self

    def limit(self, limit: int) -> Any:
        spec = self._check_unstarted("limit")
        spec.limit = c.check_int("limit", limit, non_negative=False)
        self._rebuild()
        return self

    def batch_size(self, batch_size: int) -> Any:
        spec = self._check_unstarted("batch_size")
        spec.batch_size = c.check_int("batch_size", batch_size)
        self._rebuild()
        return self


class Cursor(_CursorBase):
    """A lazy result of ``find``/``aggregate`` (sync): iterate it, or ``to_list()``."""

    def __init__(self, transport: SyncTransport, core: CursorCore, spec: FindSpec | None = None) -> None:
        super().__init__(core, spec)
        self._transport = transport

    def _fetch(self) -> bool:
        call = self._core.next_call()
        if call is None:
            return False
        try:
            resp = self._transport.invoke(call)
        except BaseException:
            self._core.failed()
            raise
        self._core.absorb(call, resp)
        return True

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        while True:
            data = self._core.pop()
            if data is not None:
                return c.decode(data, self._core.codec)
            if self._core.done:
                self.close()
                raise StopIteration
            if not self._fetch():
                self._core.closed = True
                raise StopIteration

    def next(self) -> Any:
        return self.__next__()

    def to_list(self, length: int | None = None) -> list[Any]:
        """The remaining documents (at most ``length``)."""
        out: list[Any] = []
        for doc in self:
            out.append(doc)
            if length is not None and len(out) >= length:
                break
        return out

    def close(self) -> None:
        """Kill the router's cursor if it still holds documents (exhausted: nothing sent)."""
        kill = self._core.take_kill()
        if kill is not None:
            self._transport.kill_cursor(*kill)

    def __enter__(self) -> Cursor:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            kill = self._core.take_kill()
            if kill is not None:
                self._transport.kill_cursor_later(*kill)
        except Exception:
            pass


class AsyncCursor(_CursorBase):
    """A lazy result of ``find``/``aggregate`` (asyncio): ``async for``, or ``await
    cursor.to_list()``."""

    def __init__(self, transport: AsyncTransport, core: CursorCore, spec: FindSpec | None = None) -> None:
        super().__init__(core, spec)
        self._transport = transport

    async def _fetch(self) -> bool:
        call = self._core.next_call()
        if call is None:
            return False
        try:
            resp = await self._transport.invoke(call)
        except BaseException:
            self._core.failed()
            raise
        self._core.absorb(call, resp)
        return True

    def __aiter__(self) -> AsyncCursor:
        return self

    async def __anext__(self) -> Any:
        while True:
            data = self._core.pop()
            if data is not None:
                return c.decode(data, self._core.codec)
            if self._core.done:
                await self.close()
                raise StopAsyncIteration
            if not await self._fetch():
                self._core.closed = True
                raise StopAsyncIteration

    async def next(self) -> Any:
        return await self.__anext__()

    async def to_list(self, length: int | None = None) -> list[Any]:
        out: list[Any] = []
        async for doc in self:
            out.append(doc)
            if length is not None and len(out) >= length:
                break
        return out

    async def close(self) -> None:
        kill = self._core.take_kill()
        if kill is not None:
            await self._transport.kill_cursor(*kill)

    async def __aenter__(self) -> AsyncCursor:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __del__(self) -> None:
        try:
            kill = self._core.take_kill()
            if kill is not None:
                self._transport.kill_cursor_later(*kill)
        except Exception:
            pass


def aggregate_call(
    db: str,
    coll: str,
    pipeline: Sequence[Mapping[str, Any]],
    *,
    batch_size: int,
    allow_disk_use: bool,
    max_memory_bytes: int,
    codec: CodecOptions[Any],
) -> Call:
    if isinstance(pipeline, Mapping) or not isinstance(pipeline, Sequence):
        raise TypeError("pipeline must be a list of stages")
    req = r.AggregationRequest(
        request_id=c.new_request_id(),
        database=db,
        collection=coll,
        pipeline=[c.encode(stage, codec, "pipeline stage") for stage in pipeline],
        batch_size=c.check_int("batch_size", batch_size),
        allow_disk_use=bool(allow_disk_use),
        max_memory_bytes=c.check_int("max_memory_bytes", max_memory_bytes),
    )
    # $out/$merge write: not retried (a repeated $out is harmless, a $merge may not be).
    writes = any(isinstance(s, Mapping) and ("$out" in s or "$merge" in s) for s in pipeline)
    return Call("router", "Aggregate", req, "read", retryable=not writes)


def find_call(spec: FindSpec, codec: CodecOptions[Any]) -> Call:
    return Call("router", "Query", spec.request(codec))
