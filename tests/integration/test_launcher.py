"""``lauradb-cluster up``: start, serve, stop cleanly on SIGTERM, come back with the data;
with ``--tls-*`` flags, a mutual-TLS cluster."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from lauradb.cli.main import main as cli_main
from lauradb.cluster import routing_pb2_grpc
from lauradb.launcher import parse_args, plan_cluster, shard_port
from lauradb.rpc.channels import TlsSettings, make_channel
from tests.integration.harness import (
    REPO_ROOT,
    count,
    eventually,
    free_port_block,
    insert_many,
    query_all,
)
from tests.integration.tls_pki import Pki, needs_openssl

READY = re.compile(r"cluster ready: router at (\S+)")
CHILD_LINE = re.compile(r"^(config\d*|shard\d+|router|etcd)\s+(\S+)\s+pid (\d+)", re.M)
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class LauncherRun:
    """``python -m lauradb.launcher up ...`` with its output in a file."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "lauradb.launcher", "up", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.offset = log_path.stat().st_size

    def output(self) -> str:
        return self.log_path.read_bytes()[self.offset :].decode(errors="replace")

    async def wait_ready(self) -> str:
        async def ready() -> str:
            assert self.popen.poll() is None, f"launcher exited early:\n{self.output()}"
            match = READY.search(self.output())
            return match[1] if match else ""

        return await eventually(ready, timeout=START_TIMEOUT, what="cluster ready")

    def children(self) -> dict[str, int]:
        return {name: int(pid) for name, _, pid in CHILD_LINE.findall(self.output())}

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise AssertionError(f"launcher ignored signal {sig}:\n{self.output()}") from None

    def wait_exit(self) -> int:
        return self.popen.wait(STOP_TIMEOUT)


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie nobody reaped yet is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def launches(tmp_path: Path) -> Iterator[list[LauncherRun]]:
    runs: list[LauncherRun] = []
    yield runs
    for run in runs:
        if run.popen.poll() is None:
            run.stop()
        for pid in run.children().values():
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_port_layout() -> None:
    plan = plan_cluster(3, 27017, Path("d"), "127.0.0.1")
    assert plan.router.port == 27017
    assert plan.config.port == 27019
    assert [s.port for s in plan.shards] == [27018, 27020, 27021]
    assert [s.name for s in plan.shards] == ["shard0", "shard1", "shard2"]
    assert plan.shards[1].data_dir == Path("d/shard1")
    assert plan.config.data_dir == Path("d/config")
    assert shard_port(100, 0) == 101 and shard_port(100, 5) == 107
    argv = plan.shards[2].argv("info")
    assert argv[1:3] == ["-m", "shard_stub"]
    assert argv[argv.index("--config") + 1] == "127.0.0.1:27019"
    assert argv[argv.index("--shard-id") + 1] == "shard2"
    assert not any(a.startswith("--tls") for a in argv)


def test_port_layout_with_config_replicas_on_etcd() -> None:
    plan = plan_cluster(2, 27017, Path("d"), "127.0.0.1", config_replicas=3, store="etcd")
    # the default layout is kept; the other config servers, then etcd, come after it
    assert [s.port for s in plan.shards] == [27018, 27020]
    assert [c.port for c in plan.config_servers] == [27019, 27021, 27022]
    assert [c.data_dir for c in plan.config_servers] == [
        Path("d/config"), Path("d/config1"), Path("d/config2")
    ]
    assert plan.etcd is not None and plan.etcd.data_dir == Path("d/etcd")
    assert (plan.etcd.client_port, plan.etcd.peer_port) == (27023, 27024)
    store = "etcd://127.0.0.1:27023/lauradb"
    for spec in plan.config_servers:
        argv = spec.argv("info")
        assert argv[argv.index("--store") + 1] == store
    everyone = "127.0.0.1:27019,127.0.0.1:27021,127.0.0.1:27022"
    for spec in (*plan.shards, plan.router):
        argv = spec.argv("info")
        assert argv[argv.index("--config") + 1] == everyone, spec.name
    existing = plan_cluster(1, 27017, Path("d"), "h", config_replicas=2, store="etcd://e:2379")
    assert existing.etcd is None
    assert all("etcd://e:2379" in c.argv("info") for c in existing.config_servers)
    single = plan_cluster(1, 27017, Path("d"), "h")
    assert single.config_servers == (single.config,) and single.etcd is None
    assert "--store" not in single.config.argv("info")


def test_config_replicas_need_etcd(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["up", "--config-replicas", "3"])
    assert "needs --store etcd" in capsys.readouterr().err


def test_tls_flags_reach_every_child() -> None:
    tls = TlsSettings(cert="n.pem", key="n.key", ca="ca.pem", client_auth="require")
    plan = plan_cluster(2, 27017, Path("d"), "127.0.0.1", tls)
    assert plan.tls == tls
    for spec in (plan.config, *plan.shards, plan.router):
        argv = spec.argv("info")
        for flag, value in (("--tls-cert", "n.pem"), ("--tls-key", "n.key"),
                            ("--tls-ca", "ca.pem")):
            assert argv[argv.index(flag) + 1] == os.path.abspath(value), spec.name
        assert argv[argv.index("--tls-client-auth") + 1] == "require", spec.name


def test_tls_flags_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--tls-cert", "x.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-ca", "ca.pem"], "--tls-ca alone is not enough"),
        (["--tls-client-auth", "optional"], "'optional' is not supported"),
    ):
        with pytest.raises(SystemExit):
            parse_args(["up", *argv])
        assert message in capsys.readouterr().err


@pytest.mark.integration
async def test_up_serve_stop_and_come_back(tmp_path: Path, launches: list[LauncherRun]) -> None:
    base = free_port_block(4)
    args = ["--shards", "2", "--port", str(base), "--data-dir", str(tmp_path / "data")]
    log = tmp_path / "launcher.log"

    first = LauncherRun(args, log)
    launches.append(first)
    router_address = await first.wait_ready()
    assert router_address == f"127.0.0.1:{base}"
    children = first.children()
    assert set(children) == {"config", "shard0", "shard1", "router"}, first.output()
    docs = [{"_id": i, "k": i % 13} for i in range(200)]
    async with aio.insecure_channel(router_address) as channel:
        router = routing_pb2_grpc.RouterServiceStub(channel)
        assert await insert_many(router, "launch", "c", docs) == 200
        assert len(await query_all(router, "launch", "c", {"k": 3})) == 16

    assert first.stop() == 0, first.output()
    assert all(pid_gone(pid) for pid in children.values()), children

    second = LauncherRun(args, log)
    launches.append(second)
    router_address = await second.wait_ready()
    async with aio.insecure_channel(router_address) as channel:
        router = routing_pb2_grpc.RouterServiceStub(channel)
        assert await count(router, "launch", "c") == 200
        got = await query_all(router, "launch", "c", {}, sort={"_id": 1})
        assert got == docs
    assert second.stop() == 0, second.output()
    assert all(pid_gone(pid) for pid in second.children().values())


@pytest.mark.integration
async def test_child_death_stops_the_rest(tmp_path: Path, launches: list[LauncherRun]) -> None:
    base = free_port_block(4)
    args = ["--shards", "2", "--port", str(base), "--data-dir", str(tmp_path / "data")]
    run = LauncherRun(args, tmp_path / "launcher.log")
    launches.append(run)
    await run.wait_ready()
    children = run.children()
    os.kill(children["shard1"], signal.SIGKILL)
    assert run.wait_exit() != 0
    assert "shard1" in run.output().split("cluster ready", 1)[1]
    assert all(pid_gone(pid) for pid in children.values()), run.output()


@pytest.mark.integration
@needs_openssl
async def test_up_with_mutual_tls(
    pki: Pki, tmp_path: Path, launches: list[LauncherRun], capsys: pytest.CaptureFixture[str]
) -> None:
    """``up --tls-... --tls-client-auth require``: every child requires client
    certificates, so the launcher's health waits and AddShard calls were mutual TLS."""
    base = free_port_block(4)
    args = ["--shards", "1", "--port", str(base), "--data-dir", str(tmp_path / "data"),
            *pki.flags("require")]
    run = LauncherRun(args, tmp_path / "launcher.log")
    launches.append(run)
    router_address = await run.wait_ready()
    async with make_channel(router_address, pki.client_tls()) as channel:
        router = routing_pb2_grpc.RouterServiceStub(channel)
        assert await insert_many(router, "launchtls", "c", [{"_id": i} for i in range(20)]) == 20
        assert await count(router, "launchtls", "c") == 20
    async with aio.insecure_channel(router_address) as channel:  # plaintext: refused
        with pytest.raises(grpc.RpcError):
            await count(routing_pb2_grpc.RouterServiceStub(channel), "launchtls", "c")
    capsys.readouterr()
    code = await asyncio.to_thread(
        cli_main, ["--router", router_address, *pki.client_flags(), "shard", "list"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines()[1].split()[:2] == ["shard0", f"127.0.0.1:{shard_port(base, 0)}"]
    assert run.stop() == 0, run.output()
    assert all(pid_gone(pid) for pid in run.children().values())


@pytest.mark.integration
async def test_up_with_three_config_servers_on_etcd(
    tmp_path: Path, launches: list[LauncherRun], capsys: pytest.CaptureFixture[str]
) -> None:
    """``up --config-replicas 3 --store etcd``: a local etcd and three config servers;
    the status names the leader; a killed config server is restarted while the others
    serve; everything (etcd too) stops on SIGTERM."""
    base = free_port_block(8)
    args = ["--shards", "1", "--port", str(base), "--data-dir", str(tmp_path / "data"),
            "--config-replicas", "3", "--store", "etcd"]
    run = LauncherRun(args, tmp_path / "launcher.log")
    launches.append(run)
    router_address = await run.wait_ready()
    children = run.children()
    assert set(children) == {"etcd", "config", "config1", "config2", "shard0", "router"}, (
        run.output()
    )
    async with aio.insecure_channel(router_address) as channel:
        router = routing_pb2_grpc.RouterServiceStub(channel)
        assert await insert_many(router, "launchha", "c", [{"_id": i} for i in range(20)]) == 20
    configs = {f"127.0.0.1:{p}" for p in (base + 2, base + 3, base + 4)}

    async def leader_named() -> str:
        capsys.readouterr()
        assert await asyncio.to_thread(cli_main, ["--router", router_address, "status"]) == 0
        out = capsys.readouterr().out
        found = re.search(r"leader config server: (\S+)", out)
        return found[1] if found and found[1] in configs else ""

    leader = await eventually(leader_named, timeout=30, what="the leader in lauradb status")
    assert (tmp_path / "data" / "etcd").is_dir()

    # kill -9 the leader: the launcher restarts it (no stop of the rest), the others
    # keep serving and one of them (or the restarted one) leads
    name = {f"127.0.0.1:{base + 2 + i}": n for i, n in enumerate(("config", "config1", "config2"))}
    victim = name[leader]
    os.kill(children[victim], signal.SIGKILL)

    async def restarted() -> bool:
        assert run.popen.poll() is None, f"launcher exited:\n{run.output()}"
        return "restarting it" in run.output() and run.children()[victim] != children[victim]

    await eventually(restarted, timeout=60, what=f"{victim} restarted by the launcher")
    async with aio.insecure_channel(router_address) as channel:
        router = routing_pb2_grpc.RouterServiceStub(channel)
        more = [{"_id": i} for i in range(20, 30)]
        assert await insert_many(router, "launchha", "c", more) == 10
        assert await count(router, "launchha", "c") == 30
    await eventually(leader_named, timeout=30, what="a leader after the kill")
    assert run.stop() == 0, run.output()
    assert all(pid_gone(pid) for pid in run.children().values()), run.output()


def test_children_do_not_inherit_lauradb_settings() -> None:
    from lauradb.launcher import child_environment

    env = child_environment({"PATH": "/bin", "LAURADB_SHARD_ID": "x", "LAURADB_CONFIG_FILE": "f"})
    assert env == {"PATH": "/bin"}
