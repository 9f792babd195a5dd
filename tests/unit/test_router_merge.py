"""Pure router logic: merging shard streams, find planning, insert batching, candidates."""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

import bson
import pytest
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from lauradb.cluster import routing_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.projection import compile_projection
from lauradb.query.sort import compile_sort, sort_documents
from lauradb.sharding.chunk_map import combined_version
from router.cursors import CursorRegistry, MergeSource
from router.find_plan import plan_find, plan_projection, widen_projection
from router.insert_batching import (
    Batch,
    RoutedDoc,
    group_by_shard,
    map_errors,
    ordered_runs,
    prepare_documents,
    route,
    split_batch,
    with_id_first,
)
from router.merge import FetchResult, MergedStream, ShardStream, raw_sort_key
from router.routing_table import apply_incremental, table_from_response
from router.writes import candidate_filter, pick_candidate

# ---------------------------------------------------------------------------- fakes


class FakeShards:
    """Shard cursors over in-memory lists: ``fetch(stream, n)`` pops n documents."""

    def __init__(self, data: dict[str, list[bytes]]) -> None:
        self.rest = {sid: deque(docs) for sid, docs in data.items()}
        self.fetches = 0
        self.killed: list[tuple[str, str, str]] = []

    def open(self, sid: str, first: int) -> ShardStream:
        docs = [self.rest[sid].popleft() for _ in range(min(first, len(self.rest[sid])))]
        return ShardStream.of(sid, f"{sid}:1", docs, f"c-{sid}" if self.rest[sid] else "")

    async def fetch(self, stream: ShardStream, n: int) -> FetchResult:
        self.fetches += 1
        q = self.rest[stream.shard_id]
        docs = [q.popleft() for _ in range(min(n, len(q)))]
        return FetchResult(docs, stream.cursor_id if q else "", len(docs))

    async def kill(self, cursors: list[tuple[str, str, str]]) -> None:
        self.killed.extend(cursors)


async def drain(merged: MergedStream, batch: int) -> list[bytes]:
    out: list[bytes] = []
    while not merged.exhausted:
        docs = await merged.next_batch(batch)
        assert len(docs) <= batch
        out.extend(docs)
        if not docs:
            break
    return out


def enc(docs: list[dict[str, Any]]) -> list[bytes]:
    return [bson.encode(d) for d in docs]


def dec(docs: list[bytes]) -> list[dict[str, Any]]:
    return [bson.decode(d) for d in docs]


# ---------------------------------------------------------------------------- merge


async def test_sorted_merge_of_three_shards_pulls_lazily() -> None:
    spec = {"x": 1, "_id": 1}
    key = compile_sort(spec)
    data = {
        "s0": enc(sort_documents([{"_id": i, "x": i % 7} for i in range(0, 60, 3)], spec)),
        "s1": enc(sort_documents([{"_id": i, "x": i % 7} for i in range(1, 60, 3)], spec)),
        "s2": enc(sort_documents([{"_id": i, "x": i % 7} for i in range(2, 60, 3)], spec)),
    }
    shards = FakeShards(data)
    streams = [shards.open(s, 4) for s in data]
    merged = MergedStream(streams, shards.fetch, sort_key=raw_sort_key(key))
    first = await merged.next_batch(5)
    assert len(first) == 5
    assert shards.fetches <= 3  # only what the first 5 documents needed
    rest = await drain(merged, 7)
    got = dec(first + rest)
    expected = sort_documents([{"_id": i, "x": i % 7} for i in range(60)], spec)
    assert got == expected


async def test_sorted_merge_descending_with_skip_limit() -> None:
    spec = {"v": -1}
    docs = [{"_id": i, "v": (i * 37) % 101} for i in range(100)]
    parts: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    for d in docs:
        parts["a" if d["_id"] % 2 else "b"].append(d)
    data = {s: enc(sort_documents(p, spec)) for s, p in parts.items()}
    plan = plan_find(skip=10, limit=15, n_shards=2)
    assert (plan.shard_skip, plan.shard_limit, plan.router_skip, plan.router_limit) == (0, 25, 10, 15)
    # the shards apply limit = skip + limit
    data = {s: d[: plan.shard_limit] for s, d in data.items()}
    shards = FakeShards(data)
    merged = MergedStream(
        [shards.open(s, 3) for s in data],
        shards.fetch,
        sort_key=raw_sort_key(compile_sort(spec)),
        skip=plan.router_skip,
        limit=plan.router_limit,
    )
    got = dec(await drain(merged, 4))
    expected = sort_documents(docs, spec)[10:25]
    assert [d["v"] for d in got] == [d["v"] for d in expected]
    assert merged.exhausted


async def test_limit_reached_closes_and_reports_open_cursors() -> None:
    data = {"a": enc([{"_id": i} for i in range(50)]), "b": enc([{"_id": 100 + i} for i in range(50)])}
    shards = FakeShards(data)
    merged = MergedStream([shards.open(s, 5) for s in data], shards.fetch, limit=7)
    source = MergeSource(merged, shards.kill)
    docs = await source.next_batch(101)
    assert len(docs) == 7
    assert source.exhausted
    assert sorted(c[0] for c in shards.killed) == ["a", "b"]


async def test_unsorted_merge_returns_every_document_once() -> None:
    data = {s: enc([{"_id": f"{s}{i}"} for i in range(n)]) for s, n in (("a", 13), ("b", 0), ("c", 29))}
    shards = FakeShards(data)
    merged = MergedStream([shards.open(s, 2) for s in data], shards.fetch)
    got = [d["_id"] for d in dec(await drain(merged, 5))]
    assert sorted(got) == sorted(f"{s}{i}" for s, n in (("a", 13), ("c", 29)) for i in range(n))
    assert len(got) == len(set(got))


async def test_batch_byte_limit_keeps_the_overflowing_document() -> None:
    big = [{"_id": i, "pad": "x" * 1000} for i in range(10)]
    shards = FakeShards({"a": enc(big)})
    merged = MergedStream([shards.open("a", 10)], shards.fetch)
    first = await merged.next_batch(100, max_bytes=3500)
    assert len(first) == 3
    rest = await drain(merged, 100)
    assert [d["_id"] for d in dec(first + rest)] == list(range(10))


async def test_projection_strips_sort_key_after_merge() -> None:
    spec = {"s": 1}
    user_proj = {"name": 1, "_id": 0}
    docs = [{"_id": i, "s": (i * 7) % 10, "name": f"n{i}"} for i in range(30)]
    shard_proj, reproject = plan_projection(user_proj, ["s"])
    assert reproject and shard_proj == {"name": 1, "_id": 0, "s": 1}
    shard_side = compile_projection(shard_proj)
    parts = [docs[0::2], docs[1::2]]
    data = {
        f"s{i}": enc([shard_side.apply(d) for d in sort_documents(p, spec)])
        for i, p in enumerate(parts)
    }
    router_side = compile_projection(user_proj)
    shards = FakeShards(data)
    merged = MergedStream(
        [shards.open(s, 4) for s in data],
        shards.fetch,
        sort_key=raw_sort_key(compile_sort(spec)),
        transform=lambda b: bson.encode(router_side.apply(bson.decode(b))),
    )
    got = dec(await drain(merged, 6))
    assert [list(g) for g in got] == [["name"]] * 30  # the sort key is stripped
    ids_in_order = [int(g["name"][1:]) for g in got]
    assert sorted(ids_in_order) == list(range(30))
    assert [docs[i]["s"] for i in ids_in_order] == sorted((i * 7) % 10 for i in range(30))


value_st = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.text(alphabet="abc", max_size=2),
    st.booleans(),
    st.lists(st.integers(-3, 3), max_size=3),
)


@settings(max_examples=120, deadline=None)
@given(
    docs=st.lists(st.fixed_dictionaries({}, optional={"a": value_st, "b": value_st}), max_size=40),
    n_shards=st.integers(1, 4),
    first=st.integers(1, 6),
    skip=st.integers(0, 8),
    limit=st.integers(0, 12),
    spec=st.sampled_from([{"a": 1}, {"a": -1}, {"a": 1, "b": -1}, {"b": 1, "a": 1}]),
)
async def test_merge_equals_global_sort(
    docs: list[dict[str, Any]], n_shards: int, first: int, skip: int, limit: int, spec: dict[str, int]
) -> None:
    docs = [{"_id": i, **d} for i, d in enumerate(docs)]
    key = compile_sort(spec)
    parts: dict[str, list[dict[str, Any]]] = {f"s{i}": [] for i in range(n_shards)}
    for d in docs:
        parts[f"s{d['_id'] % n_shards}"].append(d)
    plan = plan_find(skip, limit, n_shards)
    data = {}
    for s, p in parts.items():
        ordered = enc(sort_documents(p, spec))[plan.shard_skip :]
        data[s] = ordered[: plan.shard_limit] if plan.shard_limit else ordered
    shards = FakeShards(data)
    merged = MergedStream(
        [shards.open(s, first) for s in data],
        shards.fetch,
        sort_key=raw_sort_key(key),
        skip=plan.router_skip,
        limit=plan.router_limit,
    )
    got = dec(await drain(merged, first))
    expected = sort_documents(docs, spec)
    expected = expected[skip : skip + limit] if limit else expected[skip:]
    assert [key(d) for d in got] == [key(d) for d in expected]
    assert len({d["_id"] for d in got}) == len(got)


# ---------------------------------------------------------------------------- find planning


def test_plan_find_single_and_negative_limit() -> None:
    p = plan_find(5, 10, 1)
    assert (p.shard_skip, p.shard_limit, p.router_skip, p.router_limit) == (5, 10, 0, 10)
    p = plan_find(3, -4, 2)
    assert p.single_batch and p.shard_limit == 7 and p.router_limit == 4 and p.router_skip == 3
    p = plan_find(3, 0, 2)
    assert p.shard_limit == 0 and p.router_skip == 3 and p.router_limit == 0


@pytest.mark.parametrize(
    ("spec", "paths", "expected"),
    [
        ({"a": 1}, ["a"], {"a": 1}),
        ({"a": 1}, ["b"], {"a": 1, "b": 1}),
        ({"a.b": 1}, ["a"], {"a": 1}),
        ({"a": 1, "_id": 0}, ["_id"], {"a": 1}),
        ({"a": 0}, ["a"], {}),
        ({"a": 0, "c": 0}, ["a.x"], {"c": 0}),
        ({"a": {"$slice": 2}}, ["b"], None),
        ({"_id": 0}, ["_id"], {}),
    ],
)
def test_widen_projection(spec: dict[str, Any], paths: list[str], expected: Any) -> None:
    assert widen_projection(spec, paths) == expected


@pytest.mark.parametrize(
    "spec",
    [{"a": 1}, {"a": 1, "_id": 0}, {"a.b": 1}, {"a": 0}, {"_id": 0}, {"b": 0, "a.c": 0}],
)
@pytest.mark.parametrize("sort_path", ["a", "a.b", "_id", "b"])
def test_widened_then_user_projection_equals_user_projection(
    spec: dict[str, Any], sort_path: str
) -> None:
    doc = {"_id": 1, "a": {"b": 2, "c": 3}, "b": 4, "d": 5}
    shard_spec, reproject = plan_projection(spec, [sort_path])
    user = compile_projection(spec)
    shard_out = compile_projection(shard_spec).apply(doc) if shard_spec else dict(doc)
    assert compile_projection(shard_spec or None).keeps(sort_path) or not shard_spec
    final = user.apply(shard_out) if reproject else shard_out
    assert final == user.apply(doc)


# ---------------------------------------------------------------------------- insert batching


def test_with_id_first_prepends_objectid() -> None:
    raw = bson.encode({"a": 1, "b": {"c": [1, 2]}})
    oid = ObjectId()
    out = with_id_first(raw, oid)
    doc = bson.decode(out)
    assert list(doc) == ["_id", "a", "b"] and doc["_id"] == oid and doc["b"] == {"c": [1, 2]}
    assert struct.unpack_from("<i", out)[0] == len(out)


def test_prepare_documents_keeps_bytes_with_id_and_rejects_bad_bson() -> None:
    with_id = bson.encode({"_id": 5, "x": 1})
    without = bson.encode({"x": 2})
    items = prepare_documents([with_id, without])
    assert items[0].data is with_id
    assert next(iter(bson.decode(items[1].data))) == "_id"
    with pytest.raises(LauraError) as exc:
        prepare_documents([with_id, b"\x05\x00\x00\x00\x01"])
    assert exc.value.code == ErrorCode.INVALID_BSON and exc.value.details["index"] == 1
    with pytest.raises(LauraError) as exc:
        prepare_documents([b"\x0c\x00\x00\x00\x10a\x00\x01\x00\x00"])
    assert exc.value.code == ErrorCode.INVALID_BSON


def _shard_of(view: Any) -> str:
    k = view.get("k")
    if isinstance(k, list):
        raise LauraError(ErrorCode.BAD_VALUE, "shard key cannot contain an array")
    return "s0" if (k or 0) < 10 else "s1"


def _items(keys: list[Any]) -> list[RoutedDoc]:
    items = prepare_documents([bson.encode({"_id": i, "k": k}) for i, k in enumerate(keys)])
    route(items, _shard_of)
    return items


def test_ordered_runs_group_consecutive_and_stop_at_unroutable() -> None:
    items = _items([1, 2, 11, 12, 3, [1], 4])
    runs, bad = ordered_runs(items)
    assert [(r.shard, [i.index for i in r.items]) for r in runs] == [
        ("s0", [0, 1]),
        ("s1", [2, 3]),
        ("s0", [4]),
    ]
    assert bad is not None and bad.index == 5 and bad.error is not None


def test_group_by_shard_keeps_order_and_collects_unroutable() -> None:
    items = _items([11, 1, [2], 12, 2])
    batches, bad = group_by_shard(items)
    assert [(b.shard, [i.index for i in b.items]) for b in batches] == [
        ("s0", [1, 4]),
        ("s1", [0, 3]),
    ]
    assert [b.index for b in bad] == [2]


def test_map_errors_to_original_indexes_and_split_batches() -> None:
    items = _items([11, 1, 12, 2, 13])
    batches, _ = group_by_shard(items)
    s1 = batches[1]
    assert [i.index for i in s1.items] == [0, 2, 4]
    errs = map_errors(s1, [(1, 11000, "DUPLICATE_KEY", "dup"), (2, 11000, "DUPLICATE_KEY", "dup")])
    assert [(e.index, e.code) for e in errs] == [(2, 11000), (4, 11000)]
    pieces = split_batch(Batch("s1", s1.items), max_docs=2)
    assert [[i.index for i in p.items] for p in pieces] == [[0, 2], [4]]


# ---------------------------------------------------------------------------- exactly-once candidate


def test_candidate_filter_and_pick() -> None:
    assert candidate_filter({}, 7) == {"_id": 7}
    assert candidate_filter({"a": {"$gt": 1}}, 7) == {"$and": [{"a": {"$gt": 1}}, {"_id": 7}]}
    assert pick_candidate([("s0", []), ("s1", [bson.encode({"_id": 3, "k": 1})])]) == ("s1", 3)
    assert pick_candidate([("s0", []), ("s1", [])]) is None


# ---------------------------------------------------------------------------- routing tables


def _map_response(chunks: list[tuple[str, Any, Any, str, int, int]]) -> routing_pb2.GetShardMapResponse:
    resp = routing_pb2.GetShardMapResponse(
        sharded=True,
        epoch="e1",
        shard_key_field="k",
        shard_key_fields=["k"],
        strategy=routing_pb2.HASH,
        primary_shard="s0",
    )
    routes = {s: resp.shards.add(shard_id=s, host="h", port=i) for i, s in enumerate(["s0", "s1"])}
    top = (0, 0)
    for cid, lo, hi, shard, major, minor in chunks:
        routes[shard].chunks.add(
            chunk_id=cid,
            min_key=bson.encode({"k": lo}),
            max_key=bson.encode({"k": hi}),
            version_major=major,
            version_minor=minor,
        )
        top = max(top, (major, minor))
    resp.version = combined_version(*top)
    return resp


def test_table_from_response_versions_and_incremental_refresh() -> None:
    resp = _map_response(
        [("c0", MinKey(), Int64(0), "s0", 1, 0), ("c1", Int64(0), MaxKey(), "s1", 1, 1)]
    )
    table = table_from_response("db", "c", resp)
    assert table.owning_shards == ("s0", "s1")
    v = table.shard_version("s1")
    assert (v.epoch, v.major, v.minor, v.unsharded) == ("e1", 1, 1, False)
    assert table.shard_version("s0").minor == 0
    assert table.to_response(since_version=table.version).not_modified
    again = table_from_response("db", "c", table.to_response())
    assert again.version == table.version and len(again.chunk_map or ()) == 2
    # split c1 at 100 (minor bumps): an incremental answer carries only the new chunks
    inc = _map_response(
        [("c2", Int64(0), Int64(100), "s1", 1, 2), ("c3", Int64(100), MaxKey(), "s1", 1, 3)]
    )
    inc.incremental = True
    newer = apply_incremental(table, inc)
    assert newer.chunk_map is not None and len(newer.chunk_map) == 3
    assert newer.shard_version("s1").minor == 3 and newer.version == inc.version
    delta = newer.to_response(since_version=table.version, since_epoch="e1", incremental=True)
    assert delta.incremental
    assert sorted(c.chunk_id for r in delta.shards for c in r.chunks) == ["c2", "c3"]


def test_unsharded_table_targets_primary() -> None:
    resp = routing_pb2.GetShardMapResponse(sharded=False, primary_shard="s1")
    resp.shards.add(shard_id="s1", host="h", port=1)
    table = table_from_response("db", "c", resp)
    assert table.owning_shards == ("s1",)
    assert table.shard_version("s1").unsharded
    assert table.shard_for_key_doc({"k": 1}) == "s1"
    assert table.address("s1") == "h:1"


# ---------------------------------------------------------------------------- cursors


async def test_cursor_registry_get_more_and_kill() -> None:
    shards = FakeShards({"a": enc([{"_id": i} for i in range(10)]), "b": enc([{"_id": 10}])})
    merged = MergedStream([shards.open("a", 2), shards.open("b", 0)], shards.fetch)
    reg = CursorRegistry()
    cid = reg.register(MergeSource(merged, shards.kill), "db.c", ["a", "b"])
    docs, more, _, _ = await reg.get_more(cid, 4)
    assert len(docs) == 4 and more
    killed, missing = await reg.kill([cid, "nope"])
    assert killed == [cid] and missing == ["nope"]
    assert [c[0] for c in shards.killed] == ["a"]  # b's cursor was exhausted meanwhile
    with pytest.raises(LauraError) as exc:
        await reg.get_more(cid, 1)
    assert exc.value.code == ErrorCode.CURSOR_NOT_FOUND


async def test_cursor_registry_reaps_idle_cursors() -> None:
    shards = FakeShards({"a": enc([{"_id": i} for i in range(10)])})
    merged = MergedStream([shards.open("a", 2)], shards.fetch)
    reg = CursorRegistry(idle_timeout=0.0)
    cid = reg.register(MergeSource(merged, shards.kill), "db.c", ["a"])
    assert await reg.reap_idle() == 1
    assert cid not in reg and shards.killed == [("a", "a:1", "c-a")]
