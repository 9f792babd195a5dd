"""``ChannelPool.get("a,b,c")``: a FailoverChannel over equivalent servers (the config
servers), against real gRPC health servers: a dead address is skipped, the working one
stays current, errors of ours do not fail over (except NOT_WRITABLE_PRIMARY), a single
address is an ordinary pooled channel, and TLS works through it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import ChannelPool, PooledChannel, TlsSettings
from lauradb.rpc.errors import abort, from_rpc_error
from lauradb.rpc.failover import FailoverChannel, parse_address_list
from lauradb.rpc.server import server_credentials
from tests.integration.harness import HOST, free_port
from tests.integration.tls_pki import Pki, needs_openssl

SERVING = health_pb2.HealthCheckResponse.SERVING
REQUEST = health_pb2.HealthCheckRequest()


class Health(health_pb2_grpc.HealthServicer):
    """Answers SERVING, or fails every call with ``error`` (our trailer)."""

    def __init__(self) -> None:
        self.error: LauraError | None = None
        self.calls = 0

    async def Check(self, request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        self.calls += 1
        if self.error is not None:
            await abort(context, self.error)
        return health_pb2.HealthCheckResponse(status=SERVING)


Servers = Callable[..., Any]


@pytest_asyncio.fixture
async def servers() -> AsyncIterator[Servers]:
    started: list[aio.Server] = []

    async def start(tls: TlsSettings | None = None) -> tuple[str, Health]:
        srv = aio.server()
        health = Health()
        health_pb2_grpc.add_HealthServicer_to_server(health, srv)
        if tls is None:
            port = srv.add_insecure_port(f"{HOST}:0")
        else:
            port = srv.add_secure_port(f"{HOST}:0", server_credentials(tls))
        await srv.start()
        started.append(srv)
        return f"{HOST}:{port}", health

    yield start
    for srv in started:
        await srv.stop(None)


def dead_address() -> str:
    return f"{HOST}:{free_port()}"


def test_parse_address_list() -> None:
    assert parse_address_list("a:1, b:2,a:1") == ["a:1", "b:2"]
    for bad in ("", "a", "a:0", "a:1,", "a:x"):
        with pytest.raises(LauraError):
            parse_address_list(bad)


async def test_single_address_is_a_plain_pooled_channel() -> None:
    pool = ChannelPool()
    try:
        assert isinstance(pool.get(f"{HOST}:1"), PooledChannel)
        assert isinstance(pool.get(f"{HOST}:1,{HOST}:1"), PooledChannel)
    finally:
        await pool.close()


async def test_dead_address_is_skipped_and_the_live_one_stays_current(servers: Servers) -> None:
    live, health = await servers()
    pool = ChannelPool()
    try:
        channel = pool.get(f"{dead_address()},{live}")
        assert isinstance(channel, FailoverChannel)
        stub = health_pb2_grpc.HealthStub(channel)
        assert (await stub.Check(REQUEST, timeout=5)).status == SERVING
        assert channel.current_address == live
        assert (await stub.Check(REQUEST, timeout=5)).status == SERVING
        assert channel.failovers == 1 and health.calls == 2
    finally:
        await pool.close()


async def test_all_dead_raises_unavailable(servers: Servers) -> None:
    pool = ChannelPool()
    try:
        stub = health_pb2_grpc.HealthStub(pool.get(f"{dead_address()},{dead_address()}"))
        with pytest.raises(grpc.RpcError) as info:
            await stub.Check(REQUEST, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await pool.close()


async def test_our_errors_end_the_call_but_not_writable_primary_fails_over(
    servers: Servers,
) -> None:
    first, first_health = await servers()
    second, second_health = await servers()
    pool = ChannelPool()
    try:
        channel = pool.get(f"{first},{second}")
        stub = health_pb2_grpc.HealthStub(channel)
        first_health.error = LauraError(ErrorCode.HOST_UNREACHABLE, "a shard is down")
        with pytest.raises(grpc.RpcError) as info:
            await stub.Check(REQUEST, timeout=5)
        assert from_rpc_error(info.value).code == ErrorCode.HOST_UNREACHABLE
        assert second_health.calls == 0
        first_health.error = LauraError(ErrorCode.NOT_WRITABLE_PRIMARY, "deposed")
        assert (await stub.Check(REQUEST, timeout=5)).status == SERVING
        assert second_health.calls == 1
        assert isinstance(channel, FailoverChannel) and channel.current_address == second
    finally:
        await pool.close()


@needs_openssl
async def test_failover_over_tls(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> None:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    node = TlsSettings(cert=str(pki.node[0]), key=str(pki.node[1]), ca=str(pki.ca[0]),
                       client_auth="require")
    live, _ = await servers(node)
    pool = ChannelPool(node)
    try:
        stub = health_pb2_grpc.HealthStub(pool.get(f"{dead_address()},{live}"))
        assert (await stub.Check(REQUEST, timeout=10)).status == SERVING
    finally:
        await pool.close()
