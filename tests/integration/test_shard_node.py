"""A real shard process (``python -m shard_stub``) with a real config server.

Covers: membership (register + heartbeat, serving before the config server is up),
the version check over the wire (unsharded / sharded / stale / after a split),
writes and reads through ShardService, and durability across kill -9.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import bson
import grpc
import pytest
from grpc import aio

from lauradb.cluster import (
    cluster_pb2,
    cluster_pb2_grpc,
    router_ext_pb2,
    routing_pb2,
    routing_pb2_grpc,
    shard_pb2,
    shard_pb2_grpc,
)
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import from_rpc_error
from lauradb.rpc.server import wait_for_health

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def poll(cond: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)


class Process:
    """A child process serving gRPC on a loopback port."""

    def __init__(self, name: str, module: str, args: list[str], log_path: Path, port: int) -> None:
        self.name = name
        self.module = module
        self.args = args
        self.log_path = log_path
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: aio.Channel | None = None

    def spawn(self) -> None:
        log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", str(self.port), *self.args,
             "--log-level", "info"],
            cwd=REPO, stdout=log, stderr=log, env=env,
        )
        log.close()

    async def start(self, wait: bool = True) -> None:
        self.spawn()
        if wait:
            await self.wait_healthy()
        self.channel = aio.insecure_channel(self.address)

    async def wait_healthy(self) -> None:
        try:
            await wait_for_health(self.address, 30.0)
        except TimeoutError:
            self.kill()
            raise AssertionError(
                f"{self.name} did not start: {self.log_path.read_text()}"
            ) from None

    async def close_channel(self) -> None:
        if self.channel is not None:
            await self.channel.close(None)
            self.channel = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    async def sigkill(self) -> None:
        await self.close_channel()
        self.kill()

    async def terminate(self) -> int:
        await self.close_channel()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, 15)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Cluster:
    """A config server and shard processes started on demand."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Process] = []
        self.config: Process | None = None
        self.shards: dict[str, Process] = {}

    async def start_config(self, port: int | None = None) -> Process:
        port = port or free_port()
        p = Process("config", "config_server", ["--data-dir", str(self.tmp / "config")],
                    self.tmp / "config.log", port)
        await p.start()
        self.procs.append(p)
        self.config = p
        return p

    async def start_shard(
        self, shard_id: str, *, config_address: str | None = None, port: int | None = None,
        wait: bool = True,
    ) -> Process:
        address = config_address or (self.config.address if self.config else "")
        p = Process(
            shard_id, "shard_stub",
            ["--shard-id", shard_id, "--data-dir", str(self.tmp / shard_id), "--config", address],
            self.tmp / f"{shard_id}.log", port or free_port(),
        )
        await p.start(wait)
        self.procs.append(p)
        self.shards[shard_id] = p
        return p

    def config_stub(self) -> routing_pb2_grpc.ConfigServiceStub:
        assert self.config is not None and self.config.channel is not None
        return routing_pb2_grpc.ConfigServiceStub(self.config.channel)

    def cluster_stub(self) -> cluster_pb2_grpc.ClusterServiceStub:
        assert self.config is not None and self.config.channel is not None
        return cluster_pb2_grpc.ClusterServiceStub(self.config.channel)

    def shard_stub(self, shard_id: str) -> shard_pb2_grpc.ShardServiceStub:
        channel = self.shards[shard_id].channel
        assert channel is not None
        return shard_pb2_grpc.ShardServiceStub(channel)

    async def add_shard(self, shard_id: str) -> None:
        p = self.shards[shard_id]
        await self.config_stub().AddShard(
            routing_pb2.AddShardRequest(shard_id=shard_id, host="127.0.0.1", port=p.port),
            timeout=10,
        )

    async def close(self) -> None:
        for p in reversed(self.procs):
            await p.close_channel()
            await asyncio.to_thread(p.stop_quietly)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        await c.close()


async def rpc_error(call: Any) -> tuple[grpc.StatusCode, LauraError]:
    with pytest.raises(grpc.RpcError) as info:
        await call
    return info.value.code(), from_rpc_error(info.value)


def unsharded() -> shard_pb2.ShardVersion:
    return shard_pb2.ShardVersion(unsharded=True)


def sharded(epoch: str, major: int, minor: int) -> shard_pb2.ShardVersion:
    return shard_pb2.ShardVersion(epoch=epoch, major=major, minor=minor)


IGNORE = shard_pb2.ShardVersion(ignore=True)


async def count(stub: shard_pb2_grpc.ShardServiceStub, coll: str,
                version: shard_pb2.ShardVersion, flt: dict[str, Any] | None = None) -> int:
    resp = await stub.Count(
        shard_pb2.ShardCountRequest(
            database="db", collection=coll, version=version,
            filter=bson.encode(flt) if flt else b"",
        ),
        timeout=10,
    )
    return int(resp.count)


async def find_all(stub: shard_pb2_grpc.ShardServiceStub, coll: str,
                   version: shard_pb2.ShardVersion, batch_size: int = 0,
                   **kw: Any) -> list[dict[str, Any]]:
    resp = await stub.Find(
        shard_pb2.ShardFindRequest(
            database="db", collection=coll, version=version, batch_size=batch_size, **kw
        ),
        timeout=10,
    )
    docs = [bson.decode(d) for d in resp.documents]
    while resp.cursor_id:
        resp = await stub.GetMore(
            shard_pb2.ShardGetMoreRequest(cursor_id=resp.cursor_id, batch_size=batch_size),
            timeout=10,
        )
        docs.extend(bson.decode(d) for d in resp.documents)
    return docs


async def node_up(cluster: Cluster, node_id: str) -> bool:
    topo = await cluster.cluster_stub().GetTopology(cluster_pb2.GetTopologyRequest(), timeout=5)
    return any(n.id == node_id and n.up for n in topo.nodes)


# ------------------------------------------------------------------------ tests


async def test_shard_node_versions_writes_and_kill9(cluster: Cluster) -> None:
    await cluster.start_config()
    await cluster.start_shard("shard0")
    await cluster.start_shard("shard1")
    await cluster.add_shard("shard0")
    await cluster.add_shard("shard1")
    await poll(lambda: node_up(cluster, "shard-shard0"), what="shard0 registered")
    await poll(lambda: node_up(cluster, "shard-shard1"), what="shard1 registered")

    db = await cluster.config_stub().EnsureDatabase(
        router_ext_pb2.EnsureDatabaseRequest(database="db"), timeout=10
    )
    primary = db.primary_shard
    other = "shard1" if primary == "shard0" else "shard0"
    p_stub, o_stub = cluster.shard_stub(primary), cluster.shard_stub(other)

    # -- unsharded collection: lives on the primary only
    docs = [bson.encode({"_id": i, "k": i, "v": "x"}) for i in range(300)]
    ins = await p_stub.Insert(
        shard_pb2.ShardInsertRequest(database="db", collection="users", documents=docs,
                                     ordered=True, version=unsharded()),
        timeout=10,
    )
    assert ins.inserted_count == 300 and not ins.errors
    status, err = await rpc_error(o_stub.Insert(
        shard_pb2.ShardInsertRequest(database="db", collection="users", documents=docs[:1],
                                     version=unsharded()),
        timeout=10,
    ))
    assert status == grpc.StatusCode.FAILED_PRECONDITION and err.code == ErrorCode.STALE_CONFIG
    assert err.details["namespace"] == "db.users"

    dup = await p_stub.Insert(
        shard_pb2.ShardInsertRequest(
            database="db", collection="users", ordered=False, version=unsharded(),
            documents=[bson.encode({"_id": 1}), bson.encode({"_id": 1000})],
        ),
        timeout=10,
    )
    assert dup.inserted_count == 1
    assert [(e.index, e.code) for e in dup.errors] == [(0, int(ErrorCode.DUPLICATE_KEY))]
    assert dup.error.code == int(ErrorCode.DUPLICATE_KEY)

    found = await find_all(p_stub, "users", unsharded(), batch_size=64,
                           sort=bson.encode({"k": -1}), limit=150)
    assert [d["_id"] for d in found] == list(range(299, 149, -1))
    assert await count(p_stub, "users", unsharded()) == 301

    # -- shard the collection (one chunk on the primary, version (1, 0))
    sc = await cluster.config_stub().ShardCollection(
        routing_pb2.ShardCollectionRequest(database="db", collection="users",
                                           shard_key_fields=["k"], strategy=routing_pb2.RANGE),
        timeout=15,
    )
    epoch = sc.epoch
    assert await count(p_stub, "users", sharded(epoch, 1, 0)) == 301
    status, err = await rpc_error(count(p_stub, "users", unsharded()))
    assert err.code == ErrorCode.STALE_CONFIG and err.details["shard_epoch"] == epoch
    status, err = await rpc_error(count(p_stub, "users", sharded("0" * 24, 1, 0)))
    assert err.code == ErrorCode.STALE_CONFIG
    assert (err.details["shard_major"], err.details["shard_minor"]) == (1, 0)
    assert await count(o_stub, "users", sharded(epoch, 0, 0)) == 0  # owns nothing

    # shard key values cannot change
    status, err = await rpc_error(p_stub.Update(
        shard_pb2.ShardUpdateRequest(database="db", collection="users",
                                     filter=bson.encode({"_id": 5}),
                                     update=bson.encode({"$set": {"k": 5000}}),
                                     version=sharded(epoch, 1, 0)),
        timeout=10,
    ))
    assert err.code == ErrorCode.SHARD_KEY_IMMUTABLE
    upd = await p_stub.Update(
        shard_pb2.ShardUpdateRequest(database="db", collection="users",
                                     filter=bson.encode({"k": {"$lt": 10}}),
                                     update=bson.encode({"$set": {"v": "y"}}), multi=True,
                                     version=sharded(epoch, 1, 0)),
        timeout=10,
    )
    assert (upd.matched_count, upd.modified_count) == (10, 10)

    # -- split: the primary's version moves on; the old version is stale there
    smap = await cluster.config_stub().GetShardMap(
        routing_pb2.GetShardMapRequest(database="db", collection="users"), timeout=10
    )
    (chunk,) = [c for s in smap.shards for c in s.chunks]
    await cluster.config_stub().SplitChunk(
        routing_pb2.SplitChunkRequest(chunk_id=chunk.chunk_id, split_point=bson.encode({"k": 100})),
        timeout=10,
    )
    smap = await cluster.config_stub().GetShardMap(
        routing_pb2.GetShardMapRequest(database="db", collection="users"), timeout=10
    )
    major, minor = smap.version >> 32, smap.version & 0xFFFFFFFF
    assert (major, minor) > (1, 0)
    status, err = await rpc_error(count(p_stub, "users", sharded(epoch, 1, 0)))
    assert err.code == ErrorCode.STALE_CONFIG
    assert (err.details["shard_major"], err.details["shard_minor"]) == (major, minor)
    assert await count(p_stub, "users", sharded(epoch, major, minor), {"k": {"$gte": 100}}) == 200

    # RefreshMetadata answers this shard's version
    refreshed = await p_stub.RefreshMetadata(
        shard_pb2.RefreshMetadataRequest(database="db", collection="users"), timeout=10
    )
    assert (refreshed.epoch, refreshed.major, refreshed.minor) == (epoch, major, minor)

    # -- kill -9 while inserting: every acknowledged document survives
    acked: list[int] = []

    async def writer() -> None:
        n = 10_000
        while True:
            batch = list(range(n, n + 25))
            try:
                resp = await p_stub.Insert(
                    shard_pb2.ShardInsertRequest(
                        database="db", collection="users", ordered=True,
                        version=sharded(epoch, major, minor),
                        documents=[bson.encode({"_id": i, "k": i}) for i in batch],
                    ),
                    timeout=5,
                )
            except grpc.RpcError:
                return
            assert resp.inserted_count == len(batch)
            acked.extend(batch)
            n += len(batch)

    task = asyncio.create_task(writer())
    await poll(lambda: len(acked) >= 500, what="500 acknowledged inserts")
    cluster.shards[primary].kill()
    await asyncio.wait_for(task, 15)
    await cluster.shards[primary].close_channel()
    await cluster.shards[primary].start()
    p_stub = cluster.shard_stub(primary)
    ids = {d["_id"] for d in await find_all(p_stub, "users", IGNORE, batch_size=1000)}
    missing = [i for i in acked if i not in ids]
    assert not missing, f"{len(missing)} acknowledged documents lost"
    assert {i for i in range(300)} <= ids
    # and the metadata comes back from the config server after the restart
    assert await count(p_stub, "users", sharded(epoch, major, minor), {"k": {"$lt": 10}}) == 10
    await poll(lambda: node_up(cluster, f"shard-{primary}"), what="re-registered")


async def test_serves_before_config_is_up_and_registers_later(cluster: Cluster) -> None:
    config_port = free_port()
    shard = await cluster.start_shard("lonely", config_address=f"127.0.0.1:{config_port}")
    stub = cluster.shard_stub("lonely")
    # health is SERVING although the config server is not there; metadata cannot load
    status, err = await rpc_error(count(stub, "c", unsharded()))
    assert status == grpc.StatusCode.UNAVAILABLE and err.code == ErrorCode.HOST_UNREACHABLE
    # administrative reads do not need the config server
    assert await count(stub, "c", IGNORE) == 0
    await cluster.start_config(port=config_port)
    await poll(lambda: node_up(cluster, "shard-lonely"), timeout=20, what="late registration")
    assert shard.proc is not None and shard.proc.poll() is None


async def test_sigterm_exits_zero_and_keeps_data(cluster: Cluster) -> None:
    await cluster.start_config()
    shard = await cluster.start_shard("s")
    await cluster.add_shard("s")
    await cluster.config_stub().EnsureDatabase(
        router_ext_pb2.EnsureDatabaseRequest(database="db"), timeout=10
    )
    stub = cluster.shard_stub("s")
    await stub.Insert(
        shard_pb2.ShardInsertRequest(database="db", collection="c", version=unsharded(),
                                     documents=[bson.encode({"_id": i}) for i in range(10)]),
        timeout=10,
    )
    assert await shard.terminate() == 0
    await shard.start()
    assert await count(cluster.shard_stub("s"), "c", unsharded()) == 10
    with contextlib.suppress(Exception):
        await shard.terminate()
