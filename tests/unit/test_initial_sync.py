"""Initial sync: snapshot (one read transaction) + restore + apply of later entries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import bson
import pytest

from lauradb.errors import ErrorCode, LauraError
from shard_stub import initial_sync
from shard_stub.index_keys import IndexDef
from shard_stub.oplog import OplogPosition
from shard_stub.retry_records import RetryBatch, RetryStatement
from shard_stub.storage import ShardStorage
from tests.unit.test_oplog import NS, NS2, SK, enc, open_storage, oplog_of, replicate, state


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[ShardStorage]:
    s = open_storage(tmp_path / "p", term=3)
    yield s
    s.close()


@pytest.fixture
def member(tmp_path: Path) -> Iterator[ShardStorage]:
    s = open_storage(tmp_path / "m")
    s.is_primary = False
    yield s
    s.close()


def fill(s: ShardStorage, n: int = 300) -> None:
    s.ensure_collection(NS, SK)
    s.create_index(NS, IndexDef("a_1", (("a", 1),)))
    s.create_index(NS, IndexDef("u_1", (("u", 1),), unique=True, sparse=True))
    s.insert(
        NS,
        [enc({"_id": i, "sk": i % 17, "a": [i, -i] if i % 5 == 0 else i, "u": i,
              "pad": "x" * (i % 50)}) for i in range(n)],
        retry=RetryBatch("fill", list(range(n)), b"fp"),
    )
    s.insert(NS2, [enc({"_id": f"k{i}"}) for i in range(20)])
    s.update(NS, {"_id": 3}, {"$set": {"b": 1}}, retry=RetryStatement("u", 0, b"fp"))


def test_snapshot_restore_then_later_entries_equal_the_primary(
    primary: ShardStorage, member: ShardStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(initial_sync, "CHUNK_DOCS", 64)  # several pages per collection
    monkeypatch.setattr(initial_sync, "RECORDS_PER_CHUNK", 100)
    fill(primary)
    sync_point, chunks = initial_sync.snapshot(primary)
    assert sync_point == oplog_of(primary).last().op_id
    assert chunks.total_documents == 320
    # writes after the snapshot began are not in it (one read transaction) ...
    primary.insert(NS, [enc({"_id": 1000, "sk": 1, "a": 7})])
    primary.delete(NS, {"_id": 4})
    primary.create_index(NS2, IndexDef("z_1", (("z", 1),)))
    primary.drop_index(NS, "a_1")
    primary.update(NS, {"_id": 5}, {"$set": {"a": [1, 2, 3]}})
    seen: list[tuple[int, int]] = []
    initial_sync.restore(member, chunks, sync_point, progress=lambda d, t: seen.append((d, t)))
    assert chunks.documents == 320 and seen[-1] == (320, 320) and len(seen) > 2
    log = oplog_of(member)
    assert log.last() == OplogPosition(sync_point, 3) and log.applied == sync_point
    assert log.term_at(sync_point) == 3 and log.first_op_id() == 0 and not log.sync_pending
    assert member.count(NS) == 300 and member.collection(NS).index("a_1") is not None  # type: ignore[union-attr]
    # ... they arrive through the oplog
    replicate(primary, member)
    assert log.applied == oplog_of(primary).last().op_id
    assert state(member) == state(primary)
    assert member.retry_executed("fill", 299) and member.retry_executed("u", 0)


def test_snapshot_of_a_secondary_stops_at_its_applied_point(
    primary: ShardStorage, member: ShardStorage, tmp_path: Path
) -> None:
    fill(primary, 50)
    replicate(primary, member, through=5)  # the rest appended but not applied
    sync_point, chunks = initial_sync.snapshot(member)
    assert sync_point == 5
    third = open_storage(tmp_path / "third")
    try:
        initial_sync.restore(third, chunks, sync_point)
        assert oplog_of(third).last().op_id == 5
        replicate(primary, third)
        assert state(third) == state(primary)
    finally:
        third.close()


def test_an_interrupted_restore_is_visible_and_wipe_empties(
    primary: ShardStorage, member: ShardStorage
) -> None:
    fill(primary, 30)
    replicate(primary, member)
    sync_point, chunks = initial_sync.snapshot(primary)
    partial = list(chunks)[:-1]  # no end chunk
    with pytest.raises(LauraError) as err:
        initial_sync.restore(member, partial, sync_point)
    assert err.value.code == ErrorCode.OPERATION_FAILED
    assert oplog_of(member).sync_pending
    with pytest.raises(LauraError):  # another sync point's stream
        initial_sync.restore(member, partial, sync_point + 1)
    initial_sync.wipe(member)
    log = oplog_of(member)
    assert member.namespaces() == [] and log.last() == OplogPosition(0, 0)
    assert log.applied == 0 and not log.sync_pending
    assert member._reader().execute("SELECT COUNT(*) FROM retry_records").fetchone()[0] == 0


def test_snapshot_chunks_are_bson_with_a_header(primary: ShardStorage) -> None:
    fill(primary, 10)
    sync_point, chunks = initial_sync.snapshot(primary)
    docs = [bson.decode(c) for c in chunks]
    assert docs[0]["t"] == "header" and docs[0]["sync_point"] == sync_point
    assert docs[-1] == {"t": "end", "documents": 30}
    assert {d["t"] for d in docs} == {"header", "collection", "docs", "retry", "end"}


def test_snapshot_needs_an_oplog(tmp_path: Path) -> None:
    s = open_storage(tmp_path, replicated=False)
    try:
        with pytest.raises(LauraError):
            initial_sync.snapshot(s)
    finally:
        s.close()


def test_initial_sync_copies_node_local_state(primary: ShardStorage, member: ShardStorage) -> None:
    got: list[bytes] = []
    primary.state_sources["migration_state"] = lambda: b"snap"
    member.state_appliers["migration_state"] = got.append
    fill(primary, 5)
    sync_point, chunks = initial_sync.snapshot(primary)
    initial_sync.restore(member, chunks, sync_point)
    assert got == [b"snap"]
    primary.log_state("migration_state", b"later")
    replicate(primary, member)
    assert got == [b"snap", b"later"]
