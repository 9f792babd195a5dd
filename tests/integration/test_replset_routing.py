"""Routing to replica-set shards (3 members each): writes and primary reads follow the
primary through a kill -9 (the router buffers while the set elects a new one; retryable
writes through lauradb.Client see no error and apply exactly once), reads with read
preference secondary are served by a secondary, AddShard records the members, the
topology lists the replica set, and ``lauradb-cluster up --replicas 3`` works.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from lauradb.client import Client, ReadPreference, WriteConcern
from lauradb.cluster import cluster_pb2, router_ext_pb2
from tests.integration.harness import HOST, Cluster, eventually, free_port, unique_name

REPLICAS = 3


def _metrics_url(proc: Any) -> str:
    port = free_port()
    proc.args += ["--metrics-port", str(port)]
    return f"http://{HOST}:{port}/metrics"


def _rpc_count(url: str, method: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "lauradb_rpc_latency_seconds_count" and s.labels.get("method", "").endswith(method):
                total += s.value
    return total


async def _replset_cluster(cluster: Callable[..., Awaitable[Cluster]], shards: int = 1) -> Cluster:
    c = await cluster(shards, start=False, replicas=REPLICAS)
    c.metrics = {p.address: _metrics_url(p) for p in c.shard_procs}  # type: ignore[attr-defined]
    await c.start()
    for shard_id in c.shard_ids:
        await c.primary_of(shard_id)
    return c


async def test_writes_reads_members_and_read_preference(
    cluster: Callable[..., Awaitable[Cluster]],
) -> None:
    c = await _replset_cluster(cluster)
    members = [p.address for p in c.members("shard0")]

    # AddShard stored the members; ListShards and the topology show them
    shards = await c.config_server_stub().ListShards(router_ext_pb2.ListShardsRequest(), timeout=10)
    assert list(shards.shards[0].members) == members

    async def topology_has_primary() -> bool:
        topo = await c.cluster_stub().GetTopology(cluster_pb2.GetTopologyRequest(), timeout=5)
        sets = {rs.id: rs for rs in topo.replica_sets}
        return "shard0" in sets and bool(sets["shard0"].primary_id) and len(sets["shard0"].node_ids) == REPLICAS

    await eventually(topology_has_primary, timeout=20, what="replica set in the topology")

    db = unique_name("rs")

    def work() -> None:
        with Client(c.router_address, write_concern=WriteConcern(w="majority")) as client:
            coll = client[db]["items"]
            coll.insert_many([{"_id": i, "v": i} for i in range(50)])
            assert coll.count_documents({}) == 50
            assert coll.find_one({"_id": 7}) == {"_id": 7, "v": 7}
            coll.update_one({"_id": 7}, {"$set": {"v": 70}})
            assert coll.delete_one({"_id": 8}).deleted_count == 1
            # majority-acknowledged: reads from a secondary (applied when committed) see it
            secondary = coll.with_options(read_preference=ReadPreference.SECONDARY)
            deadline = time.monotonic() + 20
            # Each read may go to either secondary, and each applies the writes once it
            # hears of the commit point: wait until find, count and distinct all agree.
            while True:
                docs = list(secondary.find({}))
                n = secondary.count_documents({})
                values = sorted(secondary.distinct("v"))
                if (len(docs), n) == (49, 49) and {"_id": 7, "v": 70} in docs and values[:3] == [0, 1, 2]:
                    break
                assert time.monotonic() < deadline, (
                    f"secondary reads never caught up: {len(docs)} found, {n} counted"
                )
                time.sleep(0.05)

    primary = await c.primary_of("shard0")
    urls: dict[str, str] = c.metrics  # type: ignore[attr-defined]
    before = {a: await asyncio.to_thread(_rpc_count, u, "Find") for a, u in urls.items()}
    await asyncio.to_thread(work)
    after = {a: await asyncio.to_thread(_rpc_count, u, "Find") for a, u in urls.items()}
    served = {a for a in urls if after[a] > before[a]}
    secondaries = set(members) - {primary.address}
    assert served & secondaries, f"no secondary served a Find: {served}"


async def test_primary_killed_under_write_load(cluster: Callable[..., Awaitable[Cluster]]) -> None:
    c = await _replset_cluster(cluster)
    db = unique_name("failover")
    acknowledged: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    started = threading.Event()

    def writer() -> None:
        with Client(c.router_address, write_concern=WriteConcern(w="majority")) as client:
            coll = client[db]["log"]
            i = 0
            while not stop.is_set():
                try:
                    coll.insert_one({"_id": i})
                except BaseException as exc:
                    errors.append(exc)
                    return
                acknowledged.append(i)
                if i >= 20:
                    started.set()
                i += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    await eventually(lambda: asyncio.sleep(0, started.is_set()), timeout=30, what="writes flowing")
    killed = await c.kill_primary("shard0")
    at_kill = len(acknowledged)
    new_primary = await c.primary_of("shard0", timeout=30)
    assert new_primary is not killed
    await eventually(
        lambda: asyncio.sleep(0, len(acknowledged) > at_kill + 20 or bool(errors)),
        timeout=30, what="writes continuing after the failover",
    )
    stop.set()
    await asyncio.to_thread(thread.join, 30)
    assert not errors, f"the client saw an error: {errors[0]!r}"

    def verify() -> list[int]:
        with Client(c.router_address) as client:
            return sorted(d["_id"] for d in client[db]["log"].find({}))

    present = await asyncio.to_thread(verify)
    assert len(present) == len(set(present))  # each write applied once
    missing = set(acknowledged) - set(present)
    assert not missing, f"acknowledged writes lost: {sorted(missing)[:10]}"
    # the killed member comes back as a secondary and catches up
    await c.restart(killed)


def test_launcher_replicas_smoke(tmp_path: Path) -> None:
    port = free_port()
    while any(_busy(p) for p in range(port, port + 6)):
        port = free_port()
    cmd = [
        sys.executable, "-m", "lauradb.launcher", "up", "--shards", "1", "--replicas", "3",
        "--port", str(port), "--data-dir", str(tmp_path / "data"), "--log-level", "warning",
    ]
    log = open(tmp_path / "launcher.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "cluster ready" not in (tmp_path / "launcher.log").read_text():
            assert proc.poll() is None, (tmp_path / "launcher.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "launcher.log").read_text()
            time.sleep(0.1)
        with Client(f"{HOST}:{port}") as client:
            client.smoke.items.insert_one({"_id": 1})
            assert client.smoke.items.find_one({"_id": 1}) == {"_id": 1}
            shards = client.admin.list_shards()
        assert len(shards) == 1
        status = subprocess.run(
            [sys.executable, "-m", "lauradb.cli.main", "--router", f"{HOST}:{port}", "status"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        assert "shard0 replica set members:" in status, status
        assert status.count("PRIMARY") == 1 and status.count("SECONDARY") == 2, status
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()
    assert proc.returncode == 0, (tmp_path / "launcher.log").read_text()


def _busy(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0

