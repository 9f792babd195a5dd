"""Retryable writes in the shard's storage: records written with the write, answered
on a retry, durable, pruned, and carried by migrations (``shard_stub/retry_records``)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest

from lauradb.bsonkit.keys import encode_value
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub.ownership import KeyRange
from shard_stub.retry_records import RetryBatch, RetryStatement
from shard_stub.storage import ShardStorage

NS = "db.c"
SK = ShardKeyPattern(["sk"], "range")
FP = b"fingerprint-1"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[ShardStorage]:
    s = ShardStorage(tmp_path)
    s.open()
    yield s
    s.close()


def enc(doc: dict[str, Any]) -> bytes:
    return bson.encode(doc)


def records(storage: ShardStorage) -> int:
    with sqlite3.connect(storage.path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM retry_records").fetchone()[0])


def docs(storage: ShardStorage, spec: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [row.doc for row in storage.scan(NS, spec)]


def batch(rid: str, n: int, first: int = 0) -> RetryBatch:
    return RetryBatch(rid, list(range(first, first + n)), FP)


# ---------------------------------------------------------------------- inserts


def test_retried_insert_is_answered_from_records(storage: ShardStorage) -> None:
    # Documents without _id get a new ObjectId on every attempt (as the router does):
    # the statement id, not the _id, identifies them.
    first = storage.insert(NS, [enc({"v": i}) for i in range(3)], retry=batch("r1", 3))
    assert (first.inserted, first.retried, first.errors) == (3, 0, [])
    again = storage.insert(NS, [enc({"v": i}) for i in range(3)], retry=batch("r1", 3))
    assert (again.inserted, again.retried, again.errors) == (3, 3, [])
    assert sorted(d["v"] for d in docs(storage)) == [0, 1, 2]
    assert records(storage) == 3


def test_insert_without_retry_id_records_nothing(storage: ShardStorage) -> None:
    storage.insert(NS, [enc({"_id": 1})])
    storage.update(NS, {"_id": 1}, {"$set": {"a": 1}})
    storage.delete(NS, {"_id": 1})
    assert records(storage) == 0


def test_ordered_retry_after_partial_failure(storage: ShardStorage) -> None:
    storage.insert(NS, [enc({"_id": "taken"})])
    attempt = [enc({"_id": "a"}), enc({"_id": "b"}), enc({"_id": "taken"}), enc({"_id": "c"})]
    first = storage.insert(NS, attempt, retry=batch("r2", 4))
    assert first.inserted == 2 and [e.index for e in first.errors] == [2]
    assert first.errors[0].error.code == ErrorCode.DUPLICATE_KEY
    # The retry: a and b come from their records, the failed one runs again and fails.
    again = storage.insert(NS, attempt, retry=batch("r2", 4))
    assert (again.inserted, again.retried) == (2, 2)
    assert [e.index for e in again.errors] == [2]
    assert sorted(d["_id"] for d in docs(storage)) == ["a", "b", "taken"]
    # Once the conflict is gone, a retry completes the rest.
    storage.delete(NS, {"_id": "taken"})
    last = storage.insert(NS, attempt, retry=batch("r2", 4))
    assert (last.inserted, last.retried, last.errors) == (4, 2, [])
    assert sorted(d["_id"] for d in docs(storage)) == ["a", "b", "c", "taken"]


def test_statement_ids_survive_rebatching(storage: ShardStorage) -> None:
    # First attempt: statements 0..3 in one batch; the retry sends 2..5 (re-batched).
    storage.insert(NS, [enc({"_id": i}) for i in range(4)], retry=batch("r3", 4))
    again = storage.insert(NS, [enc({"_id": i}) for i in range(2, 6)], retry=batch("r3", 4, 2))
    assert (again.inserted, again.retried, again.errors) == (4, 2, [])
    assert [d["_id"] for d in docs(storage)] == [0, 1, 2, 3, 4, 5]


def test_reused_request_id_for_another_write_is_refused(storage: ShardStorage) -> None:
    storage.insert(NS, [enc({"_id": 1})], retry=batch("r4", 1))
    with pytest.raises(LauraError) as exc:
        storage.insert(NS, [enc({"_id": 2})], retry=RetryBatch("r4", [0], b"other"))
    assert exc.value.code == ErrorCode.ILLEGAL_OPERATION
    with pytest.raises(LauraError) as exc:
        storage.insert("db.other", [enc({"_id": 2})], retry=batch("r4", 1))
    assert exc.value.code == ErrorCode.ILLEGAL_OPERATION
    with pytest.raises(LauraError) as exc:
        storage.delete(NS, {"_id": 1}, retry=RetryStatement("r4", 0, FP))
    assert exc.value.code == ErrorCode.ILLEGAL_OPERATION
    assert [d["_id"] for d in docs(storage)] == [1]


def test_statement_ids_must_match_documents(storage: ShardStorage) -> None:
    with pytest.raises(LauraError) as exc:
        storage.insert(NS, [enc({"_id": 1}), enc({"_id": 2})], retry=RetryBatch("r5", [0]))
    assert exc.value.code == ErrorCode.BAD_VALUE


# ---------------------------------------------------------------------- updates / deletes


def test_retried_update_applies_once(storage: ShardStorage) -> None:
    storage.insert(NS, [enc({"_id": 1, "n": 0}), enc({"_id": 2, "n": 0})])
    first = storage.update(NS, {}, {"$inc": {"n": 1}}, retry=RetryStatement("u1", 0, FP))
    assert (first.matched, first.modified, first.retried) == (1, 1, False)
    retry = RetryStatement("u1", 0, FP)
    again = storage.update(NS, {}, {"$inc": {"n": 1}}, retry=retry)
    assert (again.matched, again.modified, again.retried, retry.retried) == (1, 1, True, True)
    assert sum(d["n"] for d in docs(storage)) == 1


def test_update_that_matched_nothing_is_not_recorded(storage: ShardStorage) -> None:
    missed = storage.update(NS, {"_id": 7}, {"$set": {"a": 1}}, retry=RetryStatement("u2"))
    assert missed.matched == 0 and records(storage) == 0
    storage.insert(NS, [enc({"_id": 7})])
    hit = storage.update(NS, {"_id": 7}, {"$set": {"a": 1}}, retry=RetryStatement("u2"))
    assert (hit.matched, hit.retried) == (1, False)


def test_retried_upsert_inserts_once(storage: ShardStorage) -> None:
    first = storage.update(
        NS, {"k": "x"}, {"$inc": {"n": 1}}, upsert=True, retry=RetryStatement("u3", 0, FP)
    )
    assert first.upserted
    again = storage.update(
        NS, {"k": "x"}, {"$inc": {"n": 1}}, upsert=True, retry=RetryStatement("u3", 0, FP)
    )
    assert again.retried and again.upserted and again.upserted_id == first.upserted_id
    assert [(d["k"], d["n"]) for d in docs(storage)] == [("x", 1)]


def test_upsert_with_null_id_is_reported_again(storage: ShardStorage) -> None:
    storage.update(NS, {"_id": None}, {"$set": {"a": 1}}, upsert=True, retry=RetryStatement("u4"))
    again = storage.update(
        NS, {"_id": None}, {"$set": {"a": 1}}, upsert=True, retry=RetryStatement("u4")
    )
    assert again.retried and again.upserted and again.upserted_id is None


def test_multi_writes_are_not_retryable(storage: ShardStorage) -> None:
    storage.insert(NS, [enc({"_id": 1, "n": 0}), enc({"_id": 2, "n": 0})])
    for _ in range(2):
        r = storage.update(NS, {}, {"$inc": {"n": 1}}, multi=True, retry=RetryStatement("m1"))
        assert (r.matched, r.retried) == (2, False)
    assert [d["n"] for d in docs(storage)] == [2, 2]
    assert storage.delete(NS, {}, multi=True, retry=RetryStatement("m2")) == 2
    assert records(storage) == 0


def test_retried_delete_deletes_once(storage: ShardStorage) -> None:
    storage.insert(NS, [enc({"_id": i, "g": 1}) for i in range(3)])
    assert storage.delete(NS, {"g": 1}, retry=RetryStatement("d1", 0, FP)) == 1
    retry = RetryStatement("d1", 0, FP)
    assert storage.delete(NS, {"g": 1}, retry=retry) == 1
    assert retry.retried
    assert len(docs(storage)) == 2


def test_history_only_needs_a_record(storage: ShardStorage) -> None:
    storage.insert(NS, [enc({"_id": 1})])
    with pytest.raises(LauraError) as exc:
        storage.delete(NS, {"_id": 1}, retry=RetryStatement("h1", history_only=True))
    assert exc.value.code == ErrorCode.OPERATION_FAILED
    with pytest.raises(LauraError):
        storage.update(
            NS, {"_id": 1}, {"$set": {"a": 1}}, retry=RetryStatement("h1", history_only=True)
        )
    assert docs(storage) == [{"_id": 1}]


def test_failed_update_leaves_no_record(storage: ShardStorage) -> None:
    storage.insert(NS, [enc({"_id": 1, "a": "text"})])
    with pytest.raises(LauraError):
        storage.update(NS, {"_id": 1}, {"$inc": {"a": 1}}, retry=RetryStatement("f1"))
    assert records(storage) == 0


# ---------------------------------------------------------------------- durability, pruning


def test_records_survive_a_reopen(tmp_path: Path) -> None:
    s = ShardStorage(tmp_path)
    s.open()
    s.insert(NS, [enc({"_id": 1, "n": 0})])
    s.update(NS, {"_id": 1}, {"$inc": {"n": 1}}, retry=RetryStatement("p1"))
    s.close()
    s = ShardStorage(tmp_path)
    s.open()
    try:
        again = s.update(NS, {"_id": 1}, {"$inc": {"n": 1}}, retry=RetryStatement("p1"))
        assert again.retried
        assert s.retry_executed("p1", 0) and not s.retry_executed("p1", 1)
        assert [row.doc["n"] for row in s.scan(NS)] == [1]
    finally:
        s.close()


def test_prune_by_age_and_by_count(storage: ShardStorage) -> None:
    for i in range(10):
        storage.insert(NS, [enc({"_id": i})], retry=RetryBatch(f"a{i}", [0]))
    # Nothing is old enough, the cap is not reached.
    assert storage.prune_retry_records(time.time() - 60, 100, 1000) == 0
    # Over the cap: the oldest go first.
    assert storage.prune_retry_records(time.time() - 60, 4, 1000) == 6
    assert [storage.retry_executed(f"a{i}", 0) for i in range(10)] == [False] * 6 + [True] * 4
    # Expired: batch by batch.
    assert storage.prune_retry_records(time.time() + 1, 100, 3) == 3
    assert storage.prune_retry_records(time.time() + 1, 100, 3) == 1
    assert records(storage) == 0
    # A pruned statement runs again (its document exists already: duplicate key).
    again = storage.insert(NS, [enc({"_id": 9})], retry=RetryBatch("a9", [0]))
    assert again.errors and again.errors[0].error.code == ErrorCode.DUPLICATE_KEY


# ---------------------------------------------------------------------- migrations


def test_history_of_a_range_moves_to_another_shard(tmp_path: Path) -> None:
    donor = ShardStorage(tmp_path / "donor")
    recipient = ShardStorage(tmp_path / "recipient")
    donor.open()
    recipient.open()
    try:
        donor.insert(NS, [enc({"_id": i, "sk": i}) for i in range(10)], pattern=SK,
                     retry=RetryBatch("mig", list(range(10)), FP))
        donor.update(NS, {"sk": 7}, {"$inc": {"n": 1}}, retry=RetryStatement("mig-u", 0, FP))
        donor.insert("db.other", [enc({"_id": 1})], retry=RetryBatch("x", [0]))
        keys = KeyRange(SK.key_for_doc({"sk": 5}), SK.key_for_doc({"sk": 100}))
        moved = []
        after = 0
        while True:  # small pages, as MigrateRetryHistory would page
            page, after, more = donor.retry_history_page(NS, keys, after, 4)
            moved += page
            if not more:
                break
        assert sorted((r.retry_id, r.stmt_id) for r in moved) == sorted(
            [("mig", i) for i in range(5, 10)] + [("mig-u", 0)]
        )
        assert all(r.id_key for r in moved)
        assert moved[0].id_key == encode_value(5)
        assert recipient.store_retry_records(moved) == 6
        assert recipient.store_retry_records(moved) == 0  # idempotent
        # The recipient (now holding the range's documents) answers the retries.
        recipient.insert(NS, [enc({"_id": i, "sk": i, "n": int(i == 7)}) for i in range(5, 10)],
                         pattern=SK)
        again = recipient.insert(
            NS, [enc({"_id": i, "sk": i}) for i in range(5, 10)], pattern=SK,
            retry=RetryBatch("mig", list(range(5, 10)), FP),
        )
        assert (again.inserted, again.retried, again.errors) == (5, 5, [])
        upd = recipient.update(NS, {"sk": 7}, {"$inc": {"n": 1}},
                               retry=RetryStatement("mig-u", 0, FP))
        assert upd.retried and upd.matched == 1
        assert [row.doc.get("n") for row in recipient.scan(NS, {"sk": 7})] == [1]
    finally:
        donor.close()
        recipient.close()
