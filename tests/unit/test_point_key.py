"""``point_key``: the fast path of query targeting (``{key: <int|str|ObjectId|Int64>}`` on a
one-field top-level shard key) gives the key the general analysis gives; None for
everything else. And hashing with CPython's ``_md5`` is still MD5 (the definition)."""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.regex import Regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lauradb.bsonkit.keys import encode_value
from lauradb.sharding.chunk_map import ChunkMap
from lauradb.sharding.hashing import hash_encoded, hash_value
from lauradb.sharding.shard_key import ShardKeyPattern
from lauradb.sharding.targeting import point_key, point_locator, target
from tests.unit.test_chunk_map import build_map

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

ONE_FIELD = [
    ShardKeyPattern(["_id"], "hashed"),
    ShardKeyPattern(["_id"]),
    ShardKeyPattern(["k"], "hashed"),
    ShardKeyPattern(["k"]),
]

POINT_VALUES: list[Any] = [
    0, 1, -1, 7, 2**31, 2**62, -(2**63), Int64(5), Int64(-(2**63)), Int64(2**63 - 1),
    "", "x", "abc", "ünïcødé", "a" * 200, ObjectId("0123456789abcdef01234567"),
    ObjectId(b"a" * 12),
]


def chunk_map(pattern: ShardKeyPattern) -> ChunkMap:
    """A map of a few chunks over several shards, split where values of each kind fall."""
    splits: list[list[Any]]
    if pattern.hashed:
        splits = [[Int64(v)] for v in (-(2**62), -5, 0, 2**40, 2**62)]
    else:
        splits = [[-100], [0], [3], [2**40], ["m"], [ObjectId(b"b" * 12)]]
    return build_map(pattern, splits, ["s0", "s1", "s2"])


def general_key(pattern: ShardKeyPattern, value: Any) -> tuple[bytes | None, set[str]]:
    """What the general analysis of ``target`` finds for an equality on the key field
    (``$eq`` keeps the filter off the fast path)."""
    cmap = chunk_map(pattern)
    (field,) = pattern.fields
    result = target(pattern, cmap, {field: {"$eq": value}})
    assert result.exact_single_key, (pattern.fields, value)
    return result.key, result.shards


@pytest.mark.parametrize("pattern", ONE_FIELD, ids=lambda p: f"{p.fields[0]}-{p.strategy}")
@pytest.mark.parametrize("value", POINT_VALUES, ids=repr)
def test_point_key_matches_target(pattern: ShardKeyPattern, value: Any) -> None:
    (field,) = pattern.fields
    key = point_key(pattern, {field: value})
    assert key is not None
    assert key == pattern.key_for_doc({field: value})
    # the fast path inside target() ...
    cmap = chunk_map(pattern)
    fast = target(pattern, cmap, {field: value})
    assert fast.exact_single_key and fast.key == key
    assert fast.shards == {cmap.shard_for_key(key)}
    assert fast.chunks is not None and len(fast.chunks) == 1
    # ... and the general analysis agree on the key, the shard and the chunk
    slow_key, slow_shards = general_key(pattern, value)
    assert slow_key == key
    assert slow_shards == fast.shards
    slow = target(pattern, cmap, {"$and": [{field: value}]})
    assert slow.key == key and slow.chunks == fast.chunks


def test_point_key_int_and_int64_agree() -> None:
    for pattern in ONE_FIELD:
        (field,) = pattern.fields
        assert point_key(pattern, {field: 5}) == point_key(pattern, {field: Int64(5)})


def test_point_key_hashed_is_the_hash() -> None:
    pattern = ShardKeyPattern(["_id"], "hashed")
    for value in POINT_VALUES:
        assert point_key(pattern, {"_id": value}) == encode_value(Int64(hash_value(value)))


NOT_POINTS: list[Any] = [
    1.5, 2.0, float("nan"), Decimal128("1"), True, False, None, {"a": 1}, {}, [1], [], (1,),
    {"$gt": 1}, {"$eq": 1}, {"$in": [1, 2]}, Regex("x"), datetime.datetime(2020, 1, 1),
    b"bytes",
]


@pytest.mark.parametrize("pattern", ONE_FIELD, ids=lambda p: f"{p.fields[0]}-{p.strategy}")
@pytest.mark.parametrize("value", NOT_POINTS, ids=repr)
def test_point_key_none_for_non_point_values(pattern: ShardKeyPattern, value: Any) -> None:
    (field,) = pattern.fields
    assert point_key(pattern, {field: value}) is None


@pytest.mark.parametrize(
    ("pattern", "filter_spec"),
    [
        (ShardKeyPattern(["_id"]), {"_id": {"$gt": 1}}),
        (ShardKeyPattern(["_id"], "hashed"), {"_id": {"$gt": 1}}),
        (ShardKeyPattern(["_id"]), {"_id": 1, "x": 2}),
        (ShardKeyPattern(["_id"], "hashed"), {"x": 2, "_id": 1}),
        (ShardKeyPattern(["_id"]), {}),
        (ShardKeyPattern(["_id"]), {"other": 1}),
        (ShardKeyPattern(["_id"]), {"$and": [{"_id": 1}]}),
        (ShardKeyPattern(["_id"]), {"$or": [{"_id": 1}]}),
        (ShardKeyPattern(["a.b"]), {"a.b": 1}),
        (ShardKeyPattern(["a.b"], "hashed"), {"a.b": "x"}),
        (ShardKeyPattern(["a.b"]), {"a": {"b": 1}}),
        (ShardKeyPattern(["a", "b"]), {"a": 1, "b": 2}),
        (ShardKeyPattern(["a", "b"]), {"a": 1}),
        (ShardKeyPattern(["a", "b"], "hashed"), {"a": 1, "b": 2}),
        (ShardKeyPattern(["a", "b"], "hashed"), {"a": 1}),
    ],
    ids=repr,
)
def test_point_key_none(pattern: ShardKeyPattern, filter_spec: dict[str, Any]) -> None:
    assert point_key(pattern, filter_spec) is None


def test_general_path_still_targets_what_point_key_declines() -> None:
    """Declining is only a missed shortcut: the general analysis still finds the point."""
    pattern = ShardKeyPattern(["a", "b"])
    cmap = build_map(pattern, [[0, 0], [5, 5]], ["s0", "s1"])
    result = target(pattern, cmap, {"a": 1, "b": 2})
    assert result.exact_single_key
    assert result.key == pattern.key_for_doc({"a": 1, "b": 2})
    pattern = ShardKeyPattern(["_id"])
    cmap = build_map(pattern, [[0], [10]], ["s0", "s1"])
    result = target(pattern, cmap, {"_id": 3, "x": 2})
    assert result.exact_single_key and result.key == point_key(pattern, {"_id": 3})


# ----------------------------------------------------------------------------- properties

point_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.text(max_size=40),
    st.binary(min_size=12, max_size=12).map(ObjectId),
)


@SETTINGS
@given(value=point_values, pattern_index=st.sampled_from(range(len(ONE_FIELD))))
def test_point_key_agrees_with_general_analysis(value: Any, pattern_index: int) -> None:
    pattern = ONE_FIELD[pattern_index]
    (field,) = pattern.fields
    key = point_key(pattern, {field: value})
    assert key is not None
    assert key == general_key(pattern, value)[0]


@SETTINGS
@given(value=st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=60)))
def test_hash_value_is_md5_prefix(value: int | str) -> None:
    encoded = encode_value(value)
    digest = hashlib.md5(encoded, usedforsecurity=False).digest()
    expected = int.from_bytes(digest[:8], "little", signed=True)
    assert hash_value(value) == expected
    assert hash_encoded(encoded) == expected
    assert -(2**63) <= expected < 2**63


@SETTINGS
@given(data=st.binary(max_size=200))
def test_hash_encoded_is_md5_prefix_of_any_bytes(data: bytes) -> None:
    digest = hashlib.md5(data, usedforsecurity=False).digest()
    assert hash_encoded(data) == int.from_bytes(digest[:8], "little", signed=True)


# ------------------------------------------------------------------ point_locator


def locate_via_point_key(pattern: ShardKeyPattern, filter_spec: dict[str, Any]) -> str | None:
    key = point_key(pattern, filter_spec)
    return None if key is None else chunk_map(pattern).locate(key)[1]


@SETTINGS
@given(value=point_values, pattern_index=st.sampled_from(range(len(ONE_FIELD))))
def test_point_locator_agrees_with_point_key(value: Any, pattern_index: int) -> None:
    pattern = ONE_FIELD[pattern_index]
    (field,) = pattern.fields
    locate = point_locator(pattern, chunk_map(pattern))
    assert locate is not None
    spec = {field: value}
    assert locate(spec) == locate_via_point_key(pattern, spec)


@pytest.mark.parametrize("pattern", ONE_FIELD, ids=lambda p: f"{p.fields[0]}-{p.strategy}")
@pytest.mark.parametrize("value", [*POINT_VALUES, *NOT_POINTS], ids=repr)
def test_point_locator_matches_on_every_listed_value(pattern: ShardKeyPattern, value: Any) -> None:
    (field,) = pattern.fields
    locate = point_locator(pattern, chunk_map(pattern))
    assert locate is not None
    for spec in ({field: value}, {field: value, "x": 1}, {"other": value}):
        assert locate(spec) == locate_via_point_key(pattern, spec)


def test_point_locator_only_for_one_top_level_field() -> None:
    for pattern in (ShardKeyPattern(["a.b"]), ShardKeyPattern(["a", "b"])):
        cmap = build_map(pattern, [], ["s0"])
        assert point_locator(pattern, cmap) is None
