"""Client channels: one shared grpc.aio channel per address, with sane limits, over
plaintext or (mutual) TLS.

TLS settings come from the common ``--tls-*`` flags. ``run_process`` calls
``set_current_tls`` once at process start; ``ChannelPool`` and ``RpcServer`` use the
current settings unless given explicit ones, so every cluster-member channel and
listener of a process uses the same certificates without threading them through each
app. Without the flags the settings are ``None`` and everything is plaintext.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import grpc
from grpc import aio

from lauradb.errors import ErrorCode, LauraError

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly after a peer restarts (defaults back off up to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.enable_retries", 0),
]


# ``none``: no client certificate asked for; ``require``: a CA-signed one is required.
# There is no ``optional`` (ask for one, accept a client without): gRPC Python's server
# credentials can only require a client certificate or not ask for one at all.
CLIENT_AUTH_MODES = ("none", "require")
_OPTIONAL_WHY = (
    "'optional' is not supported: gRPC Python cannot ask for a client certificate "
    "without requiring it; use none or require"
)
OPTIONAL_NOT_SUPPORTED = f"--tls-client-auth {_OPTIONAL_WHY}"
# How often a pool re-checks the certificate files' mtimes (seconds).
TLS_RECHECK_SECONDS = 1.0
# How long a pool keeps a channel retired by a certificate rotation open, so that the
# calls in flight on it finish (every cluster call has a shorter deadline).
RETIRED_CHANNEL_GRACE = 60.0
# Environment variables of the TLS flags (as ``parse_with_sources`` names them); the
# admin CLI and the add-shards Job read them too.
TLS_ENV = {"cert": "LAURADB_TLS_CERT", "key": "LAURADB_TLS_KEY", "ca": "LAURADB_TLS_CA"}


def client_auth_mode(value: str) -> str:
    """argparse ``type`` of ``--tls-client-auth``: ``none`` or ``require``."""
    mode = value.strip().lower()
    if mode == "optional":
        raise argparse.ArgumentTypeError(_OPTIONAL_WHY)
    if mode not in CLIENT_AUTH_MODES:
        raise argparse.ArgumentTypeError(
            f"invalid choice {value!r} (choose from {', '.join(CLIENT_AUTH_MODES)})"
        )
    return mode


@dataclass(frozen=True)
class TlsSettings:
    """Paths of this node's certificate and key, the cluster CA, and how the node's
    listeners treat client certificates (``none`` or ``require``)."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    client_auth: str = "none"

    def files(self) -> tuple[str, ...]:
        return tuple(p for p in (self.cert, self.key, self.ca) if p)

    def stamp(self) -> tuple[int, ...]:
        """mtimes (ns) of the files: changes when a certificate is rotated."""
        out: list[int] = []
        for path in self.files():
            try:
                out.append(os.stat(path).st_mtime_ns)
            except OSError:
                out.append(-1)
        return tuple(out)


def read_file(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise LauraError(
            ErrorCode.BAD_VALUE, f"cannot read TLS file {path}: {exc.strerror or exc}"
        ) from None


def tls_from_args(args: argparse.Namespace) -> TlsSettings | None:
    """The ``--tls-*`` flags as settings; None when TLS is off (no flag given)."""
    cert = getattr(args, "tls_cert", None)
    key = getattr(args, "tls_key", None)
    ca = getattr(args, "tls_ca", None)
    client_auth = getattr(args, "tls_client_auth", None) or "none"
    if not (cert or key or ca):
        if client_auth != "none":
            raise LauraError(ErrorCode.BAD_VALUE, "--tls-client-auth needs --tls-cert/--tls-key")
        return None
    if bool(cert) != bool(key):
        raise LauraError(ErrorCode.BAD_VALUE, "--tls-cert and --tls-key go together")
    if client_auth == "optional":
        raise LauraError(ErrorCode.BAD_VALUE, OPTIONAL_NOT_SUPPORTED)
    if client_auth not in CLIENT_AUTH_MODES:
        raise LauraError(ErrorCode.BAD_VALUE, f"bad --tls-client-auth {client_auth!r}")
    if client_auth != "none" and not ca:
        raise LauraError(ErrorCode.BAD_VALUE, "--tls-client-auth needs --tls-ca")
    settings = TlsSettings(cert=cert, key=key, ca=ca, client_auth=client_auth)
    for path in settings.files():
        read_file(path)  # fail at start, not on the first connection
    return settings


def tls_from_env(environ: Mapping[str, str] | None = None) -> TlsSettings | None:
    """Client settings from LAURADB_TLS_CERT / _KEY / _CA (empty ones ignored); None
    when none is set. For clients without flags (the add-shards Job)."""
    env = os.environ if environ is None else environ
    values = {f"tls_{name}": env.get(var) or None for name, var in TLS_ENV.items()}
    return tls_from_args(argparse.Namespace(**values, tls_client_auth="none"))


_current_tls: TlsSettings | None = None


def set_current_tls(tls: TlsSettings | None) -> None:
    """Set once at process start (``run_process``) from the ``--tls-*`` flags."""
    global _current_tls
    _current_tls = tls


def current_tls() -> TlsSettings | None:
    return _current_tls


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials:
    """Trust the cluster CA (system roots without one); present this node's own
    certificate as the client certificate (mutual TLS). Files are read now."""
    return grpc.ssl_channel_credentials(
        root_certificates=read_file(tls.ca),
        private_key=read_file(tls.key),
        certificate_chain=read_file(tls.cert),
    )


def make_channel(
    address: str,
    tls: TlsSettings | None,
    options: list[tuple[str, int | str]] | None = None,
) -> aio.Channel:
    """THE way to open a channel to another cluster member: plaintext when ``tls`` is
    None, else TLS with the node's certificate as client certificate."""
    opts = CHANNEL_OPTIONS if options is None else options
    if tls is None:
        return aio.insecure_channel(address, options=opts)
    return aio.secure_channel(address, channel_credentials(tls), options=opts)


def make_sync_channel(
    address: str,
    tls: TlsSettings | None,
    options: list[tuple[str, int | str]] | None = None,
) -> grpc.Channel:
    """``make_channel`` for synchronous clients (the admin CLI, the add-shards Job)."""
    opts = CHANNEL_OPTIONS if options is None else options
    if tls is None:
        return grpc.insecure_channel(address, options=opts)
    return grpc.secure_channel(address, channel_credentials(tls), options=opts)


class _RoutedCallable:
    """A multicallable of a ``PooledChannel``: each call goes to the pool's current
    channel for the address (re-bound after a certificate rotation)."""

    def __init__(self, handle: PooledChannel, kind: str, method: str, kwargs: dict[str, Any]):
        self._handle = handle
        self._kind = kind
        self._method = method
        self._kwargs = kwargs
        self._bound: tuple[aio.Channel, Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        handle = self._handle
        current = handle._pool.channel(handle.address)  # every shard call: no extra hop
        bound = self._bound
        if bound is None or bound[0] is not current:
            factory = getattr(current, self._kind)
            bound = (current, factory(self._method, **self._kwargs))
            self._bound = bound
        return bound[1](*args, **kwargs)


class PooledChannel(aio.Channel):
    """What ``ChannelPool.get`` returns: one stable object per address whose calls use
    the pool's current channel to it. Stubs made from it once (a client kept for the
    process's life) follow certificate rotations like stubs made per call, and never
    hold on to a retired channel the pool closes."""

    def __init__(self, pool: ChannelPool, address: str) -> None:
        # No super().__init__(): this object owns no gRPC channel of its own.
        self._pool = pool
        self.address = address

    def current(self) -> aio.Channel:
        return self._pool.channel(self.address)

    def _routed(self, kind: str, method: str, kwargs: dict[str, Any]) -> Any:
        return _RoutedCallable(self, kind, method, kwargs)

    def unary_unary(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        **kwargs: Any,
    ) -> aio.UnaryUnaryMultiCallable:
        return cast(aio.UnaryUnaryMultiCallable, self._routed("unary_unary", method, {
            "request_serializer": request_serializer,
            "response_deserializer": response_deserializer, **kwargs}))

    def unary_stream(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        **kwargs: Any,
    ) -> aio.UnaryStreamMultiCallable:
        return cast(aio.UnaryStreamMultiCallable, self._routed("unary_stream", method, {
            "request_serializer": request_serializer,
            "response_deserializer": response_deserializer, **kwargs}))

    def stream_unary(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        **kwargs: Any,
    ) -> aio.StreamUnaryMultiCallable:
        return cast(aio.StreamUnaryMultiCallable, self._routed("stream_unary", method, {
            "request_serializer": request_serializer,
            "response_deserializer": response_deserializer, **kwargs}))

    def stream_stream(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        **kwargs: Any,
    ) -> aio.StreamStreamMultiCallable:
        return cast(aio.StreamStreamMultiCallable, self._routed("stream_stream", method, {
            "request_serializer": request_serializer,
            "response_deserializer": response_deserializer, **kwargs}))

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.current().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        """Close the pool's channel to this address (the next call opens a new one)."""
        await self._pool.drop(self.address)

    async def __aenter__(self) -> PooledChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(None)


class ChannelPool:
    """Channels keyed by ``host:port``; closed together. ``get`` returns a stable
    ``PooledChannel`` per address. With TLS, a channel is made anew (from the re-read
    files) once the certificate files changed: new calls use the rotated certificate,
    calls in flight finish on the old channel, which is closed ``retire_grace`` seconds
    later (or when the pool closes)."""

    def __init__(
        self,
        tls: TlsSettings | None = None,
        *,
        recheck: float = TLS_RECHECK_SECONDS,
        retire_grace: float = RETIRED_CHANNEL_GRACE,
    ) -> None:
        self._tls = tls
        self._recheck = recheck
        self._retire_grace = retire_grace
        self._handles: dict[str, aio.Channel] = {}
        self._channels: dict[str, aio.Channel] = {}
        self._stamp: tuple[int, ...] = ()
        self._checked: float | None = None
        # retired channel -> its pending close (None: no event loop to schedule it on)
        self._retired: dict[aio.Channel, asyncio.TimerHandle | None] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def tls(self) -> TlsSettings | None:
        return self._tls if self._tls is not None else current_tls()

    @property
    def retired(self) -> int:
        """Channels retired by a rotation and not closed yet."""
        return len(self._retired)

    def _check_rotation(self, tls: TlsSettings) -> None:
        now = time.monotonic()
        if self._checked is not None and now - self._checked < self._recheck:
            return
        self._checked = now
        stamp = tls.stamp()
        if stamp != self._stamp:
            if self._stamp:
                for ch in self._channels.values():
                    self._retire(ch)
                self._channels.clear()
            self._stamp = stamp

    def _retire(self, ch: aio.Channel) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to close it on later: closed with the pool
            self._retired[ch] = None
            return
        self._retired[ch] = loop.call_later(self._retire_grace, self._close_retired, ch)

    def _close_retired(self, ch: aio.Channel) -> None:
        if self._retired.pop(ch, None) is None:
            return
        task = asyncio.ensure_future(ch.close(None))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def get(self, address: str) -> aio.Channel:
        """The pool's channel to ``address`` (the same object every time). A list
        ``host:port,host:port,...`` (equivalent servers: the config servers) gives a
        ``FailoverChannel`` over them (``lauradb.rpc.failover``)."""
        handle = self._handles.get(address)
        if handle is None:
            if "," in address:
                from lauradb.rpc.failover import FailoverChannel, parse_address_list

                addresses = parse_address_list(address)
                if len(addresses) > 1:
                    failover = FailoverChannel(self, addresses)
                    self._handles[address] = failover
                    return failover
                return self.get(addresses[0])
            handle = self._handles[address] = PooledChannel(self, address)
        return handle

    def channel(self, address: str) -> aio.Channel:
        """The current underlying channel to ``address`` (made anew after a rotation)."""
        tls = self._tls if self._tls is not None else _current_tls
        if tls is not None:
            self._check_rotation(tls)
        ch = self._channels.get(address)
        if ch is None:
            ch = make_channel(address, tls)
            self._channels[address] = ch
        return ch

    async def drop(self, address: str) -> None:
        ch = self._channels.pop(address, None)
        if ch is not None:
            await ch.close(None)

    async def close(self) -> None:
        for handle in self._retired.values():
            if handle is not None:
                handle.cancel()
        channels = [*self._channels.values(), *self._retired]
        self._channels.clear()
        self._retired.clear()
        for ch in channels:
            await ch.close(None)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
