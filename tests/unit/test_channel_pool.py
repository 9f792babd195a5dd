"""ChannelPool and certificate rotation, against a real TLS gRPC server: after the
certificate files change, new calls go over a new channel (the rotated certificate);
a call in flight finishes on the retired channel, which the pool closes after a grace
period; a stub made once from ``pool.get`` keeps working across rotations."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from lauradb.rpc.channels import ChannelPool, TlsSettings
from lauradb.rpc.server import server_credentials
from tests.integration.harness import HOST, eventually
from tests.integration.tls_pki import Pki, needs_openssl

pytestmark = [needs_openssl]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def client_tls(pki: Pki, tmp_path: Path) -> TlsSettings:
    """The pool's settings: copies of the node certificate the test may 'rotate'."""
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    shutil.copy(pki.node[0], cert)
    shutil.copy(pki.node[1], key)
    return TlsSettings(cert=str(cert), key=str(key), ca=str(pki.ca[0]))


@pytest_asyncio.fixture
async def server(pki: Pki) -> AsyncIterator[tuple[str, health_aio.HealthServicer]]:
    """A gRPC health server requiring client certificates of the CA."""
    node = TlsSettings(cert=str(pki.node[0]), key=str(pki.node[1]), ca=str(pki.ca[0]),
                       client_auth="require")
    srv = aio.server()
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, srv)
    port = srv.add_secure_port(f"{HOST}:0", server_credentials(node))
    await health.set("", SERVING)
    await srv.start()
    try:
        yield f"{HOST}:{port}", health
    finally:
        await srv.stop(None)


def rotate(tls: TlsSettings) -> None:
    """'New' certificate files: their mtimes change."""
    assert tls.cert is not None
    stat = os.stat(tls.cert)
    os.utime(tls.cert, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def closed(channel: aio.Channel) -> bool:
    return channel.get_state() == grpc.ChannelConnectivity.SHUTDOWN


async def status(stub: health_pb2_grpc.HealthStub) -> int:
    resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(resp.status)


async def test_retired_channel_is_closed_after_the_grace_period(
    server: tuple[str, health_aio.HealthServicer], client_tls: TlsSettings
) -> None:
    address, _ = server
    pool = ChannelPool(client_tls, recheck=0.0, retire_grace=0.2)
    try:
        handle = pool.get(address)
        assert pool.get(address) is handle  # one stable object per address
        stub = health_pb2_grpc.HealthStub(handle)  # made once, kept (like a config client)
        assert await status(stub) == SERVING
        old = pool.channel(address)
        assert pool.channel(address) is old and pool.retired == 0

        rotate(client_tls)
        assert await status(stub) == SERVING  # a new channel, the re-read certificate
        new = pool.channel(address)
        assert new is not old and pool.retired == 1

        async def old_closed() -> bool:
            return closed(old) and pool.retired == 0

        await eventually(old_closed, timeout=10, what="retired channel closed")
        assert not closed(new)
        assert await status(stub) == SERVING  # the long-lived stub still works
        assert await status(health_pb2_grpc.HealthStub(pool.get(address))) == SERVING
    finally:
        await pool.close()
    assert closed(new)


async def test_call_in_flight_finishes_on_the_retired_channel(
    server: tuple[str, health_aio.HealthServicer], client_tls: TlsSettings
) -> None:
    address, health = server
    pool = ChannelPool(client_tls, recheck=0.0, retire_grace=3600.0)
    stub = health_pb2_grpc.HealthStub(pool.get(address))
    watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=30)
    assert (await watch.read()).status == SERVING  # a stream open on the first channel
    old = pool.channel(address)

    rotate(client_tls)
    assert await status(stub) == SERVING
    assert pool.channel(address) is not old and pool.retired == 1
    await health.set("", NOT_SERVING)
    assert (await watch.read()).status == NOT_SERVING  # still streaming on the old one
    assert not closed(old)

    await pool.close()  # before the grace ends: closes the retired channel too
    assert closed(old) and pool.retired == 0
    assert watch.done()
