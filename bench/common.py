"""What the performance scenarios share: options, clusters, the proxy process, the
closed-loop load generator, latency statistics, process CPU/RSS, and table printing.

Load generator: one client process (this one), grpc.aio, ``concurrency`` tasks on one
channel per target, each sending its next request as soon as the previous answer came
back (a closed loop). Requests are serialized before the measurement and sent as raw
bytes; answers are not parsed (the same is done for every target, so the client costs
the same CPU per operation whichever target it measures; what each kind of request
returns is checked once, before the measurement, with the typed stubs). Every
measurement first runs ``warmup`` seconds unrecorded, then ``seconds`` recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import itertools
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from lauradb.rpc.server import wait_for_health

RPC = 600.0  # deadline of setup calls (loading, sharding, migrations)
OP_TIMEOUT = 30.0  # deadline of one measured operation
NO_BALANCER = ("--no-balancer",)
CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO_ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ options


@dataclass
class Options:
    docs: int = 100_000
    seconds: float = 3.0
    warmup: float = 1.0
    concurrency: tuple[int, ...] = (1, 8, 64)
    rounds: int = 3  # each measurement is split in rounds, alternating the targets
    duration: float = 300.0  # memory scenario
    max_shards: int = 8  # scatter scenario
    scatter_docs_per_shard: int = 1000
    targeting_lookups: int = 20_000
    chunk_counts: tuple[int, ...] = (10, 1_000, 100_000)
    workloads: tuple[str, ...] = ("A", "B", "C", "E", "bulk")
    quick: bool = False

    @staticmethod
    def from_namespace(ns: argparse.Namespace) -> Options:
        opts = Options()
        if getattr(ns, "quick", False):
            opts = Options(
                docs=5_000, seconds=0.6, warmup=0.25, rounds=1, duration=15.0,
                scatter_docs_per_shard=100, targeting_lookups=5_000, quick=True,
            )  # fmt: skip
        for name in ("docs", "seconds", "warmup", "rounds", "duration", "max_shards"):
            value = getattr(ns, name, None)
            if value is not None:
                setattr(opts, name, value)
        if getattr(ns, "concurrency", None):
            opts.concurrency = tuple(int(c) for c in str(ns.concurrency).split(",") if c)
        if getattr(ns, "workloads", None):
            opts.workloads = tuple(w.strip() for w in str(ns.workloads).split(",") if w.strip())
        if getattr(ns, "chunks", None):
            opts.chunk_counts = tuple(int(c) for c in str(ns.chunks).split(",") if c)
        if getattr(ns, "docs_per_shard", None):
            opts.scatter_docs_per_shard = ns.docs_per_shard
        return opts

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}


def machine() -> dict[str, Any]:
    """What the figures were taken on."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 2**20
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# ------------------------------------------------------------------------------ processes


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class CpuMeter:
    """CPU seconds used by groups of processes between ``start`` and ``stop``."""

    def __init__(self, groups: Mapping[str, Sequence[int | None]]) -> None:
        self.groups = groups
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> dict[str, float]:
        now = self._now()
        self.used = {name: now[name] - self._start.get(name, 0.0) for name in now}
        return self.used


_children: list[subprocess.Popen[bytes]] = []


def _kill_children() -> None:
    for proc in _children:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


atexit.register(_kill_children)


def _kill_clusters() -> None:
    """Last resort (an exception escaped before a cluster's ``stop``): SIGKILL its processes."""
    with contextlib.suppress(Exception):
        from tests.integration.harness import active_procs

        for proc in active_procs():
            proc.kill()


atexit.register(_kill_clusters)


def install_signal_handlers() -> None:
    """SIGTERM behaves like Ctrl-C: the ``finally`` blocks stop every process we started."""

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


class ProxyProcess:
    """``python -m bench.proxy`` in front of one or more shards (``listen=backend``)."""

    def __init__(self, backends: Sequence[str], log_path: Path) -> None:
        from tests.integration.harness import free_port

        self.backends = list(backends)
        self.addresses = [f"127.0.0.1:{free_port()}" for _ in backends]
        pairs = [f"{a}={b}" for a, b in zip(self.addresses, self.backends, strict=True)]
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.proxy", *pairs],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        _children.append(self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def address_for(self, backend: str) -> str:
        return self.addresses[self.backends.index(backend)]

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Health checks forwarded to every backend answer SERVING through the proxy."""
        for address in self.addresses:
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the proxy exited: {self.log_path.read_text()[-2000:]}")
                with contextlib.suppress(TimeoutError):
                    await wait_for_health(address, timeout=1.0)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"proxy {address} not ready within {timeout:g}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def start_cluster(base_dir: Path, shards: int) -> Any:
    """A harness ``Cluster`` (config, shards, router on free loopback ports), balancer off."""
    from tests.integration.harness import Cluster

    cluster = Cluster(base_dir, shards=shards, log_level="warning", extra_config_args=NO_BALANCER)
    try:
        await cluster.start()
    except BaseException:
        await stop_cluster(cluster)
        raise
    return cluster


async def stop_cluster(cluster: Any) -> None:
    with contextlib.suppress(Exception):
        await cluster.stop(check=False)


# ------------------------------------------------------------------------------ statistics


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted samples (nan when empty)."""
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] * 1000) if ordered else float("nan"),
        "mean_ms": (sum(ordered) / len(ordered) * 1000) if ordered else float("nan"),
    }


def ratio(a: float, b: float) -> float:
    if not b or math.isnan(a) or math.isnan(b):
        return float("nan")
    return a / b


# ------------------------------------------------------------------------------ load


RawCall = Callable[..., Any]  # an aio unary-unary multicallable without serializers


def raw_method(channel: aio.Channel, method: str) -> RawCall:
    """``/package.Service/Method`` on ``channel``, bytes in and out."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


@dataclass
class Op:
    """One request of a workload: its kind, the call, and the serialized request."""

    kind: str
    call: RawCall
    request: bytes | Callable[[], bytes]  # a callable builds a fresh request (inserts)
    expect: int = 1  # documents it must return / match / insert (checked before measuring)


OpStream = Callable[[int], Iterator[Op]]  # worker index -> its operations


@dataclass
class Measurement:
    seconds: float = 0.0
    ops: int = 0
    docs: int = 0  # documents written (bulk inserts; 0 otherwise)
    errors: int = 0
    first_error: str = ""
    latencies: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def merge(self, other: Measurement) -> None:
        self.seconds += other.seconds
        self.ops += other.ops
        self.docs += other.docs
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error
        for kind, samples in other.latencies.items():
            self.latencies.setdefault(kind, []).extend(samples)
        for name, used in other.cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + used

    def summary(self) -> dict[str, Any]:
        every = [x for samples in self.latencies.values() for x in samples]
        out: dict[str, Any] = {
            "ops": self.ops,
            "seconds": self.seconds,
            "ops_per_s": self.ops / self.seconds if self.seconds else float("nan"),
            "errors": self.errors,
            **latency_summary(every),
        }
        if self.docs:
            out["docs"] = self.docs
            out["docs_per_s"] = self.docs / self.seconds if self.seconds else float("nan")
        if self.first_error:
            out["first_error"] = self.first_error
        if len(self.latencies) > 1:
            out["by_kind"] = {
                kind: {"ops": len(samples), **latency_summary(samples)}
                for kind, samples in sorted(self.latencies.items())
            }
        if self.cpu and self.ops:
            out["cpu_us_per_op"] = {
                name: used / self.ops * 1e6 for name, used in self.cpu.items()
            }
            if self.docs:
                out["cpu_us_per_doc"] = {
                    name: used / self.docs * 1e6 for name, used in self.cpu.items()
                }
        return out


async def closed_loop(
    stream: OpStream,
    concurrency: int,
    seconds: float,
    warmup: float,
    cpu: CpuMeter | None = None,
) -> Measurement:
    """``concurrency`` workers, each sending its next op when the last one answered.

    The first ``warmup`` seconds are not recorded; then ``seconds`` are.
    """
    out = Measurement()
    state = {"recording": False, "stop": False}
    perf = time.perf_counter

    async def worker(index: int) -> None:
        ops = stream(index)
        latencies = out.latencies
        while not state["stop"]:
            op = next(ops)
            request = op.request if isinstance(op.request, bytes) else op.request()
            recording = state["recording"]
            start = perf()
            try:
                await op.call(request, timeout=OP_TIMEOUT)
            except grpc.RpcError as exc:
                if recording:
                    out.errors += 1
                    if not out.first_error:
                        out.first_error = f"{op.kind}: {exc}"[:500]
                continue
            if recording and not state["stop"]:
                elapsed = perf() - start
                samples = latencies.get(op.kind)
                if samples is None:
                    samples = latencies[op.kind] = []
                samples.append(elapsed)
                out.ops += 1

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    try:
        if warmup > 0:
            await asyncio.sleep(warmup)
        if cpu is not None:
            cpu.start()
        begin = perf()
        state["recording"] = True
        await asyncio.sleep(seconds)
        state["stop"] = True
        out.seconds = perf() - begin
        if cpu is not None:
            out.cpu = cpu.stop()
        await asyncio.gather(*tasks)
    finally:
        state["stop"] = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return out


async def interleaved(
    streams: Mapping[str, OpStream],
    concurrency: int,
    opts: Options,
    meters: Mapping[str, CpuMeter] | None = None,
) -> dict[str, Measurement]:
    """Measure every target for ``opts.seconds`` in all, split in ``opts.rounds``
    rounds that alternate the targets (order rotated each round), so a change of
    load on the machine during the measurement hits every target alike. The first
    round of each target warms up for ``opts.warmup`` seconds, later ones briefly."""
    names = list(streams)
    rounds = max(1, opts.rounds)
    out = {name: Measurement() for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            warmup = opts.warmup if r == 0 else min(opts.warmup, 0.25)
            meter = meters.get(name) if meters else None
            m = await closed_loop(streams[name], concurrency, opts.seconds / rounds, warmup, meter)
            out[name].merge(m)
    return out


def cycle_from(items: Sequence[Op], start: int) -> Iterator[Op]:
    """The items round and round, starting at ``start`` (spreads workers over a pool)."""
    n = len(items)
    return (items[i % n] for i in itertools.count(start))


# ------------------------------------------------------------------------------ printing


def fmt(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return format(value, spec)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], aligns: str = "") -> None:
    """A plain fixed-width table; ``aligns``: one of 'l'/'r' per column (default 'r')."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = []
        for i, c in enumerate(row):
            align = aligns[i] if i < len(aligns) else ("l" if i == 0 else "r")
            parts.append(c.ljust(widths[i]) if align == "l" else c.rjust(widths[i]))
        return "  ".join(parts).rstrip()

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))
    sys.stdout.flush()


# ------------------------------------------------------------------------------ run state


class Env:
    """One run of the suite: options, a temporary directory, objects scenarios share
    (the loaded 3-shard cluster and its proxy), stopped at the end even on Ctrl-C."""

    def __init__(self, opts: Options, tmp: Path) -> None:
        self.opts = opts
        self.tmp = tmp
        self.shared: dict[str, Any] = {}
        self._closers: dict[str, Callable[[], Awaitable[None]]] = {}

    def share(self, key: str, obj: Any, close: Callable[[], Awaitable[None]]) -> None:
        self.shared[key] = obj
        self._closers[key] = close

    async def release(self, key: str) -> None:
        """Stop a shared object now (e.g. a cluster before the next one starts)."""
        self.shared.pop(key, None)
        close = self._closers.pop(key, None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()

    async def close(self) -> None:
        for key in reversed(list(self._closers)):
            await self.release(key)
