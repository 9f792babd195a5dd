"""Shard key patterns and query targeting (soundness vs the real matcher, tightness)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lauradb.bsonkit.keys import encode_key
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.filter import compile_filter
from lauradb.sharding.chunk_map import Chunk, ChunkMap
from lauradb.sharding.hashing import hash_value
from lauradb.sharding.shard_key import ShardKeyPattern
from lauradb.sharding.targeting import TargetResult, target, target_key_for_insert
from tests.unit.test_chunk_map import build_map

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

POOL: list[Any] = [
    None, 0, 1, 2, 2.0, 3, Int64(5), 1.5, Decimal128("2"), float("nan"), float("-inf"),
    "x", "y", "", {"k": 1}, True, False, datetime.datetime(2020, 1, 1),
    ObjectId(b"a" * 12), MinKey(), MaxKey(),
]
pool = st.sampled_from(POOL)

PATTERNS = [
    ShardKeyPattern(["a"]),
    ShardKeyPattern(["a"], "hashed"),
    ShardKeyPattern(["a", "b"]),
    ShardKeyPattern(["a.b"]),
    ShardKeyPattern(["a", "b"], "hashed"),
]


# ----------------------------------------------------------------------------- strategies


def _field_value(path: str) -> st.SearchStrategy[Any]:
    return pool


def docs_for(pattern: ShardKeyPattern) -> st.SearchStrategy[dict[str, Any]]:
    if pattern.fields == ("a.b",):
        a_values = st.one_of(
            pool,
            st.builds(lambda v: {"b": v}, pool),
            st.builds(lambda v: {"b": v, "c": 1}, pool),
            st.just({}),
        )
        return st.fixed_dictionaries({}, optional={"a": a_values, "c": pool})
    return st.fixed_dictionaries({}, optional={"a": pool, "b": pool, "c": pool})


range_ops = st.dictionaries(
    st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), pool, min_size=1, max_size=2
)
conditions = st.one_of(
    pool,
    st.builds(lambda v: {"$eq": v}, pool),
    st.builds(lambda vs: {"$in": vs}, st.lists(pool, max_size=3)),
    range_ops,
    st.builds(lambda v: {"$ne": v}, pool),
    st.builds(lambda vs: {"$nin": vs}, st.lists(pool, max_size=2)),
    st.builds(lambda b: {"$exists": b}, st.booleans()),
    st.just(Regex("x")),
    st.builds(lambda r: {"$not": r}, range_ops),
    st.builds(lambda v: [v], pool),
    st.builds(lambda v, r: {"$in": [v], **r}, pool, range_ops),
)


def filters_for(pattern: ShardKeyPattern) -> st.SearchStrategy[dict[str, Any]]:
    names = [*pattern.fields, "c"]
    leaf_items = [st.tuples(st.sampled_from(names), conditions)]
    if pattern.fields == ("a.b",):
        leaf_items.append(
            st.tuples(st.just("a"), st.builds(lambda v: {"b": v}, pool))
        )
    leaf = st.lists(st.one_of(*leaf_items), min_size=1, max_size=2).map(dict)
    return st.recursive(
        leaf,
        lambda children: st.one_of(
            st.builds(lambda xs: {"$and": xs}, st.lists(children, min_size=1, max_size=3)),
            st.builds(lambda xs: {"$or": xs}, st.lists(children, min_size=1, max_size=3)),
            st.builds(lambda f, xs: {**f, "$or": xs}, leaf, st.lists(children, min_size=1,
                                                                     max_size=2)),
        ),
        max_leaves=6,
    )


def chunk_map_for(pattern: ShardKeyPattern, data: st.DataObject) -> ChunkMap:
    if pattern.hashed:
        firsts = data.draw(st.lists(st.integers(-(2**63), 2**63 - 1).map(Int64), max_size=8))
    else:
        firsts = data.draw(st.lists(pool, max_size=8))
    if len(pattern.fields) == 2:
        splits = [[f, data.draw(pool)] for f in firsts]
    else:
        splits = [[f] for f in firsts]
    owners = data.draw(st.lists(st.sampled_from(["s0", "s1", "s2", "s3"]), min_size=1, max_size=5))
    return build_map(pattern, splits, owners)


@SETTINGS
@given(st.sampled_from(range(len(PATTERNS))), st.data())
def test_targeting_is_sound(pattern_index: int, data: st.DataObject) -> None:
    pattern = PATTERNS[pattern_index]
    cm = chunk_map_for(pattern, data)
    docs = data.draw(st.lists(docs_for(pattern), min_size=1, max_size=12))
    spec = data.draw(filters_for(pattern))
    try:
        matcher = compile_filter(spec)
    except LauraError:
        return  # an invalid filter is the shard's business
    result = target(pattern, cm, spec)
    assert result.shards
    assert result.shards <= cm.shards()
    for doc in docs:
        if not matcher(doc):
            continue
        chunk = cm.chunk_for_doc(doc)
        assert chunk.shard in result.shards, (spec, doc)
        if result.chunks is not None:
            assert chunk in result.chunks, (spec, doc)
        if result.exact_single_key:
            assert pattern.key_for_doc(doc) == result.key, (spec, doc)



point_values = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.text(max_size=4),
    st.binary(min_size=12, max_size=12).map(ObjectId),
)


@SETTINGS
@given(st.sampled_from([0, 1]), st.data())
def test_point_fast_path_equals_general_analysis(pattern_index: int, data: st.DataObject) -> None:
    """``{key: v}`` takes the fast path (shard from the compact index, chunk built on
    demand); adding a ``$comment`` forces the general analysis: same result."""
    pattern = PATTERNS[pattern_index]
    cm = chunk_map_for(pattern, data)
    for v in data.draw(st.lists(point_values, min_size=1, max_size=8)):
        fast = target(pattern, cm, {"a": v})
        general = target(pattern, cm, {"a": v, "$comment": "general"})
        chunk = cm.chunk_for_key(pattern.key_for_doc({"a": v}))
        assert fast.shards == general.shards == {chunk.shard}
        assert fast.exact_single_key and fast.key == general.key
        assert target_key_for_insert(pattern, cm, {"a": v}) == chunk.shard
        assert fast.chunks == general.chunks == [chunk]
        assert fast == general


# ----------------------------------------------------------------------------- shard keys


def test_shard_key_extract_and_keys() -> None:
    p = ShardKeyPattern(["a", "x.y"])
    assert p.extract({"a": 1, "x": {"y": "z"}}) == [1, "z"]
    assert p.extract({}) == [None, None]
    assert p.extract({"a": 1, "x": 5}) == [1, None]  # path through a scalar: missing
    assert p.key_for_doc({"a": 1.0, "x": {"y": 2}}) == encode_key([1, 2])
    assert p.key_for_doc({"a": 1}) == p.key_for_doc({"a": 1, "x": {"y": None}})
    h = ShardKeyPattern(["a"], "hashed")
    assert h.key_for_doc({"a": 7}) == encode_key([Int64(hash_value(7))])
    assert h.key_for_doc({"a": 7}) == h.key_for_doc({"a": 7.0})
    assert h.key_for_doc({}) == encode_key([Int64(hash_value(None))])
    hc = ShardKeyPattern(["a", "b"], "hashed")
    assert hc.key_for_doc({"a": 1, "b": 2}) == encode_key([Int64(hash_value(1)), 2])
    assert p.global_min() == {"a": MinKey(), "x.y": MinKey()}
    assert p.global_max() == {"a": MaxKey(), "x.y": MaxKey()}
    assert p.encode_bound({"x.y": 3, "a": MinKey()}) == encode_key([MinKey(), 3])


def test_shard_key_rejects_arrays() -> None:
    p = ShardKeyPattern(["a.b"])
    for doc in ({"a": [{"b": 1}]}, {"a": {"b": [1]}}, {"a": {"b": ()}}):
        with pytest.raises(LauraError) as exc:
            p.key_for_doc(doc)
        assert exc.value.code == ErrorCode.BAD_VALUE
        assert "array" in exc.value.message
    with pytest.raises(LauraError):
        ShardKeyPattern(["a"], "hashed").key_for_doc({"a": [1]})
    with pytest.raises(LauraError):
        ShardKeyPattern(["a"]).extract({"a": Regex("x")})


def test_bad_shard_key_patterns() -> None:
    for fields, strategy in (
        ([], "range"), (["a", "a"], "range"), ([""], "range"), (["a..b"], "range"),
        (["$a"], "range"), (["a", "a.b"], "range"), (["a"], "bogus"), ("a", "range"),
        ([1], "range"),
    ):
        with pytest.raises(LauraError) as exc:
            ShardKeyPattern(fields, strategy)  # type: ignore[arg-type]
        assert exc.value.code == ErrorCode.BAD_VALUE
    for spec in ({}, {"a": -1}, {"a": 1, "b": "hashed"}, {"a": True}, {"a": "text"}):
        with pytest.raises(LauraError):
            ShardKeyPattern.from_spec(spec)
    p = ShardKeyPattern.from_spec({"a": "hashed", "b": 1})
    assert p.hashed and p.fields == ("a", "b")
    assert p.to_spec() == {"a": "hashed", "b": 1}
    assert ShardKeyPattern.from_spec({"a": 1.0}) == ShardKeyPattern(["a"])
    with pytest.raises(LauraError):
        ShardKeyPattern(["a"]).encode_bound({"b": 1})


# ----------------------------------------------------------------------------- targeting


def _ranged_map() -> ChunkMap:
    """a: [MinKey,0) s0, [0,10) s1, [10,20) s2, [20,30) s1, [30,MaxKey] s3."""
    p = ShardKeyPattern(["a"])
    bounds: list[Any] = [MinKey(), 0, 10, 20, 30, MaxKey()]
    owners = ["s0", "s1", "s2", "s1", "s3"]
    return ChunkMap(
        p,
        [
            Chunk(f"c{i}", {"a": bounds[i]}, {"a": bounds[i + 1]}, owners[i], 1, i)
            for i in range(5)
        ],
    )


def _ids(result: TargetResult) -> list[str]:
    assert result.chunks is not None
    return [c.chunk_id for c in result.chunks]


def test_point_and_range_targeting() -> None:
    cm = _ranged_map()
    p = cm.pattern
    r = target(p, cm, {"a": 5})
    assert r.shards == {"s1"} and r.exact_single_key and _ids(r) == ["c1"]
    assert r.key == p.key_for_doc({"a": 5.0})
    r = target(p, cm, {"a": {"$eq": 10}, "c": {"$regex": "x"}})
    assert r.shards == {"s2"} and r.exact_single_key
    r = target(p, cm, {"a": {"$gte": 10, "$lt": 20}})
    assert _ids(r) == ["c2"] and not r.exact_single_key
    r = target(p, cm, {"a": {"$gt": 5, "$lte": 20}})
    assert _ids(r) == ["c1", "c2", "c3"]
    r = target(p, cm, {"a": {"$lt": 0}})
    assert _ids(r) == ["c0"]  # numbers below 0 (null and MinKey sort lower, but are not numbers)
    r = target(p, cm, {"a": {"$gt": 25}})
    assert _ids(r) == ["c3", "c4"]
    r = target(p, cm, {"a": {"$gt": "m"}})
    assert _ids(r) == ["c4"]  # strings sort after all numbers
    r = target(p, cm, {"a": {"$in": [1, 35, 2]}})
    assert _ids(r) == ["c1", "c4"] and r.shards == {"s1", "s3"}
    r = target(p, cm, {"$or": [{"a": 12}, {"a": {"$gte": 31}}]})
    assert _ids(r) == ["c2", "c4"]
    r = target(p, cm, {"$and": [{"a": {"$gte": 0}}, {"a": {"$lt": 10}}], "b": 3})
    assert _ids(r) == ["c1"]
    r = target(p, cm, {"a": None})
    assert _ids(r) == ["c0"] and r.exact_single_key
    r = target(p, cm, {"a": {"$in": [1, 1.0, Int64(1)]}})
    assert r.exact_single_key


def test_untargetable_filters_broadcast() -> None:
    cm = _ranged_map()
    p = cm.pattern
    specs: list[dict[str, Any]] = [
        {},
        {"b": 1},
        {"a": Regex("^x")},
        {"a": {"$regex": "x"}},
        {"a": {"$ne": 5}},
        {"a": {"$nin": [5]}},
        {"a": {"$not": {"$gt": 5}}},
        {"a": {"$exists": True}},
        {"a": {"$elemMatch": {"$gt": 1}}},
        {"a": [1, 2]},
        {"a": {"$in": [1, Regex("x")]}},
        {"a": {"$gt": MinKey()}},
        {"$or": [{"a": 1}, {"b": 2}]},
        {"$expr": {"$eq": ["$a", 1]}},
        {"a.z": 1},
    ]
    for spec in specs:
        r = target(p, cm, spec)
        assert r.broadcast and r.chunks is None and not r.exact_single_key, spec
        assert r.shards == {"s0", "s1", "s2", "s3"}, spec


def test_broadcast_only_to_shards_owning_chunks() -> None:
    p = ShardKeyPattern(["a"])
    cm = ChunkMap(p, [Chunk("c0", p.global_min(), p.global_max(), "only", 1, 0)])
    assert target(p, cm, {"x": 1}).shards == {"only"}


def test_unsatisfiable_filter_targets_one_shard() -> None:
    cm = _ranged_map()
    specs: list[dict[str, Any]] = [
        {"a": {"$gt": 5, "$lt": 3}}, {"a": {"$in": []}}, {"$and": [{"a": 1}, {"a": 2}]},
    ]
    for spec in specs:
        r = target(cm.pattern, cm, spec)
        assert r.shards == {"s0"} and r.chunks == [] and not r.exact_single_key


def test_hashed_targeting() -> None:
    p = ShardKeyPattern(["a"], "hashed")
    bounds: list[Any] = [MinKey(), Int64(-(2**62)), Int64(0), Int64(2**62), MaxKey()]
    cm = ChunkMap(
        p,
        [Chunk(f"h{i}", {"a": bounds[i]}, {"a": bounds[i + 1]}, f"s{i}", 1, i) for i in range(4)],
    )
    for v in ("alice", 42, ObjectId(b"b" * 12)):
        r = target(p, cm, {"a": v})
        assert r.exact_single_key
        assert r.shards == {target_key_for_insert(p, cm, {"a": v, "other": 1})}
    r = target(p, cm, {"a": {"$in": ["alice", "bob"]}})
    assert r.shards == {target_key_for_insert(p, cm, {"a": x}) for x in ("alice", "bob")}
    assert target(p, cm, {"a": {"$gt": 5}}).broadcast
    assert target(p, cm, {"a": {"$gte": 5, "$lte": 5}}).broadcast
    assert not target(p, cm, {"a": {"$in": [5], "$gte": 5}}).broadcast


def test_compound_targeting() -> None:
    p = ShardKeyPattern(["a", "b"])
    bounds: list[dict[str, Any]] = [
        p.global_min(), {"a": 1, "b": 0}, {"a": 1, "b": 10}, {"a": 2, "b": MinKey()},
        p.global_max(),
    ]
    cm = ChunkMap(
        p, [Chunk(f"k{i}", bounds[i], bounds[i + 1], f"s{i}", 1, i) for i in range(4)]
    )
    r = target(p, cm, {"a": 1})
    assert _ids(r) == ["k0", "k1", "k2"] and not r.exact_single_key
    r = target(p, cm, {"a": 1, "b": 5})
    assert _ids(r) == ["k1"] and r.exact_single_key
    r = target(p, cm, {"a": 1, "b": {"$gte": 10}})
    assert _ids(r) == ["k2"]
    r = target(p, cm, {"a": 1, "b": {"$lt": 0}})
    assert _ids(r) == ["k0"]
    r = target(p, cm, {"a": {"$in": [1, 2]}, "b": {"$in": [3, 20]}})
    assert _ids(r) == ["k1", "k2", "k3"]
    r = target(p, cm, {"$or": [{"a": 1, "b": 3}, {"a": 5, "b": 5}]})
    assert _ids(r) == ["k1", "k3"]
    r = target(p, cm, {"a": {"$gt": 1}})
    assert _ids(r) == ["k2", "k3"]  # k2 also holds a == 1.5
    r = target(p, cm, {"a": {"$gte": 2}})
    assert _ids(r) == ["k3"]
    assert target(p, cm, {"b": 5}).broadcast


def test_nested_key_paths() -> None:
    p = ShardKeyPattern(["a.b"])
    bounds: list[Any] = [MinKey(), 10, MaxKey()]
    cm = ChunkMap(
        p, [Chunk(f"n{i}", {"a.b": bounds[i]}, {"a.b": bounds[i + 1]}, f"s{i}", 1, i)
            for i in range(2)]
    )
    assert target(p, cm, {"a.b": 12}).shards == {"s1"}
    r = target(p, cm, {"a": {"b": 12}})
    assert r.shards == {"s1"} and r.exact_single_key
    assert target(p, cm, {"a": {"$eq": {"b": 3}}}).shards == {"s0"}
    assert target(p, cm, {"a": {"c": 12}}).shards == {"s0"}  # a.b missing -> null
    assert target(p, cm, {"a": 5}).shards == {"s0"}  # a is a scalar -> a.b is null
    assert target(p, cm, {"a": {"$gt": {"b": 3}}}).broadcast
    assert target(p, cm, {"a": [{"b": 12}]}).broadcast
    assert target_key_for_insert(p, cm, {"a": {"b": 11}}) == "s1"
    with pytest.raises(LauraError):
        target_key_for_insert(p, cm, {"a": [{"b": 11}]})


def test_many_chunks_point_lookup() -> None:
    p = ShardKeyPattern(["a"])
    cm = build_map(p, [[i] for i in range(0, 20_000, 2)], ["s0", "s1", "s2"])
    r = target(p, cm, {"a": 1001})
    assert r.exact_single_key and len(r.chunks or []) == 1
    r = target(p, cm, {"a": {"$gte": 100, "$lt": 110}})
    assert len(r.chunks or []) == 5
    r = target(p, cm, {"a": {"$in": list(range(0, 20_000, 7))}})
    assert r.chunks is not None and len(r.chunks) == len(range(0, 20_000, 7))


def test_filter_must_be_a_document() -> None:
    cm = _ranged_map()
    with pytest.raises(LauraError):
        target(cm.pattern, cm, [("a", 1)])  # type: ignore[arg-type]
