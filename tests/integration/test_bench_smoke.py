"""The performance suite (``python -m bench``) still runs: every scenario at tiny scale.

Only the shape of the JSON report and the absence of errors are checked, never a
timing (figures at this scale mean nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--quick", "--docs", "200", "--seconds", "0.3", "--warmup", "0.1", "--rounds", "1",
    "--concurrency", "1,2", "--duration", "1.5", "--max-shards", "2",
    "--docs-per-shard", "20", "--chunks", "10,100",
]  # fmt: skip
TARGETS = ("router", "direct", "proxy")
FIGURES = ("ops_per_s", "p50_ms", "p99_ms", "max_ms", "errors")


def test_bench_suite_tiny(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "all", *TINY, "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "targets (issue 7, this run)" in proc.stdout
    report = json.loads(out.read_text())
    assert {"machine", "options", "results", "targets"} <= set(report)
    assert report["machine"]["cores"] and report["machine"]["grpcio"]
    results = report["results"]
    assert set(results) == {"targeting", "ycsb", "memory", "scatter"}

    ycsb = results["ycsb"]
    assert set(ycsb["workloads"]) == {"A", "B", "C", "E"}
    for workload, levels in [*ycsb["workloads"].items(), ("bulk", ycsb["bulk"])]:
        assert set(levels) == {"1", "2"}, workload
        for per in levels.values():
            for target in TARGETS:
                figures = per[target]
                assert set(FIGURES) <= set(figures), (workload, target)
                assert figures["errors"] == 0, (workload, target, figures.get("first_error"))
                assert figures["ops"] > 0, (workload, target)
            assert {"router/direct", "router/proxy"} == set(per["ratios"])
    assert ycsb["bulk"]["1"]["router"]["docs"] == 200

    targeting = results["targeting"]["by_chunks"]
    assert set(targeting) == {"10", "100"}
    assert set(targeting["100"]["ratio_vs_smallest"]) == {
        "point ranged", "point hashed", "range ranged", "insert hashed",
    }  # fmt: skip

    memory = results["memory"]
    assert memory["rss_start_bytes"] > 0 and memory["rss_end_bytes"] > 0
    assert memory["load"]["errors"] == 0 and memory["load"]["ops"] > 0

    scatter = results["scatter"]["shards"]
    assert set(scatter) == {"1", "2"}
    for per in scatter.values():
        assert per["targeted"]["errors"] == 0 and per["scatter"]["errors"] == 0
        assert "ratio_p50" in per

    statuses = {t["target"]: t["status"] for t in report["targets"]}
    assert statuses and set(statuses.values()) <= {"PASS", "MISS", "n/a"}
    assert any(name.startswith("bulk insert") for name in statuses)


def test_bench_replication_tiny(tmp_path: Path) -> None:
    """``python -m bench replication`` (issue 9) at tiny scale: 2 kills, short loads."""
    out = tmp_path / "replication.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "replication", "--quick", "--kills", "2",
         "--seconds", "0.4", "--concurrency", "4", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "failover kill -> first write" in proc.stdout
    (result,) = json.loads(out.read_text())["results"]["replication"]
    assert result["failover"]["kills"] == 2 and len(result["failover"]["times_ms"]) == 2
    assert result["lag"]["writes"] > 0 and result["lag"]["errors"] == 0
    for w in ("w1", "majority"):
        assert result["throughput"][w]["ops"] > 0 and result["throughput"][w]["errors"] == 0


def test_bench_transactions_tiny(tmp_path: Path) -> None:
    """``python -m bench transactions`` (issue 10) at tiny scale: one client, so no two
    transactions ever conflict (a conflict would count as an error)."""
    out = tmp_path / "transactions.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "transactions", "--quick", "--docs", "300",
         "--seconds", "0.3", "--warmup", "0.1", "--rounds", "1", "--concurrency", "1",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "transfers on 1 / 2 / 3 shards" in proc.stdout
    result = json.loads(out.read_text())["results"]["transactions"]
    assert result["accounts"] == 300
    assert set(result["concurrency"]) == {"1"}
    kinds = result["concurrency"]["1"]
    assert set(kinds) == {"1 shard", "2 shards", "3 shards"}
    for kind, figures in kinds.items():
        assert set(FIGURES) <= set(figures), kind
        assert figures["errors"] == 0, (kind, figures.get("first_error"))
        assert figures["ops"] > 0, kind


def test_bench_config_refresh_tiny(tmp_path: Path) -> None:
    """``python -m bench config`` (issue 11) with small maps: full and incremental
    refresh figures for each metadata store, side by side."""
    out = tmp_path / "config.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "config", "--quick", "--chunks", "10,600",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sqlite full ms" in proc.stdout and "etcd full ms" in proc.stdout
    result = json.loads(out.read_text())["results"]["config"]
    for backend in ("sqlite", "etcd"):
        for size in ("10", "600"):
            figures = result[backend][size]
            assert figures["chunks"] == int(size), (backend, figures)
            assert figures["full_ms"] > 0 and figures["incremental_ms"] > 0, (backend, figures)
