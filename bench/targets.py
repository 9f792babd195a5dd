"""The targets of issue 7, read from one run's results, as PASS/MISS lines."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from bench.common import print_table

POINT_CONCURRENCY = 8


def _at(concurrency: dict[str, Any], wanted: int) -> tuple[str, Any] | None:
    """The figures at concurrency ``wanted`` (else the nearest measured level)."""
    if not concurrency:
        return None
    if str(wanted) in concurrency:
        return str(wanted), concurrency[str(wanted)]
    level = min(concurrency, key=lambda c: abs(int(c) - wanted))
    return level, concurrency[level]


def _check(
    name: str,
    value: float | None,
    goal: str,
    ok: Callable[[float], bool],
    fmt: str = ".3f",
    note: str = "",
) -> dict[str, Any]:
    if value is None or math.isnan(value):
        return {"target": name, "value": None, "goal": goal, "status": "n/a", "note": note}
    return {"target": name, "value": value, "goal": goal, "shown": format(value, fmt),
            "status": "PASS" if ok(value) else "MISS", "note": note}  # fmt: skip


def _cpu_note(ratios: dict[str, Any]) -> str:
    cpu = ratios.get("cpu_per_op")
    if cpu is None or math.isnan(cpu):
        return ""
    return f"CPU/op ratio {cpu:.2f}: {1 / cpu:.2f} when CPU-bound" if cpu else ""


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    results = {k: v for k, v in results.items() if not (isinstance(v, dict) and "error" in v)}
    ycsb = results.get("ycsb") or {}
    for workload in ("A", "B", "C"):
        found = _at(ycsb.get("workloads", {}).get(workload, {}), POINT_CONCURRENCY)
        if found is None:
            continue
        level, per = found
        rp = per["ratios"]["router/proxy"]
        out.append(_check(f"{workload} @{level}: router ops/s / bare proxy", rp["ops_per_s"],
                          ">= 0.90", lambda v: v >= 0.90, note=_cpu_note(rp)))  # fmt: skip
        out.append(_check(f"{workload} @{level}: router p50 / bare proxy p50", rp["p50"],
                          "<= 1.15", lambda v: v <= 1.15))  # fmt: skip
    scatter = (results.get("scatter") or {}).get("shards", {})
    if "3" in scatter:
        out.append(_check("scatter 3 shards p50 / targeted p50 @1", scatter["3"]["ratio_p50"],
                          "<= 1.50", lambda v: v <= 1.50))  # fmt: skip
    bulk = _at(ycsb.get("bulk", {}), POINT_CONCURRENCY)
    if bulk is not None:
        level, per = bulk
        out.append(_check(f"bulk insert @{level}: router docs/s", per["router"].get("docs_per_s"),
                          ">= 50,000", lambda v: v >= 50_000, ",.0f"))  # fmt: skip
        rd = per["ratios"]["router/direct"]
        out.append(_check(f"bulk insert @{level}: router / direct docs/s",
                          rd.get("docs_per_s"), ">= 0.80", lambda v: v >= 0.80,
                          note=_cpu_note(rd)))  # fmt: skip
    targeting = (results.get("targeting") or {}).get("by_chunks", {})
    if targeting:
        largest = max(targeting, key=int)
        smallest = min(targeting, key=int)
        ratios = targeting[largest]["ratio_vs_smallest"]
        for kind in ("point ranged", "point hashed"):
            out.append(_check(f"targeting {kind}: {int(largest):,} / {int(smallest):,} chunks",
                              ratios[kind], "<= 1.50", lambda v: v <= 1.50))  # fmt: skip
    memory = results.get("memory")
    if memory:
        out.append(_check(
            f"router RSS end / start ({memory['duration_s']:g} s load; "
            f"{memory['rss_start_bytes'] / 2**20:.0f} -> {memory['rss_end_bytes'] / 2**20:.0f} MiB)",
            memory["rss_growth"], "<= 1.10", lambda v: v <= 1.10, ".3f",
        ))  # fmt: skip
    return out


def print_summary(checks: list[dict[str, Any]]) -> None:
    if not checks:
        return
    print()
    print("targets (issue 7, this run)")
    print_table(
        ("target", "measured", "goal", "status", "note"),
        [(c["target"], c.get("shown", "-"), c["goal"], c["status"], c.get("note", ""))
         for c in checks],
        "lrrll",
    )  # fmt: skip
