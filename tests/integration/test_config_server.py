"""The config server as a real process (``python -m config_server``) over gRPC.

AddShard needs a reachable shard: each test starts small in-test gRPC servers that
stand in for shard addresses. They serve the standard health service (SERVING) and
a minimal ShardService answering Count (0 documents) and RefreshMetadata (recorded),
so the config server's calls to shards can be observed; none of the config server's
own logic is replaced.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
import grpc
import pytest
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from lauradb.cluster import (
    cluster_pb2,
    cluster_pb2_grpc,
    router_ext_pb2,
    routing_pb2,
    routing_pb2_grpc,
    shard_pb2,
    shard_pb2_grpc,
)
from lauradb.errors import ErrorCode
from lauradb.rpc.errors import from_rpc_error
from lauradb.rpc.server import wait_for_health

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HASH = routing_pb2.HASH
RANGE = routing_pb2.RANGE


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def poll(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
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


# ----------------------------------------------------------------- stand-in shards


@dataclass
class FakeShardService(shard_pb2_grpc.ShardServiceServicer):
    documents: int = 0
    hang: bool = False
    refreshes: list[tuple[str, str]] = field(default_factory=list)
    counts: list[tuple[str, str, bool]] = field(default_factory=list)

    async def Count(self, request: Any, context: Any) -> Any:
        self.counts.append((request.database, request.collection, request.version.ignore))
        return shard_pb2.ShardCountResponse(count=self.documents)

    async def RefreshMetadata(self, request: Any, context: Any) -> Any:
        if self.hang:
            await asyncio.sleep(3600)
        self.refreshes.append((request.database, request.collection))
        return shard_pb2.RefreshMetadataResponse()


@dataclass
class FakeShard:
    port: int
    server: aio.Server
    service: FakeShardService


@contextlib.asynccontextmanager
async def fake_shard(**kwargs: Any) -> AsyncIterator[FakeShard]:
    server = aio.server()
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service = FakeShardService(**kwargs)
    shard_pb2_grpc.add_ShardServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield FakeShard(port, server, service)
    finally:
        await server.stop(None)


# ------------------------------------------------------------------ config server


class ConfigProcess:
    def __init__(self, data_dir: Path, log_path: Path, *extra: str) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: aio.Channel | None = None

    async def start(self) -> None:
        log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "config_server",
                "--port", str(self.port), "--data-dir", str(self.data_dir),
                "--log-level", "info", *self.extra,
            ],
            cwd=REPO, stdout=log, stderr=log, env=env,
        )
        log.close()
        try:
            await wait_for_health(self.address, 20.0)
        except TimeoutError:
            self.kill()
            raise AssertionError(
                f"config server did not start: {self.log_path.read_text()}"
            ) from None
        self.channel = aio.insecure_channel(self.address)

    @property
    def config(self) -> routing_pb2_grpc.ConfigServiceStub:
        return routing_pb2_grpc.ConfigServiceStub(self.channel)

    @property
    def cluster(self) -> cluster_pb2_grpc.ClusterServiceStub:
        return cluster_pb2_grpc.ClusterServiceStub(self.channel)

    async def close_channel(self) -> None:
        if self.channel is not None:
            await self.channel.close(None)
            self.channel = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    async def terminate(self) -> int:
        await self.close_channel()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    async def sigkill(self) -> None:
        await self.close_channel()
        self.kill()


@pytest.fixture
async def config_factory(
    tmp_path: Path, store_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Any]]:
    """Config server processes on the test's metadata store (``store_kind``: every test
    runs on SQLite in ``data_dir`` and on etcd under a cluster name of its own)."""
    started: list[ConfigProcess] = []
    store_args: tuple[str, ...] = ()
    if store_kind == "etcd":
        from tests.conftest import etcd_cluster_name

        server = request.getfixturevalue("etcd_server")
        store_args = ("--store", f"{server.url}/{etcd_cluster_name(request)}")

    async def make(*extra: str, data_dir: Path | None = None) -> ConfigProcess:
        proc = ConfigProcess(
            data_dir or tmp_path / "config", tmp_path / "config.log", *store_args, *extra
        )
        await proc.start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        await proc.close_channel()
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGTERM)
            try:
                proc.proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def expect_error(call: Any, status: grpc.StatusCode, code: ErrorCode) -> str:
    with pytest.raises(grpc.RpcError) as exc:
        await call
    err = exc.value
    assert err.code() == status, err.details()
    laura = from_rpc_error(err)
    assert laura.code == code, laura
    return laura.message


def chunk_bounds(chunk: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return bson.decode(chunk.min_key), bson.decode(chunk.max_key)


def all_chunks(resp: routing_pb2.GetShardMapResponse) -> list[tuple[str, Any]]:
    return [(s.shard_id, c) for s in resp.shards for c in s.chunks]


# ------------------------------------------------------------------------------ tests


async def test_metadata_lifecycle_and_restart(config_factory: Callable[..., Any]) -> None:
    async with fake_shard() as s0, fake_shard() as s1:
        cfg = await config_factory()
        config = cfg.config
        for sid, shard in (("shard0", s0), ("shard1", s1)):
            resp = await config.AddShard(
                routing_pb2.AddShardRequest(shard_id=sid, host="127.0.0.1", port=shard.port)
            )
            assert resp.success
        again = await config.AddShard(
            routing_pb2.AddShardRequest(shard_id="shard0", host="127.0.0.1", port=s0.port)
        )
        assert again.success and "unchanged" in again.message
        listed = await config.ListShards(router_ext_pb2.ListShardsRequest())
        assert [(s.shard_id, s.port) for s in listed.shards] == [
            ("shard0", s0.port), ("shard1", s1.port)
        ]

        db = await config.EnsureDatabase(router_ext_pb2.EnsureDatabaseRequest(database="app"))
        assert (db.primary_shard, db.created) == ("shard0", True)
        db = await config.EnsureDatabase(router_ext_pb2.EnsureDatabaseRequest(database="app"))
        assert (db.primary_shard, db.created) == ("shard0", False)

        unsharded = await config.GetShardMap(
            routing_pb2.GetShardMapRequest(database="app", collection="plain")
        )
        assert not unsharded.sharded and unsharded.primary_shard == "shard0"
        assert [(s.shard_id, s.port) for s in unsharded.shards] == [("shard0", s0.port)]

        hashed = await config.ShardCollection(
            routing_pb2.ShardCollectionRequest(
                database="app", collection="users", shard_key_fields=["uid"], strategy=HASH
            )
        )
        assert hashed.success and hashed.chunks == 4 and hashed.epoch
        assert hashed.version == (1 << 32) | 3
        assert ("app", "users", True) in s0.service.counts  # asked the primary for data
        assert ("app", "users") in s0.service.refreshes
        assert ("app", "users") in s1.service.refreshes

        ranged = await config.ShardCollection(
            routing_pb2.ShardCollectionRequest(
                database="shop", collection="orders", shard_key_fields=["region", "ts"],
                strategy=RANGE, unique=True,
            )
        )
        assert ranged.chunks == 1 and ranged.version == 1 << 32

        full = await config.GetShardMap(
            routing_pb2.GetShardMapRequest(database="app", collection="users")
        )
        assert full.sharded and full.strategy == HASH and full.epoch == hashed.epoch
        assert list(full.shard_key_fields) == ["uid"] and full.shard_key_field == "uid"
        assert full.version == hashed.version and full.primary_shard == "shard0"
        placed = all_chunks(full)
        assert [sid for sid, _ in placed] == ["shard0", "shard0", "shard1", "shard1"]
        assert {chunk_bounds(c)[0]["uid"] == MinKey() for _, c in placed} == {True, False}
        shard1_chunk = full.shards[1].chunks[0]

        not_modified = await config.GetShardMap(
            routing_pb2.GetShardMapRequest(
                database="app", collection="users", version=full.version, epoch=full.epoch
            )
        )
        assert not_modified.not_modified and not not_modified.shards

        s1.service.refreshes.clear()
        lo, hi = chunk_bounds(shard1_chunk)
        middle = Int64((int(lo["uid"]) + int(hi["uid"])) // 2)
        split = await config.SplitChunk(
            routing_pb2.SplitChunkRequest(
                chunk_id=shard1_chunk.chunk_id, split_point=bson.encode({"uid": middle})
            )
        )
        assert split.success and split.left_chunk_id and split.right_chunk_id
        assert s1.service.refreshes == [("app", "users")]

        delta = await config.GetShardMap(
            routing_pb2.GetShardMapRequest(
                database="app", collection="users", version=full.version, epoch=full.epoch,
                incremental=True,
            )
        )
        assert delta.incremental and delta.version == (1 << 32) | 5
        changed = {c.chunk_id: (sid, c) for sid, c in all_chunks(delta)}
        assert set(changed) == {split.left_chunk_id, split.right_chunk_id}
        left = changed[split.left_chunk_id][1]
        assert chunk_bounds(left) == ({"uid": lo["uid"]}, {"uid": middle})
        assert (left.version_major, left.version_minor) == (1, 4)

        reg = await cfg.cluster.RegisterNode(
            cluster_pb2.NodeRegistrationRequest(
                node=cluster_pb2.Node(
                    id="node-s0", host="127.0.0.1", port=s0.port, role=cluster_pb2.SHARD,
                    tags={"shard_id": "shard0"},
                )
            )
        )
        assert reg.success and [n.id for n in reg.cluster_nodes] == ["node-s0"]
        beat = await cfg.cluster.Heartbeat(
            cluster_pb2.HeartbeatRequest(node_id="node-s0", timestamp=int(time.time() * 1000))
        )
        assert beat.ack and beat.topology.version >= reg.topology.version
        topo = await cfg.cluster.GetTopology(cluster_pb2.GetTopologyRequest())
        assert [(n.id, n.up, n.shard_id) for n in topo.nodes] == [("node-s0", True, "shard0")]
        assert topo.nodes[0].last_heartbeat_ms > 0
        by_shard = {s.shard_id: s for s in topo.shards}
        assert by_shard["shard0"].node_id == "node-s0" and by_shard["shard0"].port == s0.port
        assert len(by_shard["shard0"].chunks) == 2  # hashed
        assert len(by_shard["shard1"].chunks) == 4  # hashed, two split halves, shop.orders

        dbs = await config.ListDatabases(router_ext_pb2.ListDatabasesRequest())
        assert {d.name: list(d.sharded_collections) for d in dbs.databases} == {
            "app": ["users"], "shop": ["orders"]
        }

        # kill -9, restart on the same directory: everything is still there
        await cfg.sigkill()
        cfg2 = await config_factory(data_dir=cfg.data_dir)
        after = await cfg2.config.GetShardMap(
            routing_pb2.GetShardMapRequest(database="app", collection="users")
        )
        assert after.epoch == full.epoch and after.version == delta.version
        assert sorted(c.chunk_id for _, c in all_chunks(after)) == sorted(
            [c.chunk_id for _, c in placed if c.chunk_id != shard1_chunk.chunk_id]
            + [split.left_chunk_id, split.right_chunk_id]
        )
        orders = await cfg2.config.GetShardMap(
            routing_pb2.GetShardMapRequest(database="shop", collection="orders")
        )
        assert orders.strategy == routing_pb2.COMPOUND and orders.unique
        assert [chunk_bounds(c) for _, c in all_chunks(orders)] == [
            ({"region": MinKey(), "ts": MinKey()}, {"region": MaxKey(), "ts": MaxKey()})
        ]
        topo2 = await cfg2.cluster.GetTopology(cluster_pb2.GetTopologyRequest())
        assert topo2.version == topo.version
        assert [n.id for n in topo2.nodes] == ["node-s0"]
        db2 = await cfg2.config.EnsureDatabase(router_ext_pb2.EnsureDatabaseRequest(database="app"))
        assert (db2.primary_shard, db2.created) == ("shard0", False)
        await expect_error(
            cfg2.config.ShardCollection(
                routing_pb2.ShardCollectionRequest(
                    database="app", collection="users", shard_key_fields=["uid"]
                )
            ),
            grpc.StatusCode.ALREADY_EXISTS,
            ErrorCode.ALREADY_SHARDED,
        )
        assert await cfg2.terminate() == 0


async def test_bad_input_error_codes(config_factory: Callable[..., Any]) -> None:
    async with fake_shard() as s0:
        cfg = await config_factory()
        config = cfg.config
        await config.AddShard(
            routing_pb2.AddShardRequest(shard_id="shard0", host="127.0.0.1", port=s0.port)
        )
        invalid = grpc.StatusCode.INVALID_ARGUMENT

        await expect_error(
            config.ShardCollection(
                routing_pb2.ShardCollectionRequest(database="db", collection="c")
            ),
            invalid, ErrorCode.BAD_VALUE,
        )
        await expect_error(
            config.ShardCollection(
                routing_pb2.ShardCollectionRequest(
                    database="db", collection="c", shard_key_fields=["$bad"]
                )
            ),
            invalid, ErrorCode.BAD_VALUE,
        )
        await expect_error(
            config.ShardCollection(
                routing_pb2.ShardCollectionRequest(
                    database="bad.db", collection="c", shard_key_fields=["a"]
                )
            ),
            invalid, ErrorCode.INVALID_NAMESPACE,
        )
        ok = await config.ShardCollection(
            routing_pb2.ShardCollectionRequest(
                database="db", collection="c", shard_key_fields=["a"]
            )
        )
        assert ok.success
        await expect_error(
            config.ShardCollection(
                routing_pb2.ShardCollectionRequest(
                    database="db", collection="c", shard_key_fields=["a"]
                )
            ),
            grpc.StatusCode.ALREADY_EXISTS, ErrorCode.ALREADY_SHARDED,
        )
        await expect_error(
            config.GetShardMap(routing_pb2.GetShardMapRequest(database="nope", collection="c")),
            grpc.StatusCode.NOT_FOUND, ErrorCode.NAMESPACE_NOT_FOUND,
        )
        full = await config.GetShardMap(
            routing_pb2.GetShardMapRequest(database="db", collection="c")
        )
        chunk_id = full.shards[0].chunks[0].chunk_id
        for point in ({"a": MinKey()}, {"b": 1}, {"a": [1]}, {"a": 1, "b": 2}):
            await expect_error(
                config.SplitChunk(
                    routing_pb2.SplitChunkRequest(chunk_id=chunk_id, split_point=bson.encode(point))
                ),
                invalid, ErrorCode.INVALID_SPLIT_POINT,
            )
        await expect_error(
            config.SplitChunk(routing_pb2.SplitChunkRequest(chunk_id=chunk_id)),
            invalid, ErrorCode.INVALID_SPLIT_POINT,
        )
        await expect_error(
            config.SplitChunk(
                routing_pb2.SplitChunkRequest(chunk_id=chunk_id, split_point=b"\x05\x00")
            ),
            invalid, ErrorCode.INVALID_BSON,
        )
        await expect_error(
            config.SplitChunk(
                routing_pb2.SplitChunkRequest(chunk_id="nope", split_point=bson.encode({"a": 1}))
            ),
            grpc.StatusCode.NOT_FOUND, ErrorCode.CHUNK_NOT_FOUND,
        )
        await expect_error(
            config.MigrateChunk(routing_pb2.MigrateChunkRequest(chunk_id=chunk_id)),
            grpc.StatusCode.INVALID_ARGUMENT, ErrorCode.BAD_VALUE,
        )
        await expect_error(
            config.RemoveShard(routing_pb2.RemoveShardRequest(shard_id="shard0")),
            grpc.StatusCode.FAILED_PRECONDITION, ErrorCode.ILLEGAL_OPERATION,
        )
        await expect_error(
            config.AddShard(routing_pb2.AddShardRequest(shard_id="x", host="127.0.0.1")),
            invalid, ErrorCode.BAD_VALUE,
        )
        start = time.monotonic()
        await expect_error(
            config.AddShard(
                routing_pb2.AddShardRequest(shard_id="gone", host="127.0.0.1", port=free_port())
            ),
            grpc.StatusCode.UNAVAILABLE, ErrorCode.HOST_UNREACHABLE,
        )
        assert time.monotonic() - start < 5
        await expect_error(
            cfg.cluster.Heartbeat(cluster_pb2.HeartbeatRequest(node_id="stranger")),
            grpc.StatusCode.NOT_FOUND, ErrorCode.NODE_NOT_FOUND,
        )
        assert await cfg.terminate() == 0


async def test_unresponsive_shards_do_not_hang_shard_collection(
    config_factory: Callable[..., Any],
) -> None:
    async with fake_shard() as s0, fake_shard(hang=True) as s1, fake_shard() as s2:
        cfg = await config_factory()
        for sid, shard in (("shard0", s0), ("shard1", s1), ("shard2", s2)):
            await cfg.config.AddShard(
                routing_pb2.AddShardRequest(shard_id=sid, host="127.0.0.1", port=shard.port)
            )
        await s2.server.stop(None)  # shard2 is down, shard1 never answers RefreshMetadata
        s0.service.documents = 7  # the primary already holds documents
        await cfg.config.EnsureDatabase(router_ext_pb2.EnsureDatabaseRequest(database="db"))
        start = time.monotonic()
        resp = await cfg.config.ShardCollection(
            routing_pb2.ShardCollectionRequest(
                database="db", collection="c", shard_key_fields=["k"], strategy=HASH
            ),
            timeout=30,
        )
        elapsed = time.monotonic() - start
        assert resp.success and resp.chunks == 6
        assert elapsed < 15, elapsed
        assert "shard1" in resp.message and "shard2" in resp.message
        assert ("db", "c") in s0.service.refreshes
        full = await cfg.config.GetShardMap(
            routing_pb2.GetShardMapRequest(database="db", collection="c")
        )
        assert {sid for sid, _ in all_chunks(full)} == {"shard0"}  # data on primary: stay
        assert await cfg.terminate() == 0


async def test_nodes_marked_down_after_missed_heartbeats(
    config_factory: Callable[..., Any],
) -> None:
    cfg = await config_factory("--heartbeat-timeout", "0.5")
    reg = await cfg.cluster.RegisterNode(
        cluster_pb2.NodeRegistrationRequest(
            node=cluster_pb2.Node(id="n1", host="127.0.0.1", port=1234, role=cluster_pb2.ROUTER)
        )
    )

    async def node_up() -> bool:
        topo = await cfg.cluster.GetTopology(cluster_pb2.GetTopologyRequest())
        return bool(topo.nodes[0].up)

    async def is_down() -> bool:
        return not await node_up()

    await poll(is_down, 10, "node marked down")
    topo = await cfg.cluster.GetTopology(cluster_pb2.GetTopologyRequest())
    assert topo.version > reg.topology.version
    beat = await cfg.cluster.Heartbeat(cluster_pb2.HeartbeatRequest(node_id="n1"))
    assert beat.ack and [n.up for n in beat.topology.nodes] == [True]
    await cfg.cluster.DeregisterNode(cluster_pb2.NodeDeregistrationRequest(node_id="n1"))
    await expect_error(
        cfg.cluster.Heartbeat(cluster_pb2.HeartbeatRequest(node_id="n1")),
        grpc.StatusCode.NOT_FOUND, ErrorCode.NODE_NOT_FOUND,
    )
    assert await cfg.terminate() == 0
