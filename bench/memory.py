"""Router memory under sustained load: RSS at the start and the end (default 5 minutes).

Uses the ycsb data set (3 shards, started and loaded here unless the ycsb scenario
already did it in this run) and keeps 8 clients busy through the router for
``--duration`` seconds with a mix that exercises the router's main paths over every
shard: 45% point reads and 45% updates over all ``usertable`` keys (Zipfian), 5%
short range scans of ``userscan``, 5% ``_id`` range queries on ``usertable`` (hashed,
so a scatter-gather over the 3 shards). The router's RSS is sampled every
``duration / 20`` seconds; "start" is the sample after a warm-up of
``min(30 s, duration / 10)`` of load (the first requests fill caches, pools and
allocator arenas), "end" the last one. Target: end <= 1.10 x start.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import bson

from bench.common import (
    CpuMeter,
    Env,
    Op,
    closed_loop,
    cycle_from,
    fmt,
    print_table,
    raw_method,
    rss_bytes,
)
from bench.ycsb import DB, SCANTABLE, USERTABLE, Dataset, Zipf, dataset
from lauradb.cluster import routing_pb2

CONCURRENCY = 8
POOL = 8192
GROWTH_LIMIT = 1.10


def mixed_ops(ds: Dataset, seed: int = 7) -> list[Op]:
    query = raw_method(ds.channel, "/lauradb.cluster.RouterService/Query")
    update = raw_method(ds.channel, "/lauradb.cluster.RouterService/Update")
    rng = random.Random(seed)
    zipf = Zipf(ds.n, seed)
    out = []
    for _ in range(POOL):
        roll = rng.random()
        k = zipf.pick(rng)
        if roll < 0.45:
            req = routing_pb2.QueryRequest(database=DB, collection=USERTABLE,
                                           query=bson.encode({"_id": k}))  # fmt: skip
            out.append(Op("read", query, req.SerializeToString()))
        elif roll < 0.90:
            req2 = routing_pb2.UpdateRequest(
                database=DB, collection=USERTABLE, query=bson.encode({"_id": k}),
                update=bson.encode({"$inc": {"n": 1}}),
            )  # fmt: skip
            out.append(Op("update", update, req2.SerializeToString()))
        elif roll < 0.95:
            start = rng.randrange(max(ds.n - ds.max_scan, 1))
            req3 = routing_pb2.QueryRequest(
                database=DB, collection=SCANTABLE,
                query=bson.encode({"k": {"$gte": start, "$lt": start + ds.max_scan}}),
                sort=bson.encode({"k": 1}), limit=ds.max_scan,
            )  # fmt: skip
            out.append(Op("scan", query, req3.SerializeToString()))
        else:
            req4 = routing_pb2.QueryRequest(
                database=DB, collection=USERTABLE,
                query=bson.encode({"_id": {"$gte": k, "$lt": k + 5}}),
            )  # fmt: skip
            out.append(Op("scatter", query, req4.SerializeToString()))
    return out


async def run(env: Env) -> dict[str, Any]:
    opts = env.opts
    ds = await dataset(env)
    pid = ds.router_pid
    assert pid is not None
    duration = opts.duration
    warmup = min(30.0, duration / 10)
    interval = max(duration / 20, 0.5)
    print(f"memory: {duration:g} s of mixed load through the router at concurrency "
          f"{CONCURRENCY} (+{warmup:g} s warm-up), router RSS every {interval:g} s", flush=True)  # fmt: skip
    pool = mixed_ops(ds)
    samples: list[tuple[float, int]] = []
    before = rss_bytes(pid)
    loop = asyncio.get_running_loop()

    async def sample() -> None:
        await asyncio.sleep(warmup)
        t0 = loop.time()
        while True:
            samples.append((loop.time() - t0, rss_bytes(pid)))
            await asyncio.sleep(interval)

    sampler = asyncio.create_task(sample())
    try:
        m = await closed_loop(
            lambda i: cycle_from(pool, i * POOL // CONCURRENCY), CONCURRENCY, duration, warmup,
            CpuMeter({"router": [pid]}),
        )  # fmt: skip
    finally:
        sampler.cancel()
    samples.append((duration, rss_bytes(pid)))
    start, end = samples[0][1], samples[-1][1]
    peak = max(s for _, s in samples)
    growth = end / start if start else float("nan")
    summary = m.summary()
    mib = 2**20
    print()
    print("memory: router RSS under sustained load")
    print_table(
        ("before load MiB", "start MiB", "end MiB", "peak MiB", "end/start", "ops", "ops/s",
         "p50 ms", "p99 ms", "max ms", "errors"),
        [[fmt(before / mib, ".1f"), fmt(start / mib, ".1f"), fmt(end / mib, ".1f"),
          fmt(peak / mib, ".1f"), fmt(growth, ".3f"), str(m.ops), fmt(summary["ops_per_s"], ",.0f"),
          fmt(summary["p50_ms"]), fmt(summary["p99_ms"]), fmt(summary["max_ms"]), str(m.errors)]],
    )  # fmt: skip
    return {
        "duration_s": duration,
        "warmup_s": warmup,
        "concurrency": CONCURRENCY,
        "rss_before_load_bytes": before,
        "rss_start_bytes": start,
        "rss_end_bytes": end,
        "rss_peak_bytes": peak,
        "rss_growth": growth,
        "rss_samples": [{"t": round(t, 1), "rss_bytes": s} for t, s in samples],
        "load": summary,
    }
