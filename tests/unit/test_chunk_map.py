"""Chunk maps: validation, logarithmic lookups vs brute force, versions, refresh."""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import pytest
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lauradb.bsonkit.keys import encode_key, encode_value
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.chunk_map import Chunk, ChunkMap, combined_version, split_version
from lauradb.sharding.shard_key import ShardKeyPattern
from tests.unit.test_keys import small_scalars, small_values

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

SHARDS = ["s0", "s1", "s2"]


def build_map(
    pattern: ShardKeyPattern,
    splits: list[list[Any]],
    owners: list[str] | None = None,
    versions: list[tuple[int, int]] | None = None,
) -> ChunkMap:
    """A valid chunk map split at ``splits`` (chunk-space values; duplicates dropped)."""
    unique: dict[bytes, list[Any]] = {}
    for s in splits:
        unique.setdefault(encode_key(s), s)
    fields = pattern.fields
    ordered = [unique[k] for k in sorted(unique)]
    bounds = [pattern.global_min()]
    bounds += [dict(zip(fields, s, strict=True)) for s in ordered]
    bounds.append(pattern.global_max())
    # Drop split points equal to the global bounds (MinKey / MaxKey values).
    lo_key, hi_key = encode_key(list(bounds[0].values())), encode_key(list(bounds[-1].values()))
    bounds = [bounds[0]] + [
        b for b in bounds[1:-1] if lo_key < encode_key(list(b.values())) < hi_key
    ] + [bounds[-1]]
    chunks = []
    for i in range(len(bounds) - 1):
        shard = owners[i % len(owners)] if owners else SHARDS[i % len(SHARDS)]
        major, minor = versions[i % len(versions)] if versions else (1, i)
        chunks.append(Chunk(f"c{i}", bounds[i], bounds[i + 1], shard, major, minor))
    return ChunkMap(pattern, chunks)


def brute_chunk_for_key(cm: ChunkMap, key: bytes) -> Chunk:
    last = cm.chunks[-1]
    for c in cm.chunks:
        if c.min_key <= key < c.max_key:
            return c
    assert key >= last.max_key
    return last


def brute_range(cm: ChunkMap, lo: bytes, hi: bytes, inclusive: bool) -> list[Chunk]:
    if lo > hi or (lo == hi and not inclusive):
        return []
    out = []
    for i, c in enumerate(cm.chunks):
        is_last = i == len(cm.chunks) - 1
        below_hi = c.min_key <= hi if inclusive else c.min_key < hi
        above_lo = lo < c.max_key or is_last
        if below_hi and above_lo:
            out.append(c)
    return out


PATTERN_A = ShardKeyPattern(["a"])
PATTERN_AB = ShardKeyPattern(["a", "b"])

single_keys = small_values.map(lambda v: [v])
pair_keys = st.tuples(small_values, small_values).map(list)


@SETTINGS
@given(st.lists(single_keys, max_size=12), st.lists(single_keys, min_size=1, max_size=6))
def test_lookup_matches_brute_force_single(
    splits: list[list[Any]], probes: list[list[Any]]
) -> None:
    cm = build_map(PATTERN_A, splits)
    for p in probes + splits:
        key = encode_key(p)
        assert cm.chunk_for_key(key) is brute_chunk_for_key(cm, key)


@SETTINGS
@given(
    st.lists(pair_keys, max_size=12),
    st.lists(pair_keys, min_size=2, max_size=6),
    st.booleans(),
)
def test_lookup_and_ranges_match_brute_force_compound(
    splits: list[list[Any]], probes: list[list[Any]], inclusive: bool
) -> None:
    cm = build_map(PATTERN_AB, splits)
    keys = sorted({encode_key(p) for p in probes + splits[:3]})
    for key in keys:
        assert cm.chunk_for_key(key) is brute_chunk_for_key(cm, key)
    for lo in keys:
        for hi in keys:
            assert cm.chunks_for_range(lo, hi, inclusive) == brute_range(cm, lo, hi, inclusive)
    # Prefix ranges as the targeting code builds them.
    for p in probes:
        lo = encode_value(p[0])
        assert cm.chunks_for_range(lo, lo + b"\xff", False) == brute_range(
            cm, lo, lo + b"\xff", False
        )


@SETTINGS
@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=10),
    st.lists(st.sampled_from(SHARDS), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(1, 5), st.integers(0, 9)), min_size=1, max_size=4),
)
def test_versions_and_shards(
    splits: list[int], owners: list[str], versions: list[tuple[int, int]]
) -> None:
    pattern = ShardKeyPattern(["a"], "hashed")
    cm = build_map(pattern, [[Int64(s)] for s in splits], owners, versions)
    assert cm.version == max(c.version for c in cm.chunks)
    assert cm.shards() == {c.shard for c in cm.chunks}
    for shard in [*SHARDS, "nope"]:
        mine = [c.version for c in cm.chunks if c.shard == shard]
        assert cm.shard_version(shard) == (max(mine) if mine else (0, 0))
    assert ChunkMap.shards_for_chunks(cm.chunks[:1]) == {cm.chunks[0].shard}
    key = pattern.key_for_doc({"a": "x"})
    assert cm.chunk_for_key(key) is brute_chunk_for_key(cm, key)


@SETTINGS
@given(
    st.lists(st.integers(-50, 50), min_size=2, max_size=10, unique=True),
    st.sampled_from(["split", "merge", "move"]),
    st.data(),
)
def test_apply_changes_equals_rebuild(splits: list[int], op: str, data: st.DataObject) -> None:
    cm = build_map(PATTERN_A, [[s] for s in splits])
    chunks = list(cm.chunks)
    major, _ = cm.version
    i = data.draw(st.integers(0, len(chunks) - 2))
    c = chunks[i]
    if op == "split":
        lo = c.min["a"]
        hi = c.max["a"]
        lo_n = -100 if isinstance(lo, MinKey) else lo
        hi_n = 100 if isinstance(hi, MaxKey) else hi
        mid = (lo_n + hi_n) / 2 + 0.25
        changed = [
            Chunk(c.chunk_id, c.min, {"a": mid}, c.shard, major, 100),
            Chunk("new", {"a": mid}, c.max, c.shard, major, 101),
        ]
        expected = chunks[:i] + changed + chunks[i + 1 :]
    elif op == "merge":
        d = chunks[i + 1]
        changed = [Chunk(c.chunk_id, c.min, d.max, c.shard, major, 100)]
        expected = chunks[:i] + changed + chunks[i + 2 :]
    else:
        changed = [Chunk(c.chunk_id, c.min, c.max, "s9", major + 1, 0)]
        expected = chunks[:i] + changed + chunks[i + 1 :]
    refreshed = cm.apply_changes(changed)
    assert refreshed.chunks == ChunkMap(PATTERN_A, expected).chunks
    assert cm.chunks == tuple(chunks)  # the old map is untouched


def test_combined_version() -> None:
    assert combined_version(3, 7) == (3 << 32) | 7
    assert ChunkMap.combined_version(1, 0) == 1 << 32
    assert split_version(combined_version(5, 2**32 - 1)) == (5, 2**32 - 1)
    with pytest.raises(LauraError):
        combined_version(-1, 0)
    with pytest.raises(LauraError):
        combined_version(1, 2**32)


def _chunk(cid: str, lo: Any, hi: Any, shard: str = "s0", minor: int = 0) -> Chunk:
    return Chunk(cid, {"a": lo}, {"a": hi}, shard, 1, minor)


def test_invalid_maps() -> None:
    cases: list[list[Chunk]] = [
        [],
        [_chunk("c0", MinKey(), 10)],  # does not reach MaxKey
        [_chunk("c0", 0, MaxKey())],  # does not start at MinKey
        [_chunk("c0", MinKey(), 10), _chunk("c1", 20, MaxKey())],  # gap
        [_chunk("c0", MinKey(), 20), _chunk("c1", 10, MaxKey())],  # overlap
        [_chunk("c0", MinKey(), 10), _chunk("c1", 10, 10), _chunk("c2", 10, MaxKey())],  # empty
        [Chunk("c0", {"b": MinKey()}, {"b": MaxKey()}, "s0", 1, 0)],  # wrong field
        [Chunk("c0", {"a": MinKey(), "b": 1}, {"a": MaxKey()}, "s0", 1, 0)],  # extra field
        [Chunk("c0", {"a": MinKey()}, {"a": MaxKey()}, "s0", 1, 0), "junk"],  # type: ignore

    ]
    for chunks in cases:
        with pytest.raises(LauraError) as exc:
            ChunkMap(PATTERN_A, chunks)
        assert exc.value.code == ErrorCode.BAD_VALUE


def test_bound_field_order_is_normalised() -> None:
    chunks = [
        Chunk("c0", {"b": MinKey(), "a": MinKey()}, {"b": 5, "a": 1}, "s0", 1, 0),
        Chunk("c1", {"a": 1, "b": 5}, {"a": MaxKey(), "b": MaxKey()}, "s1", 1, 1),
    ]
    cm = ChunkMap(PATTERN_AB, chunks)
    assert list(cm.chunks[0].min) == ["a", "b"]
    assert cm.chunk_for_key(PATTERN_AB.key_for_doc({"a": 1, "b": 4})).shard == "s0"
    assert cm.chunk_for_key(PATTERN_AB.key_for_doc({"a": 1, "b": 5})).shard == "s1"


def test_lookups_on_a_small_map() -> None:
    cm = ChunkMap(
        PATTERN_A,
        [
            _chunk("c2", 20, MaxKey(), "s2", 3),
            _chunk("c0", MinKey(), 10, "s0", 1),
            _chunk("c1", 10, 20, "s1", 2),
        ],
    )
    assert [c.chunk_id for c in cm.chunks] == ["c0", "c1", "c2"]
    key = PATTERN_A.key_for_doc
    assert cm.chunk_for_key(key({"a": 9.5})).chunk_id == "c0"
    assert cm.chunk_for_key(key({"a": 10})).chunk_id == "c1"
    assert cm.chunk_for_key(key({"a": 10.0})).chunk_id == "c1"
    assert cm.chunk_for_key(key({})).chunk_id == "c0"  # missing -> null < numbers
    assert cm.chunk_for_key(key({"a": "str"})).chunk_id == "c2"
    assert cm.chunk_for_key(key({"a": MaxKey()})).chunk_id == "c2"
    assert cm.chunk_for_doc({"a": 15}).chunk_id == "c1"
    ten, twenty = encode_value(10), encode_value(20)
    assert [c.chunk_id for c in cm.chunks_for_range(ten, twenty, False)] == ["c1"]
    assert [c.chunk_id for c in cm.chunks_for_range(ten, twenty, True)] == ["c1", "c2"]
    assert cm.chunks_for_range(twenty, ten, True) == []
    assert cm.chunk_by_id("c1") is cm.chunks[1]
    assert cm.chunk_by_id("zz") is None
    assert cm.version == (1, 3)
    assert cm.shard_version("s1") == (1, 2)
    assert len(cm) == 3
    assert hash(cm.chunks[0]) == hash(cm.chunks[0])


def test_apply_changes_rejects_incomplete_refresh() -> None:
    cm = ChunkMap(PATTERN_A, [_chunk("c0", MinKey(), 10), _chunk("c1", 10, MaxKey())])
    with pytest.raises(LauraError):
        cm.apply_changes([_chunk("c0", MinKey(), 5, minor=5)])  # 5..10 left uncovered
    moved = cm.apply_changes([_chunk("c1", 10, MaxKey(), "s7", 9)])
    assert moved.shard_version("s7") == (1, 9)
    assert moved.shards() == {"s0", "s7"}
    assert cm.apply_changes([]) is cm


# ----------------------------------------------------------------------------- compact lookups
# ChunkMap keeps re-allocated copies of the minimums and one owner byte per chunk
# (issue 7); every lookup must still agree with a plain bisect over the chunks'
# own ``min_key``s.

LOOKUP_PATTERNS = [
    ShardKeyPattern(["a"]),
    ShardKeyPattern(["a", "b"]),
    ShardKeyPattern(["a"], "hashed"),
    ShardKeyPattern(["a", "b"], "hashed"),
]
int64s = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([-(2**63), -1, 0, 1, 2**63 - 1]),
).map(Int64)


def plain_bisect_chunk(cm: ChunkMap, key: bytes) -> Chunk:
    mins = [c.min_key for c in cm.chunks]
    return cm.chunks[max(bisect_right(mins, key) - 1, 0)]


def assert_lookups_agree(cm: ChunkMap, key: bytes) -> None:
    expected = plain_bisect_chunk(cm, key)
    assert cm.chunk_for_key(key) is expected
    assert cm.shard_for_key(key) == expected.shard
    index, shard = cm.locate(key)
    assert cm.chunks[index] is expected and shard == expected.shard


@SETTINGS
@given(st.sampled_from(range(len(LOOKUP_PATTERNS))), st.data())
def test_compact_lookups_equal_plain_bisect(pattern_index: int, data: st.DataObject) -> None:
    pattern = LOOKUP_PATTERNS[pattern_index]
    first = int64s if pattern.hashed else small_scalars
    component = st.one_of(first, st.sampled_from([MinKey(), MaxKey()]))
    rest = [small_scalars] * (len(pattern.fields) - 1)
    key_values = st.tuples(component, *rest).map(list)
    splits = data.draw(st.lists(key_values, max_size=40))
    owners = data.draw(st.lists(st.sampled_from([*SHARDS, "s3", "s4"]), min_size=1, max_size=6))
    cm = build_map(pattern, splits, owners)
    probes = [encode_key(v) for v in data.draw(st.lists(key_values, min_size=1, max_size=10))]
    probes += data.draw(st.lists(st.binary(max_size=12), max_size=4))  # any bytes at all
    for c in cm.chunks:  # every bound, and just below and above it
        probes += [c.min_key, c.min_key[:-1], c.min_key + b"\x00", c.max_key]
    for key in probes:
        assert_lookups_agree(cm, key)
    # The map's copies are equal to, not the same objects as, the chunks' keys.
    assert cm._mins == [c.min_key for c in cm.chunks]


def test_compact_lookups_with_more_than_256_shards() -> None:
    owners = [f"s{i:03d}" for i in range(300)]
    cm = build_map(PATTERN_A, [[i] for i in range(1, 600)], owners)
    assert len(cm.shards()) == 300
    for c in cm.chunks:
        assert_lookups_agree(cm, c.min_key)
        assert cm.shard_for_key(c.min_key) == c.shard


def test_compact_lookups_after_apply_changes() -> None:
    cm = build_map(PATTERN_A, [[i] for i in range(0, 100, 10)], ["s0", "s1"])
    c = cm.chunks[3]
    moved = cm.apply_changes([Chunk(c.chunk_id, c.min, c.max, "s7", 9, 0)])
    for key in [encode_key([v]) for v in range(-5, 105)] + [ch.min_key for ch in moved.chunks]:
        assert_lookups_agree(moved, key)
    assert moved.shard_for_key(c.min_key) == "s7"
    assert cm.shard_for_key(c.min_key) == c.shard  # the old map is untouched
