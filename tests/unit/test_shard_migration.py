"""The shard side of chunk migrations, in process: the transfer log hooked into the
storage write path, the critical section, fences, the donor's clone/transfer-mods
pages, chunk statistics and split points, and the range deleter waiting for cursors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey

from lauradb.cluster import router_ext_pb2, routing_pb2, shard_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import ChannelPool
from lauradb.sharding.chunk_map import Chunk, ChunkMap, combined_version
from lauradb.sharding.hashing import hash_value
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub.chunk_stats import chunk_stats, split_vector
from shard_stub.critical_section import CriticalSection, RangeBlocked, run_unblocked
from shard_stub.cursors import CursorManager
from shard_stub.metadata import NamespaceMetadata, ShardMetadata
from shard_stub.migration_clients import CallFailed, ConfigClient
from shard_stub.migration_donor import DonorMigration, MigrationDonor
from shard_stub.migration_range import MigrationRange
from shard_stub.migration_settings import MigrationSettings
from shard_stub.migration_store import DonorRecord, MigrationStore, RecipientRecord
from shard_stub.migrations import Migrations
from shard_stub.ownership import KeyRange, OwnedRanges
from shard_stub.range_deleter import RangeDeleter
from shard_stub.reads import find_stream
from shard_stub.storage import ShardStorage
from shard_stub.transfer_log import TransferLog
from shard_stub.write_guard import Fence, NamespaceGuard

NS = "db.c"
SK = ShardKeyPattern(["k"], "range")
ME, OTHER = "s0", "s1"
EPOCH = "e1"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[ShardStorage]:
    s = ShardStorage(tmp_path)
    s.open()
    s.ensure_collection(NS, SK)
    yield s
    s.close()


def rng(lo: Any, hi: Any) -> MigrationRange:
    return MigrationRange.from_bounds(NS, SK, {"k": lo}, {"k": hi})


def owned_by(owner_of_high: str, split: int = 10, major: int = 1) -> OwnedRanges:
    """Chunks [MinKey, split) on ME and [split, MaxKey] on ``owner_of_high``."""
    cmap = ChunkMap(SK, [
        Chunk("lo", {"k": MinKey()}, {"k": split}, ME, major, 0),
        Chunk("hi", {"k": split}, {"k": MaxKey()}, owner_of_high, major, 1),
    ])
    v = cmap.shard_version(ME)
    return OwnedRanges.from_chunk_map(
        cmap, ME, {"namespace": NS, "shard_epoch": EPOCH, "shard_major": v[0], "shard_minor": v[1]}
    )


def docs(*ks: int) -> list[dict[str, Any]]:
    return [{"_id": k, "k": k, "v": 0} for k in ks]


def guard_with(storage: ShardStorage, *items: Any) -> None:
    def change(g: NamespaceGuard) -> None:
        for item in items:
            if isinstance(item, TransferLog):
                g.add_log(item)
            elif isinstance(item, CriticalSection):
                g.add_section(item)
            else:
                g.add_fence(item)

    storage.change_guard(NS, change)


def log_ids(log: TransferLog) -> tuple[set[Any], set[Any]]:
    written, deleted = log.take(10_000)
    return {v for _, v in written}, {v for _, v in deleted}


# ---------------------------------------------------------------------- transfer log


def test_transfer_log_keeps_the_latest_kind_of_write() -> None:
    log = TransferLog(KeyRange(b"a", b"z"))
    log.written(b"1", 1)
    log.written(b"2", 2)
    log.deleted(b"1", 1)  # a delete after a write: only the delete remains
    log.deleted(b"3", 3)
    log.written(b"3", 3)  # re-inserted after the delete
    assert len(log) == 3
    written, deleted = log.take(2)
    assert deleted == [(b"1", 1)] and written == [(b"2", 2)]
    log.put_back([(b"2", 2)])
    written, deleted = log.take(10)
    assert {k for k, _ in written} == {b"2", b"3"} and deleted == []
    assert len(log) == 0 and log.recorded == 5


def test_write_paths_record_ids_in_the_range_only(storage: ShardStorage) -> None:
    storage.insert(NS, docs(1, 15, 25))
    log = TransferLog(rng(10, 20).keys)
    guard_with(storage, log)
    storage.insert(NS, docs(5, 12, 18, 30))
    assert log_ids(log) == ({12, 18}, set())
    storage.update(NS, {}, {"$inc": {"v": 1}}, multi=True)
    assert log_ids(log) == ({12, 15, 18}, set())
    storage.update(NS, {"_id": 19, "k": 19}, {"$set": {"v": 1}}, upsert=True)  # upsert
    storage.update(NS, {"_id": 15}, {"$set": {"v": 1}})  # no change: not a write
    assert log_ids(log) == ({19}, set())
    storage.delete(NS, {"k": {"$gte": 15}}, multi=True)
    assert log_ids(log) == (set(), {15, 18, 19})
    # Replacement and the unguarded paths of other namespaces are not affected.
    storage.update(NS, {"_id": 12}, {"k": 12, "v": "replaced"})
    storage.insert("db.other", docs(12))
    assert log_ids(log) == ({12}, set())
    storage.change_guard(NS, lambda g: g.remove_log(log))
    assert storage.write_guards == {}  # empty guards are dropped: the fast path again


# ---------------------------------------------------------------------- donor pages


def make_donor(storage: ShardStorage, tmp_path: Path, r: MigrationRange) -> tuple[
    MigrationDonor, DonorMigration
]:
    store = MigrationStore(tmp_path)
    store.open()
    metadata = ShardMetadata(ME, _no_fetch)
    cursors = CursorManager()
    deleter = RangeDeleter(storage, store, cursors, metadata)
    donor = MigrationDonor(ME, storage, metadata, store, deleter, cursors, None,  # type: ignore[arg-type]
                           None, MigrationSettings())  # type: ignore[arg-type]
    rec = DonorRecord("m1", r, "hi", EPOCH, OTHER, "127.0.0.1:1", "cloning")
    mig = DonorMigration(rec, CriticalSection(NS, r.keys), TransferLog(r.keys))
    mig.phase = "cloning"
    donor.active["m1"] = mig
    guard_with(storage, mig.log, mig.section)
    mig.snapshot = storage.range_id_keys(NS, r.keys)
    return donor, mig


async def _no_fetch(req: routing_pb2.GetShardMapRequest) -> routing_pb2.GetShardMapResponse:
    raise LauraError(ErrorCode.HOST_UNREACHABLE, "no config server in this test")


def test_clone_pages_and_transfer_mods_send_current_versions(
    storage: ShardStorage, tmp_path: Path
) -> None:
    storage.insert(NS, docs(*range(0, 40)))
    donor, mig = make_donor(storage, tmp_path, rng(10, 30))
    cloned: list[dict[str, Any]] = []
    after = b""
    pages = 0
    while True:
        page = donor.clone_page(shard_pb2.MigrateCloneRequest(
            migration_id="m1", after_id_key=after, batch_size=7))
        cloned += [bson.decode(d) for d in page.documents]
        after = page.last_id_key
        pages += 1
        if page.done:
            break
    assert [d["_id"] for d in cloned] == list(range(10, 30)) and pages == 3
    assert mig.documents_cloned == 20

    storage.update(NS, {"_id": 11}, {"$set": {"v": "new"}})
    storage.insert(NS, [{"_id": 45, "k": 45}, {"_id": 29.5, "k": 29.5}])
    storage.delete(NS, {"_id": 12})
    storage.delete(NS, {"_id": 3})  # outside the range
    # A delete recorded by a transaction that then rolled back must not reach the
    # recipient as a delete: the log only says "look again".
    mig.log.deleted(_id_key(13), 13)
    resp = donor.transfer_mods(shard_pb2.MigrateTransferModsRequest(migration_id="m1"))
    upserts = {d["_id"]: d for d in map(bson.decode, resp.upserts)}
    deleted = {bson.decode(d)["_id"] for d in resp.deleted_ids}
    assert set(upserts) == {11, 29.5, 13} and upserts[11]["v"] == "new"
    assert deleted == {12} and not resp.more
    empty = donor.transfer_mods(shard_pb2.MigrateTransferModsRequest(migration_id="m1"))
    assert not empty.upserts and not empty.deleted_ids
    with pytest.raises(LauraError) as info:
        donor.clone_page(shard_pb2.MigrateCloneRequest(migration_id="nope"))
    assert info.value.code == ErrorCode.OPERATION_FAILED


def _id_key(value: Any) -> bytes:
    from lauradb.bsonkit.keys import encode_value

    return encode_value(value)


# ---------------------------------------------------------------------- critical section


async def test_critical_section_blocks_writes_to_the_range_only(storage: ShardStorage) -> None:
    storage.insert(NS, docs(1, 15, 25))
    section = CriticalSection(NS, rng(10, 20).keys, "db.c [10, 20)")
    guard_with(storage, section)
    section.enter()
    # Writes touching the range raise (nothing written); others proceed.
    with pytest.raises(RangeBlocked):
        await asyncio.to_thread(storage.insert, NS, docs(2, 12))
    with pytest.raises(RangeBlocked):
        await asyncio.to_thread(storage.update, NS, {}, {"$set": {"v": 9}}, multi=True)
    with pytest.raises(RangeBlocked):
        await asyncio.to_thread(storage.delete, NS, {"_id": 15})
    assert storage.count(NS, {"_id": 2}) == 0 and storage.count(NS, {"v": 9}) == 0
    await asyncio.to_thread(storage.insert, NS, docs(3, 30))
    await asyncio.to_thread(storage.update, NS, {"_id": 25}, {"$set": {"v": 1}})
    # Reads are never blocked, in the range included.
    found = [bson.decode(d)["_id"] for d in find_stream(storage, NS, {}).documents]
    assert found == [1, 3, 15, 25, 30]

    # A blocked write waits for the section to end, then runs again.
    async def insert_12() -> Any:
        return await asyncio.to_thread(storage.insert, NS, docs(12))

    waiter = asyncio.create_task(run_unblocked(insert_12, max_wait=5.0))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    section.leave()
    assert (await asyncio.wait_for(waiter, 5)).inserted == 1
    # Still blocked after the bound: a retryable STALE_CONFIG.
    section.enter()
    start = time.monotonic()
    with pytest.raises(LauraError) as info:
        await run_unblocked(insert_12, max_wait=0.3)
    assert info.value.code == ErrorCode.STALE_CONFIG
    assert info.value.details.get("migration_critical_section") is True
    assert 0.25 < time.monotonic() - start < 3
    assert section.blocked_writes >= 4


def test_fence_rejects_writes_placed_before_the_commit(storage: ShardStorage) -> None:
    old = owned_by(ME, major=1)  # ME owned everything at (1, 1)
    new = owned_by(OTHER, major=2)  # after the commit: ME at (2, 0)
    guard_with(storage, Fence(rng(10, MaxKey()).keys, EPOCH, (2, 0), "[10, MaxKey]"))
    with pytest.raises(LauraError) as info:
        storage.insert(NS, docs(12), owned=old)
    assert info.value.code == ErrorCode.STALE_CONFIG
    storage.insert(NS, docs(5), owned=old)  # outside the fenced range
    with pytest.raises(LauraError) as info:
        storage.insert(NS, docs(12), owned=new)  # not owned any more: the usual check
    assert info.value.code == ErrorCode.STALE_CONFIG
    back = owned_by(ME, major=3)  # the range came back later: writes pass the fence
    assert storage.insert(NS, docs(12), owned=back).inserted == 1
    storage.insert(NS, docs(13))  # unversioned writes are not fenced


# ---------------------------------------------------------------------- chunk stats


def sharded_meta(cmap: ChunkMap, pattern: ShardKeyPattern = SK) -> NamespaceMetadata:
    return NamespaceMetadata(
        NS, sharded=True, epoch=EPOCH, collection_version=cmap.version,
        shard_version=cmap.shard_version(ME), pattern=pattern, chunk_map=cmap,
        owned=OwnedRanges.from_chunk_map(cmap, ME),
    )


def test_chunk_stats_counts_documents_and_bytes_per_owned_chunk(storage: ShardStorage) -> None:
    storage.insert(NS, docs(*range(20)))
    storage.insert(NS, [{"_id": "max", "k": MaxKey()}])
    cmap = ChunkMap(SK, [
        Chunk("a", {"k": MinKey()}, {"k": 5}, ME, 1, 0),
        Chunk("b", {"k": 5}, {"k": 15}, OTHER, 1, 1),
        Chunk("c", {"k": 15}, {"k": MaxKey()}, ME, 1, 2),
    ])
    stats = {s.chunk_id: s for s in chunk_stats(storage, sharded_meta(cmap), ME)}
    assert set(stats) == {"a", "c"}
    assert stats["a"].documents == 5 and stats["c"].documents == 6  # MaxKey is in the last
    sizes = [len(bson.encode(d)) for d in docs(0, 1, 2, 3, 4)]
    assert stats["a"].bytes == sum(sizes)
    assert stats["c"].min_bound == {"k": 15}


def test_split_vector_median_every_n_bytes_and_jumbo(storage: ShardStorage) -> None:
    storage.insert(NS, [{"_id": i, "k": i, "pad": "x" * 100} for i in range(100)])
    whole = rng(MinKey(), MaxKey())
    sv = split_vector(storage, SK, whole, 0)
    assert sv.split_points == [{"k": 50}] and not sv.jumbo and sv.documents == 100
    size = sv.bytes
    sv = split_vector(storage, SK, whole, size // 4)  # a point every ~1/8 of the data
    assert len(sv.split_points) in (7, 8)
    ks = [p["k"] for p in sv.split_points]
    assert ks == sorted(ks) and all(0 < k < 100 for k in ks)
    assert split_vector(storage, SK, whole, size * 2).split_points == []  # small enough
    assert split_vector(storage, SK, rng(200, 300), 0).documents == 0
    # Many documents sharing the median key: the point skips past them.
    storage.insert(NS, [{"_id": f"d{i}", "k": 100} for i in range(300)])
    sv = split_vector(storage, SK, rng(100, MaxKey()), 0)
    assert sv.split_points == [] and sv.jumbo  # one key value only
    sv = split_vector(storage, SK, rng(99, MaxKey()), 0)
    assert sv.split_points == [{"k": 100}]  # the only possible point
    sv = split_vector(storage, SK, rng(100, MaxKey()), 1000)
    assert sv.jumbo and sv.documents == 300


def test_split_vector_hashed_points_are_hash_bound_documents(tmp_path: Path) -> None:
    s = ShardStorage(tmp_path)
    s.open()
    hashed = ShardKeyPattern(["k"], "hashed")
    s.ensure_collection(NS, hashed)
    s.insert(NS, [{"_id": i, "k": i} for i in range(101)])
    r = MigrationRange.from_bounds(NS, hashed, {"k": MinKey()}, {"k": MaxKey()})
    sv = split_vector(s, hashed, r, 0)
    (point,) = sv.split_points
    hashes = sorted(hash_value(i) for i in range(101))
    assert point == {"k": hashes[50]} and isinstance(point["k"], Int64)
    s.close()


# ---------------------------------------------------------------------- range deleter


class FakeConfigMap:
    """GetShardMap for ``db.c``: [MinKey, 10) on ME, [10, MaxKey] on OTHER."""

    async def fetch(self, req: routing_pb2.GetShardMapRequest) -> routing_pb2.GetShardMapResponse:
        resp = routing_pb2.GetShardMapResponse(
            version=combined_version(2, 1), sharded=True, epoch=EPOCH, primary_shard=ME,
            shard_key_field="k", shard_key_fields=["k"], strategy=routing_pb2.RANGE,
        )
        mine = resp.shards.add(shard_id=ME, host="h", port=1)
        mine.chunks.add(chunk_id="lo", min_key=bson.encode({"k": MinKey()}),
                        max_key=bson.encode({"k": 10}), version_major=2, version_minor=1)
        other = resp.shards.add(shard_id=OTHER, host="h", port=2)
        other.chunks.add(chunk_id="hi", min_key=bson.encode({"k": 10}),
                         max_key=bson.encode({"k": MaxKey()}), version_major=2, version_minor=0)
        return resp


async def test_range_deleter_waits_for_cursors_opened_before_the_commit(
    storage: ShardStorage, tmp_path: Path
) -> None:
    storage.insert(NS, docs(*range(30)))
    store = MigrationStore(tmp_path)
    store.open()
    metadata = ShardMetadata(ME, FakeConfigMap().fetch)
    cursors = CursorManager()
    deleter = RangeDeleter(storage, store, cursors, metadata, batch_size=7, poll_s=0.02)
    # A cursor opened before the commit (it owned everything) and one opened after.
    before = owned_by(ME, major=1)
    old = cursors.create(NS, find_stream(storage, NS, {}, owned=before), before)
    first, _ = old.next_batch(5)
    cursors.register(old)
    after = owned_by(OTHER, major=2)
    new = cursors.create(NS, find_stream(storage, NS, {}, owned=after), after)
    cursors.register(new)
    moved = rng(10, MaxKey())
    assert cursors.reading_range(NS, moved.keys) == 1
    store.add_range_deletion(moved, EPOCH, "m1")
    deleter.start()
    try:
        await asyncio.sleep(0.3)
        assert storage.count(NS) == 30  # waiting for the old cursor
        rest, _ = old.next_batch(100)
        ids = [bson.decode(d)["_id"] for d in first + rest]
        assert ids == list(range(30))  # the old cursor still returns the moved documents
        cursors.release(old)
        deleter.wake()
        for _ in range(200):
            if not store.range_deletions():
                break
            await asyncio.sleep(0.02)
        assert store.range_deletions() == []
        assert storage.count(NS) == 10 and deleter.deleted_ranges == 1
        # A pending deletion of a range owned here again is dropped, not executed.
        cursors.release(new)
        store.add_range_deletion(rng(MinKey(), 5), EPOCH, "m2")
        deleter.wake()
        for _ in range(200):
            if not store.range_deletions():
                break
            await asyncio.sleep(0.02)
        assert store.range_deletions() == [] and storage.count(NS) == 10
    finally:
        await deleter.stop()
        store.close()


async def test_cancel_overlapping_drops_pending_deletions(
    storage: ShardStorage, tmp_path: Path
) -> None:
    store = MigrationStore(tmp_path)
    store.open()
    deleter = RangeDeleter(storage, store, CursorManager(), ShardMetadata(ME, _no_fetch))
    store.add_range_deletion(rng(10, 20), EPOCH, "m1")
    store.add_range_deletion(rng(30, 40), EPOCH, "m2")
    assert await deleter.cancel_overlapping(NS, rng(15, 35).keys) == 2
    assert await deleter.cancel_overlapping(NS, rng(15, 35).keys) == 0
    store.close()


# ---------------------------------------------------------------------- recipient storage


def test_recipient_upserts_and_deletes_stay_inside_the_range(storage: ShardStorage) -> None:
    storage.insert(NS, docs(1, 15))
    keys = rng(10, 20).keys
    new: list[dict[str, Any]] = [{"_id": 15, "k": 15, "v": "new"}, {"_id": 16, "k": 16}]
    raws = [bson.encode(d) for d in new]
    assert storage.upsert_documents(NS, raws, keys) == 2
    assert storage.count(NS, {"v": "new"}) == 1 and storage.count(NS) == 3
    # The same _id outside the range is another document: refuse to overwrite it.
    with pytest.raises(LauraError) as info:
        storage.upsert_documents(NS, [bson.encode({"_id": 1, "k": 12})], keys)
    assert info.value.code == ErrorCode.DUPLICATE_KEY
    assert storage.delete_ids(NS, [_id_key(1), _id_key(16), _id_key(99)], keys) == 1
    assert storage.delete_range(NS, keys, limit=10) == 1
    assert [r.doc["_id"] for r in storage.scan(NS)] == [1]


# ---------------------------------------------------------------------- restart recovery


class FakeConfigClient(ConfigClient):
    """The config server's migration records: unreachable for ``down`` calls first."""

    def __init__(self, states: dict[str, str], down: int = 0) -> None:
        super().__init__(ChannelPool(), "127.0.0.1:1")
        self.states = states
        self.down = down
        self.calls = 0

    def _maybe_down(self) -> None:
        self.calls += 1
        if self.calls <= self.down:
            raise CallFailed(LauraError(ErrorCode.HOST_UNREACHABLE, "config down"), True)

    async def migration_state(self, migration_id: str) -> Any:
        self._maybe_down()
        state = self.states.get(migration_id)
        return router_ext_pb2.MigrationInfo(migration_id=migration_id, state=state) if state else None

    async def commit(self, *args: Any) -> Any:
        self._maybe_down()
        raise CallFailed(LauraError(ErrorCode.NO_SUCH_KEY, "no such migration"), False)


def recovery_parts(
    storage: ShardStorage, tmp_path: Path, config: ConfigClient
) -> tuple[MigrationStore, Migrations]:
    store_dir = tmp_path / "state"
    store = MigrationStore(store_dir)
    store.open()
    migrations = Migrations(
        shard_id=ME, storage=storage, metadata=ShardMetadata(ME, FakeConfigMap().fetch),
        cursors=CursorManager(), pool=ChannelPool(), config_address="127.0.0.1:1",
        data_dir=store_dir, settings=MigrationSettings(range_delete_poll_s=0.02),
    )
    migrations.config = config
    migrations.donor.config = config
    migrations.recipient.config = config
    return store, migrations


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_donor_restart_resolves_a_committing_migration_before_writing(
    storage: ShardStorage, tmp_path: Path
) -> None:
    storage.insert(NS, docs(*range(20)))
    moved = rng(10, MaxKey())
    config = FakeConfigClient({"m-commit": "committed"}, down=3)
    store, migrations = recovery_parts(storage, tmp_path, config)
    store.save_donor(DonorRecord("m-commit", moved, "hi", EPOCH, OTHER, "127.0.0.1:1",
                                 "committing"))
    store.save_donor(DonorRecord("m-clone", rng(0, 5), "x", EPOCH, OTHER, "127.0.0.1:1",
                                 "cloning"))
    store.close()
    await migrations.open()
    try:
        # The interrupted clone is forgotten; the commit outcome is asked for, and until
        # it is known writes to the range are blocked (others proceed).
        with pytest.raises(RangeBlocked):
            await asyncio.to_thread(storage.insert, NS, docs(15.5))  # type: ignore[arg-type]
        storage.insert(NS, docs(-1))
        await wait_for(lambda: not migrations.donor.active)
        assert migrations.store.donors() == [] and config.calls > 3
        # Committed: the range is deleted (nothing reads it), writes are not blocked.
        await wait_for(lambda: storage.count(NS, {"k": {"$gte": 10}}) == 0)
        assert storage.write_guards == {}
        assert migrations.store.range_deletions() == []
    finally:
        await migrations.close()


async def test_recipient_restart_deletes_what_an_unfinished_receive_left(
    storage: ShardStorage, tmp_path: Path
) -> None:
    store, migrations = recovery_parts(
        storage, tmp_path, FakeConfigClient({"m-done": "failed"})
    )
    storage.insert(NS, docs(12, 13, 35, 36, 1))
    store.save_recipient(RecipientRecord("m-clone", rng(10, 20), EPOCH, OTHER,
                                         "127.0.0.1:1", "steady"))
    store.save_recipient(RecipientRecord("m-done", rng(30, 40), EPOCH, OTHER,
                                         "127.0.0.1:1", "done"))
    store.close()
    await migrations.open()
    try:
        # Never "done": deleted at once. "done": only once the config says it failed.
        assert storage.count(NS, {"k": {"$lt": 20}}) == 1
        await wait_for(lambda: storage.count(NS) == 1)
        await wait_for(lambda: not migrations.recipient.active)
        assert migrations.store.recipients() == []
        assert migrations.recipient.status("m-done").state == "aborted"
    finally:
        await migrations.close()
