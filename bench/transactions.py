"""Transactions (issue 10): latency and throughput of 1-, 2- and 3-shard transactions.

One 3-shard cluster (balancer off); ``accounts`` ranged on ``k`` in three equal
chunks, chunk i on shard i, documents ``{_id: k, k, balance: 1000}``. Every
transaction is a transfer of ``$inc`` updates pinned by the shard key (each with
``expect_matched: 1``), so the only difference between the kinds is how many shards
take part:

* 1 shard: two updates on one shard (one phase: Prepare(one_phase) commits at once);
* 2 shards: one update on each of two shards (CoordinateTransaction, 2 Prepares,
  DecideTransaction, 2 Commits, FinishTransaction);
* 3 shards: one update on each shard.

The accounts of each transaction are drawn at random from the whole collection, so
concurrent transactions rarely touch the same document (a conflict is counted as an
error, not retried). Closed loop at each ``--concurrency`` level, the kinds measured
in alternating rounds; p50/p99 latency and transactions per second side by side.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import bson
from grpc import aio

from bench.common import (
    OP_TIMEOUT,
    CpuMeter,
    Env,
    Op,
    cycle_from,
    fmt,
    interleaved,
    print_table,
    raw_method,
    start_cluster,
    stop_cluster,
)
from bench.placement import load, place_ranges
from lauradb.cluster import common_pb2, routing_pb2_grpc, transaction_pb2

DB = "bench_txn"
COLL = "accounts"
POOL = 2048
MAX_ACCOUNTS = 30_000
KINDS = {"1 shard": 1, "2 shards": 2, "3 shards": 3}


def _update(k: int, amount: int) -> transaction_pb2.TransactionOperation:
    return transaction_pb2.TransactionOperation(
        database=DB, collection=COLL, op_type=common_pb2.UPDATE,
        filter=bson.encode({"k": k}), update=bson.encode({"$inc": {"balance": amount}}),
        expect_matched=1,
    )  # fmt: skip


def transfer(keys: list[int]) -> bytes:
    """A transaction moving 1 from the first account to the others (no txn_id: the
    router makes one, so the same bytes can be sent again)."""
    ops = [_update(keys[0], -(len(keys) - 1))] + [_update(k, 1) for k in keys[1:]]
    return transaction_pb2.ExecuteTransactionRequest(
        operations=ops, timeout_ms=10_000
    ).SerializeToString()


def pool(channel: aio.Channel, kind: str, shards: int, per_shard: int, seed: int) -> list[Op]:
    call = raw_method(channel, "/lauradb.cluster.RouterService/ExecuteTransaction")
    rng = random.Random(seed)
    out = []
    for _ in range(POOL):
        if shards == 1:
            shard = rng.randrange(3)
            a, b = rng.sample(range(per_shard), 2)
            keys = [shard * per_shard + a, shard * per_shard + b]
        else:
            chosen = rng.sample(range(3), shards)
            keys = [s * per_shard + rng.randrange(per_shard) for s in chosen]
        out.append(Op(kind, call, transfer(keys)))
    return out


async def verify(op: Op, shards: int) -> None:
    assert isinstance(op.request, bytes)
    raw = await op.call(op.request, timeout=OP_TIMEOUT)
    response = transaction_pb2.ExecuteTransactionResponse.FromString(raw)
    if response.state != transaction_pb2.COMMITTED or response.participants != shards:
        raise RuntimeError(
            f"{op.kind}: state {response.state}, {response.participants} participants, "
            f"expected COMMITTED on {shards}"
        )


async def run(env: Env) -> dict[str, Any]:
    opts = env.opts
    per_shard = max(100, min(opts.docs, MAX_ACCOUNTS) // 3)
    print("transactions: starting a 3-shard cluster ...", flush=True)
    cluster = await start_cluster(env.tmp / "txn-cluster", 3)
    channel = aio.insecure_channel(cluster.router_address)

    async def close() -> None:
        await channel.close(None)
        await stop_cluster(cluster)

    env.share("transactions.cluster", cluster, close)
    out: dict[str, Any] = {"accounts": per_shard * 3, "concurrency": {}}
    rows: list[list[str]] = []
    try:
        router = routing_pb2_grpc.RouterServiceStub(channel)
        config = routing_pb2_grpc.ConfigServiceStub(channel)
        shard_ids = sorted(cluster.shard_ids, key=lambda s: int(s.removeprefix("shard")))
        await place_ranges(config, DB, COLL, "k", [per_shard, 2 * per_shard], shard_ids[:3])
        await load(router, DB, COLL, [
            bson.encode({"_id": k, "k": k, "balance": 1000}) for k in range(3 * per_shard)
        ])  # fmt: skip
        pools = {kind: pool(channel, kind, n, per_shard, seed=n) for kind, n in KINDS.items()}
        for kind, n in KINDS.items():
            await verify(pools[kind][0], n)
        meter_groups: dict[str, list[int | None]] = {
            "router": [cluster.router.pid],
            "shards": [p.pid for p in cluster.shards],
        }
        for concurrency in opts.concurrency:
            streams = {
                kind: functools.partial(lambda i, p: cycle_from(p, i * 31), p=p)
                for kind, p in pools.items()
            }
            meters = {kind: CpuMeter(meter_groups) for kind in pools}
            measured = await interleaved(streams, concurrency, opts, meters)
            figures = {kind: m.summary() for kind, m in measured.items()}
            out["concurrency"][str(concurrency)] = figures
            for kind in KINDS:
                f = figures[kind]
                cpu = f.get("cpu_us_per_op", {})
                rows.append([
                    str(concurrency), kind, fmt(f["p50_ms"]), fmt(f["p99_ms"]),
                    fmt(f["ops_per_s"], ",.0f"), str(f["errors"]),
                    fmt(cpu.get("router", float("nan")), ".0f"),
                    fmt(cpu.get("shards", float("nan")), ".0f"),
                ])  # fmt: skip
            one, three = figures["1 shard"], figures["3 shards"]
            print(f"  concurrency {concurrency}: p50 1 shard {one['p50_ms']:.2f} ms, "
                  f"3 shards {three['p50_ms']:.2f} ms", flush=True)  # fmt: skip
    finally:
        await env.release("transactions.cluster")
    print()
    print("transactions: transfers on 1 / 2 / 3 shards (ExecuteTransaction through the router)")
    print_table(
        ("concurrency", "participants", "p50 ms", "p99 ms", "txn/s", "errors",
         "router cpu us/txn", "shards cpu us/txn"),
        rows, "rl",
    )  # fmt: skip
    return out
