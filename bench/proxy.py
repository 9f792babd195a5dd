"""The bare pass-through gRPC proxy: the physical limit a router is measured against.

``python -m bench.proxy LISTEN=BACKEND [LISTEN=BACKEND ...]`` serves, for each pair,
a grpc.aio server on ``LISTEN`` (``host:port``) whose one generic handler forwards
every unary-unary method, whatever its name, to ``BACKEND`` over one channel. The
request and response stay raw bytes (no (de)serializer on either side): no parsing,
no routing, no metrics — only the hop (accept, forward, answer). A backend failure
comes back with its status code, details and trailing metadata.

The proxy listens with the router's server options and talks to the backend with the
router's channel options (``lauradb.rpc``), so the only difference between the router
and this proxy is the router's own work. All pairs share one process and one event
loop, like the router's channels to several shards.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from lauradb.rpc.channels import CHANNEL_OPTIONS
from lauradb.rpc.server import SERVER_OPTIONS

# The router's own default deadline for a shard call (router.shard_client).
FORWARD_TIMEOUT = 10.0

Behaviour = Callable[[bytes, aio.ServicerContext[Any, Any]], Awaitable[bytes]]


class Forwarder(grpc.GenericRpcHandler):
    """Forwards any unary-unary method to one backend channel, bytes in, bytes out."""

    def __init__(self, channel: aio.Channel) -> None:
        self.channel = channel
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        handler = self._handlers.get(method)
        if handler is None:
            handler = grpc.unary_unary_rpc_method_handler(self._forwarder(method))
            self._handlers[method] = handler
        return handler

    def _forwarder(self, method: str) -> Behaviour:
        # No (de)serializers: raw bytes both ways.
        call = self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)

        async def forward(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
            try:
                response: bytes = await call(request, timeout=FORWARD_TIMEOUT)
            except aio.AioRpcError as exc:
                context.set_trailing_metadata(exc.trailing_metadata() or ())  # type: ignore[arg-type]
                await context.abort(exc.code(), exc.details() or "")
            return response

        return forward


async def serve(pairs: list[tuple[str, str]], ready: asyncio.Event | None = None) -> None:
    """Serve every ``(listen, backend)`` pair until SIGTERM/SIGINT."""
    servers: list[aio.Server] = []
    channels: list[aio.Channel] = []
    for listen, backend in pairs:
        channel = aio.insecure_channel(backend, options=CHANNEL_OPTIONS)
        server = aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((Forwarder(channel),))
        if server.add_insecure_port(listen) == 0:
            raise RuntimeError(f"cannot listen on {listen}")
        await server.start()
        servers.append(server)
        channels.append(channel)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("proxy ready: " + ", ".join(f"{a} -> {b}" for a, b in pairs), flush=True)
    if ready is not None:
        ready.set()
    await stop.wait()
    for server in servers:
        await server.stop(1.0)
    for channel in channels:
        await channel.close(None)


def parse_pairs(args: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for arg in args:
        listen, sep, backend = arg.partition("=")
        if not sep or not listen or not backend:
            raise SystemExit(f"bad pair {arg!r}: expected LISTEN_HOST:PORT=BACKEND_HOST:PORT")
        pairs.append((listen, backend))
    if not pairs:
        raise SystemExit("usage: python -m bench.proxy LISTEN=BACKEND [LISTEN=BACKEND ...]")
    return pairs


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(parse_pairs(sys.argv[1:] if argv is None else argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
