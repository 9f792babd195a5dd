"""Index benchmark: an indexed point query vs a collection scan, through a local cluster.

Starts a cluster with the launcher (``python -m lauradb.launcher up``: config server,
shards and router on free loopback ports, data in a temporary directory), loads the
same documents into a collection hashed over every shard and into an unsharded one,
times point queries ``{a: v}`` (5 matches each) by collection scan, builds an index
on ``{a: 1}``, times them again, and prints the two side by side with the speed-up
and the documents each examined. ``python -m bench indexes [--docs N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bson
import grpc
from grpc import aio

from lauradb.cluster import router_ext_pb2, routing_pb2, routing_pb2_grpc
from lauradb.rpc.server import wait_for_health

SHARDS = 3
MATCHES_PER_VALUE = 5
SCAN_QUERIES = 5
INDEX_QUERIES = 200
INSERT_BATCH = 1000
START_TIMEOUT = 60.0
RPC = 600.0
DB = "bench_indexes"


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(count: int) -> int:
    """A port P with P .. P+count-1 free (the launcher's layout needs a block)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + count < 65535 and all(_free(p) for p in range(base, base + count)):
            return base
    raise RuntimeError("no block of free ports found")


class LocalCluster:
    """``lauradb-cluster up`` in a subprocess, stopped with SIGTERM."""

    def __init__(self, shards: int, data_dir: Path) -> None:
        self.port = free_base_port(shards + 3)
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = data_dir / "launcher.log"
        argv = [
            sys.executable, "-m", "lauradb.launcher", "up", "--shards", str(shards),
            "--port", str(self.port), "--data-dir", str(data_dir / "data"),
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ,
                                                                 "PYTHONUNBUFFERED": "1"}
            )  # fmt: skip

    async def wait_ready(self, shards: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the launcher exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(TimeoutError, grpc.RpcError):
                await wait_for_health(self.address, timeout=1.0)
                async with aio.insecure_channel(self.address) as channel:
                    config = routing_pb2_grpc.ConfigServiceStub(channel)
                    listed = await config.ListShards(router_ext_pb2.ListShardsRequest(), timeout=5)
                    if len(listed.shards) == shards:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ready within {START_TIMEOUT:g}s")
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def load(router: routing_pb2_grpc.RouterServiceStub, coll: str, n: int) -> float:
    values = max(n // MATCHES_PER_VALUE, 1)
    start = time.perf_counter()
    pending = []
    for lo in range(0, n, INSERT_BATCH):
        docs = [
            bson.encode({"_id": i, "a": i % values, "pad": "p" * 100})
            for i in range(lo, min(n, lo + INSERT_BATCH))
        ]
        request = routing_pb2.InsertRequest(
            database=DB, collection=coll, documents=docs, ordered=False
        )
        pending.append(router.Insert(request, timeout=RPC))
        if len(pending) >= 4:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    return time.perf_counter() - start


async def point_queries(
    router: routing_pb2_grpc.RouterServiceStub, coll: str, n: int, queries: int
) -> tuple[float, int]:
    """Median seconds per point query, and the documents one of them examined."""
    values = max(n // MATCHES_PER_VALUE, 1)
    times = []
    examined = 0
    for q in range(queries):
        v = (q * 7919) % values
        request = routing_pb2.QueryRequest(database=DB, collection=coll, query=bson.encode({"a": v}))
        start = time.perf_counter()
        response = await router.Query(request, timeout=RPC)
        times.append(time.perf_counter() - start)
        examined = response.stats.documents_examined
        assert len(response.documents) == min(MATCHES_PER_VALUE, n), len(response.documents)
    return statistics.median(times), examined


def row(name: str, scan: float, indexed: float, note: str) -> dict[str, Any]:
    ratio = scan / indexed if indexed else float("inf")
    print(f"{name:<32} {scan * 1000:10.2f} {indexed * 1000:10.2f} {ratio:8.1f}x  {note}")
    return {"scenario": "indexes", "name": name, "seconds": indexed,
            "reference_seconds": scan, "ratio": ratio, "note": note}  # fmt: skip


async def bench(n: int, shards: int, data_dir: Path) -> list[dict[str, Any]]:
    cluster = LocalCluster(shards, data_dir)
    out = []
    try:
        await cluster.wait_ready(shards)
        async with aio.insecure_channel(cluster.address) as channel:
            router = routing_pb2_grpc.RouterServiceStub(channel)
            config = routing_pb2_grpc.ConfigServiceStub(channel)
            await config.ShardCollection(
                routing_pb2.ShardCollectionRequest(
                    database=DB, collection="hashed", shard_key_fields=["_id"],
                    strategy=routing_pb2.HASH,
                ),
                timeout=RPC,
            )  # fmt: skip
            print(f"{'collection':<32} {'scan ms':>10} {'index ms':>10} {'speed-up':>9}  notes")
            for coll, label in (("hashed", f"hashed, {shards} shards"), ("plain", "unsharded")):
                loaded = await load(router, coll, n)
                scan, scan_examined = await point_queries(router, coll, n, SCAN_QUERIES)
                start = time.perf_counter()
                await router.CreateIndex(
                    router_ext_pb2.CreateIndexRequest(
                        database=DB, collection=coll,
                        index=router_ext_pb2.IndexSpec(keys=bson.encode({"a": 1})),
                    ),
                    timeout=RPC,
                )  # fmt: skip
                built = time.perf_counter() - start
                indexed, index_examined = await point_queries(router, coll, n, INDEX_QUERIES)
                note = (
                    f"examined {scan_examined} -> {index_examined}; "
                    f"load {n / loaded:,.0f} docs/s; index built in {built:.2f}s"
                )
                out.append(row(f"point query ({label})", scan, indexed, note))
            await router.DropDatabase(router_ext_pb2.DropDatabaseRequest(database=DB), timeout=RPC)
    finally:
        cluster.stop()
    return out


def run(ns: argparse.Namespace) -> list[dict[str, Any]]:
    n = ns.docs
    print(f"index benchmark: {n} documents of ~130 B, {MATCHES_PER_VALUE} per value of a, "
          f"{SHARDS} shards, Python {platform.python_version()}, {platform.machine()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="lauradb-bench-") as tmp:
        return asyncio.run(bench(n, SHARDS, Path(tmp)))
