"""YCSB-style workloads through the router, side by side with two references.

Cluster: config server, 3 shards, router (balancer off), 100,000 documents of 1 KB
(``_id``/``k`` = 0 .. N-1 and ten ~100-byte fields) in two collections:

* ``usertable``, hashed on ``_id`` (two initial chunks per shard), for A, B and C;
* ``userscan``, ranged on ``k``, split at N/3 and 2N/3, chunk i on shard i, for E.

Workloads (request keys Zipfian, theta 0.99, scrambled, as in YCSB):

* A: 50% point reads ``{_id: k}``, 50% updates ``{$set: {fieldI: <100 bytes>}}``;
* B: 95% reads, 5% updates;  C: reads only;
* E: 95% short range scans ``{k: {$gte: s, $lt: s+L}}`` sorted on ``k`` with limit L
  (L uniform in 1..100), 5% inserts of new keys (one document each);
* bulk: every document once more, in unordered InsertRequests of 1,000 into a fresh
  hashed collection (``ordered=false``: an ordered insert over a hashed key is, by
  definition, runs of ~1.5 documents per shard round trip).

Three targets in the same run, for each (workload, concurrency), measured in
``--rounds`` rounds (default 3) that alternate them, so a change of load on the
machine during the measurement hits all three alike:

* ``router``: RouterService calls through the router;
* ``direct``: the ShardService requests the router itself would send, sent by the
  client straight to the shard, with the correct ShardVersion (epoch + that shard's
  version, read from the config server, so the shard runs its normal version check);
* ``proxy``: the same ShardService bytes as ``direct`` through ``bench.proxy``, a
  bare grpc.aio pass-through (generic handler, raw bytes, one channel to the shard).

Fairness: the point workloads (A/B/C/E) use only keys owned by one shard (``shard2``:
the ``_id``s whose hash falls in its chunks; E scans and inserts inside its ``k``
range), so all three targets do exactly the same storage work on the same shard
process with the same documents; the router still hashes, targets and checks
versions on every request. router/proxy is then "router work + hop" over "hop", and
router/direct adds the hop itself. Bulk uses all three shards: ``direct`` and
``proxy`` send each batch pre-split per shard (split before the clock starts) as one
ShardService Insert per shard, concurrently, like the router does; each target
inserts into its own fresh collection, a third of the batches per round.

The client is one process (grpc.aio, ``concurrency`` tasks, raw pre-serialized
requests, answers not parsed; see ``bench.common``). On 2 cores the client, the
router or proxy and the shard all compete for the CPU; the same client drives the
three targets so the ratios compare like with like. CPU seconds per operation of
every process involved are recorded too (``cpu_us_per_op``), a steadier figure than
throughput when something else runs on the machine.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import itertools
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import bson
from grpc import aio

from bench.common import (
    OP_TIMEOUT,
    RPC,
    CpuMeter,
    Env,
    Measurement,
    Op,
    ProxyProcess,
    cycle_from,
    fmt,
    interleaved,
    print_table,
    ratio,
    raw_method,
    start_cluster,
    stop_cluster,
)
from bench.placement import (
    Placement,
    bounds_ok,
    drop_collection,
    load,
    place_ranges,
    placement,
    shard_collection,
)
from lauradb.cluster import (
    router_ext_pb2,
    routing_pb2,
    routing_pb2_grpc,
    shard_pb2,
)
from lauradb.sharding.shard_key import HASHED, ShardKeyPattern

DB = "bench_ycsb"
USERTABLE = "usertable"
SCANTABLE = "userscan"
SHARDS = 3
TARGET_SHARD = "shard2"
FIELDS = 10
DOC_BYTES = 1024
POOL = 8192
THETA = 0.99
MAX_SCAN = 100
BULK_BATCH = 1000
DEFAULT_FIRST_BATCH = 101  # the router's first batch (router.cursors), pushed to the shard
TARGETS = ("router", "direct", "proxy")
WORKLOADS: dict[str, dict[str, float]] = {
    "A": {"read": 0.50, "update": 0.50},
    "B": {"read": 0.95, "update": 0.05},
    "C": {"read": 1.00},
    "E": {"scan": 0.95, "insert": 0.05},
}
ROUTER = "/lauradb.cluster.RouterService/"
SHARD = "/lauradb.cluster.ShardService/"

_FILLER = "".join(random.Random(42).choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(4096))


def _field_bytes() -> int:
    empty = {"_id": 0, "k": 0, **{f"field{i}": "" for i in range(FIELDS)}}
    return (DOC_BYTES - len(bson.encode(empty))) // FIELDS


FIELD_BYTES = _field_bytes()


def make_doc(k: int) -> dict[str, Any]:
    """A ~1 KB YCSB-like record (``_id`` = ``k`` = the record number)."""
    doc: dict[str, Any] = {"_id": k, "k": k}
    for i in range(FIELDS):
        start = (k * 31 + i * 97) % (len(_FILLER) - FIELD_BYTES)
        doc[f"field{i}"] = _FILLER[start : start + FIELD_BYTES]
    return doc


class Zipf:
    """YCSB's scrambled Zipfian choice of one of ``n`` items (theta 0.99)."""

    def __init__(self, n: int, seed: int, theta: float = THETA) -> None:
        weights = (1.0 / (i**theta) for i in range(1, n + 1))
        self.cdf = list(itertools.accumulate(weights))
        self.order = list(range(n))
        random.Random(seed).shuffle(self.order)  # hot items spread over the key space

    def pick(self, rng: random.Random) -> int:
        rank = bisect.bisect_left(self.cdf, rng.random() * self.cdf[-1])
        return self.order[min(rank, len(self.order) - 1)]


# ------------------------------------------------------------------------------ the data set


@dataclass
class Dataset:
    """The loaded 3-shard cluster (shared with the memory scenario)."""

    cluster: Any
    channel: aio.Channel
    router: routing_pb2_grpc.RouterServiceStub
    config: routing_pb2_grpc.ConfigServiceStub
    n: int
    user: Placement
    scan: Placement
    shard: str
    keys_on_shard: list[int]
    scan_lo: int
    scan_hi: int
    max_scan: int
    load_docs_per_s: dict[str, float] = field(default_factory=dict)
    next_key: Iterator[int] = field(default_factory=lambda: itertools.count())

    @property
    def router_pid(self) -> int | None:
        pid: int | None = self.cluster.router.pid
        return pid

    def shard_pid(self, shard: str) -> int | None:
        pid: int | None = self.cluster.shards[self.cluster.shard_index(shard)].pid
        return pid

    @property
    def shard_pids(self) -> list[int | None]:
        return [proc.pid for proc in self.cluster.shards]

    @property
    def shard_address(self) -> str:
        return self.user.addresses[self.shard]


async def dataset(env: Env) -> Dataset:
    """The shared loaded cluster, started and loaded on first use."""
    existing = env.shared.get("ycsb.dataset")
    if existing is not None:
        assert isinstance(existing, Dataset)
        return existing
    n = env.opts.docs
    print(f"starting a {SHARDS}-shard cluster and loading 2 x {n:,} documents of "
          f"{len(bson.encode(make_doc(0)))} B ...", flush=True)  # fmt: skip
    cluster = await start_cluster(env.tmp / "ycsb-cluster", SHARDS)
    channel = aio.insecure_channel(cluster.router_address)

    async def close() -> None:
        await channel.close(None)
        await stop_cluster(cluster)

    env.share("ycsb.dataset", None, close)  # stopped at the end even if loading fails
    router = routing_pb2_grpc.RouterServiceStub(channel)
    config = routing_pb2_grpc.ConfigServiceStub(channel)
    shard_ids = sorted(cluster.shard_ids)
    await shard_collection(config, DB, USERTABLE, "_id", routing_pb2.HASH)
    third = max(n // 3, 1)
    scan = await place_ranges(config, DB, SCANTABLE, "k", [third, 2 * third], shard_ids)
    user = await placement(config, DB, USERTABLE)
    docs = [bson.encode(make_doc(k)) for k in range(n)]
    rates = {}
    rates[USERTABLE] = await load(router, DB, USERTABLE, docs)
    rates[SCANTABLE] = await load(router, DB, SCANTABLE, docs)
    del docs
    keys = [k for k in range(n) if user.shard_of({"_id": k}) == TARGET_SHARD]
    last = scan.chunk_map.chunk_for_doc({"k": n - 1})
    max_scan = max(1, min(MAX_SCAN, n // 10))
    scan_lo, scan_hi = 2 * third, n - max_scan  # starts of scans, all inside shard2's chunk
    assert last.shard == TARGET_SHARD and bounds_ok(last, scan_lo, n + 1, "k"), last
    ds = Dataset(
        cluster, channel, router, config, n, user, scan, TARGET_SHARD, keys,
        scan_lo, max(scan_hi, scan_lo + 1), max_scan, rates, itertools.count(n),
    )  # fmt: skip
    env.shared["ycsb.dataset"] = ds
    print(f"loaded: {USERTABLE} {rates[USERTABLE]:,.0f} docs/s, {SCANTABLE} "
          f"{rates[SCANTABLE]:,.0f} docs/s; {len(keys):,} of the {USERTABLE} keys on "
          f"{TARGET_SHARD}", flush=True)  # fmt: skip
    return ds


async def proxy_for(env: Env, ds: Dataset) -> ProxyProcess:
    existing = env.shared.get("ycsb.proxy")
    if isinstance(existing, ProxyProcess):
        return existing
    shards = [ds.user.addresses[s] for s in sorted(ds.user.addresses)]
    proxy = ProxyProcess(shards, env.tmp / "proxy.log")

    async def close() -> None:
        proxy.stop()

    env.share("ycsb.proxy", proxy, close)
    await proxy.wait_ready()
    return proxy


# ------------------------------------------------------------------------------ operations


@dataclass(frozen=True)
class Abstract:
    """One operation of a workload, before it is encoded for a target."""

    kind: str  # read | update | scan | insert
    key: int = 0
    length: int = 0
    field: int = 0


def abstract_ops(workload: str, ds: Dataset, seed: int = 1) -> list[Abstract]:
    mix = WORKLOADS[workload]
    kinds = list(mix)
    weights = [mix[k] for k in kinds]
    rng = random.Random(seed)
    if workload == "E":
        zipf = Zipf(ds.scan_hi - ds.scan_lo, seed)
    else:
        zipf = Zipf(len(ds.keys_on_shard), seed)
    out = []
    for _ in range(POOL):
        kind = rng.choices(kinds, weights)[0]
        if kind == "scan":
            start = ds.scan_lo + zipf.pick(rng)
            out.append(Abstract(kind, start, rng.randint(1, ds.max_scan)))
        elif kind == "insert":
            out.append(Abstract(kind))
        else:
            out.append(Abstract(kind, ds.keys_on_shard[zipf.pick(rng)], 0, rng.randrange(FIELDS)))
    return out


def _update_doc(a: Abstract) -> bytes:
    return bson.encode({"$set": {f"field{a.field}": _FILLER[a.key % 1000 : a.key % 1000 + FIELD_BYTES]}})


def _scan_filter(a: Abstract) -> bytes:
    return bson.encode({"k": {"$gte": a.key, "$lt": a.key + a.length}})


SORT_K = bson.encode({"k": 1})


def router_ops(ds: Dataset, channel: aio.Channel, ops: Sequence[Abstract]) -> list[Op]:
    calls = {m: raw_method(channel, ROUTER + m) for m in ("Query", "Update", "Insert")}
    out = []
    for a in ops:
        if a.kind == "read":
            req = routing_pb2.QueryRequest(
                database=DB, collection=USERTABLE, query=bson.encode({"_id": a.key})
            )
            out.append(Op("read", calls["Query"], req.SerializeToString()))
        elif a.kind == "update":
            req2 = routing_pb2.UpdateRequest(
                database=DB, collection=USERTABLE, query=bson.encode({"_id": a.key}),
                update=_update_doc(a),
            )  # fmt: skip
            out.append(Op("update", calls["Update"], req2.SerializeToString()))
        elif a.kind == "scan":
            req3 = routing_pb2.QueryRequest(
                database=DB, collection=SCANTABLE, query=_scan_filter(a), sort=SORT_K,
                limit=a.length,
            )  # fmt: skip
            out.append(Op("scan", calls["Query"], req3.SerializeToString(), a.length))
        else:

            def insert() -> bytes:
                doc = bson.encode(make_doc(next(ds.next_key)))
                req = routing_pb2.InsertRequest(
                    database=DB, collection=SCANTABLE, documents=[doc], ordered=True
                )
                return req.SerializeToString()

            out.append(Op("insert", calls["Insert"], insert))
    return out


def shard_ops(ds: Dataset, channel: aio.Channel, ops: Sequence[Abstract]) -> list[Op]:
    """The ShardService requests the router sends for ``ops`` (same fields, same version)."""
    calls = {m: raw_method(channel, SHARD + m) for m in ("Find", "Update", "Insert")}
    user_version = ds.user.version(ds.shard)
    scan_version = ds.scan.version(ds.shard)
    out = []
    for a in ops:
        if a.kind == "read":
            req = shard_pb2.ShardFindRequest(
                database=DB, collection=USERTABLE, filter=bson.encode({"_id": a.key}),
                batch_size=DEFAULT_FIRST_BATCH, version=user_version,
            )  # fmt: skip
            out.append(Op("read", calls["Find"], req.SerializeToString()))
        elif a.kind == "update":
            req2 = shard_pb2.ShardUpdateRequest(
                database=DB, collection=USERTABLE, filter=bson.encode({"_id": a.key}),
                update=_update_doc(a), version=user_version,
            )  # fmt: skip
            out.append(Op("update", calls["Update"], req2.SerializeToString()))
        elif a.kind == "scan":
            req3 = shard_pb2.ShardFindRequest(
                database=DB, collection=SCANTABLE, filter=_scan_filter(a), sort=SORT_K,
                limit=a.length, batch_size=min(DEFAULT_FIRST_BATCH, a.length),
                version=scan_version,
            )  # fmt: skip
            out.append(Op("scan", calls["Find"], req3.SerializeToString(), a.length))
        else:

            def insert() -> bytes:
                doc = bson.encode(make_doc(next(ds.next_key)))
                req = shard_pb2.ShardInsertRequest(
                    database=DB, collection=SCANTABLE, documents=[doc], ordered=True,
                    version=scan_version,
                )  # fmt: skip
                return req.SerializeToString()

            out.append(Op("insert", calls["Insert"], insert))
    return out


_ROUTER_RESPONSES: dict[str, Any] = {
    "read": routing_pb2.QueryResponse, "scan": routing_pb2.QueryResponse,
    "update": routing_pb2.UpdateResponse, "insert": routing_pb2.InsertResponse,
}  # fmt: skip
_SHARD_RESPONSES: dict[str, Any] = {
    "read": shard_pb2.ShardCursorBatch, "scan": shard_pb2.ShardCursorBatch,
    "update": shard_pb2.ShardUpdateResponse, "insert": shard_pb2.ShardInsertResponse,
}  # fmt: skip


async def verify(target: str, ops: Sequence[Op]) -> None:
    """Send the first op of each kind once and check its answer (typed)."""
    classes = _ROUTER_RESPONSES if target == "router" else _SHARD_RESPONSES
    seen: set[str] = set()
    for op in ops:
        if op.kind in seen:
            continue
        seen.add(op.kind)
        request = op.request if isinstance(op.request, bytes) else op.request()
        raw = await op.call(request, timeout=OP_TIMEOUT)
        response = classes[op.kind].FromString(raw)
        if op.kind in ("read", "scan"):
            got = len(response.documents)
            ok = got == op.expect and not response.cursor_id
        elif op.kind == "update":
            got = response.matched_count
            ok = got == op.expect
        else:
            got = response.inserted_count
            ok = got == op.expect and not response.errors
        if not ok:
            raise RuntimeError(f"{target} {op.kind}: expected {op.expect}, got {got}: {response}")


# ------------------------------------------------------------------------------ measuring


def _meter(ds: Dataset, proxy: ProxyProcess, target: str, shards: Sequence[int | None]) -> CpuMeter:
    groups: dict[str, Sequence[int | None]] = {"shard": shards, "client": [os.getpid()]}
    if target == "router":
        groups["hop"] = [ds.router_pid]
    elif target == "proxy":
        groups["hop"] = [proxy.pid]
    return CpuMeter(groups)


def _cpu_total(summary: dict[str, Any]) -> float:
    cpu = summary.get("cpu_us_per_op")
    return float(sum(cpu.values())) if cpu else float("nan")


def _compare(per_target: dict[str, dict[str, Any]]) -> dict[str, Any]:
    r, d, p = (per_target.get(t, {}) for t in TARGETS)

    def pair(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        out = {
            "ops_per_s": ratio(a.get("ops_per_s", float("nan")), b.get("ops_per_s", float("nan"))),
            "p50": ratio(a.get("p50_ms", float("nan")), b.get("p50_ms", float("nan"))),
            "p99": ratio(a.get("p99_ms", float("nan")), b.get("p99_ms", float("nan"))),
        }
        if "docs_per_s" in a:
            out["docs_per_s"] = ratio(a["docs_per_s"], b.get("docs_per_s", float("nan")))
        # CPU seconds per operation of every process on the path (client, router or
        # proxy, shards): the throughput ratio to expect when the 2 cores are the
        # limit, and far steadier than throughput when other work shares the machine.
        out["cpu_per_op"] = ratio(_cpu_total(a), _cpu_total(b))
        return out

    return {"router/direct": pair(r, d), "router/proxy": pair(r, p)}


async def run_workload(
    env: Env, ds: Dataset, proxy: ProxyProcess, workload: str
) -> dict[str, dict[str, Any]]:
    opts = env.opts
    abstract = abstract_ops(workload, ds)
    shard_channel = aio.insecure_channel(ds.shard_address)
    proxy_channel = aio.insecure_channel(proxy.address_for(ds.shard_address))
    try:
        op_lists = {
            "router": router_ops(ds, ds.channel, abstract),
            "direct": shard_ops(ds, shard_channel, abstract),
            "proxy": shard_ops(ds, proxy_channel, abstract),
        }
        for target, ops in op_lists.items():
            await verify(target, ops)
        results: dict[str, dict[str, Any]] = {}
        for c in opts.concurrency:

            def stream(i: int, ops: list[Op], c: int = c) -> Iterator[Op]:
                return cycle_from(ops, i * len(ops) // c)

            streams = {t: functools.partial(stream, ops=op_lists[t]) for t in TARGETS}
            meters = {t: _meter(ds, proxy, t, [ds.shard_pid(ds.shard)]) for t in TARGETS}
            measured = await interleaved(streams, c, opts, meters)
            per_target: dict[str, Any] = {t: measured[t].summary() for t in TARGETS}
            per_target["ratios"] = _compare(per_target)
            results[str(c)] = per_target
            _print_row(f"{workload}", c, per_target)
        return results
    finally:
        await shard_channel.close(None)
        await proxy_channel.close(None)


# ------------------------------------------------------------------------------ bulk insert


@dataclass
class BulkPlan:
    """The same documents, batched for each target."""

    docs: list[bytes]
    ids: list[int]
    keys: list[bytes]  # encoded chunk-space key of each document (hashed _id)


def bulk_plan(n: int, first_id: int) -> BulkPlan:
    pattern = ShardKeyPattern(["_id"], HASHED)
    ids = list(range(first_id, first_id + n))
    return BulkPlan(
        [bson.encode(make_doc(i)) for i in ids], ids, [pattern.key_for_doc({"_id": i}) for i in ids]
    )


BatchCall = Callable[[], Any]  # one batch: awaitable of its shard call(s)


def router_batches(channel: aio.Channel, coll: str, plan: BulkPlan) -> list[BatchCall]:
    call = raw_method(channel, ROUTER + "Insert")
    out: list[BatchCall] = []
    for lo in range(0, len(plan.docs), BULK_BATCH):
        data = routing_pb2.InsertRequest(
            database=DB, collection=coll, documents=plan.docs[lo : lo + BULK_BATCH], ordered=False
        ).SerializeToString()

        def batch(data: bytes = data) -> Any:
            return call(data, timeout=RPC)

        out.append(batch)
    return out


def shard_batches(
    channels: dict[str, aio.Channel], where: Placement, coll: str, plan: BulkPlan
) -> list[BatchCall]:
    """Each batch pre-split per shard: one ShardService Insert per shard, concurrently."""
    calls = {s: raw_method(ch, SHARD + "Insert") for s, ch in channels.items()}
    out: list[BatchCall] = []
    for lo in range(0, len(plan.docs), BULK_BATCH):
        by_shard: dict[str, list[bytes]] = {}
        for i in range(lo, min(lo + BULK_BATCH, len(plan.docs))):
            shard = where.chunk_map.chunk_for_key(plan.keys[i]).shard
            by_shard.setdefault(shard, []).append(plan.docs[i])
        requests = [
            (calls[s], shard_pb2.ShardInsertRequest(
                database=DB, collection=coll, documents=docs, ordered=False,
                version=where.version(s),
            ).SerializeToString())
            for s, docs in sorted(by_shard.items())
        ]  # fmt: skip

        def batch(requests: list[tuple[Any, bytes]] = requests) -> Any:
            return asyncio.gather(*(call(data, timeout=RPC) for call, data in requests))

        out.append(batch)
    return out


async def send_batches(batches: Sequence[BatchCall], concurrency: int) -> tuple[float, list[float]]:
    """All batches, ``concurrency`` in flight; (seconds, latency of each batch)."""
    next_index = iter(range(len(batches)))
    latencies: list[float] = []

    async def worker() -> None:
        for i in next_index:
            start = time.perf_counter()
            await batches[i]()
            latencies.append(time.perf_counter() - start)

    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - begin, latencies


async def run_bulk(env: Env, ds: Dataset, proxy: ProxyProcess) -> dict[str, dict[str, Any]]:
    opts = env.opts
    n = opts.docs
    warm_n = min(2 * BULK_BATCH, max(n // 10, 1))
    plan = bulk_plan(n, 0)
    warm = bulk_plan(warm_n, n)
    shard_ids = sorted(ds.user.addresses)
    direct = {s: aio.insecure_channel(ds.user.addresses[s]) for s in shard_ids}
    proxied = {s: aio.insecure_channel(proxy.address_for(ds.user.addresses[s])) for s in shard_ids}
    results: dict[str, dict[str, Any]] = {}
    rounds = max(1, min(opts.rounds, len(plan.docs) // BULK_BATCH or 1))
    try:
        for c in opts.concurrency:
            batches: dict[str, list[BatchCall]] = {}
            for target in TARGETS:
                coll = f"bulk_{target}_{c}"
                await shard_collection(ds.config, DB, coll, "_id", routing_pb2.HASH)
                where = await placement(ds.config, DB, coll)
                if target == "router":
                    batches[target] = router_batches(ds.channel, coll, plan)
                    warm_batches = router_batches(ds.channel, coll, warm)
                else:
                    channels = direct if target == "direct" else proxied
                    batches[target] = shard_batches(channels, where, coll, plan)
                    warm_batches = shard_batches(channels, where, coll, warm)
                await send_batches(warm_batches, 1)
            # The batches in ``rounds`` slices; each round sends one slice per target,
            # the targets alternating, so a change of load hits every target alike.
            measured = {t: Measurement() for t in TARGETS}
            for r in range(rounds):
                order = list(TARGETS[r % 3 :] + TARGETS[: r % 3])
                for target in order:
                    mine = batches[target]
                    piece = mine[r * len(mine) // rounds : (r + 1) * len(mine) // rounds]
                    meter = _meter(ds, proxy, target, ds.shard_pids)
                    meter.start()
                    seconds, latencies = await send_batches(piece, c)
                    measured[target].merge(Measurement(
                        seconds=seconds, ops=len(latencies), latencies={"batch": latencies},
                        cpu=meter.stop(),
                    ))  # fmt: skip
            per_target: dict[str, Any] = {}
            for target in TARGETS:
                coll = f"bulk_{target}_{c}"
                counted = await ds.router.Count(
                    router_ext_pb2.CountRequest(database=DB, collection=coll), timeout=RPC
                )
                if counted.count != n + warm_n:
                    raise RuntimeError(
                        f"bulk {target}: {counted.count} documents, expected {n + warm_n}"
                    )
                await drop_collection(ds.router, DB, coll)
                measured[target].docs = n  # the timed documents (not the warm-up)
                per_target[target] = measured[target].summary()
            per_target["ratios"] = _compare(per_target)
            results[str(c)] = per_target
            _print_row("bulk", c, per_target, docs=True)
        return results
    finally:
        for ch in [*direct.values(), *proxied.values()]:
            await ch.close(None)


# ------------------------------------------------------------------------------ printing

HEADERS = (
    "workload", "conc",
    "ops/s router", "direct", "proxy", "r/d", "r/p",
    "p50 ms router", "direct", "proxy", "r/p",
    "p99 ms router", "proxy", "max ms router", "proxy",
    "hop cpu us/op router", "proxy", "cpu/op r/d", "r/p",
)  # fmt: skip
_rows: list[list[str]] = []


def _print_row(workload: str, c: int, per: dict[str, Any], docs: bool = False) -> None:
    r, d, p = per["router"], per["direct"], per["proxy"]
    key = "docs_per_s" if docs else "ops_per_s"
    rr = per["ratios"]

    def hop(x: dict[str, Any]) -> float:
        return float(x.get("cpu_us_per_op", {}).get("hop", float("nan")))

    row = [
        workload + (" docs/s" if docs else ""), str(c),
        fmt(r[key], ",.0f"), fmt(d[key], ",.0f"), fmt(p[key], ",.0f"),
        fmt(rr["router/direct"][key]), fmt(rr["router/proxy"][key]),
        fmt(r["p50_ms"]), fmt(d["p50_ms"]), fmt(p["p50_ms"]), fmt(rr["router/proxy"]["p50"]),
        fmt(r["p99_ms"]), fmt(p["p99_ms"]), fmt(r["max_ms"]), fmt(p["max_ms"]),
        fmt(hop(r), ".0f"), fmt(hop(p), ".0f"),
        fmt(rr["router/direct"]["cpu_per_op"]), fmt(rr["router/proxy"]["cpu_per_op"]),
    ]  # fmt: skip
    _rows.append(row)
    errors = sum(per[t]["errors"] for t in TARGETS)
    note = f"  ({errors} errors: {next(per[t].get('first_error') for t in TARGETS if per[t]['errors'])})" if errors else ""
    print(f"  {workload} c={c}: router {r[key]:,.0f}/s p50 {r['p50_ms']:.2f} ms | direct "
          f"{d[key]:,.0f}/s p50 {d['p50_ms']:.2f} ms | proxy {p[key]:,.0f}/s p50 "
          f"{p['p50_ms']:.2f} ms{note}", flush=True)  # fmt: skip


def print_results() -> None:
    print()
    print("ycsb: router vs direct-to-shard vs bare proxy (r/d, r/p: router / reference; "
          "bulk figures are docs/s, latencies and CPU per 1,000-doc batch; cpu/op: CPU "
          "seconds per operation of client + router or proxy + shard)")  # fmt: skip
    print_table(HEADERS, _rows)


async def run(env: Env) -> dict[str, Any]:
    _rows.clear()
    ds = await dataset(env)
    proxy = await proxy_for(env, ds)
    out: dict[str, Any] = {
        "dataset": {
            "documents": ds.n, "doc_bytes": len(bson.encode(make_doc(0))), "shards": SHARDS,
            "measured_shard": ds.shard, "keys_on_measured_shard": len(ds.keys_on_shard),
            "load_docs_per_s": ds.load_docs_per_s,
        },
        "workloads": {},
    }  # fmt: skip
    print(f"ycsb: {env.opts.seconds:g} s per measurement after {env.opts.warmup:g} s warm-up, "
          f"concurrency {','.join(map(str, env.opts.concurrency))}", flush=True)  # fmt: skip
    for workload in env.opts.workloads:
        if workload == "bulk":
            out["bulk"] = await run_bulk(env, ds, proxy)
        elif workload in WORKLOADS:
            out["workloads"][workload] = await run_workload(env, ds, proxy, workload)
        else:
            raise SystemExit(f"unknown workload {workload!r} (A, B, C, E, bulk)")
    print_results()
    return out
