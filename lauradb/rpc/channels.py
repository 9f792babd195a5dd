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
import os
import time
from dataclasses import dataclass

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


CLIENT_AUTH_MODES = ("none", "optional", "require")
# How often a pool re-checks the certificate files' mtimes (seconds).
TLS_RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class TlsSettings:
    """Paths of this node's certificate and key, the cluster CA, and how the node's
    listeners treat client certificates (``none``, ``optional``, ``require``)."""

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
    if client_auth not in CLIENT_AUTH_MODES:
        raise LauraError(ErrorCode.BAD_VALUE, f"bad --tls-client-auth {client_auth!r}")
    if client_auth != "none" and not ca:
        raise LauraError(ErrorCode.BAD_VALUE, "--tls-client-auth needs --tls-ca")
    settings = TlsSettings(cert=cert, key=key, ca=ca, client_auth=client_auth)
    for path in settings.files():
        read_file(path)  # fail at start, not on the first connection
    return settings


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


class ChannelPool:
    """Channels keyed by ``host:port``; closed together. With TLS, a channel is made
    anew (from the re-read files) once the certificate files changed: new calls use
    the rotated certificate, calls in flight finish on the old channel."""

    def __init__(self, tls: TlsSettings | None = None) -> None:
        self._tls = tls
        self._channels: dict[str, aio.Channel] = {}
        self._stamp: tuple[int, ...] = ()
        self._checked = 0.0
        self._retired: list[aio.Channel] = []

    @property
    def tls(self) -> TlsSettings | None:
        return self._tls if self._tls is not None else current_tls()

    def _check_rotation(self, tls: TlsSettings) -> None:
        now = time.monotonic()
        if now - self._checked < TLS_RECHECK_SECONDS:
            return
        self._checked = now
        stamp = tls.stamp()
        if stamp != self._stamp:
            if self._stamp:
                self._retired.extend(self._channels.values())
                self._channels.clear()
            self._stamp = stamp

    def get(self, address: str) -> aio.Channel:
        tls = self.tls
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
        channels = [*self._channels.values(), *self._retired]
        self._channels.clear()
        self._retired.clear()
        for ch in channels:
            await ch.close(None)
