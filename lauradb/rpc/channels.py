"""Client channels: one shared grpc.aio channel per address, with sane limits."""

from __future__ import annotations

from grpc import aio

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


class ChannelPool:
    """Channels keyed by ``host:port``; closed together."""

    def __init__(self) -> None:
        self._channels: dict[str, aio.Channel] = {}

    def get(self, address: str) -> aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = ch
        return ch

    async def drop(self, address: str) -> None:
        ch = self._channels.pop(address, None)
        if ch is not None:
            await ch.close(None)

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        for ch in channels:
            await ch.close(None)
