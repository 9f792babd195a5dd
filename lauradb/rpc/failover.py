"""One channel over a list of equivalent servers (the config servers): a call goes to
the current one and moves on to the next when that one cannot answer.

``ChannelPool.get("h1:p1,h2:p2,h3:p3")`` returns a ``FailoverChannel``; stubs made on
it work unchanged (``await stub.Method(req, timeout=...)``), so every config client
(router, shard membership, migrations, movePrimary, index and shard-map fetchers) fails
over without code of its own, over TLS or plaintext as the pool's channels are. A
single address is an ordinary pooled channel: behaviour exactly as before.

Rules of a unary call (the deadline given covers every attempt; each attempt gets what
is left of it):

- the current address first; an answer (or any error of ours: a status carrying the
  ``lauradb-error-bin`` trailer) ends the call, and this address stays current;
- UNAVAILABLE without our trailer (connection refused or reset, a server starting or
  stopping) or our NOT_WRITABLE_PRIMARY (a config server that just lost the
  leadership refused a metadata change): the next address becomes current and the call
  is tried there, each address at most once per call;
- DEADLINE_EXCEEDED without our trailer: no time is left to try another, so the error
  is returned, but the next address becomes current for the following calls (a server
  that hangs is given up on after one call).

Streaming calls go to the current address (no failover inside a stream).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc import aio

from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import ERROR_TRAILER, from_rpc_error

if TYPE_CHECKING:
    from lauradb.rpc.channels import ChannelPool

MIN_ATTEMPT_S = 0.05  # an attempt with less time than this left is not made


def parse_address_list(text: str) -> list[str]:
    """``host:port[,host:port...]`` -> the addresses (BAD_VALUE when malformed)."""
    out: list[str] = []
    for part in text.split(","):
        address = part.strip()
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise LauraError(
                ErrorCode.BAD_VALUE, f"expected HOST:PORT[,HOST:PORT...], got {text!r}"
            )
        if address not in out:
            out.append(address)
    if not out:
        raise LauraError(ErrorCode.BAD_VALUE, "no address given")
    return out


def _has_trailer(exc: grpc.RpcError) -> bool:
    try:
        trailers: Any = exc.trailing_metadata()  # type: ignore[attr-defined]
    except Exception:
        return False
    return any(item[0] == ERROR_TRAILER for item in trailers or ())


def _status(exc: grpc.RpcError) -> grpc.StatusCode | None:
    try:
        code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    except Exception:
        return None
    return code


def fails_over(exc: grpc.RpcError) -> bool:
    """Whether another server should be tried after this error."""
    if _has_trailer(exc):
        return from_rpc_error(exc).code == ErrorCode.NOT_WRITABLE_PRIMARY
    return _status(exc) == grpc.StatusCode.UNAVAILABLE


class _FailoverUnary:
    def __init__(self, owner: FailoverChannel, method: str, kwargs: dict[str, Any]) -> None:
        self._owner = owner
        self._method = method
        self._kwargs = kwargs
        self._bound: dict[str, Any] = {}

    def _callable(self, address: str) -> Any:
        fn = self._bound.get(address)
        if fn is None:
            channel = self._owner.pool.get(address)
            fn = self._bound[address] = channel.unary_unary(self._method, **self._kwargs)
        return fn

    def __call__(self, request: Any, *, timeout: float | None = None, **kwargs: Any) -> Any:
        return self._invoke(request, timeout, kwargs)

    async def _invoke(self, request: Any, timeout: float | None, kwargs: dict[str, Any]) -> Any:
        owner = self._owner
        addresses = owner.addresses
        deadline = None if timeout is None else time.monotonic() + timeout
        first = owner.current
        last: grpc.RpcError | None = None
        for step in range(len(addresses)):
            index = (first + step) % len(addresses)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left < MIN_ATTEMPT_S and last is not None:
                break
            try:
                resp = await self._callable(addresses[index])(
                    request, timeout=left if left is None else max(left, MIN_ATTEMPT_S),
                    **kwargs,
                )
            except grpc.RpcError as exc:
                if not _has_trailer(exc) and _status(exc) == grpc.StatusCode.DEADLINE_EXCEEDED:
                    owner.moved_from(index)
                    raise
                if not fails_over(exc):
                    raise
                owner.moved_from(index)
                last = exc
                continue
            owner.current = index
            return resp
        assert last is not None
        raise last


class FailoverChannel(aio.Channel):
    """See the module doc. ``addresses``: two or more ``host:port``."""

    def __init__(self, pool: ChannelPool, addresses: Sequence[str]) -> None:
        # No super().__init__(): the pool owns the channels.
        self.pool = pool
        self.addresses = tuple(addresses)
        self.address = ",".join(self.addresses)
        self.current = 0
        self.failovers = 0

    def moved_from(self, index: int) -> None:
        """``addresses[index]`` failed: the next one becomes current (unless another
        call moved on already)."""
        if self.current == index:
            self.current = (index + 1) % len(self.addresses)
            self.failovers += 1

    @property
    def current_address(self) -> str:
        return self.addresses[self.current]

    def _current_channel(self) -> aio.Channel:
        return self.pool.get(self.current_address)

    def unary_unary(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        **kwargs: Any,
    ) -> aio.UnaryUnaryMultiCallable:
        return cast(aio.UnaryUnaryMultiCallable, _FailoverUnary(self, method, {
            "request_serializer": request_serializer,
            "response_deserializer": response_deserializer, **kwargs}))

    def unary_stream(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        **kwargs: Any,
    ) -> aio.UnaryStreamMultiCallable:
        return self._current_channel().unary_stream(
            method, request_serializer=request_serializer,
            response_deserializer=response_deserializer, **kwargs,
        )

    def stream_unary(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        **kwargs: Any,
    ) -> aio.StreamUnaryMultiCallable:
        return self._current_channel().stream_unary(
            method, request_serializer=request_serializer,
            response_deserializer=response_deserializer, **kwargs,
        )

    def stream_stream(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        **kwargs: Any,
    ) -> aio.StreamStreamMultiCallable:
        return self._current_channel().stream_stream(
            method, request_serializer=request_serializer,
            response_deserializer=response_deserializer, **kwargs,
        )

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._current_channel().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._current_channel().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._current_channel().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        """Close the pool's channels to every address (the next call opens new ones)."""
        for address in self.addresses:
            await self.pool.drop(address)

    async def __aenter__(self) -> FailoverChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(None)
