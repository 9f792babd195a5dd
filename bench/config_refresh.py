"""Routing-table refresh time vs map size, on each metadata store (issue 11).

``./dev.sh bench config``: for each backend (SQLite, then etcd: a local etcd the
benchmark starts; skipped with a note when no etcd binary is installed) a real cluster
(one config server on that store, one shard, no router process) and a collection with
10 and with 100,000 range chunks (``--chunks`` to change; the big map is written
straight into the store, as 100,000 splits would leave it: contiguous ranges on the
shard, versions (1, i)). Measured in this process with the router's own code
(``router.routing_cache.RoutingCache`` over a ``ConfigClient`` to the config server):

* full: a cold load (``GetShardMap`` of the whole map, decoded into a ``RoutingTable``);
* incremental: after one ``SplitChunk``, the refresh from the previous table (the
  config server sends only the chunks changed since its version).

Median of several runs each (fewer with ``--quick``), in milliseconds, side by side.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import bson
from bson.max_key import MaxKey
from bson.min_key import MinKey

from bench.common import Env, fmt, print_table
from config_server.catalog import Catalog
from config_server.key_bounds import sort_bytes
from config_server.model import ChunkRecord
from config_server.store import MetadataStore, SqliteMetadataStore
from lauradb.bsonkit.codec import encode_ordered
from lauradb.cluster import routing_pb2
from lauradb.etcd_local import LocalEtcd, find_etcd
from lauradb.rpc.channels import ChannelPool
from lauradb.sharding.shard_key import RANGE, ShardKeyPattern
from router.config_client import ConfigClient
from router.routing_cache import RoutingCache

DB = "benchcfg"
KEY_SPACE = 1_000_000_000
BATCH = 8192  # chunks per metadata transaction while loading (etcd's limits)
SIZES = (10, 100_000)


def _bounds(chunks: int) -> list[Any]:
    width = KEY_SPACE // chunks
    return [MinKey(), *(i * width for i in range(1, chunks)), MaxKey()]


def load_chunks(store: MetadataStore, namespace: str, chunks: int, shard: str) -> None:
    """Replace the namespace's chunks with ``chunks`` contiguous ranges on ``shard``."""
    pattern = ShardKeyPattern(["k"], RANGE)
    bounds = _bounds(chunks)
    records = [
        ChunkRecord(
            chunk_id=f"{namespace}-{i}",
            namespace=namespace,
            min_key=encode_ordered({"k": bounds[i]}),
            max_key=encode_ordered({"k": bounds[i + 1]}),
            min_sort=sort_bytes(pattern, {"k": bounds[i]}),
            shard_id=shard,
            major=1,
            minor=i,
        )
        for i in range(chunks)
    ]
    for start in range(0, chunks, BATCH):
        with store.transaction() as tx:
            if start == 0:
                tx.delete_chunks(namespace)
            tx.insert_chunks(records[start : start + BATCH])
            tx.bump_topology_version()


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000.0


async def measure(config_address: str, coll: str, runs: int) -> dict[str, Any]:
    pool = ChannelPool()
    try:
        client = ConfigClient(pool.get(config_address), config_address, 120.0)
        cache = RoutingCache(client)
        ns = f"{DB}.{coll}"
        full: list[float] = []
        table = await cache.get(DB, coll)  # warm the channel
        chunks = len(table.chunk_map) if table.chunk_map is not None else 0
        for _ in range(runs):
            cache.invalidate(ns)
            started = time.perf_counter()
            table = await cache.get(DB, coll)
            full.append(time.perf_counter() - started)
        incremental: list[float] = []
        width = KEY_SPACE // 4
        for i in range(runs):
            resp = await client.get_shard_map(DB, coll)
            chunk_id, middle = _chunk_holding(resp, 3 * width + 7919 * (i + 1))
            await client.call("SplitChunk", routing_pb2.SplitChunkRequest(
                chunk_id=chunk_id, split_point=encode_ordered({"k": middle}),
            ))  # fmt: skip
            started = time.perf_counter()
            table = await cache.refresh(DB, coll, table)
            incremental.append(time.perf_counter() - started)
        return {
            "chunks": chunks,
            "full_ms": _median_ms(full),
            "incremental_ms": _median_ms(incremental) if incremental else None,
            "runs": runs,
            "incremental_refreshes": cache.refreshes,
        }
    finally:
        await pool.close()


def _chunk_holding(resp: routing_pb2.GetShardMapResponse, value: int) -> tuple[str, int]:
    """The chunk whose range holds ``value`` (ranges are k values) and its middle."""
    for shard in resp.shards:
        for chunk in shard.chunks:
            lo = bson.decode(chunk.min_key)["k"]
            hi = bson.decode(chunk.max_key)["k"]
            low = -KEY_SPACE if isinstance(lo, MinKey) else lo
            high = 2 * KEY_SPACE if isinstance(hi, MaxKey) else hi
            if low <= value < high:
                return str(chunk.chunk_id), (low + high) // 2
    raise AssertionError("no chunk holds the split point")


async def bench_backend(env: Env, backend: str, sizes: tuple[int, ...]) -> dict[str, Any]:
    from tests.integration.harness import Cluster, shard_collection

    base = env.tmp / f"config-{backend}"
    etcd: LocalEtcd | None = None
    store_arg = "sqlite"
    if backend == "etcd":
        etcd = LocalEtcd(base / "etcd")
        await asyncio.to_thread(etcd.start)
        store_arg = f"{etcd.url}/bench"
    cluster = Cluster(
        base, shards=1, log_level="warning", store=store_arg,
        extra_config_args=["--no-balancer"],
    )
    results: dict[str, Any] = {}
    store: MetadataStore | None = None
    try:
        for proc in [*cluster.configs, *cluster.shard_procs]:
            proc.start()
        await asyncio.gather(*(p.wait_healthy() for p in [*cluster.configs, *cluster.shards]))
        await cluster.add_shards()
        config = cluster.config_server_stub()
        for size in sizes:
            await shard_collection(config, DB, f"c{size}", ["k"], "range")
        if backend == "etcd":
            from config_server.store_etcd import EtcdMetadataStore

            store = EtcdMetadataStore(store_arg)
        else:
            assert cluster.config.data_dir is not None
            store = SqliteMetadataStore(Path(cluster.config.data_dir))
        Catalog(store)  # schema checks
        for size in sizes:
            started = time.perf_counter()
            await asyncio.to_thread(load_chunks, store, f"{DB}.c{size}", size, "shard0")
            print(f"  {backend}: {size:,} chunks written in "
                  f"{time.perf_counter() - started:.1f}s", flush=True)  # fmt: skip
        runs_small = 5 if env.opts.quick else 30
        runs_big = 2 if env.opts.quick else 5
        for size in sizes:
            runs = runs_small if size <= 1000 else runs_big
            results[str(size)] = await measure(cluster.config_address, f"c{size}", runs)
    finally:
        if store is not None:
            store.close()
        await cluster.close_channels()
        for proc in [*cluster.shard_procs, *cluster.configs]:
            await asyncio.to_thread(proc.terminate, check=False)
            proc.forget()
        if etcd is not None:
            await asyncio.to_thread(etcd.stop)
    return results


async def run(env: Env) -> dict[str, Any]:
    sizes = tuple(c for c in env.opts.chunk_counts if c in (10, 100_000)) or SIZES
    if env.opts.chunk_counts != (10, 1_000, 100_000):  # --chunks given: use it as is
        sizes = env.opts.chunk_counts
    backends = ["sqlite", "etcd"]
    if find_etcd() is None:
        print("  no etcd binary (./dev.sh setup installs it): etcd skipped", flush=True)
        backends = ["sqlite"]
    out: dict[str, Any] = {}
    for backend in backends:
        out[backend] = await bench_backend(env, backend, sizes)
    rows = []
    for size in sizes:
        row: list[Any] = [f"{size:,}"]
        for backend in backends:
            got = out[backend].get(str(size), {})
            row += [fmt(got.get("full_ms"), ".1f"), fmt(got.get("incremental_ms"), ".1f")]
        rows.append(row)
    headers = ["chunks"]
    for backend in backends:
        headers += [f"{backend} full ms", f"{backend} incr. ms"]
    print_table(headers, rows, "r" * len(headers))
    return out
