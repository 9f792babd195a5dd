"""Markdown tables of a ``python -m bench --json FILE`` report (for the README).

``python -m bench.report FILE`` prints the machine, the ycsb, scatter, targeting and
memory figures and the targets as Markdown, so the README's table is regenerated
from a run's JSON rather than copied by hand.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def _f(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ycsb_table(ycsb: dict[str, Any]) -> str:
    rows = []
    levels = [*((w, per) for w, per in ycsb.get("workloads", {}).items()), ("bulk", ycsb.get("bulk", {}))]
    for workload, by_level in levels:
        for level, per in by_level.items():
            r, d, p, rr = per["router"], per["direct"], per["proxy"], per["ratios"]
            key = "docs_per_s" if workload == "bulk" else "ops_per_s"
            hop_r = r.get("cpu_us_per_op", {}).get("hop")
            hop_p = p.get("cpu_us_per_op", {}).get("hop")
            rows.append([
                workload + (" (docs/s)" if workload == "bulk" else ""), level,
                f"{_f(r[key], ',.0f')} / {_f(d[key], ',.0f')} / {_f(p[key], ',.0f')}",
                _f(rr["router/direct"][key]), _f(rr["router/proxy"][key]),
                f"{_f(r['p50_ms'])} / {_f(d['p50_ms'])} / {_f(p['p50_ms'])}",
                _f(rr["router/proxy"]["p50"]),
                f"{_f(r['p99_ms'], '.1f')} / {_f(d['p99_ms'], '.1f')} / {_f(p['p99_ms'], '.1f')}",
                f"{_f(r['max_ms'], '.1f')} / {_f(d['max_ms'], '.1f')} / {_f(p['max_ms'], '.1f')}",
                f"{_f(hop_r, '.0f')} / {_f(hop_p, '.0f')}",
                _f(rr["router/proxy"].get("cpu_per_op")),
            ])  # fmt: skip
    return table(
        ("workload", "conc", "ops/s router / direct / proxy", "r/d", "r/p",
         "p50 ms r / d / p", "p50 r/p", "p99 ms r / d / p", "max ms r / d / p",
         "hop CPU µs/op router / proxy", "CPU/op r/p"),
        rows,
    )  # fmt: skip


def scatter_table(scatter: dict[str, Any]) -> str:
    rows = []
    for n, per in scatter.get("shards", {}).items():
        t, s = per["targeted"], per["scatter"]
        rows.append([n, _f(t["p50_ms"]), _f(s["p50_ms"]), _f(per["ratio_p50"]),
                     _f(t["p99_ms"]), _f(s["p99_ms"])])  # fmt: skip
    return table(("shards", "targeted p50 ms", "scatter p50 ms", "ratio", "targeted p99 ms",
                  "scatter p99 ms"), rows)  # fmt: skip


def targeting_table(targeting: dict[str, Any]) -> str:
    kinds = ("point ranged", "point hashed", "range ranged", "insert hashed")
    rows = []
    for chunks, per in targeting.get("by_chunks", {}).items():
        ns, ratios = per["ns_per_call"], per["ratio_vs_smallest"]
        rows.append([f"{int(chunks):,}", *(f"{ns[k] / 1000:.2f} ({ratios[k]:.2f}x)" for k in kinds)])
    return table(("chunks", *(f"{k} µs" for k in kinds)), rows)


def memory_line(memory: dict[str, Any]) -> str:
    mib = 2**20
    load = memory["load"]
    return (
        f"Router RSS over {memory['duration_s']:g} s of mixed load at concurrency "
        f"{memory['concurrency']} ({load['ops']:,} operations, {load['ops_per_s']:,.0f}/s, "
        f"{load['errors']} errors): {memory['rss_start_bytes'] / mib:.1f} MiB after the "
        f"warm-up, {memory['rss_end_bytes'] / mib:.1f} MiB at the end (peak "
        f"{memory['rss_peak_bytes'] / mib:.1f} MiB; end/start {memory['rss_growth']:.3f})."
    )


def targets_table(checks: list[dict[str, Any]]) -> str:
    rows = [[c["target"], c.get("shown", "-"), c["goal"], f"**{c['status']}**", c.get("note", "")]
            for c in checks]  # fmt: skip
    return table(("target", "measured", "goal", "status", "note"), rows)


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    results = report["results"]
    parts = [
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python "
        f"{m['python']}, grpcio {m['grpcio']}, {m['platform']}; {m['time']}; load average "
        f"{m['loadavg_at_start'][0]:.1f} at the start, "
        f"{(m.get('loadavg_at_end') or [float('nan')])[0]:.1f} at the end.",
    ]
    if "ycsb" in results and "error" not in results["ycsb"]:
        parts.append(ycsb_table(results["ycsb"]))
    if "scatter" in results and "error" not in results["scatter"]:
        parts.append(scatter_table(results["scatter"]))
    if "targeting" in results and "error" not in results["targeting"]:
        parts.append(targeting_table(results["targeting"]))
    if "memory" in results and "error" not in results["memory"]:
        parts.append(memory_line(results["memory"]))
    parts.append(targets_table(report.get("targets", [])))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.report FILE.json", file=sys.stderr)
        return 2
    with open(args[0]) as fh:
        print(render(json.load(fh)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
