"""Scatter-gather vs targeted queries, on 1 .. 8 shards.

One cluster with 8 shards (balancer off). For each n in 1..8 a collection ranged on
``k``, split into n equal chunks, chunk i on shard i (placed before loading, so the
moves carry no data), ``docs_per_shard`` documents per shard of ~200 B with
``_id`` = ``k`` = ``v`` = 0 .. N-1, and an index on ``v`` on every shard.

* targeted: ``{k: x}`` — the router sends it to the one shard owning x;
* scatter: ``{v: x}`` — no shard key predicate, so the router asks all n shards
  (each answers from its ``v`` index; one of them has the document).

Both return the same single document, so the difference is the fan-out alone: n shard
calls in parallel and the merge. Latency at concurrency 1 (one query at a time), x
uniform over the collection, ``seconds`` per measurement after a warm-up. The ratio
scatter p50 / targeted p50 is printed for every n; the issue's target reads n = 3.
On a 2-core machine n shard processes answering at once share two cores, so the
scatter latency also shows the machine's parallelism running out as n grows.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import bson
from grpc import aio

from bench.common import (
    OP_TIMEOUT,
    RPC,
    CpuMeter,
    Env,
    Op,
    cycle_from,
    fmt,
    interleaved,
    print_table,
    ratio,
    raw_method,
    start_cluster,
    stop_cluster,
)
from bench.placement import load, place_ranges
from lauradb.cluster import router_ext_pb2, routing_pb2, routing_pb2_grpc

DB = "bench_scatter"
POOL = 4096
PAD = "s" * 150


def make_doc(k: int) -> dict[str, Any]:
    return {"_id": k, "k": k, "v": k, "pad": PAD}


async def prepare(
    router: routing_pb2_grpc.RouterServiceStub,
    config: routing_pb2_grpc.ConfigServiceStub,
    shard_ids: list[str],
    n: int,
    per_shard: int,
) -> str:
    coll = f"scatter{n}"
    total = n * per_shard
    await place_ranges(
        config, DB, coll, "k", [i * per_shard for i in range(1, n)], shard_ids[:n]
    )
    await load(router, DB, coll, [bson.encode(make_doc(k)) for k in range(total)])
    await router.CreateIndex(
        router_ext_pb2.CreateIndexRequest(
            database=DB, collection=coll, index=router_ext_pb2.IndexSpec(keys=bson.encode({"v": 1}))
        ),
        timeout=RPC,
    )
    return coll


def ops(channel: aio.Channel, coll: str, field: str, total: int, seed: int) -> list[Op]:
    call = raw_method(channel, "/lauradb.cluster.RouterService/Query")
    rng = random.Random(seed)
    out = []
    for _ in range(POOL):
        request = routing_pb2.QueryRequest(
            database=DB, collection=coll, query=bson.encode({field: rng.randrange(total)})
        )
        out.append(Op(field, call, request.SerializeToString()))
    return out


async def verify(op: Op, shards: int) -> None:
    assert isinstance(op.request, bytes)
    response = routing_pb2.QueryResponse.FromString(await op.call(op.request, timeout=OP_TIMEOUT))
    if len(response.documents) != 1 or len(response.stats.shards_queried) != shards:
        raise RuntimeError(
            f"{op.kind} query: {len(response.documents)} documents from "
            f"{list(response.stats.shards_queried)}, expected 1 from {shards} shard(s)"
        )


async def run(env: Env) -> dict[str, Any]:
    opts = env.opts
    max_shards = max(1, opts.max_shards)
    per_shard = opts.scatter_docs_per_shard
    print(f"scatter: starting a {max_shards}-shard cluster ...", flush=True)
    cluster = await start_cluster(env.tmp / "scatter-cluster", max_shards)
    channel = aio.insecure_channel(cluster.router_address)

    async def close() -> None:
        await channel.close(None)
        await stop_cluster(cluster)

    env.share("scatter.cluster", cluster, close)
    rows: list[list[str]] = []
    out: dict[str, Any] = {"docs_per_shard": per_shard, "concurrency": 1, "shards": {}}
    try:
        router = routing_pb2_grpc.RouterServiceStub(channel)
        config = routing_pb2_grpc.ConfigServiceStub(channel)
        shard_ids = sorted(cluster.shard_ids, key=lambda s: int(s.removeprefix("shard")))
        meter_groups: dict[str, list[int | None]] = {
            "router": [cluster.router.pid],
            "shards": [p.pid for p in cluster.shards],
        }
        for n in range(1, max_shards + 1):
            coll = await prepare(router, config, shard_ids, n, per_shard)
            total = n * per_shard
            pools = {
                kind: ops(channel, coll, field, total, seed=n)
                for kind, field in (("targeted", "k"), ("scatter", "v"))
            }
            await verify(pools["targeted"][0], 1)
            await verify(pools["scatter"][0], n)
            streams = {
                kind: functools.partial(lambda i, pool: cycle_from(pool, 0), pool=pool)
                for kind, pool in pools.items()
            }
            meters = {kind: CpuMeter(meter_groups) for kind in pools}
            measured = await interleaved(streams, 1, opts, meters)
            figures: dict[str, Any] = {kind: m.summary() for kind, m in measured.items()}
            t, s = figures["targeted"], figures["scatter"]
            figures["ratio_p50"] = ratio(s["p50_ms"], t["p50_ms"])
            figures["ratio_p99"] = ratio(s["p99_ms"], t["p99_ms"])
            out["shards"][str(n)] = figures

            def router_cpu(x: dict[str, Any]) -> float:
                return float(x.get("cpu_us_per_op", {}).get("router", float("nan")))

            rows.append([
                str(n), fmt(t["p50_ms"]), fmt(s["p50_ms"]), fmt(figures["ratio_p50"]),
                fmt(t["p99_ms"]), fmt(s["p99_ms"]), fmt(t["ops_per_s"], ",.0f"),
                fmt(s["ops_per_s"], ",.0f"), fmt(router_cpu(t), ".0f"), fmt(router_cpu(s), ".0f"),
            ])  # fmt: skip
            print(f"  {n} shard(s): targeted p50 {t['p50_ms']:.2f} ms, scatter p50 "
                  f"{s['p50_ms']:.2f} ms ({figures['ratio_p50']:.2f}x)", flush=True)  # fmt: skip
    finally:
        await env.release("scatter.cluster")
    print()
    print("scatter: query on every shard vs on one (concurrency 1, same single result)")
    print_table(
        ("shards", "targeted p50 ms", "scatter p50 ms", "ratio", "targeted p99", "scatter p99",
         "targeted ops/s", "scatter ops/s", "router cpu us/op targeted", "scatter"),
        rows,
    )  # fmt: skip
    return out
