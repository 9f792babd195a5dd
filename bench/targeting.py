"""Routing cost vs routing-table size: targeting with 10, 1,000 and 100,000 chunks.

In process, no cluster: ``lauradb.sharding`` chunk maps of N chunks spread round-robin
over 3 shards, and the router's targeting functions on them:

* point, ranged key: ``target(pattern, map, {k: v})``;
* point, hashed key: ``target(pattern, map, {_id: v})`` (hash, then one lookup);
* range, ranged key: ``{k: {$gte: v, $lt: v + 50}}`` (one or two chunks);
* insert routing, hashed key: ``target_key_for_insert`` (what a routed insert does).

Each figure is the best of 7 passes over pre-built random filters (ns per call;
the map sizes alternate within each round of passes, so every size is measured
warm, after the same passes); every size gets the same filters (one seed), so
only the map differs. The ratio is against the smallest map. Lookups bisect over
the chunk minimums, so 100,000 chunks should cost about what 10 do (log, not
linear); what remains is the bisect's longer path and its cache misses (a 10-chunk
map stays in L1, a 100,000-chunk map's minimums are a few MB).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey

from bench.common import Env, fmt, print_table, ratio
from lauradb.sharding.chunk_map import Chunk, ChunkMap
from lauradb.sharding.shard_key import HASHED, RANGE, ShardKeyPattern
from lauradb.sharding.targeting import target, target_key_for_insert

SHARDS = 3
SEED = 7  # one seed for every map size: identical lookups, a fair ratio
KEY_SPACE = 10_000_000
RANGE_WIDTH = 50
REPEATS = 7
KINDS = ("point ranged", "point hashed", "range ranged", "insert hashed")


def ranged_map(chunks: int) -> ChunkMap:
    pattern = ShardKeyPattern(["k"], RANGE)
    width = KEY_SPACE // chunks
    bounds: list[Any] = [MinKey(), *(i * width for i in range(1, chunks)), MaxKey()]
    return ChunkMap(pattern, _chunks("k", bounds))


def hashed_map(chunks: int) -> ChunkMap:
    pattern = ShardKeyPattern(["_id"], HASHED)
    step = 2**64 // chunks
    bounds: list[Any] = [MinKey(), *(Int64(-(2**63) + i * step) for i in range(1, chunks)), MaxKey()]
    return ChunkMap(pattern, _chunks("_id", bounds))


def _chunks(field: str, bounds: list[Any]) -> list[Chunk]:
    return [
        Chunk(f"c{i}", {field: bounds[i]}, {field: bounds[i + 1]}, f"shard{i % SHARDS}", 1, i)
        for i in range(len(bounds) - 1)
    ]


def timed_ns(fn: Callable[[Any], Any], inputs: list[Any]) -> float:
    """One pass over ``inputs``: nanoseconds per call."""
    start = time.perf_counter_ns()
    for x in inputs:
        fn(x)
    return (time.perf_counter_ns() - start) / len(inputs)


def prepare(chunks: int, lookups: int) -> tuple[float, dict[str, tuple[Callable[[Any], Any], list[Any]]]]:
    """Build the maps for ``chunks``; (seconds it took, {kind: (call, inputs)})."""
    start = time.perf_counter()
    ranged = ranged_map(chunks)
    hashed = hashed_map(chunks)
    built = time.perf_counter() - start
    rng = random.Random(SEED)
    values = [rng.randrange(KEY_SPACE) for _ in range(lookups)]
    rp, hp = ranged.pattern, hashed.pattern
    point_filters = [{"k": v} for v in values]
    id_filters = [{"_id": v} for v in values]
    range_filters = [{"k": {"$gte": v, "$lt": v + RANGE_WIDTH}} for v in values]
    # Sanity: a point lookup lands on one shard.
    assert len(target(rp, ranged, point_filters[0]).shards) == 1
    assert len(target(hp, hashed, id_filters[0]).shards) == 1
    return built, {
        "point ranged": (lambda f: target(rp, ranged, f), point_filters),
        "point hashed": (lambda f: target(hp, hashed, f), id_filters),
        "range ranged": (lambda f: target(rp, ranged, f), range_filters),
        "insert hashed": (lambda d: target_key_for_insert(hp, hashed, d), id_filters),
    }


def measure(counts: list[int], lookups: int) -> dict[int, dict[str, Any]]:
    """Best of REPEATS passes per (size, kind); the sizes alternate within each round,
    so other work on the machine slows every size alike and the minimum filters it out."""
    prepared = {c: prepare(c, lookups) for c in counts}
    best: dict[int, dict[str, float]] = {c: dict.fromkeys(KINDS, float("inf")) for c in counts}
    for _ in range(REPEATS):
        for c in counts:
            for kind, (fn, inputs) in prepared[c][1].items():
                best[c][kind] = min(best[c][kind], timed_ns(fn, inputs))
    return {
        c: {"chunks": c, "build_seconds": prepared[c][0], "ns_per_call": best[c]} for c in counts
    }


async def run(env: Env) -> dict[str, Any]:
    opts = env.opts
    counts = sorted(opts.chunk_counts)
    print(f"targeting: {', '.join(f'{c:,}' for c in counts)} chunks, "
          f"{opts.targeting_lookups:,} lookups x {REPEATS} passes each", flush=True)  # fmt: skip
    by_count = measure(counts, opts.targeting_lookups)
    base = by_count[counts[0]]["ns_per_call"]
    rows = []
    for c in counts:
        figures = by_count[c]
        ns = figures["ns_per_call"]
        figures["ratio_vs_smallest"] = {k: ratio(ns[k], base[k]) for k in KINDS}
        row = [f"{c:,}"]
        for k in KINDS:
            row += [fmt(ns[k] / 1000, ".2f"), fmt(figures["ratio_vs_smallest"][k])]
        row.append(fmt(figures["build_seconds"], ".2f"))
        rows.append(row)
    print()
    print(f"targeting: microseconds per call, and ratio to {counts[0]:,} chunks")
    headers = ["chunks"]
    for k in KINDS:
        headers += [f"{k} us", "ratio"]
    headers.append("map build s")
    print_table(headers, rows)
    return {"lookups": opts.targeting_lookups, "by_chunks": {str(c): by_count[c] for c in counts}}
