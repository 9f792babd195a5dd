"""The shard's bulk insert path (``ShardStorage.insert`` without index entries, retry
records or document locks: raw BSON decoded in one call, rows written with
``executemany``) gives exactly the outcome of the document-at-a-time path.

The reference is the same batch inserted into a collection with a (non-unique)
secondary index, which takes the document-at-a-time path."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.int64 import Int64
from bson.objectid import ObjectId

from lauradb.cluster import common_pb2
from lauradb.errors import ErrorCode
from lauradb.sharding.shard_key import HASHED, RANGE, ShardKeyPattern
from shard_stub.index_keys import IndexDef
from shard_stub.retry_records import RetryBatch
from shard_stub.storage import InsertResult, ShardStorage
from tests.unit.test_oplog import entries, open_storage

FAST = "db.fast"
SLOW = "db.slow"  # has an index: one document at a time


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[ShardStorage]:
    s = open_storage(tmp_path, replicated=False)
    yield s
    s.close()


def _outcome(res: InsertResult) -> tuple[int, list[tuple[int, int, str]]]:
    return res.inserted, [(e.index, int(e.error.code), e.error.message) for e in res.errors]


def _rows(s: ShardStorage, ns: str) -> list[tuple[bytes, bytes | None, bytes]]:
    c = s.collection(ns)
    assert c is not None
    return s._reader().execute(f"SELECT id_key, shard_key, doc FROM {c.table} ORDER BY id_key").fetchall()


def _both(
    s: ShardStorage,
    docs: Sequence[bytes | dict[str, Any]],
    *,
    ordered: bool,
    pattern: ShardKeyPattern | None = None,
    before: Sequence[dict[str, Any]] = (),
) -> InsertResult:
    """Insert ``docs`` on both paths; same outcome and rows on both; the fast one's result."""
    s.create_index(SLOW, IndexDef("z_1", (("z", 1),)))
    for ns in (FAST, SLOW):
        if before:
            assert s.insert(ns, list(before), pattern=pattern).inserted == len(before)
    fast = s.insert(FAST, docs, ordered=ordered, pattern=pattern)
    slow = s.insert(SLOW, docs, ordered=ordered, pattern=pattern)
    assert _outcome(fast) == (
        slow.inserted, [(i, code, msg.replace(SLOW, FAST)) for i, code, msg in _outcome(slow)[1]]
    )
    fast_rows, slow_rows = _rows(s, FAST), _rows(s, SLOW)
    # ObjectIds made for documents without one differ: compare those rows by count.
    assert len(fast_rows) == len(slow_rows)
    assert [r for r in fast_rows if r[0][:1] != b"\x07"] == [
        r for r in slow_rows if r[0][:1] != b"\x07"
    ] or not any(isinstance(d, dict) and "_id" not in d for d in docs)
    return fast


RAW = [bson.encode({"_id": i, "k": i, "pad": "x" * 50}) for i in range(20)]


@pytest.mark.parametrize("ordered", [True, False])
def test_raw_batch_without_errors(storage: ShardStorage, ordered: bool) -> None:
    res = _both(storage, RAW, ordered=ordered, pattern=ShardKeyPattern(["_id"], HASHED))
    assert res.inserted == 20 and not res.errors
    # Stored byte for byte (``_id`` first already: not re-encoded).
    assert sorted(r[2] for r in _rows(storage, FAST)) == sorted(RAW)


@pytest.mark.parametrize("ordered", [True, False])
def test_duplicates_inside_the_batch_and_with_stored_documents(
    storage: ShardStorage, ordered: bool
) -> None:
    docs = [RAW[0], RAW[1], RAW[1], RAW[2], RAW[5], RAW[3], RAW[3], RAW[3], RAW[4], RAW[19]]
    res = _both(storage, docs, ordered=ordered, before=[{"_id": 5}, {"_id": 19}])
    if ordered:
        assert _outcome(res)[0] == 2
        assert [(e.index, e.error.code) for e in res.errors] == [(2, ErrorCode.DUPLICATE_KEY)]
    else:
        assert res.inserted == 5  # 0, 1, 2, 3, 4
        assert [e.index for e in res.errors] == [2, 4, 6, 7, 9]
        assert {e.error.code for e in res.errors} == {ErrorCode.DUPLICATE_KEY}


@pytest.mark.parametrize("ordered", [True, False])
def test_duplicates_first_and_last_and_all(storage: ShardStorage, ordered: bool) -> None:
    _both(storage, [RAW[0], RAW[1], RAW[2], RAW[0]], ordered=ordered, before=[{"_id": 0}])
    res = storage.insert(FAST, RAW[:3], ordered=ordered)
    assert res.inserted == 0
    assert [e.index for e in res.errors] == ([0] if ordered else [0, 1, 2])


@pytest.mark.parametrize("ordered", [True, False])
def test_malformed_documents_in_a_raw_batch(storage: ShardStorage, ordered: bool) -> None:
    truncated = RAW[3][:-1]
    bad_length = b"\x06" + RAW[4][1:]
    docs = [RAW[0], truncated, RAW[1], bad_length, bson.encode({"_id": [1]}), RAW[0], RAW[2]]
    res = _both(storage, docs, ordered=ordered)
    if ordered:
        assert [(e.index, e.error.code) for e in res.errors] == [(1, ErrorCode.INVALID_BSON)]
        assert res.inserted == 1
    else:
        assert [(e.index, e.error.code) for e in res.errors] == [
            (1, ErrorCode.INVALID_BSON),
            (3, ErrorCode.INVALID_BSON),
            (4, ErrorCode.BAD_VALUE),
            (5, ErrorCode.DUPLICATE_KEY),
        ]
        assert res.inserted == 3


def test_documents_without_id_or_with_id_later(storage: ShardStorage) -> None:
    docs = [bson.encode({"a": 1}), bson.encode({"a": 2, "_id": "x"}), bson.encode({})]
    res = _both(storage, docs, ordered=True)
    assert res.inserted == 3
    stored = [bson.decode(r[2]) for r in _rows(storage, FAST)]
    assert all(next(iter(d)) == "_id" for d in stored)
    assert {"_id": "x", "a": 2} in stored
    assert sum(isinstance(d["_id"], ObjectId) for d in stored) == 2


@pytest.mark.parametrize(
    "pattern",
    [
        ShardKeyPattern(["_id"], HASHED),
        ShardKeyPattern(["_id"], RANGE),
        ShardKeyPattern(["k"], HASHED),
        ShardKeyPattern(["k", "_id"], RANGE),
        None,
    ],
    ids=["hashed_id", "ranged_id", "hashed_k", "compound", "unsharded"],
)
def test_shard_keys_are_those_of_key_for_doc(storage: ShardStorage, pattern: Any) -> None:
    values: list[Any] = [1, -7, 2.5, Int64(3), "s", ObjectId(), True, None, {"a": 1}, 10**12]
    docs = [bson.encode({"_id": v, "k": i}) for i, v in enumerate(values)]
    res = _both(storage, docs, ordered=False, pattern=pattern)
    assert res.inserted == len(values) and not res.errors
    for _id_key, shard_key, raw in _rows(storage, FAST):
        expected = pattern.key_for_doc(bson.decode(raw)) if pattern is not None else None
        assert shard_key == expected


def test_oplog_entries_for_the_inserted_documents_only(tmp_path: Path) -> None:
    s = open_storage(tmp_path)
    try:
        s.insert(FAST, [{"_id": 100}])
        first = len(entries(s))
        res = s.insert(FAST, [RAW[0], RAW[1], RAW[1], RAW[2]], ordered=False)
        assert res.inserted == 3 and [e.index for e in res.errors] == [2]
        new = entries(s)[first:]
        assert [e.op_type for e in new] == [common_pb2.INSERT] * 3
        assert [e.document for e in new] == [RAW[0], RAW[1], RAW[2]]
        assert res.op_id == entries(s)[-1].op_id
    finally:
        s.close()


class _Recorder:
    """A migration write guard that records what it is told."""

    def __init__(self) -> None:
        self.checked: list[bytes | None] = []
        self.writes: list[Any] = []

    def check(self, shard_key: bytes | None, owned: Any) -> None:
        self.checked.append(shard_key)

    def written(self, shard_key: bytes | None, id_key: bytes, id_value: Any) -> None:
        self.writes.append(id_value)

    def deleted(self, shard_key: bytes | None, id_key: bytes, id_value: Any) -> None:
        raise AssertionError("an insert deletes nothing")


def test_migration_guard_sees_every_inserted_document(storage: ShardStorage) -> None:
    guard = _Recorder()
    storage.write_guards[FAST] = guard  # type: ignore[assignment]
    res = storage.insert(FAST, [RAW[0], RAW[1], RAW[0], RAW[2]], ordered=False)
    assert res.inserted == 3
    assert guard.writes == [0, 1, 2]  # the inserted ones, in order
    assert len(guard.checked) == 4  # every document, before anything is written


# ---------------------------------------------------------------------- retryable inserts


def _records(s: ShardStorage, ns: str) -> list[tuple[Any, ...]]:
    """The retry records of ``ns`` (request ids left out: one per collection)."""
    return s._reader().execute(
        "SELECT stmt_id, kind, fingerprint, id_key, shard_key, outcome "
        "FROM retry_records WHERE ns = ? ORDER BY seq",
        (ns,),
    ).fetchall()


def _entry_records(s: ShardStorage, ns: str) -> list[tuple[int, str, list[tuple[Any, ...]]]]:
    return [
        (e.op_type, e.kind, [
            (r.stmt_id, r.kind, r.fingerprint, r.id_key, r.shard_key, r.outcome)
            for r in e.retry_records
        ])
        for e in entries(s)
        if e.namespace == ns and (e.op_type == common_pb2.INSERT or e.retry_records)
    ]  # fmt: skip


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("replicated", [False, True])
def test_retryable_batches_same_as_one_at_a_time(
    tmp_path: Path, ordered: bool, replicated: bool
) -> None:
    s = open_storage(tmp_path, replicated=replicated)
    try:
        s.create_index(SLOW, IndexDef("z_1", (("z", 1),)))
        pattern = ShardKeyPattern(["_id"], HASHED)
        docs = [RAW[0], RAW[1], RAW[2], RAW[1], RAW[3], RAW[4]]  # index 3: duplicate
        outcomes = {}
        for ns in (FAST, SLOW):  # a request id names one write: one per collection
            first = RetryBatch(f"r-{ns}", [10, 11, 12, 13, 14, 15], b"fp")
            # A first attempt that ran the statements of documents 1 and 4 only.
            partial = RetryBatch(f"r-{ns}", [11, 14], b"fp")
            done = s.insert(ns, [RAW[1], RAW[3]], pattern=pattern, retry=partial)
            assert done.inserted == 2
            res = s.insert(ns, docs, ordered=ordered, pattern=pattern, retry=first)
            again = s.insert(ns, docs, ordered=ordered, pattern=pattern, retry=first)
            outcomes[ns] = [
                (r.inserted, r.retried, [(e.index, e.error.code) for e in r.errors])
                for r in (res, again)
            ]
        assert outcomes[FAST] == outcomes[SLOW]
        if ordered:  # stops at the duplicate (3): 0 and 2 new, 1 from its record
            assert outcomes[FAST][0] == (3, 1, [(3, ErrorCode.DUPLICATE_KEY)])
        else:  # 0, 2 and 5 new; 1 and 4 from their records
            assert outcomes[FAST][0] == (5, 2, [(3, ErrorCode.DUPLICATE_KEY)])
        assert _rows(s, FAST) == _rows(s, SLOW)
        assert _records(s, FAST) == _records(s, SLOW)
        if replicated:
            assert _entry_records(s, FAST) == _entry_records(s, SLOW)
            assert any(recs for _, _, recs in _entry_records(s, FAST))
    finally:
        s.close()
