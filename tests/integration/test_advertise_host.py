"""Process flags Kubernetes needs, end to end: the ``liveness`` health service stays
SERVING while a router is not ready, and a shard registers its --advertise-host (here
given as LAURADB_ADVERTISE_HOST) with the config server instead of its bind host."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lauradb.cluster import cluster_pb2, cluster_pb2_grpc
from lauradb.rpc.server import LIVENESS_SERVICE, wait_for_health
from shard_stub.membership import node_id_for
from tests.integration.harness import HOST, Proc, eventually, free_port

pytestmark = pytest.mark.integration


async def health_status(address: str, service: str) -> int:
    async with aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return int(resp.status)


async def test_router_is_alive_but_not_ready_without_config_server(tmp_path: Path) -> None:
    address = f"{HOST}:{free_port()}"
    dead_config = f"{HOST}:{free_port()}"  # nobody listens there
    router = Proc(
        "router",
        "router",
        ["--host", HOST, "--port", address.rsplit(":", 1)[1], "--config", dead_config],
        address=address,
        data_dir=None,
        log_path=tmp_path / "router.log",
    )
    router.start()
    try:
        await wait_for_health(address, timeout=20, service=LIVENESS_SERVICE)
        assert await health_status(address, "") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await health_status(address, LIVENESS_SERVICE) == (
            health_pb2.HealthCheckResponse.SERVING
        )
    finally:
        router.terminate(check=False)
        router.forget()


async def test_shard_registers_its_advertise_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_address = f"{HOST}:{free_port()}"
    shard_address = f"{HOST}:{free_port()}"
    config = Proc(
        "config",
        "config_server",
        ["--host", HOST, "--port", config_address.rsplit(":", 1)[1],
         "--data-dir", str(tmp_path / "config")],
        address=config_address,
        data_dir=tmp_path / "config",
        log_path=tmp_path / "config.log",
    )
    monkeypatch.setenv("LAURADB_ADVERTISE_HOST", "localhost")
    monkeypatch.setenv("LAURADB_SHARD_ID", "adv0")
    shard = Proc(
        "shard",
        "shard_stub",
        ["--host", HOST, "--port", shard_address.rsplit(":", 1)[1],
         "--data-dir", str(tmp_path / "shard"), "--config", config_address],
        address=shard_address,
        data_dir=tmp_path / "shard",
        log_path=tmp_path / "shard.log",
    )
    config.start()
    shard.start()
    try:
        await config.wait_healthy()
        await shard.wait_healthy()
        async with aio.insecure_channel(config_address) as channel:
            stub = cluster_pb2_grpc.ClusterServiceStub(channel)

            async def registered_host() -> str:
                topo = await stub.GetTopology(cluster_pb2.GetTopologyRequest(), timeout=2)
                hosts = [n.host for n in topo.nodes if n.id == node_id_for("adv0")]
                return hosts[0] if hosts else ""

            host = await eventually(registered_host, what="shard registration")
        assert host == "localhost"
    finally:
        shard.terminate(check=False)
        config.terminate(check=False)
        shard.forget()
        config.forget()
