"""Routing an unordered insert's documents: ``router.writes.shard_function`` agrees
with ``RoutingTable.shard_for_key_doc`` on every kind of shard key value (errors
included), and ``group_unordered``/``split_group`` with ``route``/``group_by_shard``/
``split_batch``."""

from __future__ import annotations

import datetime
from typing import Any

import bson
import pytest
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex

from lauradb.errors import LauraError
from lauradb.sharding.chunk_map import Chunk, ChunkMap
from lauradb.sharding.shard_key import HASHED, RANGE, ShardKeyPattern
from router.insert_batching import (
    ShardGroup,
    group_by_shard,
    group_unordered,
    map_errors,
    prepare_documents,
    prepare_raw,
    route,
    split_group,
)
from router.routing_table import RoutingTable
from router.writes import shard_function

SHARDS = ["s0", "s1", "s2"]


def _table(pattern: ShardKeyPattern, splits: list[Any]) -> RoutingTable:
    """Chunks split on the first key field at ``splits``, spread over the shards."""
    first, rest = pattern.fields[0], pattern.fields[1:]
    bounds: list[Any] = [MinKey(), *splits, MaxKey()]
    last = len(bounds) - 2
    chunks = [
        Chunk(
            f"c{i}",
            {first: bounds[i], **{f: MinKey() for f in rest}},
            {first: bounds[i + 1], **{f: MaxKey() if i == last else MinKey() for f in rest}},
            SHARDS[i % 3],
            1,
            i,
        )
        for i in range(last + 1)
    ]
    return RoutingTable(
        "db", "c", True, "s0", {}, "e", 1, pattern=pattern, chunk_map=ChunkMap(pattern, chunks)
    )


TABLES = {
    "hashed_id": _table(ShardKeyPattern(["_id"], HASHED), [Int64(-(2**61)), Int64(0), Int64(2**61)]),
    "ranged_id": _table(ShardKeyPattern(["_id"], RANGE), [0, 100, "m", ObjectId("0" * 24)]),
    "hashed_k": _table(ShardKeyPattern(["k"], HASHED), [Int64(-(2**60)), Int64(2**60)]),
    "dotted": _table(ShardKeyPattern(["a.b"], RANGE), [10]),
    "compound": _table(ShardKeyPattern(["k", "_id"], RANGE), [5]),
}
VALUES: list[Any] = [
    0, 1, -1, 7, 10**12, -(2**63), 2.5, float("nan"), Int64(5), "", "m", "zz", ObjectId(),
    True, False, None, {"x": 1}, [1, 2], Regex("a"), datetime.datetime(2024, 1, 1),
    bson.Binary(b"ab"),
]


def _outcome(fn: Any, doc: Any) -> Any:
    try:
        return fn(doc)
    except LauraError as err:
        return ("error", err.code, err.message)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_same_shard_or_error_as_the_generic_path(name: str) -> None:
    table = TABLES[name]
    fast = shard_function(table)
    for v in VALUES:
        for doc in ({"_id": v, "k": v, "a": {"b": v}}, {"_id": 1, "k": v}, {"_id": v}):
            assert _outcome(fast, doc) == _outcome(table.shard_for_key_doc, doc), (name, doc)
    for i in range(2000):  # many hashed keys: every chunk is reached
        doc = {"_id": i, "k": str(i)}
        assert fast(doc) == table.shard_for_key_doc(doc)


def test_unsharded_collection_goes_to_the_primary_shard() -> None:
    table = RoutingTable("db", "c", False, "s2", {})
    assert shard_function(table)({"_id": 1}) == "s2"


# ---------------------------------------------------------------------- unordered planning


def test_group_unordered_matches_route_and_group_by_shard() -> None:
    table = TABLES["hashed_k"]
    docs = [bson.encode({"_id": i, "k": [1] if i % 7 == 3 else i}) for i in range(60)]
    docs.append(bson.encode({"k": 5}))  # no _id: one is added, as prepare_documents does
    prepared = prepare_raw(docs)
    groups, bad = group_unordered(prepared, range(len(docs)), shard_function(table))
    items = prepare_documents(docs)
    route(items, table.shard_for_key_doc)
    batches, unroutable = group_by_shard(items)
    assert [(g.shard, g.indexes) for g in groups] == [
        (b.shard, [i.index for i in b.items]) for b in batches
    ]
    # The same bytes (an added _id differs only in its ObjectId).
    assert [len(d) for g in groups for d in g.documents] == [
        len(d) for b in batches for d in b.documents
    ]
    assert [(i, e.code) for i, e in bad] == [(u.index, u.error.code) for u in unroutable if u.error]
    assert len(bad) == 9
    # A subset (a stale piece re-routed) keeps its order.
    sub, _ = group_unordered(prepared, [40, 2, 0], shard_function(table))
    assert sorted(i for g in sub for i in g.indexes) == [0, 2, 40]
    for g in sub:
        assert g.documents == [prepared.datas[i] for i in g.indexes]


def test_split_group_by_count_and_bytes() -> None:
    group = ShardGroup("s0", list(range(10, 15)), [b"a" * n for n in (5, 5, 20, 5, 5)])
    assert split_group(group) == [group]
    by_count = split_group(group, max_docs=2)
    assert [g.indexes for g in by_count] == [[10, 11], [12, 13], [14]]
    by_bytes = split_group(group, max_bytes=12)
    assert [g.indexes for g in by_bytes] == [[10, 11], [12], [13, 14]]
    for pieces in (by_count, by_bytes):
        assert [d for g in pieces for d in g.documents] == group.documents


def test_map_errors_of_a_group() -> None:
    group = ShardGroup("s0", [4, 9], [b"x", b"y"])
    errors = map_errors(group, [(1, 11000, "DUPLICATE_KEY", "dup"), (7, 1, "X", "bad index")])
    assert [(e.index, e.code) for e in errors] == [(9, 11000), (4, 1)]
