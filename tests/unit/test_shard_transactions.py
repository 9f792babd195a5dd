"""Shard-side transaction building blocks: the lock table, storage capture (effects
computed and rolled back), applying effects, lock checks, and the txn_rows records."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest

from lauradb.bsonkit.keys import encode_value
from lauradb.cluster import common_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub import initial_sync
from shard_stub.index_keys import IndexDef
from shard_stub.oplog import Oplog
from shard_stub.ownership import KeyRange
from shard_stub.storage import ShardStorage, unique_lock_ns
from shard_stub.transactions.locks import DocumentLocked, LockTable, run_unlocked
from shard_stub.transactions.records import COORDINATOR, OUTCOME, PARTICIPANT, TxnRecords
from shard_stub.transfer_log import TransferLog

NS = "db.c"
SK = ShardKeyPattern(["sk"], "range")
EVERY_KEY = KeyRange(b"", b"\xff" * 16, True)


def enc(doc: dict[str, Any]) -> bytes:
    return bson.encode(doc)


def docs(s: ShardStorage, ns: str = NS) -> dict[Any, dict[str, Any]]:
    return {r.doc["_id"]: r.doc for r in s.scan(ns)}


def idk(v: Any) -> bytes:
    return encode_value(v)


def open_storage(path: Path, replicated: bool = False) -> ShardStorage:
    s = ShardStorage(path)
    s.open()
    if replicated:
        s.oplog = Oplog(s)
        s.oplog_term = 1
    return s


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ShardStorage]:
    s = open_storage(tmp_path / "s")
    s.insert(NS, [enc({"_id": i, "sk": i, "a": i}) for i in range(5)], pattern=SK)
    yield s
    s.close()


# ---------------------------------------------------------------------- lock table


def test_lock_table_check_acquire_release() -> None:
    t = LockTable()
    t.check(NS, b"k")  # nothing locked
    t.acquire("t1", [(NS, b"k", b"s1"), (NS, b"j", None)])
    assert t.holder(NS, b"k") == "t1" and len(t) == 2
    t.check(NS, b"k", "t1")  # its own lock
    with pytest.raises(DocumentLocked) as info:
        t.check(NS, b"k", "t2")
    assert info.value.txn_id == "t1"
    assert t.in_range(NS, KeyRange(b"s", b"t")) == {"t1"}
    assert t.in_range(NS, KeyRange(b"x", b"y")) == set()
    assert t.in_range("db.other", EVERY_KEY) == set()
    assert t.release("t1") == 2 and len(t) == 0
    assert t.release("t1") == 0


def test_wait_released_wakes_on_release() -> None:
    async def main() -> None:
        t = LockTable()
        t.acquire("t1", [(NS, b"k", None)])
        waiter = asyncio.create_task(t.wait_released(NS, b"k", "t1", 10.0))
        await asyncio.sleep(0)
        assert not waiter.done()
        await asyncio.to_thread(t.release, "t1")  # released from a worker thread
        assert await asyncio.wait_for(waiter, 5.0) is True
        t.acquire("t2", [(NS, b"k", None)])
        assert await t.wait_released(NS, b"k", "t2", 0.01) is False
        assert await t.wait_released(NS, b"other", "t2", 0.01) is True

    asyncio.run(main())


def test_run_unlocked_retries_then_conflicts() -> None:
    async def main() -> None:
        t = LockTable()
        t.acquire("t1", [(NS, b"k", None)])
        calls = 0

        async def op() -> str:
            nonlocal calls
            calls += 1
            t.check(NS, b"k")
            return "done"

        async def release_soon() -> None:
            await asyncio.sleep(0)
            t.release("t1")

        releaser = asyncio.create_task(release_soon())
        assert await run_unlocked(op, t, 10.0) == "done"
        await releaser
        assert calls == 2
        t.acquire("t2", [(NS, b"k", None)])
        with pytest.raises(LauraError) as info:
            await run_unlocked(op, t, 0.01)
        assert info.value.code == ErrorCode.WRITE_CONFLICT
        assert info.value.details["locked_by"] == "t2"

    asyncio.run(main())


# ---------------------------------------------------------------------- capture


def test_capture_collects_effects_and_rolls_back(store: ShardStorage) -> None:
    before = docs(store)

    def run() -> list[Any]:
        r1 = store.insert(NS, [enc({"_id": 10, "sk": 10})], pattern=SK)
        r2 = store.update(NS, {"_id": 1}, {"$set": {"a": 100}})
        r3 = store.delete(NS, {"_id": 2})
        r4 = store.locking_read(NS, {"_id": {"$in": [1, 3, 10]}})
        return [r1.inserted, r2.modified, int(r3), [bson.decode(d) for d in r4]]

    out, effects, locked = store.capture("t1", run)
    assert out[:3] == [1, 1, 1]
    # a locking read sees the capture's own writes
    assert sorted(d["_id"] for d in out[3]) == [1, 3, 10]
    assert next(d for d in out[3] if d["_id"] == 1)["a"] == 100
    assert docs(store) == before  # nothing committed
    kinds = [common_pb2.OperationType.Name(e.op_type) for e in effects]
    assert kinds == ["INSERT", "UPDATE", "DELETE"]
    assert bson.decode(effects[1].document)["a"] == 100
    assert bson.decode(effects[2].query) == {"_id": 2}
    assert {(ns, k) for ns, k, _ in locked} == {(NS, idk(i)) for i in (10, 1, 2, 3)}
    assert not store.txn_locks.held_by("t1")  # capture does not lock by itself


def test_apply_effects_applies_in_one_transaction(store: ShardStorage) -> None:
    store.create_index(NS, IndexDef("a_1", (("a", 1),)))
    _, effects, _ = store.capture("t1", lambda: (
        store.update(NS, {"_id": 1}, {"$set": {"a": 100}}),
        store.delete(NS, {"_id": 2}),
        store.insert(NS, [enc({"_id": 11, "sk": 11, "a": 7})], pattern=SK),
    ))
    store.apply_effects("t1", effects, [(OUTCOME, "t1", bson.encode({"state": "COMMITTED"}))])
    d = docs(store)
    assert d[1]["a"] == 100 and 2 not in d and d[11]["a"] == 7
    # the index follows
    assert [r.doc["_id"] for r in store.scan(NS, {"a": 100})] == [1]
    assert [r.doc["_id"] for r in store.scan(NS, {"a": 7})] == [11]
    assert TxnRecords(store).get(OUTCOME, "t1") == {"state": "COMMITTED"}


def test_capture_creates_a_new_collection_that_apply_recreates(tmp_path: Path) -> None:
    s = open_storage(tmp_path)
    try:
        _, effects, _ = s.capture("t1", lambda: s.insert(
            "db.new", [enc({"_id": 1, "sk": 5})], pattern=SK
        ))
        assert s.collection("db.new") is None  # rolled back
        s.apply_effects("t1", effects)
        c = s.collection("db.new")
        assert c is not None and c.pattern == SK
        assert [r.shard_key for r in s.scan("db.new")] == [SK.key_for_doc({"sk": 5})]
    finally:
        s.close()


def test_failed_operation_inside_capture_rolls_back_everything(store: ShardStorage) -> None:
    def run() -> None:
        store.update(NS, {"_id": 1}, {"$set": {"a": 1000}})
        store.update(NS, {"_id": 1}, {"$set": {"sk": 99}})  # shard key change

    with pytest.raises(LauraError) as info:
        store.capture("t1", run)
    assert info.value.code == ErrorCode.SHARD_KEY_IMMUTABLE
    assert docs(store)[1]["a"] == 1
    # the storage is usable afterwards
    store.update(NS, {"_id": 1}, {"$set": {"a": 2}})
    assert docs(store)[1]["a"] == 2


def test_capture_duplicate_key_is_an_error(store: ShardStorage) -> None:
    r, _, _ = store.capture("t1", lambda: store.insert(NS, [enc({"_id": 1, "sk": 1})]))
    assert r.errors and r.errors[0].error.code == ErrorCode.DUPLICATE_KEY


# ---------------------------------------------------------------------- lock checks


def test_ordinary_writes_hit_locked_documents(store: ShardStorage) -> None:
    store.txn_locks.acquire("t1", [(NS, idk(1), None), (NS, idk(50), None)])
    with pytest.raises(DocumentLocked):
        store.update(NS, {"_id": 1}, {"$set": {"a": 9}})
    with pytest.raises(DocumentLocked):
        store.update(NS, {}, {"$set": {"a": 9}}, multi=True)
    with pytest.raises(DocumentLocked):
        store.delete(NS, {"_id": 1})
    with pytest.raises(DocumentLocked):
        store.insert(NS, [enc({"_id": 50, "sk": 50})])  # a prepared insert's _id
    with pytest.raises(DocumentLocked):
        store.update(NS, {"_id": 50}, {"$set": {"a": 1}}, upsert=True)
    assert docs(store)[0]["a"] == 0  # the multi update rolled back entirely
    # other documents are free
    assert store.update(NS, {"_id": 3}, {"$set": {"a": 9}}).modified == 1
    # migration recipients' writes are exempt
    store.upsert_documents(NS, [enc({"_id": 1, "sk": 1, "a": 77})], EVERY_KEY)
    # another transaction's capture conflicts too
    with pytest.raises(DocumentLocked):
        store.capture("t2", lambda: store.locking_read(NS, {"_id": 1}))
    store.txn_locks.release("t1")
    assert store.update(NS, {"_id": 1}, {"$set": {"a": 9}}).modified == 1


def test_unique_index_keys_are_locked(store: ShardStorage) -> None:
    store.create_index(NS, IndexDef("u_1", (("u", 1),), unique=True, sparse=True))
    _, effects, locked = store.capture("t1", lambda: store.update(
        NS, {"_id": 1}, {"$set": {"u": "x"}}
    ))
    assert any(ns == unique_lock_ns(NS, "u_1") for ns, _, _ in locked)
    store.txn_locks.acquire("t1", locked)
    # another write taking the same unique key waits for the transaction
    with pytest.raises(DocumentLocked):
        store.insert(NS, [enc({"_id": 20, "sk": 20, "u": "x"})])
    store.insert(NS, [enc({"_id": 21, "sk": 21, "u": "y"})])
    store.apply_effects("t1", effects)
    store.txn_locks.release("t1")
    assert docs(store)[1]["u"] == "x"


def test_capture_skips_transfer_log_notes_apply_makes_them(store: ShardStorage) -> None:
    tlog = TransferLog(EVERY_KEY)
    store.change_guard(NS, lambda g: g.add_log(tlog))
    _, effects, _ = store.capture("t1", lambda: (
        store.update(NS, {"_id": 1}, {"$set": {"a": 5}}),
        store.delete(NS, {"_id": 2}),
    ))
    assert not _log_ids(tlog)
    store.apply_effects("t1", effects)
    assert _log_ids(tlog) == {idk(1), idk(2)}
    store.change_guard(NS, lambda g: g.remove_log(tlog))


def _log_ids(tlog: TransferLog) -> set[bytes]:
    deleted, written = tlog.take(1000)
    tlog.put_back(written)
    return {k for k, _ in deleted} | {k for k, _ in written}


def test_capture_checks_critical_sections(store: ShardStorage) -> None:
    from shard_stub.critical_section import CriticalSection, RangeBlocked

    async def main() -> None:
        section = CriticalSection(NS, EVERY_KEY)
        section.enter()
        store.change_guard(NS, lambda g: g.add_section(section))
        try:
            with pytest.raises(RangeBlocked):
                store.capture("t1", lambda: store.update(NS, {"_id": 1}, {"$set": {"a": 5}}))
            with pytest.raises(RangeBlocked):
                store.capture("t1", lambda: store.locking_read(NS, {"_id": 1}))
        finally:
            store.change_guard(NS, lambda g: g.remove_section(section))

    asyncio.run(main())


# ---------------------------------------------------------------------- records


def test_txn_rows_replicate_and_copy_in_initial_sync(tmp_path: Path) -> None:
    p = open_storage(tmp_path / "p", replicated=True)
    f = open_storage(tmp_path / "f", replicated=True)
    f.is_primary = False
    try:
        rec = TxnRecords(p)
        assert rec.put(PARTICIPANT, "t1", {"x": 1}) > 0
        rec.put(COORDINATOR, "t2", {"y": 2})
        rec.put(PARTICIPANT, "t3", {"z": 3})
        rec.put(PARTICIPANT, "t3", None)
        assert rec.scan(PARTICIPANT) == [("t1", {"x": 1})]
        assert p.oplog is not None and f.oplog is not None
        f.oplog.append(p.oplog.read(1, max_entries=1000))
        f.oplog.apply_through(f.oplog.last().op_id)
        frec = TxnRecords(f)
        assert frec.scan(PARTICIPANT) == [("t1", {"x": 1})]
        assert frec.get(COORDINATOR, "t2") == {"y": 2}
        # a commit's effects and rows replicate as one transaction's entries
        p.insert(NS, [enc({"_id": 1, "a": 1})])
        _, effects, _ = p.capture("t1", lambda: p.update(NS, {"_id": 1}, {"$set": {"a": 2}}))
        p.apply_effects("t1", effects, [(PARTICIPANT, "t1", None)])
        f.oplog.append(p.oplog.read(f.oplog.last().op_id + 1, max_entries=1000))
        f.oplog.apply_through(f.oplog.last().op_id)
        assert docs(f)[1]["a"] == 2 and frec.scan(PARTICIPANT) == []
        # initial sync copies the rows
        g = open_storage(tmp_path / "g", replicated=True)
        g.is_primary = False
        try:
            sync_point, chunks = initial_sync.snapshot(p)
            initial_sync.restore(g, chunks, sync_point)
            assert TxnRecords(g).get(COORDINATOR, "t2") == {"y": 2}
        finally:
            g.close()
    finally:
        p.close()
        f.close()


def test_records_survive_reopen(tmp_path: Path) -> None:
    s = open_storage(tmp_path)
    TxnRecords(s).put(PARTICIPANT, "t1", {"locks": [{"n": NS, "i": b"k", "s": None}]})
    s.close()
    s = open_storage(tmp_path)
    try:
        assert TxnRecords(s).get(PARTICIPANT, "t1") == {"locks": [{"n": NS, "i": b"k", "s": None}]}
    finally:
        s.close()


def test_capture_on_a_replicated_storage_logs_nothing(tmp_path: Path) -> None:
    import threading

    s = open_storage(tmp_path, replicated=True)
    try:
        s.insert(NS, [enc({"_id": 1, "a": 1})])
        assert s.oplog is not None
        last = s.oplog.last().op_id
        out: list[Any] = []

        def run() -> None:  # a fresh worker thread (no earlier write on it)
            out.append(s.capture("t1", lambda: (
                s.insert(NS, [enc({"_id": 2})]).op_id,
                s.update(NS, {"_id": 1}, {"$set": {"a": 2}}).op_id,
                s.delete(NS, {"_id": 1}).op_id,
            )))

        worker = threading.Thread(target=run)
        worker.start()
        worker.join(10)
        (ids, effects, _), = out
        assert ids == (0, 0, 0) and len(effects) == 3
        assert s.oplog.last().op_id == last  # nothing logged
        op_id = s.apply_effects("t1", effects)
        assert op_id == last + 3
        assert docs(s) == {2: {"_id": 2}}
    finally:
        s.close()
