"""TLS and mutual TLS on listeners and cluster channels (``--tls-*`` flags), and
certificate rotation without restart. Certificates are made with the ``openssl`` CLI."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lauradb.cluster import routing_pb2, routing_pb2_grpc
from lauradb.errors import LauraError
from lauradb.rpc.channels import TlsSettings, make_channel, tls_from_args
from lauradb.rpc.server import wait_for_health
from tests.integration.harness import HOST, Proc, free_port, insert_many, query_all

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI"),
]

EXT = (
    "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth,clientAuth\n"
)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    cert, key = d / f"{name}.pem", d / f"{name}.key"
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )
    return cert, key


def make_leaf(d: Path, name: str, ca: tuple[Path, Path], serial: int) -> tuple[Path, Path]:
    cert, key, csr, ext = (d / f"{name}.{s}" for s in ("pem", "key", "csr", "ext"))
    ext.write_text(EXT)
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
    )
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-set_serial", str(serial), "-days", "2", "-out", str(cert), "-extfile", str(ext),
    )
    return cert, key


class Pki:
    def __init__(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.dir = d
        self.ca = make_ca(d, "cluster-ca")
        self.other_ca = make_ca(d, "unknown-ca")
        self.node = make_leaf(d, "node", self.ca, serial=1001)
        self.client = make_leaf(d, "client", self.ca, serial=2001)

    def flags(self, client_auth: str) -> list[str]:
        return [
            "--tls-cert", str(self.node[0]), "--tls-key", str(self.node[1]),
            "--tls-ca", str(self.ca[0]), "--tls-client-auth", client_auth,
        ]

    def client_tls(self, *, with_cert: bool = True, ca: Path | None = None) -> TlsSettings:
        cert, key = self.client if with_cert else (None, None)
        return TlsSettings(
            cert=str(cert) if cert else None, key=str(key) if key else None,
            ca=str(ca or self.ca[0]),
        )


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


async def check(address: str, channel: aio.Channel) -> int:
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=3.0)
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
        "--tls-client-auth", "optional",  # as the deploy's router port: cert not required
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
        {"tls_client_auth": "optional"},
    ):
        with pytest.raises(LauraError):
            settings(**bad)


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


async def test_mutual_tls_cluster(pki: Pki, tmp_path: Path) -> None:
    flags = pki.flags("require")
    config = config_proc(tmp_path, "config", flags)
    shard_port, router_port = free_port(), free_port()
    shard = Proc(
        "shard0", "shard_stub",
        ["--host", HOST, "--port", str(shard_port), "--data-dir", str(tmp_path / "shard0"),
         "--shard-id", "shard0", "--config", config.address, *flags],
        address=f"{HOST}:{shard_port}", data_dir=tmp_path / "shard0",
        log_path=tmp_path / "shard0.log",
    )
    router = Proc(
        "router", "router",
        ["--host", HOST, "--port", str(router_port), "--config", config.address, *flags],
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
    finally:
        for proc in reversed(procs):
            proc.terminate(check=False)
            proc.forget()
