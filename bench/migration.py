"""Migration benchmark: move one loaded chunk between shards while a client writes to it.

Starts a local cluster with the launcher (2 shards, like ``bench/indexes.py``), turns
the balancer off, loads N documents of ~1 KB into a range-sharded collection (one chunk
[MinKey, MaxKey) on its primary shard), then:

1. baseline: one client updates random documents of that range through the router for
   a few seconds and records each write's latency;
2. migration: ``MigrateChunk`` moves the chunk to the other shard while the same client
   keeps writing; the client's latencies during the migration are recorded.

Prints the migration throughput (documents/s, MB/s) and the client's write latencies
(p50, p99, max = the longest "write pause") with and without a migration, side by side
with the targets of issue 5 (>= 10,000 docs/s; write pause p99 < 100 ms). Targets are
printed, never asserted. ``python -m bench migration [--docs N]`` or
``python -m bench.migration [--docs N]`` (default 50,000 documents).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
import grpc
from grpc import aio

from bench.indexes import LocalCluster
from lauradb.cluster import router_ext_pb2, routing_pb2, routing_pb2_grpc

SHARDS = 2
DEFAULT_DOCS = 50_000
DOC_BYTES = 1024
INSERT_BATCH = 500
BASELINE_SECONDS = 5.0
RPC = 600.0
WRITE_TIMEOUT = 60.0
DB = "bench_migration"
COLL = "moving"
TARGET_DOCS_PER_S = 10_000.0
TARGET_P99_MS = 100.0


def make_doc(k: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": k, "k": k, "n": 0, "pad": ""}
    doc["pad"] = "p" * max(0, DOC_BYTES - len(bson.encode(doc)))
    return doc


async def load(router: routing_pb2_grpc.RouterServiceStub, n: int) -> float:
    """Insert documents k = 0 .. n-1 (a few batches in flight); the seconds taken."""
    start = time.perf_counter()
    pending = []
    for lo in range(0, n, INSERT_BATCH):
        docs = [bson.encode(make_doc(k)) for k in range(lo, min(n, lo + INSERT_BATCH))]
        request = routing_pb2.InsertRequest(
            database=DB, collection=COLL, documents=docs, ordered=False
        )
        pending.append(router.Insert(request, timeout=RPC))
        if len(pending) >= 4:
            for response in await asyncio.gather(*pending):
                if response.errors:
                    raise RuntimeError(f"load failed: {response.errors[0].error}")
            pending = []
    for response in await asyncio.gather(*pending):
        if response.errors:
            raise RuntimeError(f"load failed: {response.errors[0].error}")
    return time.perf_counter() - start


@dataclass
class Latencies:
    seconds: list[float] = field(default_factory=list)
    errors: int = 0

    def percentile(self, q: float) -> float:
        if not self.seconds:
            return float("nan")
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def max(self) -> float:
        return max(self.seconds, default=float("nan"))


async def writer(
    router: routing_pb2_grpc.RouterServiceStub, n: int, stop: asyncio.Event, out: Latencies
) -> None:
    """One client: sequential single-document updates of random keys in the range."""
    rng = random.Random(1)
    while not stop.is_set():
        k = rng.randrange(n)
        request = routing_pb2.UpdateRequest(
            database=DB, collection=COLL, query=bson.encode({"k": k}),
            update=bson.encode({"$inc": {"n": 1}}),
        )  # fmt: skip
        start = time.perf_counter()
        try:
            await router.Update(request, timeout=WRITE_TIMEOUT)
        except grpc.RpcError:
            out.errors += 1
            continue
        out.seconds.append(time.perf_counter() - start)


async def timed_writes(
    router: routing_pb2_grpc.RouterServiceStub, n: int, seconds: float
) -> Latencies:
    out, stop = Latencies(), asyncio.Event()
    task = asyncio.create_task(writer(router, n, stop, out))
    await asyncio.sleep(seconds)  # the measurement window itself
    stop.set()
    await task
    return out


@dataclass
class MigrationResult:
    documents: int
    seconds: float
    chunks: int
    donor: str
    recipient: str
    latencies: Latencies


async def migrate_while_writing(
    router: routing_pb2_grpc.RouterServiceStub,
    config: routing_pb2_grpc.ConfigServiceStub,
    n: int,
) -> MigrationResult:
    shard_map = await config.GetShardMap(
        routing_pb2.GetShardMapRequest(database=DB, collection=COLL), timeout=RPC
    )
    owned = [(route.shard_id, chunk) for route in shard_map.shards for chunk in route.chunks]
    donor = owned[0][0]
    chunks = [chunk for shard, chunk in owned if shard == donor]
    recipient = next(route.shard_id for route in shard_map.shards if route.shard_id != donor)
    out, stop = Latencies(), asyncio.Event()
    task = asyncio.create_task(writer(router, n, stop, out))
    documents = 0
    start = time.perf_counter()
    try:
        for chunk in chunks:  # one chunk unless something split it meanwhile
            request = routing_pb2.MigrateChunkRequest(
                chunk_id=chunk.chunk_id, from_shard=donor, to_shard=recipient
            )
            response = await config.MigrateChunk(request, timeout=RPC)
            if not response.success:
                raise RuntimeError(f"MigrateChunk failed: {response.error}")
            documents += response.documents_migrated
        seconds = time.perf_counter() - start
    finally:
        stop.set()
        await task
    return MigrationResult(documents, seconds, len(chunks), donor, recipient, out)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:10.2f}"


def report(n: int, doc_bytes: int, base: Latencies, moved: MigrationResult) -> list[dict[str, Any]]:
    docs_s = moved.documents / moved.seconds if moved.seconds else float("inf")
    mb_s = docs_s * doc_bytes / 1e6
    during = moved.latencies
    print(
        f"migrated {moved.documents:,} documents ({moved.chunks} chunk(s)) "
        f"{moved.donor} -> {moved.recipient} in {moved.seconds:.2f} s"
    )
    print(f"{'migration':<28} {'value':>12}   target")
    print(f"{'throughput (docs/s)':<28} {docs_s:12,.0f}   >= {TARGET_DOCS_PER_S:,.0f}")
    print(f"{'throughput (MB/s)':<28} {mb_s:12.2f}")
    print(f"{'client writes (ms)':<28} {'no migration':>12} {'migrating':>10}   target")
    print(f"{'  p50':<28} {ms(base.percentile(0.5)):>12} {ms(during.percentile(0.5))}")
    print(f"{'  p99':<28} {ms(base.percentile(0.99)):>12} {ms(during.percentile(0.99))}"
          f"   < {TARGET_P99_MS:g}")  # fmt: skip
    print(f"{'  max (write pause)':<28} {ms(base.max):>12} {ms(during.max)}")
    print(f"{'  writes':<28} {len(base.seconds):12d} {len(during.seconds):10d}")
    print(f"{'  errors':<28} {base.errors:12d} {during.errors:10d}")

    def row(name: str, value: float, reference: float | None, target: str) -> dict[str, Any]:
        return {"scenario": "migration", "name": name, "value": value,
                "reference": reference, "target": target, "documents": n}  # fmt: skip

    p99_target = f"< {TARGET_P99_MS / 1000:g}"
    return [
        row("migration docs/s", docs_s, None, f">= {TARGET_DOCS_PER_S:g}"),
        row("migration MB/s", mb_s, None, ""),
        row("write p50 s", during.percentile(0.5), base.percentile(0.5), ""),
        row("write p99 s", during.percentile(0.99), base.percentile(0.99), p99_target),
        row("write max s (pause)", during.max, base.max, ""),
        row("write errors", during.errors, base.errors, "0"),
    ]


async def bench(n: int, data_dir: Path) -> list[dict[str, Any]]:
    cluster = LocalCluster(SHARDS, data_dir)
    try:
        await cluster.wait_ready(SHARDS)
        async with aio.insecure_channel(cluster.address) as channel:
            router = routing_pb2_grpc.RouterServiceStub(channel)
            config = routing_pb2_grpc.ConfigServiceStub(channel)
            await config.SetBalancerState(
                router_ext_pb2.SetBalancerStateRequest(enabled=False), timeout=RPC
            )
            await config.ShardCollection(
                routing_pb2.ShardCollectionRequest(
                    database=DB, collection=COLL, shard_key_fields=["k"],
                    strategy=routing_pb2.RANGE,
                ),
                timeout=RPC,
            )  # fmt: skip
            loaded = await load(router, n)
            print(f"loaded in {loaded:.1f} s ({n / loaded:,.0f} docs/s)")
            base = await timed_writes(router, n, BASELINE_SECONDS)
            moved = await migrate_while_writing(router, config, n)
            counted = await router.Count(
                router_ext_pb2.CountRequest(database=DB, collection=COLL), timeout=RPC
            )
            if counted.count != n:
                print(f"WARNING: {counted.count:,} documents after the migration, expected {n:,}")
            out = report(n, len(bson.encode(make_doc(0))), base, moved)
            await router.DropDatabase(router_ext_pb2.DropDatabaseRequest(database=DB), timeout=RPC)
            return out
    finally:
        cluster.stop()


def run(ns: argparse.Namespace) -> list[dict[str, Any]]:
    n = ns.docs
    print(f"migration benchmark: {n:,} documents of ~{DOC_BYTES} B in one chunk, {SHARDS} "
          f"shards, Python {platform.python_version()}, {platform.machine()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="lauradb-bench-") as tmp:
        return asyncio.run(bench(n, Path(tmp)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.migration", description=__doc__)
    parser.add_argument("--docs", type=int, default=DEFAULT_DOCS, help="documents to migrate")
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
