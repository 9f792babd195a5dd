"""The shard's SQLite storage engine: writes, reads, shard keys, ownership, durability."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId

from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.chunk_map import Chunk, ChunkMap
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub.cursors import CursorManager
from shard_stub.ownership import OwnedRanges
from shard_stub.reads import aggregate_stream, find_stream
from shard_stub.scan_plan import FULL_SCAN, ID_COLUMN, SHARD_KEY_COLUMN, Points, Range, plan_scan
from shard_stub.storage import ScanStats, ShardStorage

NS = "db.c"
SK = ShardKeyPattern(["sk"], "range")


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[ShardStorage]:
    s = ShardStorage(tmp_path)
    s.open()
    yield s
    s.close()


def ids(storage: ShardStorage, spec: dict[str, Any] | None = None, **kw: Any) -> list[Any]:
    return [row.doc["_id"] for row in storage.scan(NS, spec, **kw)]


def find(storage: ShardStorage, spec: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    return [bson.decode(raw) for raw in find_stream(storage, NS, spec, **kw).documents]


def owned_split(shard: str, split_at: int) -> OwnedRanges:
    """Two chunks: [MinKey, split) on shard "a", [split, MaxKey] on shard "b"."""
    cmap = ChunkMap(
        SK,
        [
            Chunk("c1", {"sk": MinKey()}, {"sk": split_at}, "a", 1, 0),
            Chunk("c2", {"sk": split_at}, {"sk": MaxKey()}, "b", 1, 1),
        ],
    )
    return OwnedRanges.from_chunk_map(cmap, shard, {"namespace": NS, "shard_epoch": "e"})


# ---------------------------------------------------------------------- inserts


def test_insert_assigns_object_id_first_and_reads_back(storage: ShardStorage) -> None:
    res = storage.insert(NS, [{"a": 1}, {"b": 2, "_id": 7}])
    assert res.inserted == 2 and not res.errors
    docs = find(storage)
    assert len(docs) == 2
    for doc in docs:
        assert next(iter(doc)) == "_id"
    assert any(isinstance(d["_id"], ObjectId) for d in docs)
    assert {"_id": 7, "b": 2} in docs


def test_insert_raw_bson_with_id_not_first(storage: ShardStorage) -> None:
    storage.insert(NS, [bson.encode({"x": 1, "_id": "k"})])
    assert find(storage) == [{"_id": "k", "x": 1}]


def test_duplicate_key_ordered_stops(storage: ShardStorage) -> None:
    res = storage.insert(NS, [{"_id": 1}, {"_id": 2}, {"_id": 1}, {"_id": 3}], ordered=True)
    assert res.inserted == 2
    assert [(e.index, e.error.code) for e in res.errors] == [(2, ErrorCode.DUPLICATE_KEY)]
    assert sorted(ids(storage)) == [1, 2]


def test_duplicate_key_unordered_continues(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": 1}])
    res = storage.insert(
        NS, [{"_id": 1}, {"_id": 2}, {"_id": [1]}, {"_id": 2}, {"_id": 3}], ordered=False
    )
    assert res.inserted == 2
    assert [(e.index, e.error.code) for e in res.errors] == [
        (0, ErrorCode.DUPLICATE_KEY),
        (2, ErrorCode.BAD_VALUE),
        (3, ErrorCode.DUPLICATE_KEY),
    ]
    assert sorted(ids(storage)) == [1, 2, 3]


def test_equal_numbers_are_the_same_id(storage: ShardStorage) -> None:
    res = storage.insert(NS, [{"_id": 1}, {"_id": 1.0}, {"_id": Int64(1)}], ordered=False)
    assert res.inserted == 1 and len(res.errors) == 2


def test_array_id_is_bad_value_and_invalid_bson_reported(storage: ShardStorage) -> None:
    res = storage.insert(NS, [{"_id": [1, 2]}, b"\x05\x00\x00", {"_id": 3}], ordered=False)
    assert [(e.index, e.error.code) for e in res.errors] == [
        (0, ErrorCode.BAD_VALUE),
        (1, ErrorCode.INVALID_BSON),
    ]
    assert ids(storage) == [3]


# ---------------------------------------------------------------------- updates


def test_update_set_one_and_many(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": i, "g": i % 2, "v": 0} for i in range(6)])
    one = storage.update(NS, {"g": 1}, {"$set": {"v": 1}})
    assert (one.matched, one.modified) == (1, 1)
    many = storage.update(NS, {"g": 0}, {"$inc": {"v": 5}}, multi=True)
    assert (many.matched, many.modified) == (3, 3)
    docs = {d["_id"]: d["v"] for d in find(storage)}
    assert docs == {0: 5, 1: 1, 2: 5, 3: 0, 4: 5, 5: 0}


def test_update_that_changes_nothing_is_not_modified(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": 1, "v": 2}])
    res = storage.update(NS, {"_id": 1}, {"$set": {"v": 2}})
    assert (res.matched, res.modified) == (1, 0)


def test_failing_multi_update_is_atomic(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": 1, "v": 1}, {"_id": 2, "v": "text"}, {"_id": 3, "v": 3}])
    with pytest.raises(LauraError) as info:
        storage.update(NS, {}, {"$inc": {"v": 1}}, multi=True)
    assert info.value.code == ErrorCode.TYPE_MISMATCH
    assert {d["_id"]: d["v"] for d in find(storage)} == {1: 1, 2: "text", 3: 3}


def test_replacement_keeps_id_and_id_change_is_refused(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": 1, "a": 1, "b": 2}])
    res = storage.update(NS, {"_id": 1}, {"c": 3})
    assert res.modified == 1
    assert find(storage) == [{"_id": 1, "c": 3}]
    with pytest.raises(LauraError) as info:
        storage.update(NS, {"_id": 1}, {"$set": {"_id": 2}})
    assert info.value.code == ErrorCode.IMMUTABLE_FIELD


def test_upsert_inserts_built_document(storage: ShardStorage) -> None:
    res = storage.update(NS, {"name": "x", "n": {"$gt": 1}}, {"$set": {"v": 1}}, upsert=True)
    assert res.upserted and res.matched == 0
    docs = find(storage)
    assert len(docs) == 1
    assert docs[0]["_id"] == res.upserted_id
    assert docs[0]["name"] == "x" and docs[0]["v"] == 1 and "n" not in docs[0]
    again = storage.update(NS, {"name": "x"}, {"$set": {"v": 2}}, upsert=True)
    assert not again.upserted and again.modified == 1


def test_upsert_with_id_in_filter(storage: ShardStorage) -> None:
    res = storage.update(NS, {"_id": "k"}, {"$inc": {"n": 1}}, upsert=True)
    assert res.upserted and res.upserted_id == "k"
    assert find(storage) == [{"_id": "k", "n": 1}]


def test_shard_key_change_is_refused(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": 1, "sk": 5, "v": 0}], pattern=SK)
    with pytest.raises(LauraError) as info:
        storage.update(NS, {"_id": 1}, {"$set": {"sk": 6}}, pattern=SK)
    assert info.value.code == ErrorCode.SHARD_KEY_IMMUTABLE
    with pytest.raises(LauraError) as info:
        storage.update(NS, {"_id": 1}, {"v": 1}, pattern=SK)  # replacement drops sk
    assert info.value.code == ErrorCode.SHARD_KEY_IMMUTABLE
    ok = storage.update(NS, {"_id": 1}, {"$set": {"v": 1, "sk": 5.0}}, pattern=SK)
    assert ok.modified == 1
    assert find(storage)[0]["v"] == 1


def test_unique_shard_key_is_enforced(storage: ShardStorage) -> None:
    res = storage.insert(
        NS, [{"_id": 1, "sk": 5}, {"_id": 2, "sk": 5.0}, {"_id": 3, "sk": 6}],
        ordered=False, pattern=SK, unique_key=True,
    )
    assert res.inserted == 2
    assert [(e.index, e.error.code) for e in res.errors] == [(1, ErrorCode.DUPLICATE_KEY)]
    assert res.errors[0].error.details["keyValue"] == {"sk": 5}
    with pytest.raises(LauraError) as info:
        storage.update(NS, {"sk": 6, "x": 1}, {"$set": {"y": 1}}, upsert=True, pattern=SK,
                       unique_key=True)
    assert info.value.code == ErrorCode.DUPLICATE_KEY


def test_multi_false_is_refused_for_replacement_multi(storage: ShardStorage) -> None:
    with pytest.raises(LauraError) as info:
        storage.update(NS, {}, {"a": 1}, multi=True)
    assert info.value.code == ErrorCode.FAILED_TO_PARSE


# ---------------------------------------------------------------------- deletes


def test_delete_one_and_many(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": i, "g": i % 2} for i in range(6)])
    assert storage.delete(NS, {"g": 0}) == 1
    assert storage.delete(NS, {"g": 0}, multi=True) == 2
    assert storage.delete(NS, {"nope": 1}, multi=True) == 0
    assert sorted(ids(storage)) == [1, 3, 5]
    assert storage.delete("db.missing", {}, multi=True) == 0


# ---------------------------------------------------------------------- reads


def test_find_sort_skip_limit_projection(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": i, "n": (i * 7) % 10, "x": "y"} for i in range(10)])
    docs = find(storage, {"n": {"$gte": 2}}, sort={"n": -1}, skip=1, limit=3,
                projection={"n": 1, "_id": 0})
    assert docs == [{"n": 8}, {"n": 7}, {"n": 6}]
    unsorted = find(storage, {}, skip=2, limit=3)
    assert len(unsorted) == 3
    assert find(storage, {}, limit=-2)[:2] == find(storage, {}, limit=2)
    with pytest.raises(LauraError):
        find(storage, {}, skip=-1)


def test_missing_collection_reads_empty(storage: ShardStorage) -> None:
    assert find(storage) == []
    assert storage.count(NS) == 0


def test_id_point_lookup_reads_one_document(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": i} for i in range(200)])
    stats = ScanStats()
    assert ids(storage, {"_id": 42}, stats=stats) == [42]
    assert stats.examined == 1
    stats = ScanStats()
    assert ids(storage, {"_id": {"$in": [3, 1.0, 500]}}, stats=stats) == [1, 3]
    assert stats.examined == 2
    stats = ScanStats()
    assert ids(storage, {"_id": {"$gte": 190, "$lt": 195}}, stats=stats) == list(range(190, 195))
    assert stats.examined <= 6


def test_shard_key_point_and_range_scans(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": i, "sk": i % 50} for i in range(500)], pattern=SK)
    stats = ScanStats()
    found = ids(storage, {"sk": 7}, stats=stats)
    assert sorted(found) == [i for i in range(500) if i % 50 == 7]
    assert stats.examined == 10
    stats = ScanStats()
    found = ids(storage, {"sk": {"$gt": 10, "$lte": 12}}, stats=stats)
    assert sorted(found) == [i for i in range(500) if i % 50 in (11, 12)]
    assert stats.examined == 30  # 10..12 inclusive: the filter drops sk == 10
    assert storage.count(NS, {"sk": {"$lt": 3}}) == 30


def test_plan_choice() -> None:
    assert isinstance(plan_scan({"_id": 1}, None), Points)
    assert plan_scan({"_id": 1}, None).column == ID_COLUMN
    p = plan_scan({"sk": {"$in": [1, 2]}, "x": 3}, SK)
    assert isinstance(p, Points) and p.column == SHARD_KEY_COLUMN and len(p.keys) == 2
    r = plan_scan({"sk": {"$gte": 1}}, SK)
    assert isinstance(r, Range) and r.column == SHARD_KEY_COLUMN and r.hi is None
    assert plan_scan({"sk": {"$gte": 1}}, ShardKeyPattern(["sk"], "hashed")) == FULL_SCAN
    hashed = plan_scan({"sk": "a"}, ShardKeyPattern(["sk"], "hashed"))
    assert isinstance(hashed, Points) and hashed.column == SHARD_KEY_COLUMN
    assert plan_scan({"$or": [{"_id": 1}, {"_id": 2}]}, None) == FULL_SCAN
    assert plan_scan({"_id": 1, "$and": [{"_id": 2}]}, None) == FULL_SCAN
    assert plan_scan({"_id": {"$regex": "a"}}, None) == FULL_SCAN
    compound = ShardKeyPattern(["a", "b"], "range")
    assert isinstance(plan_scan({"a": 1, "b": {"$in": [1, 2]}}, compound), Points)
    assert plan_scan({"a": 1}, compound) == FULL_SCAN


def test_aggregate_leading_match_and_group(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": i, "g": i % 3, "v": i} for i in range(30)])
    stream = aggregate_stream(
        storage,
        NS,
        [{"$match": {"v": {"$gte": 10}}}, {"$group": {"_id": "$g", "n": {"$sum": 1}}},
         {"$sort": {"_id": 1}}],
    )
    out = [bson.decode(raw) for raw in stream.documents]
    assert out == [{"_id": 0, "n": 6}, {"_id": 1, "n": 7}, {"_id": 2, "n": 7}]
    assert stream.stats.examined == 30
    plain = aggregate_stream(storage, NS, [{"$match": {"_id": 3}}])
    assert [bson.decode(r) for r in plain.documents] == [{"_id": 3, "g": 0, "v": 3}]


# ---------------------------------------------------------------------- sharding


def test_ownership_filters_reads_and_multi_writes(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": i, "sk": i} for i in range(10)], pattern=SK)
    mine = owned_split("a", 5)  # this shard owns sk < 5
    assert sorted(ids(storage, {}, owned=mine)) == [0, 1, 2, 3, 4]
    assert storage.count(NS, owned=mine) == 5
    assert storage.count(NS, {"sk": {"$gte": 3}}, owned=mine) == 2
    assert storage.count(NS, owned=owned_split("b", 5)) == 5
    res = storage.update(NS, {}, {"$set": {"t": 1}}, multi=True, pattern=SK, owned=mine)
    assert res.matched == 5
    assert storage.delete(NS, {}, multi=True, owned=mine) == 5
    assert sorted(ids(storage)) == [5, 6, 7, 8, 9]  # the orphans are untouched


def test_insert_outside_owned_chunks_is_stale_and_writes_nothing(storage: ShardStorage) -> None:
    mine = owned_split("a", 5)
    with pytest.raises(LauraError) as info:
        storage.insert(NS, [{"_id": 1, "sk": 1}, {"_id": 2, "sk": 9}], pattern=SK, owned=mine)
    assert info.value.code == ErrorCode.STALE_CONFIG
    assert info.value.details["namespace"] == NS
    assert storage.count(NS) == 0
    with pytest.raises(LauraError) as info:
        storage.update(NS, {"sk": 9}, {"$set": {"a": 1}}, upsert=True, pattern=SK, owned=mine)
    assert info.value.code == ErrorCode.STALE_CONFIG
    assert storage.count(NS) == 0


def test_max_key_document_belongs_to_last_chunk(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": 1, "sk": MaxKey()}, {"_id": 2, "sk": MinKey()}], pattern=SK)
    assert ids(storage, {}, owned=owned_split("b", 0)) == [1]
    assert ids(storage, {}, owned=owned_split("a", 0)) == [2]


def test_rekey_when_collection_becomes_sharded(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": i, "sk": i} for i in range(10)] + [{"_id": 99, "sk": [1]}])
    assert storage.key_pattern(NS) is None
    assert storage.needs_rekey(NS, SK)
    assert storage.set_key_pattern(NS, SK) == 11
    assert storage.key_pattern(NS) == SK and not storage.needs_rekey(NS, SK)
    mine = owned_split("a", 5)
    assert sorted(ids(storage, {}, owned=mine)) == [0, 1, 2, 3, 4]
    # the array-keyed document has no valid key: no chunk owns it
    assert 99 not in ids(storage, {}, owned=owned_split("b", 5))
    stats = ScanStats()
    assert ids(storage, {"sk": 3}, stats=stats) == [3]
    assert stats.examined == 1


def test_inserting_with_new_pattern_rekeys_first(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": 1, "sk": 1}])
    storage.insert(NS, [{"_id": 2, "sk": 7}], pattern=SK)
    assert storage.key_pattern(NS) == SK
    assert ids(storage, {}, owned=owned_split("a", 5)) == [1]


# ---------------------------------------------------------------------- durability


def test_documents_survive_reopen(tmp_path: Path) -> None:
    s = ShardStorage(tmp_path)
    s.open()
    s.insert(NS, [{"_id": i, "sk": i} for i in range(100)], pattern=SK)
    s.update(NS, {"_id": 5}, {"$set": {"x": 1}})
    s.delete(NS, {"_id": 6})
    s.insert("db.other", [{"_id": "a"}])
    s.close()
    again = ShardStorage(tmp_path)
    again.open()
    try:
        assert again.key_pattern(NS) == SK
        assert again.count(NS) == 99
        assert [bson.decode(r) for r in find_stream(again, NS, {"_id": 5}).documents] == [
            {"_id": 5, "sk": 5, "x": 1}
        ]
        assert again.count("db.other") == 1
        assert again.namespaces() == ["db.c", "db.other"]
    finally:
        again.close()


def test_unclosed_storage_is_readable_by_a_new_instance(tmp_path: Path) -> None:
    s = ShardStorage(tmp_path)
    s.open()
    s.insert(NS, [{"_id": 1}])
    other = ShardStorage(tmp_path)  # as after a crash: the first one never closed
    other.open()
    try:
        assert other.count(NS) == 1
    finally:
        other.close()
        s.close()


def test_closed_storage_refuses_work(tmp_path: Path) -> None:
    s = ShardStorage(tmp_path)
    s.open()
    s.close()
    s.close()
    with pytest.raises(LauraError):
        s.insert(NS, [{"_id": 1}])


# ---------------------------------------------------------------------- cursors


def test_cursor_batches_kill_and_idle_expiry(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": i} for i in range(10)])
    now = [0.0]
    manager = CursorManager(idle_timeout=600.0, clock=lambda: now[0])
    cursor = manager.create(NS, find_stream(storage, NS, {}))
    first, examined = cursor.next_batch(4)
    assert len(first) == 4 and examined >= 4 and not cursor.exhausted
    cid = manager.register(cursor)
    second, _ = manager.get(cid).next_batch(6)
    assert len(second) == 6 and cursor.exhausted  # looked ahead: nothing left
    assert [bson.decode(d)["_id"] for d in first + second] == list(range(10))
    manager.release(cursor)
    with pytest.raises(LauraError) as info:
        manager.get(cid)
    assert info.value.code == ErrorCode.CURSOR_NOT_FOUND

    idle = manager.create(NS, find_stream(storage, NS, {}))
    idle.next_batch(1)
    idle_id = manager.register(idle)
    busy = manager.create(NS, find_stream(storage, NS, {}))
    busy_id = manager.register(busy)
    now[0] = 500.0
    busy.next_batch(1)  # used recently
    now[0] = 700.0
    assert manager.reap() == 1
    with pytest.raises(LauraError):
        manager.get(idle_id)
    assert manager.kill([busy_id, "nope"]) == 1
    assert len(manager) == 0
