"""Secondary indexes on the shard: storage, maintenance, bounds, planner, distinct."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.max_key import MaxKey
from bson.min_key import MinKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lauradb.bsonkit.keys import encode_value
from lauradb.cluster import router_ext_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.chunk_map import Chunk, ChunkMap
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub.cursors import CursorManager
from shard_stub.index_bounds import comparison, equality, index_bounds, predicates, succ
from shard_stub.index_keys import IndexDef, index_entries, parse_index_keys
from shard_stub.metadata import ShardMetadata
from shard_stub.ownership import OwnedRanges
from shard_stub.reads import distinct, find_stream
from shard_stub.scan_plan import FULL_SCAN, ID_COLUMN, IndexScan, Points, choose_plan
from shard_stub.service import ShardServicer, index_from_spec, index_to_spec
from shard_stub.storage import ShardStorage

NS = "db.c"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[ShardStorage]:
    s = ShardStorage(tmp_path)
    s.open()
    yield s
    s.close()


def ix(name: str, *fields: tuple[str, int], unique: bool = False, sparse: bool = False) -> IndexDef:
    return IndexDef(name, tuple(fields), unique, sparse)


def find_ids(
    storage: ShardStorage, spec: dict[str, Any], ns: str = NS, **kw: Any
) -> tuple[list[Any], int]:
    stream = find_stream(storage, ns, spec, **kw)
    out = [bson.decode(raw)["_id"] for raw in stream.documents]
    return out, stream.stats.examined


def entry_count(storage: ShardStorage, ns: str, name: str) -> int:
    c = storage.collection(ns)
    assert c is not None
    index = c.index(name)
    assert index is not None
    with storage._rlock:
        conn = storage._reader()
        return int(conn.execute(f"SELECT COUNT(*) FROM {index.table}").fetchone()[0])


# ---------------------------------------------------------------------- key patterns


def test_parse_index_keys() -> None:
    assert parse_index_keys({"a": 1, "b.c": -1.0}) == (("a", 1), ("b.c", -1))
    for bad in ({}, {"a": 2}, {"a": True}, {"a": "hashed"}, {"$a": 1}, {"a..b": 1}, {"": 1}):
        with pytest.raises(LauraError) as exc:
            parse_index_keys(bad)
        assert exc.value.code == ErrorCode.BAD_VALUE
        assert "bad index key pattern" in exc.value.message


def test_index_spec_round_trip_and_name_required() -> None:
    spec = router_ext_pb2.IndexSpec(
        name="a_1_b_-1", keys=bson.encode({"a": 1, "b": -1}), unique=True
    )
    index = index_from_spec(spec)
    assert index.fields == (("a", 1), ("b", -1)) and index.unique and not index.sparse
    assert index_to_spec(index) == spec
    with pytest.raises(LauraError) as exc:
        index_from_spec(router_ext_pb2.IndexSpec(keys=bson.encode({"a": 1})))
    assert exc.value.code == ErrorCode.BAD_VALUE


# ---------------------------------------------------------------------- index keys


def test_entries_multikey_aux_and_missing() -> None:
    a = ix("a_1", ("a", 1))
    e = index_entries({"_id": 1, "a": [1, 2, 2]}, a)
    assert e is not None and e.multikey
    assert e.keys == {
        encode_value(1): False,
        encode_value(2): False,
        encode_value([1, 2, 2]): True,
    }
    e = index_entries({"_id": 1}, a)
    assert e is not None and e.keys == {encode_value(None): False} and not e.multikey
    e = index_entries({"_id": 1, "a": []}, a)
    assert e is not None and e.multikey and len(e.keys) == 2  # undefined + [] (aux)
    dotted = ix("a.b_1", ("a.b", 1))
    e = index_entries({"a": [{"b": 1}, {"c": 2}, 5]}, dotted)
    assert e is not None and set(e.keys) == {encode_value(1), encode_value(None)}
    assert index_entries({"a": 5}, ix("s", ("a", 1), sparse=True)) is not None
    assert index_entries({"b": 5}, ix("s", ("a", 1), sparse=True)) is None


def test_parallel_arrays_rejected() -> None:
    compound = ix("a_1_b_1", ("a", 1), ("b", 1))
    e = index_entries({"a": [1, 2], "b": 3}, compound)
    assert e is not None and len([k for k, aux in e.keys.items() if not aux]) == 2
    with pytest.raises(LauraError) as exc:
        index_entries({"a": [1, 2], "b": [3]}, compound)
    assert exc.value.code == ErrorCode.BAD_VALUE
    assert "cannot index parallel arrays" in exc.value.message


def test_parallel_arrays_fail_insert_and_build(storage: ShardStorage) -> None:
    storage.create_index(NS, ix("a_1_b_1", ("a", 1), ("b", 1)))
    res = storage.insert(NS, [{"_id": 1, "a": [1], "b": [2]}, {"_id": 2, "a": [1]}], ordered=False)
    assert res.inserted == 1 and [e.index for e in res.errors] == [0]
    storage.insert("db.d", [{"_id": 1, "a": [1], "b": [2]}])
    with pytest.raises(LauraError) as exc:
        storage.create_index("db.d", ix("a_1_b_1", ("a", 1), ("b", 1)))
    assert exc.value.code == ErrorCode.BAD_VALUE
    assert [i.name for i in storage.list_indexes("db.d")] == ["_id_"]


# ---------------------------------------------------------------------- create / drop


def test_create_is_idempotent_and_conflicts(storage: ShardStorage) -> None:
    assert storage.create_index(NS, ix("a_1", ("a", 1))) is True
    assert storage.create_index(NS, ix("a_1", ("a", 1))) is False
    with pytest.raises(LauraError) as exc:
        storage.create_index(NS, ix("a_1", ("a", -1)))
    assert exc.value.code == ErrorCode.INDEX_ALREADY_EXISTS
    assert "already exists with different options" in exc.value.message
    with pytest.raises(LauraError) as exc:
        storage.create_index(NS, ix("a_1", ("a", 1), unique=True))
    assert exc.value.code == ErrorCode.INDEX_ALREADY_EXISTS
    with pytest.raises(LauraError) as exc:
        storage.create_index(NS, ix("other", ("a", 1)))
    assert exc.value.code == ErrorCode.INDEX_ALREADY_EXISTS
    assert storage.create_index(NS, ix("_id_", ("_id", 1))) is False
    with pytest.raises(LauraError):
        storage.create_index(NS, ix("_id_", ("x", 1)))


def test_create_index_creates_the_collection(storage: ShardStorage) -> None:
    assert storage.collection("db.new") is None
    storage.create_index("db.new", ix("a_1", ("a", 1)))
    assert storage.list_collections("db") == ["new"]
    assert [i.name for i in storage.list_indexes("db.new")] == ["_id_", "a_1"]
    storage.insert("db.new", [{"_id": 1, "a": 1}])
    assert entry_count(storage, "db.new", "a_1") == 1


def test_unique_build_violation_leaves_no_index(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": 1, "a": 5}, {"_id": 2, "a": 6}, {"_id": 3, "a": 5.0}])
    with pytest.raises(LauraError) as exc:
        storage.create_index(NS, ix("a_1", ("a", 1), unique=True))
    assert exc.value.code == ErrorCode.DUPLICATE_KEY
    assert "index: a_1 dup key" in exc.value.message
    assert exc.value.details["keyPattern"] == {"a": 1}
    assert [i.name for i in storage.list_indexes(NS)] == ["_id_"]
    with storage._rlock:
        tables = storage._reader().execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'ix_%'"
        ).fetchall()
    assert tables == []
    storage.close()
    storage.open()
    assert [i.name for i in storage.list_indexes(NS)] == ["_id_"]


def test_unique_insert_update_upsert(storage: ShardStorage) -> None:
    storage.create_index(NS, ix("a_1", ("a", 1), unique=True))
    res = storage.insert(
        NS, [{"_id": 1, "a": 1}, {"_id": 2, "a": 1}, {"_id": 3, "a": [2, 2]}, {"_id": 4, "a": 2}],
        ordered=False,
    )
    assert res.inserted == 2
    assert [(e.index, e.error.code) for e in res.errors] == [
        (1, ErrorCode.DUPLICATE_KEY), (3, ErrorCode.DUPLICATE_KEY)
    ]
    assert find_ids(storage, {})[0] == [1, 3]
    assert entry_count(storage, NS, "a_1") == 3  # 1, 2 and the aux [2, 2]
    # The failed document changed nothing: no document, no stray entries.
    res = storage.insert(NS, [{"_id": 2, "a": 7}])
    assert res.inserted == 1
    with pytest.raises(LauraError) as exc:
        storage.update(NS, {"_id": 2}, {"$set": {"a": 1}})
    assert exc.value.code == ErrorCode.DUPLICATE_KEY
    assert find_ids(storage, {"a": 7})[0] == [2]
    with pytest.raises(LauraError) as exc:
        storage.update(NS, {"x": 100}, {"$set": {"a": 1}}, upsert=True)
    assert exc.value.code == ErrorCode.DUPLICATE_KEY
    assert find_ids(storage, {"x": 100})[0] == []
    # No field: indexed as null, so a second document without "a" is a duplicate.
    assert storage.insert(NS, [{"_id": 10}]).inserted == 1
    assert storage.insert(NS, [{"_id": 11}]).errors[0].error.code == ErrorCode.DUPLICATE_KEY
    storage.delete(NS, {"_id": 10})
    assert storage.insert(NS, [{"_id": 11}]).inserted == 1


def test_unique_sparse_only_enforces_present_values(storage: ShardStorage) -> None:
    storage.create_index(NS, ix("a_1", ("a", 1), unique=True, sparse=True))
    res = storage.insert(NS, [{"_id": 1}, {"_id": 2}, {"_id": 3, "a": 1}, {"_id": 4, "a": 1}],
                         ordered=False)
    assert res.inserted == 3 and res.errors[0].index == 3
    assert entry_count(storage, NS, "a_1") == 1


def test_updates_and_deletes_maintain_entries(storage: ShardStorage) -> None:
    storage.create_index(NS, ix("a_1", ("a", 1)))
    storage.insert(NS, [{"_id": i, "a": i} for i in range(100)])
    # Moving documents forward in the index must not update them twice.
    res = storage.update(NS, {"a": {"$gte": 50}}, {"$inc": {"a": 1000}}, multi=True)
    assert (res.matched, res.modified) == (50, 50)
    assert sorted(find_ids(storage, {"a": {"$gte": 1000}})[0]) == list(range(50, 100))
    assert find_ids(storage, {"a": 1050})[0] == [50]
    assert find_ids(storage, {"a": 50})[0] == []
    storage.update(NS, {"_id": 3}, {"$set": {"a": [1, 2, 3]}})
    assert storage.collection(NS).index("a_1").multikey  # type: ignore[union-attr]
    assert sorted(find_ids(storage, {"a": 2})[0]) == [2, 3]
    assert storage.delete(NS, {"a": {"$lt": 10}}, multi=True) == 10
    assert entry_count(storage, NS, "a_1") == 90
    storage.update(NS, {"_id": 20}, {"a": 5, "z": 1})  # replacement
    assert find_ids(storage, {"a": 5})[0] == [20]
    assert entry_count(storage, NS, "a_1") == 90


def test_drop_index_list_collections_drop_collection_and_database(storage: ShardStorage) -> None:
    storage.create_index(NS, ix("a_1", ("a", 1)))
    storage.create_index(NS, ix("b_-1", ("b", -1)))
    storage.insert("db.d", [{"_id": 1}])
    storage.insert("other.c", [{"_id": 1}])
    assert storage.list_collections("db") == ["c", "d"]
    with pytest.raises(LauraError) as exc:
        storage.drop_index(NS, "_id_")
    assert exc.value.code == ErrorCode.ILLEGAL_OPERATION
    with pytest.raises(LauraError) as exc:
        storage.drop_index(NS, "nope")
    assert exc.value.code == ErrorCode.INDEX_NOT_FOUND and int(exc.value.code) == 27
    with pytest.raises(LauraError) as exc:
        storage.drop_index("db.missing", "a_1")
    assert exc.value.code == ErrorCode.NAMESPACE_NOT_FOUND
    assert storage.drop_index(NS, "a_1") == ["a_1"]
    assert [i.name for i in storage.list_indexes(NS)] == ["_id_", "b_-1"]
    storage.create_index(NS, ix("a_1", ("a", 1)))
    assert sorted(storage.drop_index(NS, "*")) == ["a_1", "b_-1"]
    assert storage.drop_index(NS, "*") == []
    storage.create_index(NS, ix("a_1", ("a", 1)))
    assert storage.drop_collection(NS) is True
    assert storage.drop_collection(NS) is False
    with pytest.raises(LauraError):
        storage.list_indexes(NS)
    assert storage.drop_database("db") == ["db.d"]
    assert storage.list_collections("db") == []
    assert storage.namespaces() == ["other.c"]
    storage.insert(NS, [{"_id": 1, "a": 1}])  # recreated from scratch, no index
    assert [i.name for i in storage.list_indexes(NS)] == ["_id_"]


def test_indexes_survive_reopen(tmp_path: Path) -> None:
    s = ShardStorage(tmp_path)
    s.open()
    s.create_index(NS, ix("a_1", ("a", 1), unique=True))
    s.create_index(NS, ix("b_1", ("b", 1), sparse=True))
    s.insert(NS, [{"_id": 1, "a": 1, "b": [1, 2]}])
    s.close()
    s = ShardStorage(tmp_path)
    s.open()
    indexes = {i.name: i for i in s.list_indexes(NS)}
    assert indexes["a_1"].unique and indexes["b_1"].sparse and indexes["b_1"].multikey
    assert s.insert(NS, [{"_id": 2, "a": 1}]).errors[0].error.code == ErrorCode.DUPLICATE_KEY
    assert find_ids(s, {"b": 2})[0] == [1]
    s.close()


def test_scan_after_index_dropped_fails_cleanly(storage: ShardStorage) -> None:
    storage.create_index(NS, ix("a_1", ("a", 1)))
    storage.insert(NS, [{"_id": i, "a": 1} for i in range(500)])
    stream = find_stream(storage, NS, {"a": 1})
    assert next(stream.documents)
    storage.drop_index(NS, "a_1")
    with pytest.raises(LauraError) as exc:
        list(stream.documents)
    assert exc.value.code == ErrorCode.OPERATION_FAILED


# ---------------------------------------------------------------------- bounds & planner


def test_bounds_respect_type_brackets() -> None:
    gt = comparison("$gt", 5)
    assert gt is not None
    assert gt.contains(encode_value(6)) and gt.contains(encode_value(1e300))
    assert not gt.contains(encode_value(5)) and not gt.contains(encode_value("6"))
    assert not gt.contains(encode_value(None))
    lte = comparison("$lte", "m")
    assert lte is not None and lte.contains(encode_value("")) and lte.contains(encode_value("m"))
    assert not lte.contains(encode_value(1)) and not lte.contains(encode_value("ma"))
    assert comparison("$gt", MinKey()) is None and comparison("$lt", MaxKey()) is None
    eq = equality(None)
    assert eq is not None and eq.contains(encode_value(None))
    assert equality(bson.regex.Regex("a")) is None
    assert succ(b"\x01\xff\xff") == b"\x02"


def test_compound_descending_bounds() -> None:
    index = ix("a_1_b_-1", ("a", 1), ("b", -1))
    bounds = index_bounds(index, predicates({"a": 3, "b": {"$gt": 1, "$lte": 4}}))
    assert bounds is not None and bounds.eq_fields == 1 and bounds.range_field
    (lo, hi), = bounds.ranges

    def key(a: Any, b: Any) -> bytes:
        e = index_entries({"a": a, "b": b}, index)
        assert e is not None
        (k,) = e.keys
        return k

    inside = [key(3, 2), key(3, 4), key(3, 1.5)]
    outside = [key(3, 1), key(3, 5), key(2, 3), key(4, 3), key(3, "x"), key(3, None)]
    assert all(lo <= k < hi for k in inside)
    assert not any(lo <= k < hi for k in outside)
    assert index_bounds(index, predicates({"b": 1})) is None  # no prefix


def test_sparse_index_not_used_when_null_can_match() -> None:
    sparse = ix("a_1", ("a", 1), sparse=True)
    assert index_bounds(sparse, predicates({"a": 1})) is not None
    assert index_bounds(sparse, predicates({"a": None})) is None
    assert index_bounds(sparse, predicates({"a": {"$in": [1, None]}})) is None
    assert index_bounds(sparse, predicates({"a": {"$lte": None}})) is None


def test_plan_choice_rules() -> None:
    a = ix("a_1", ("a", 1))
    b_unique = ix("b_1", ("b", 1), unique=True)
    ab = ix("a_1_c_1", ("a", 1), ("c", 1))
    indexes = [a, b_unique, ab]
    sk = ShardKeyPattern(["s"], "range")
    assert choose_plan({"_id": 1, "b": 2}, sk, indexes).plan == Points(
        ID_COLUMN, (encode_value(1),)
    )
    p = choose_plan({"a": 1, "b": 2, "s": 3}, sk, indexes).plan
    assert isinstance(p, IndexScan) and p.index.name == "b_1"  # unique equality
    p = choose_plan({"a": 1, "c": 2}, sk, indexes).plan
    assert isinstance(p, IndexScan) and p.index.name == "a_1_c_1"  # longer prefix
    p = choose_plan({"a": 1, "c": {"$gt": 2}}, None, [a, ab]).plan
    assert isinstance(p, IndexScan) and p.index.name == "a_1_c_1"  # eq + range
    p = choose_plan({"a": 1, "s": 3}, sk, indexes).plan
    assert isinstance(p, Points) and p.column == "shard_key"  # tie: the shard key
    assert choose_plan({"x": 1}, None, indexes).plan == FULL_SCAN
    assert choose_plan({"$or": [{"a": 1}]}, None, indexes).plan == FULL_SCAN
    # Sorting by an index that the filter does not pin: a whole-index scan in order.
    choice = choose_plan({}, None, indexes, [("a", -1)])
    assert choice.ordered and isinstance(choice.plan, IndexScan) and choice.plan.reverse
    choice = choose_plan({"a": 1}, None, [ab], [("c", 1)])
    assert choice.ordered and isinstance(choice.plan, IndexScan) and not choice.plan.reverse
    assert not choose_plan({"a": {"$in": [1, 2]}}, None, [ab], [("c", 1)]).ordered
    assert choose_plan({}, None, [], [("_id", 1)]).ordered
    multikey = IndexDef("m", (("a", 1),), multikey=True)
    assert not choose_plan({}, None, [multikey], [("a", 1)]).ordered


def test_multikey_ranges_are_not_intersected(storage: ShardStorage) -> None:
    storage.create_index(NS, ix("a_1", ("a", 1)))
    storage.insert(NS, [{"_id": 1, "a": [1, 10]}, {"_id": 2, "a": 4}, {"_id": 3, "a": 20}])
    assert sorted(find_ids(storage, {"a": {"$gt": 3, "$lt": 5}})[0]) == [1, 2]
    assert find_ids(storage, {"$and": [{"a": 1}, {"a": 10}]})[0] == [1]
    assert find_ids(storage, {"a": [1, 10]})[0] == [1]
    assert find_ids(storage, {"a": {"$gt": [1]}})[0] == [1]


def test_documents_examined_with_an_index(storage: ShardStorage) -> None:
    n = 20_000
    docs = [{"_id": i, "a": i % 1000, "s": str(i)} for i in range(n)]
    storage.insert(NS, docs)
    found, examined = find_ids(storage, {"a": 5})
    assert examined == n and len(found) == 20
    storage.create_index(NS, ix("a_1", ("a", 1)))
    found2, examined = find_ids(storage, {"a": 5})
    assert sorted(found2) == sorted(found) and examined == 20
    _, examined = find_ids(storage, {"a": {"$in": [5, 6, "5"]}})
    assert examined == 40
    found, examined = find_ids(storage, {"a": {"$gt": 997}})
    assert examined == 40 and len(found) == 40
    # A sorted, limited query stops early through the index.
    stream = find_stream(storage, NS, {}, sort={"a": -1}, limit=3)
    out = [bson.decode(r) for r in stream.documents]
    assert [d["a"] for d in out] == [999, 999, 999]
    assert stream.stats.examined <= 64
    assert storage.count(NS, {"a": 7}) == 20


def test_orphans_filtered_through_an_index(storage: ShardStorage) -> None:
    pattern = ShardKeyPattern(["sk"], "range")
    storage.insert(NS, [{"_id": i, "sk": i, "a": i % 2} for i in range(10)], pattern=pattern)
    storage.create_index(NS, ix("a_1", ("a", 1)))
    cmap = ChunkMap(
        pattern,
        [Chunk("c1", {"sk": MinKey()}, {"sk": 5}, "a", 1, 0),
         Chunk("c2", {"sk": 5}, {"sk": MaxKey()}, "b", 1, 1)],
    )
    mine = OwnedRanges.from_chunk_map(cmap, "a")
    assert find_ids(storage, {"a": 1}, owned=mine)[0] == [1, 3]
    assert distinct(storage, NS, "sk", {"a": 0}, owned=mine) == [0, 2, 4]


# ---------------------------------------------------------------------- distinct


def test_distinct_values(storage: ShardStorage) -> None:
    storage.insert(NS, [
        {"_id": 1, "a": 1, "t": ["x", "y"], "n": {"k": 2}},
        {"_id": 2, "a": 1.0, "t": "x", "n": [{"k": 3}, {"k": [4, 2]}]},
        {"_id": 3, "a": None, "t": [["z"]], "n": {"j": 1}},
        {"_id": 4, "a": "1", "t": []},
        {"_id": 5},
    ])
    assert distinct(storage, NS, "a") == [None, 1, "1"]
    assert distinct(storage, NS, "t") == ["x", "y", ["z"]]
    assert distinct(storage, NS, "n.k") == [2, 3, 4]
    assert distinct(storage, NS, "a", {"_id": {"$gt": 2}}) == [None, "1"]
    assert distinct(storage, "db.none", "a") == []
    with pytest.raises(LauraError):
        distinct(storage, NS, "")
    with pytest.raises(LauraError):
        distinct(storage, NS, "$a")


# ---------------------------------------------------------------------- recorded indexes


def test_ensure_recorded_indexes(storage: ShardStorage) -> None:
    specs = [
        router_ext_pb2.IndexSpec(name="a_1", keys=bson.encode({"a": 1}), unique=True),
        router_ext_pb2.IndexSpec(name="b_-1", keys=bson.encode({"b": -1})),
        router_ext_pb2.IndexSpec(name="bad", keys=bson.encode({"c": 5})),
    ]
    asked: list[tuple[str, str]] = []

    async def fetch(db: str, coll: str) -> list[router_ext_pb2.IndexSpec]:
        asked.append((db, coll))
        return specs

    async def no_map(_req: Any) -> Any:
        raise AssertionError("not used")

    servicer = ShardServicer("s0", storage, ShardMetadata("s0", no_map), CursorManager(), fetch)
    created = asyncio.run(servicer.ensure_recorded_indexes("db", "c", skip="b_-1"))
    assert created == ["a_1"] and asked == [("db", "c")]
    assert [i.name for i in storage.list_indexes(NS)] == ["_id_", "a_1"]
    assert asyncio.run(servicer.ensure_recorded_indexes("db", "c")) == ["b_-1"]


# ---------------------------------------------------------------------- equivalence

_scalars = st.one_of(
    st.none(),
    st.integers(-3, 3),
    st.sampled_from([0.5, 2.0, -1.5, float("nan")]),
    st.sampled_from(["", "a", "b", "ab"]),
    st.booleans(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.fixed_dictionaries({}, optional={"b": inner, "c": inner}),
    ),
    max_leaves=5,
)
_docs = st.lists(
    st.fixed_dictionaries({}, optional={"a": _values, "b": _values}), max_size=25
)
_operands = st.one_of(_scalars, st.lists(_scalars, max_size=2),
                      st.fixed_dictionaries({"b": _scalars}),
                      st.sampled_from([MinKey(), MaxKey()]))
_paths = st.sampled_from(["a", "b", "a.b", "a.0", "a.b.c"])


def _predicate(op: str, value: Any) -> Any:
    if op == "eq":
        return value
    if op == "$in":
        return {"$in": value if isinstance(value, list) else [value]}
    return {op: value}


_preds = st.builds(
    _predicate, st.sampled_from(["eq", "$eq", "$in", "$gt", "$gte", "$lt", "$lte"]), _operands
)


@st.composite
def _filters(draw: st.DrawFn) -> dict[str, Any]:
    clauses = draw(st.lists(st.tuples(_paths, _preds), min_size=1, max_size=3))
    spec: dict[str, Any] = {}
    extra: list[dict[str, Any]] = []
    for path, pred in clauses:
        if path in spec:
            extra.append({path: pred})
        else:
            spec[path] = pred
    if extra:
        spec["$and"] = extra
    return spec


_index_fields = st.sampled_from([
    (("a", 1),), (("a", -1),), (("a.b", 1),), (("a.0", 1),), (("b", 1),),
    (("a", 1), ("b", -1)), (("b", -1), ("a", 1)), (("a.b", 1), ("b", 1)),
])


@settings(max_examples=int(os.environ.get("HYP_N", "100")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=_docs, spec=_filters(), fields=_index_fields, sparse=st.booleans(),
       sort_dir=st.sampled_from([0, 1, -1]), new_value=_values)
def test_results_identical_with_and_without_index(
    docs: list[dict[str, Any]], spec: dict[str, Any], fields: Any, sparse: bool, sort_dir: int,
    new_value: Any,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        s = ShardStorage(tmp)
        s.open()
        try:
            s.create_index("db.indexed", IndexDef("ix", fields, sparse=sparse))
            numbered = [{"_id": i, **d} for i, d in enumerate(docs)]
            res = s.insert("db.indexed", numbered, ordered=False)
            failed = {e.index for e in res.errors}
            assert all(e.error.code == ErrorCode.BAD_VALUE for e in res.errors)
            s.insert("db.plain", [d for i, d in enumerate(numbered) if i not in failed] or [{}])
            s.delete("db.plain", {"_id": {"$type": "objectId"}})
            sort = {fields[0][0]: sort_dir, "_id": sort_dir} if sort_dir else None
            try:
                expected, _ = find_ids(s, spec, "db.plain", sort=sort)
            except LauraError:
                with pytest.raises(LauraError):
                    find_ids(s, spec, "db.indexed", sort=sort)
                return
            got, _ = find_ids(s, spec, "db.indexed", sort=sort)
            if sort is None:
                expected.sort()
                got.sort()
            assert got == expected, (spec, s.plan("db.indexed", spec))
            assert s.count("db.indexed", spec) == len(expected)
            # Writes through the index keep it exact.
            try:
                s.update("db.indexed", spec, {"$set": {"a": new_value}}, multi=True)
            except LauraError as err:
                assert err.code == ErrorCode.BAD_VALUE  # parallel arrays: nothing changed
            else:
                s.update("db.plain", spec, {"$set": {"a": new_value}}, multi=True)
                assert all_docs(s, "db.indexed") == all_docs(s, "db.plain")
            assert_index_exact(s, "db.indexed")
            s.delete("db.indexed", {"a": new_value}, multi=True)
            assert_index_exact(s, "db.indexed")
        finally:
            s.close()


def all_docs(s: ShardStorage, ns: str) -> list[bytes]:
    return list(find_stream(s, ns, {}, sort={"_id": 1}).documents)


def assert_index_exact(s: ShardStorage, ns: str) -> None:
    """The index tables hold exactly the entries of the stored documents."""
    c = s.collection(ns)
    assert c is not None
    with s._rlock:
        conn = s._reader()
        docs = [bson.decode(raw) for raw, in conn.execute(f"SELECT doc FROM {c.table}")]
        for index in c.indexes:
            stored = set(conn.execute(f"SELECT index_key, id_key, aux FROM {index.table}"))
            wanted = set()
            for doc in docs:
                e = index_entries(doc, index)
                if e is not None:
                    wanted |= {(k, encode_value(doc["_id"]), int(aux)) for k, aux in e.keys.items()}
                    assert index.multikey or not e.multikey
            assert stored == wanted
