"""TLS and mutual TLS on listeners and cluster channels (``--tls-*`` flags), certificate
rotation without restart, the plaintext health-only port (``--health-port``) and the
admin CLI over mutual TLS. Certificates are made with the ``openssl`` CLI
(tests/integration/tls_pki.py)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lauradb.cli.main import main as cli_main
from lauradb.cluster import routing_pb2, routing_pb2_grpc
from lauradb.errors import LauraError
from lauradb.rpc.channels import TlsSettings, make_channel, tls_from_args
from lauradb.rpc.server import LIVENESS_SERVICE, wait_for_health
from tests.integration.harness import HOST, Proc, free_port, insert_many, query_all
from tests.integration.tls_pki import Pki, make_leaf, needs_openssl

pytestmark = [pytest.mark.integration, needs_openssl]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


async def healthy(proc: Proc, tls: TlsSettings, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        assert proc.alive, f"{proc.name} exited\n{proc.log_tail()}"
        try:
            await wait_for_health(proc.address, timeout=0.5, tls=tls)
            return
        except TimeoutError:
            assert loop.time() < deadline, f"{proc.name} not healthy\n{proc.log_tail()}"


async def check(address: str, channel: aio.Channel, service: str = "") -> int:
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=3.0)
        return int(resp.status)


def peer_serial(address: str, cafile: Path) -> int:
    """A brand-new TLS connection (stdlib ssl, ALPN h2): the server certificate's serial."""
    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            return int(tls.getpeercert()["serialNumber"], 16)  # type: ignore[index, arg-type]


def config_proc(base: Path, name: str, extra: list[str]) -> Proc:
    port = free_port()
    return Proc(
        name, "config_server",
        ["--host", HOST, "--port", str(port), "--data-dir", str(base / name), *extra],
        address=f"{HOST}:{port}", data_dir=base / name, log_path=base / f"{name}.log",
    )


@pytest.fixture
async def tls_config(pki: Pki, tmp_path: Path) -> AsyncIterator[tuple[Proc, Path, Path]]:
    """A config server whose node cert/key are copies the test may overwrite."""
    cert, key = tmp_path / "srv.pem", tmp_path / "srv.key"
    shutil.copy(pki.node[0], cert)
    shutil.copy(pki.node[1], key)
    flags = [
        "--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(pki.ca[0]),
        "--tls-client-auth", "none",  # a client certificate is not asked for
    ]
    proc = config_proc(tmp_path, "config", flags)
    proc.start()
    try:
        await healthy(proc, pki.client_tls(with_cert=False))
        yield proc, cert, key
    finally:
        proc.terminate()
        proc.forget()


def test_tls_flags_are_checked(pki: Pki, tmp_path: Path) -> None:
    def settings(**kw: str | None) -> TlsSettings | None:
        base = {"tls_cert": None, "tls_key": None, "tls_ca": None, "tls_client_auth": "none"}
        return tls_from_args(argparse.Namespace(**{**base, **kw}))

    assert settings() is None  # no flags: plaintext
    node = {"tls_cert": str(pki.node[0]), "tls_key": str(pki.node[1])}
    assert settings(**node) == TlsSettings(cert=str(pki.node[0]), key=str(pki.node[1]))
    for bad in (
        {"tls_cert": str(pki.node[0])},  # no key
        {**node, "tls_client_auth": "require"},  # no CA to verify clients with
        {**node, "tls_ca": str(tmp_path / "missing.pem")},
        {"tls_client_auth": "require"},  # no certificate
    ):
        with pytest.raises(LauraError):
            settings(**bad)
    # 'optional' is gone: gRPC Python cannot ask for a client certificate without
    # requiring it, so it would silently mean 'none'.
    with pytest.raises(LauraError, match="'optional' is not supported"):
        settings(**node, tls_ca=str(pki.ca[0]), tls_client_auth="optional")


async def test_tls_listener_trust_and_rotation(
    pki: Pki, tls_config: tuple[Proc, Path, Path], tmp_path: Path
) -> None:
    proc, cert, key = tls_config
    serving = health_pb2.HealthCheckResponse.SERVING
    # (1) a client trusting the cluster CA connects, with or without a client cert
    assert await check(proc.address, make_channel(proc.address, pki.client_tls())) == serving
    no_cert = pki.client_tls(with_cert=False)
    assert await check(proc.address, make_channel(proc.address, no_cert)) == serving
    # (2) plaintext is refused
    with pytest.raises(grpc.RpcError):
        await check(proc.address, aio.insecure_channel(proc.address))
    # (3) a client trusting another CA is refused
    bad = pki.client_tls(ca=pki.other_ca[0])
    with pytest.raises(grpc.RpcError):
        await check(proc.address, make_channel(proc.address, bad))
    # (5) rotation: new cert/key files (same CA, new serial), no restart
    pid = proc.pid
    assert await asyncio.to_thread(peer_serial, proc.address, pki.ca[0]) == 1001
    new_cert, new_key = make_leaf(tmp_path, "node-rotated", pki.ca, serial=1002)
    os.replace(new_key, key)
    os.replace(new_cert, cert)
    assert await asyncio.to_thread(peer_serial, proc.address, pki.ca[0]) == 1002
    assert await check(proc.address, make_channel(proc.address, pki.client_tls())) == serving
    assert proc.alive and proc.pid == pid


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The admin CLI in-process (in a worker thread); exit code, stdout, stderr."""
    capsys.readouterr()
    code = await asyncio.to_thread(cli_main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_mutual_tls_cluster(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every process with --tls-client-auth require and a plaintext --health-port."""
    flags = pki.flags("require")
    health = {name: free_port() for name in ("config", "shard0", "router")}
    config = config_proc(tmp_path, "config", [*flags, "--health-port", str(health["config"])])
    shard_port, router_port = free_port(), free_port()
    shard = Proc(
        "shard0", "shard_stub",
        ["--host", HOST, "--port", str(shard_port), "--data-dir", str(tmp_path / "shard0"),
         "--shard-id", "shard0", "--config", config.address, *flags,
         "--health-port", str(health["shard0"])],
        address=f"{HOST}:{shard_port}", data_dir=tmp_path / "shard0",
        log_path=tmp_path / "shard0.log",
    )
    router = Proc(
        "router", "router",
        ["--host", HOST, "--port", str(router_port), "--config", config.address, *flags,
         "--health-port", str(health["router"])],
        address=f"{HOST}:{router_port}", data_dir=None, log_path=tmp_path / "router.log",
    )
    client = pki.client_tls()
    procs = [config, shard, router]
    try:
        config.start()
        shard.start()
        await asyncio.gather(healthy(config, client), healthy(shard, client))
        # (4) require: no client certificate -> refused; a CA-signed one -> accepted
        with pytest.raises(grpc.RpcError):
            await check(config.address, make_channel(config.address, pki.client_tls(with_cert=False)))
        async with make_channel(config.address, client) as channel:
            stub = routing_pb2_grpc.ConfigServiceStub(channel)
            request = routing_pb2.AddShardRequest(shard_id="shard0", host=HOST, port=shard_port)
            await stub.AddShard(request, timeout=20)  # config -> shard over mTLS
        router.start()
        await healthy(router, client)
        # (6) insert + query through the router: router -> config/shard over mTLS
        async with make_channel(router.address, client) as channel:
            rstub = routing_pb2_grpc.RouterServiceStub(channel)
            docs = [{"_id": i, "x": i * 2} for i in range(5)]
            assert await insert_many(rstub, "tlsdb", "c", docs) == 5
            found = await query_all(rstub, "tlsdb", "c", {"x": {"$gte": 4}})
            assert sorted(d["_id"] for d in found) == [2, 3, 4]

        await check_health_ports(router.address, {n: f"{HOST}:{p}" for n, p in health.items()})
        await check_cli_over_mtls(pki, router.address, capsys, monkeypatch)
    finally:
        for proc in reversed(procs):
            proc.terminate(check=False)
            proc.forget()


async def check_health_ports(router: str, health: dict[str, str]) -> None:
    """(7) The health ports answer plaintext health checks (readiness "" and liveness)
    while the main ports require mutual TLS; they serve nothing but grpc.health.v1."""
    serving = health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError):  # the main port: plaintext refused
        await check(router, aio.insecure_channel(router))
    for name, address in health.items():
        assert await check(address, aio.insecure_channel(address)) == serving, name
        live = await check(address, aio.insecure_channel(address), LIVENESS_SERVICE)
        assert live == serving, name
    async with aio.insecure_channel(health["router"]) as channel:
        rstub = routing_pb2_grpc.RouterServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            await rstub.Query(routing_pb2.QueryRequest(database="tlsdb", collection="c"),
                              timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        cstub = routing_pb2_grpc.ConfigServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            await cstub.AddShard(routing_pb2.AddShardRequest(shard_id="x"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def check_cli_over_mtls(
    pki: Pki, router: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """(8) The admin CLI against the mutual-TLS router: flags, then LAURADB_TLS_* variables;
    without a client certificate or without TLS it fails with one line, exit 1."""
    for var in ("LAURADB_TLS_CA", "LAURADB_TLS_CERT", "LAURADB_TLS_KEY"):
        monkeypatch.delenv(var, raising=False)
    code, out, err = await cli(capsys, "--router", router, *pki.client_flags(), "status")
    assert code == 0, err
    assert out.startswith(f"--- LauraDB cluster at {router} ---")
    assert "shard0" in out and "tlsdb  primary: shard0" in out
    assert "tlsdb.c  unsharded on shard0  documents: 5" in out

    for flags in (pki.client_flags(with_cert=False), []):  # no client cert / plaintext
        code, out, err = await cli(capsys, "--router", router, "--timeout", "5", *flags,
                                   "status")
        assert code == 1 and out == "", (flags, out)
        assert err.startswith("lauradb: ") and err.count("\n") == 1, err

    code, _, err = await cli(capsys, "--router", router, "--tls-ca", str(pki.dir / "nope.pem"),
                             "status")
    assert code == 2 and err.startswith("lauradb: BAD_VALUE: cannot read TLS file"), err

    monkeypatch.setenv("LAURADB_TLS_CA", str(pki.ca[0]))
    monkeypatch.setenv("LAURADB_TLS_CERT", str(pki.client[0]))
    monkeypatch.setenv("LAURADB_TLS_KEY", str(pki.client[1]))
    code, out, err = await cli(capsys, "--router", router, "shard", "list")
    assert code == 0, err
    assert out.splitlines()[1].split()[0] == "shard0"
