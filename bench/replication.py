"""Replica-set benchmark (issue 9): failover time, replication lag, w:1 vs w:majority.

Starts a local cluster with the test harness (1 shard = a 3-member replica set, a
config server, a router; default election timeout), then measures:

1. failover time, over ``--kills`` kills (default 10): kill -9 the primary, then send
   w:majority inserts through the router (lauradb.AsyncClient; the router buffers
   while the set elects) until one succeeds: kill -> first successful write, p50/max.
   After each kill the member is restarted and the next kill waits until it is a
   caught-up secondary again. Target < 2 s on loopback (MongoDB's default election
   timeout alone is 10 s).
2. replication lag under load: ``--concurrency`` (default 16) writers insert with w:1
   for ``--seconds`` while Hello is sampled every 20 ms on every member: lag in
   entries (primary's last op id - a secondary's applied op id) and in time (how old
   the last entry a secondary applied is, while entries are written continuously).
3. write throughput w:1 vs w:majority: the same insert workload, alternating rounds
   (``--seconds`` each, split in ``--rounds``), ops/s and the ratio.

Figures are printed, never asserted. ``python -m bench replication [--kills N]
[--quick]`` or ``python -m bench.replication``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from lauradb.client import AsyncClient, LauraDBError, WriteConcern
from tests.integration.harness import Cluster, Proc

DEFAULT_KILLS = 10
DEFAULT_SECONDS = 3.0
DEFAULT_CONCURRENCY = 16
SAMPLE_S = 0.02
TARGET_FAILOVER_S = 2.0
DB = "bench_replication"


def _pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


async def _caught_up(c: Cluster, timeout: float = 60.0) -> Proc:
    """Wait until every member is a primary or a caught-up secondary; the primary."""
    deadline = time.monotonic() + timeout
    while True:
        primaries: list[Proc] = []
        ok = True
        for proc in c.members("shard0"):
            try:
                hello = await c.hello(proc, timeout=1.0)
            except grpc.RpcError:
                ok = False
                break
            ok = ok and hello.caught_up
            if hello.is_primary:
                primaries.append(proc)
        if ok and len(primaries) == 1:
            return primaries[0]
        if time.monotonic() > deadline:
            raise TimeoutError("the replica set did not settle (primary + caught-up secondaries)")
        await asyncio.sleep(0.05)


async def failover(c: Cluster, client: AsyncClient, kills: int) -> dict[str, Any]:
    coll = client[DB]["failover"]
    times: list[float] = []
    failed_attempts = 0
    n = itertools.count()
    for i in range(kills):
        await _caught_up(c)
        await coll.insert_one({"_id": f"warm-{i}"})  # the router knows the current primary
        victim = await c.primary_of("shard0")
        start = time.perf_counter()
        victim.kill()
        while True:
            try:
                await coll.insert_one({"_id": f"f-{next(n)}"})
                break
            except LauraDBError:
                failed_attempts += 1
                if time.perf_counter() - start > 120:
                    raise
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        print(f"  kill {i + 1}/{kills}: {victim.name} -> first write after {elapsed * 1000:.0f} ms",
              flush=True)
        await c.restart(victim)
    return {
        "kills": kills,
        "times_ms": [round(t * 1000, 1) for t in times],
        "p50_ms": _pct(times, 0.5) * 1000,
        "max_ms": max(times) * 1000 if times else float("nan"),
        "failed_attempts": failed_attempts,
        "target_ms": TARGET_FAILOVER_S * 1000,
    }


async def _writers(
    client: AsyncClient, coll_name: str, w: int | str, concurrency: int, seconds: float,
    tag: str,
) -> tuple[int, int]:
    """Closed-loop inserts for ``seconds``; (acknowledged, errors)."""
    coll = client[DB][coll_name].with_options(write_concern=WriteConcern(w=w))
    deadline = time.perf_counter() + seconds
    done = errors = 0
    ids = itertools.count()

    async def one() -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            try:
                await coll.insert_one({"_id": f"{tag}-{next(ids)}", "v": "x" * 100})
                done += 1
            except LauraDBError:
                errors += 1

    await asyncio.gather(*(one() for _ in range(concurrency)))
    return done, errors


async def lag(c: Cluster, client: AsyncClient, concurrency: int, seconds: float) -> dict[str, Any]:
    primary = await _caught_up(c)
    secondaries = [p for p in c.members("shard0") if p is not primary]
    ops_lag: list[int] = []
    time_lag: list[float] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            p, *ss = await asyncio.gather(
                c.hello(primary), *(c.hello(s) for s in secondaries)
            )
            now_ms = time.time() * 1000
            for s in ss:
                behind = max(0, p.last_op_id - s.last_applied_op_id)
                ops_lag.append(behind)
                if not behind:
                    time_lag.append(0.0)
                elif s.last_write_ms:  # the last entry it applied was written this long ago
                    time_lag.append(max(0.0, now_ms - s.last_write_ms))
            await asyncio.sleep(SAMPLE_S)

    sampler = asyncio.create_task(sample())
    try:
        done, errors = await _writers(client, "lag", 1, concurrency, seconds, "lag")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await sampler
    return {
        "writes": done, "errors": errors, "samples": len(ops_lag),
        "lag_ops_p50": _pct(ops_lag, 0.5), "lag_ops_max": max(ops_lag, default=0),
        "lag_ms_p50": _pct(time_lag, 0.5), "lag_ms_max": max(time_lag, default=float("nan")),
    }


async def throughput(
    c: Cluster, client: AsyncClient, concurrency: int, seconds: float, rounds: int
) -> dict[str, Any]:
    await _caught_up(c)
    totals: dict[str, list[float]] = {"w1": [0.0, 0.0, 0.0], "majority": [0.0, 0.0, 0.0]}
    per_round = seconds / rounds
    for r in range(rounds):
        order: list[tuple[str, int | str]] = [("w1", 1), ("majority", "majority")]
        if r % 2:
            order.reverse()
        for name, w in order:
            start = time.perf_counter()
            done, errors = await _writers(client, f"tp_{name}", w, concurrency, per_round,
                                          f"{name}-{r}")
            totals[name][0] += done
            totals[name][1] += errors
            totals[name][2] += time.perf_counter() - start
    out: dict[str, Any] = {"concurrency": concurrency}
    for name, (ops, failed, spent) in totals.items():
        out[name] = {"ops": int(ops), "errors": int(failed), "ops_per_s": ops / spent}
    out["majority_over_w1"] = out["majority"]["ops_per_s"] / max(out["w1"]["ops_per_s"], 1e-9)
    return out


async def bench(
    base: Path, kills: int, seconds: float, concurrency: int, rounds: int
) -> dict[str, Any]:
    c = Cluster(base, shards=1, replicas=3, extra_config_args=["--no-balancer"])
    await c.start()
    try:
        await _caught_up(c)
        async with AsyncClient(
            c.router_address, write_concern=WriteConcern(w="majority"), timeout=30
        ) as client:
            print(f"failover: {kills} kill(s) of the primary (kill -9 -> first successful "
                  f"w:majority write through the router)", flush=True)
            fo = await failover(c, client, kills)
            print(f"replication lag: {concurrency} writers, w:1, {seconds:g} s", flush=True)
            lg = await lag(c, client, concurrency, seconds)
            print(f"throughput: w:1 vs w:majority, {concurrency} writers, {seconds:g} s each",
                  flush=True)
            tp = await throughput(c, client, concurrency, seconds, rounds)
    finally:
        await c.stop(check=False)
    return {"failover": fo, "lag": lg, "throughput": tp}


def report(res: dict[str, Any]) -> None:
    fo, lg, tp = res["failover"], res["lag"], res["throughput"]
    verdict = "PASS" if fo["max_ms"] < fo["target_ms"] else "MISS"
    print("\nreplica set (3 members, loopback):")
    print(f"  failover kill -> first write  p50 {fo['p50_ms']:7.0f} ms   max {fo['max_ms']:7.0f} ms"
          f"   over {fo['kills']} kills  (target < {fo['target_ms']:.0f} ms: {verdict})")
    print(f"  replication lag (w:1 load)    p50 {lg['lag_ops_p50']:7.0f} ops  max "
          f"{lg['lag_ops_max']:7.0f} ops;  p50 {lg['lag_ms_p50']:.0f} ms  max "
          f"{lg['lag_ms_max']:.0f} ms  ({lg['writes']} writes, {lg['samples']} samples)")
    print(f"  throughput w:1         {tp['w1']['ops_per_s']:8.0f} ops/s ({tp['w1']['errors']} "
          f"errors)")
    print(f"  throughput w:majority  {tp['majority']['ops_per_s']:8.0f} ops/s "
          f"({tp['majority']['errors']} errors); majority/w1 = {tp['majority_over_w1']:.2f}")


def run(ns: argparse.Namespace) -> list[dict[str, Any]]:
    quick = bool(getattr(ns, "quick", False))
    kills = getattr(ns, "kills", None) or (3 if quick else DEFAULT_KILLS)
    seconds = getattr(ns, "seconds", None) or (1.0 if quick else DEFAULT_SECONDS)
    conc = getattr(ns, "concurrency", None)
    concurrency = int(str(conc).split(",")[-1]) if conc else DEFAULT_CONCURRENCY
    rounds = getattr(ns, "rounds", None) or (1 if quick else 3)
    print(f"machine: {platform.machine()}, Python {platform.python_version()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="lauradb-bench-rs-") as tmp:
        res = asyncio.run(bench(Path(tmp), int(kills), float(seconds), concurrency, int(rounds)))
    report(res)
    return [res]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replication", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=None, help=f"default {DEFAULT_KILLS}")
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"seconds per load measurement (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--concurrency", default=None,
                        help=f"writers (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--rounds", type=int, default=None, help="throughput rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="3 kills, 1 s measurements")
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
