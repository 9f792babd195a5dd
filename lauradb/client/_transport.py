"""Sending calls to routers: router choice, failover and the retry rule (shared), and
the blocking transport of the sync client (the async one is in ``_async.py``).

The retry rule (pymongo's retryable writes and reads, over gRPC):

* A call goes to the current router. If the request certainly never left (connection
  refused, unknown host), any call moves on to the next router, each router once.
* If the router became unavailable or the connection was reset after the request may
  have been sent, a *retryable* call is sent once more, unchanged (same
  ``request_id``: the router and shards answer a repeated write with its first
  outcome), to the next router. Retryable: reads, inserts, single-document
  updates/deletes, idempotent admin calls; not ``update_many``/``delete_many``.
* Deadlines (``NetworkTimeout``) are not retried: the deadline is the caller's budget.
* Calls pinned to a router (a cursor's GetMore/KillCursors) never move.

A router that failed stays out of favour: the next router becomes the current one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, TypeVar

import grpc

from lauradb.client._common import ClientOptions
from lauradb.client.errors import (
    InvalidOperation,
    LauraDBError,
    from_error_proto,
    from_rpc_error,
    is_retryable,
    never_sent,
)
from lauradb.client.ops import Call, Pause, Program, response_error
from lauradb.cluster import router_ext_pb2, routing_pb2_grpc
from lauradb.rpc.channels import make_sync_channel

__all__ = ["KILL_TIMEOUT", "RetryState", "RouterList", "SyncTransport", "stub_class"]

T = TypeVar("T")

KILL_TIMEOUT = 5.0

_STUBS: dict[str, Any] = {
    "router": routing_pb2_grpc.RouterServiceStub,
    "config": routing_pb2_grpc.ConfigServiceStub,
}


def stub_class(service: str) -> Any:
    return _STUBS[service]


class RouterList:
    """The router addresses and which one is current (thread-safe)."""

    def __init__(self, addresses: tuple[str, ...]) -> None:
        self.addresses = addresses
        self._current = 0
        self._lock = threading.Lock()

    @property
    def current(self) -> str:
        return self.addresses[self._current]

    def failover(self, failed: str) -> str:
        """The router to use after ``failed`` failed (the next one, now current)."""
        with self._lock:
            if self.addresses[self._current] == failed:
                self._current = (self._current + 1) % len(self.addresses)
            return self.addresses[self._current]


class RetryState:
    """The retry rule for one call (see the module docstring)."""

    def __init__(self, call: Call, options: ClientOptions) -> None:
        self.call = call
        self.routers = len(options.addresses)
        self.tried = 0
        self.retried = False
        if call.kind == "read":
            self.allowed = options.retry_reads and call.retryable
        else:
            self.allowed = options.retry_writes and call.retryable

    def should_retry(self, err: LauraDBError) -> bool:
        """Record a failed attempt; True if the call is to be sent again."""
        self.tried += 1
        if self.call.address:
            return False
        if never_sent(err) and self.tried < self.routers:
            return True
        if self.allowed and not self.retried and is_retryable(err):
            self.retried = True
            return True
        return False


def check_response(call: Call, resp: Any, address: str) -> Any:
    call.served_by = address
    if call.check_error:
        err = response_error(resp)
        if err is not None:
            raise from_error_proto(err, write=call.kind == "write", address=address)
    return resp


class SyncTransport:
    """Blocking gRPC channels (one per router, made on first use) and the runner."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self.routers = RouterList(options.addresses)
        # Re-entrant: a cursor's __del__ (KillCursors) may run while this thread holds it.
        self._lock = threading.RLock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, str], Any] = {}
        self._kills: set[Any] = set()
        self._closed = False

    def _stub(self, address: str, service: str) -> Any:
        key = (address, service)
        stub = self._stubs.get(key)
        if stub is not None:
            return stub
        with self._lock:
            if self._closed:
                raise InvalidOperation("the client is closed")
            channel = self._channels.get(address)
            if channel is None:
                channel = make_sync_channel(
                    address, self.options.tls, self.options.channel_options()
                )
                self._channels[address] = channel
            stub = stub_class(service)(channel)
            self._stubs[key] = stub
            return stub

    def invoke(self, call: Call) -> Any:
        state = RetryState(call, self.options)
        address = call.address or self.routers.current
        while True:
            method = getattr(self._stub(address, call.service), call.method)
            try:
                resp = method(
                    call.request,
                    timeout=self.options.timeout if call.timeout is None else call.timeout,
                )
            except grpc.RpcError as exc:
                err = from_rpc_error(exc, write=call.kind == "write", address=address)
                if not state.should_retry(err):
                    raise err from None
                address = self.routers.failover(address)
                continue
            return check_response(call, resp, address)

    def run(self, program: Program[T]) -> T:
        """Run a program: each call it yields is invoked; its error is thrown back in."""
        try:
            call = next(program)
            while True:
                if isinstance(call, Pause):
                    time.sleep(max(0.0, call.seconds))
                    call = program.send(None)
                    continue
                try:
                    resp = self.invoke(call)
                except LauraDBError as err:
                    call = program.throw(err)
                else:
                    call = program.send(resp)
        except StopIteration as stop:
            result: T = stop.value
            return result

    def kill_cursor(self, address: str, cursor_id: str) -> None:
        """KillCursors now (errors ignored: the router times idle cursors out anyway)."""
        req = router_ext_pb2.KillCursorsRequest(cursor_ids=[cursor_id])
        with contextlib.suppress(grpc.RpcError, LauraDBError):
            self._stub(address, "router").KillCursors(req, timeout=KILL_TIMEOUT)

    def kill_cursor_later(self, address: str, cursor_id: str) -> None:
        """KillCursors without waiting (from ``Cursor.__del__``): a gRPC future."""
        try:
            stub = self._stub(address, "router")
            req = router_ext_pb2.KillCursorsRequest(cursor_ids=[cursor_id])
            future = stub.KillCursors.future(req, timeout=KILL_TIMEOUT)
        except Exception:
            return
        self._kills.add(future)
        future.add_done_callback(self._kills.discard)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels, self._channels = list(self._channels.values()), {}
            self._stubs.clear()
        for channel in channels:
            channel.close()
