"""LauraDB benchmarks: ``python -m bench [scenario ...] [options]`` (``./dev.sh bench``).

The performance suite (issue 7), ``all`` when no scenario is named:

  targeting   routing cost with 10 / 1,000 / 100,000 chunks (in process)
  ycsb        YCSB A/B/C/E + bulk insert: router vs direct-to-shard vs bare proxy
  memory      router RSS at the start and end of a sustained load (default 5 min)
  scatter     a query on every shard vs on one, for 1 .. 8 shards

It ends with one table of the targets and PASS/MISS for each. Also runnable by name:
``engine``, ``indexes``, ``migration``, ``replication``, ``transactions`` (other
issues', not in ``all``; ``transactions``: 1- vs 2- vs 3-shard transaction latency and
throughput; ``config``: routing-table refresh time, full and incremental, for 10 and
100,000 chunks on the SQLite and the etcd metadata store).
``--quick`` scales everything down (about 2 minutes in all); ``--json FILE`` writes
every figure with the machine and the options, to compare runs over time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import (
    config_refresh,
    engine,
    indexes,
    memory,
    migration,
    replication,
    scatter,
    targeting,
    targets,
    transactions,
    ycsb,
)
from bench.common import Env, Options, install_signal_handlers, machine

SUITE: dict[str, Callable[[Env], Awaitable[dict[str, Any]]]] = {
    "targeting": targeting.run,
    "ycsb": ycsb.run,
    "memory": memory.run,
    "scatter": scatter.run,
}
# Scenarios on the suite's machinery, run only when named (not part of ``all``).
EXTRA: dict[str, Callable[[Env], Awaitable[dict[str, Any]]]] = {
    "transactions": transactions.run,
    "config": config_refresh.run,
}
RUNNABLE = {**SUITE, **EXTRA}
LEGACY: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {
    "engine": engine.run,
    "indexes": indexes.run,
    "migration": migration.run,
    "replication": replication.run,  # replica sets: failover time, lag, w:1 vs w:majority
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("scenarios", nargs="*", choices=["all", *SUITE, *EXTRA, *LEGACY, []], default=[])
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true",
                        help="small scale: 5,000 docs, 0.6 s per measurement, 15 s memory run")  # fmt: skip
    parser.add_argument("--docs", type=int, help="documents per data set (default 100,000)")
    parser.add_argument("--seconds", type=float, help="seconds per measurement (default 3)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each (default 1)")
    parser.add_argument("--concurrency", help="client concurrency levels (default 1,8,64)")
    parser.add_argument("--workloads", help="ycsb workloads to run (default A,B,C,E,bulk)")
    parser.add_argument("--duration", type=float, help="memory: seconds of load (default 300)")
    parser.add_argument("--max-shards", type=int, help="scatter: up to this many shards (default 8)")
    parser.add_argument("--rounds", type=int,
                        help="rounds per measurement, alternating the targets (default 3)")  # fmt: skip
    parser.add_argument("--chunks", help="targeting: chunk counts (default 10,1000,100000); "
                        "config: chunk counts (default 10,100000)")  # fmt: skip
    parser.add_argument("--docs-per-shard", type=int,
                        help="scatter: documents per shard (default 1,000)")  # fmt: skip
    parser.add_argument("--kills", type=int, help="replication: primaries killed (default 10)")
    return parser.parse_args(argv)


def _clean(value: Any) -> Any:
    """NaN/inf -> None, so the JSON file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


async def run_suite(names: list[str], opts: Options, tmp: Path) -> dict[str, Any]:
    env = Env(opts, tmp)
    results: dict[str, Any] = {}
    try:
        for name in names:
            if name == "scatter":
                await env.release("ycsb.proxy")  # its cluster is not needed any more:
                await env.release("ycsb.dataset")  # give the 8-shard cluster the machine
            print(f"\n=== {name}", flush=True)
            try:
                results[name] = await RUNNABLE[name](env)
            except Exception as exc:  # report it, run the other scenarios
                traceback.print_exc()
                print(f"scenario {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
                results[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    finally:
        await env.close()
    return results


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except KeyboardInterrupt:
        print("\ninterrupted: every process started by the benchmark was stopped", flush=True)
        return 130


def run(ns: argparse.Namespace) -> int:
    names = ns.scenarios or ["all"]
    if "all" in names:
        names = [n for n in names if n != "all"]
        names = list(SUITE) + [n for n in names if n not in SUITE]
    suite = [n for n in RUNNABLE if n in names]
    legacy = [n for n in names if n in LEGACY]
    opts = Options.from_namespace(ns)
    install_signal_handlers()
    report: dict[str, Any] = {"machine": machine(), "options": opts.as_dict(), "results": {}}
    info = report["machine"]
    print(f"machine: {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB, Python "
          f"{info['python']}, grpcio {info['grpcio']}, load average "
          f"{', '.join(f'{x:.2f}' for x in info['loadavg_at_start'])}", flush=True)  # fmt: skip
    if suite:
        with tempfile.TemporaryDirectory(prefix="lauradb-bench-") as tmp:
            report["results"].update(asyncio.run(run_suite(suite, opts, Path(tmp))))
    if legacy:
        ns.docs = ns.docs or opts.docs
        for name in legacy:
            print(f"\n=== {name}", flush=True)
            report["results"][name] = LEGACY[name](ns)
    info["loadavg_at_end"] = list(os.getloadavg())
    report["targets"] = targets.evaluate(report["results"])
    targets.print_summary(report["targets"])
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in info['loadavg_at_end'])}")
    failed = [n for n, r in report["results"].items() if isinstance(r, dict) and "error" in r]
    if failed:
        print(f"FAILED scenario(s): {', '.join(failed)} (see above)")
    if ns.json:
        with open(ns.json, "w") as fh:
            json.dump(_clean(report), fh, indent=1, default=str)
        print(f"\nresults written to {ns.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
