"""Config server side of migrations: rows, the commit transaction, recovery, the
orchestrator with stand-in shards, shard removal and a balancer round."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import bson
import pytest
from bson.max_key import MaxKey
from bson.min_key import MinKey

from config_server.balancer import Balancer, BalancerSettings
from config_server.catalog import Catalog
from config_server.migration_metadata import (
    RESTART_ERROR,
    MigrationMetadata,
    recovery_state,
)
from config_server.migrations import Migrator
from config_server.model import (
    MIGRATION_COMMITTED,
    MIGRATION_FAILED,
    MIGRATION_RUNNING,
    ChunkRecord,
    MigrationRecord,
    NodeRecord,
    ShardRecord,
    combined_version,
)
from config_server.shard_removal import COMPLETED, ONGOING, STARTED, ShardRemoval
from config_server.store import SCHEMA_VERSION, MetadataStore, SqliteMetadataStore
from lauradb.cluster import shard_pb2
from lauradb.errors import ErrorCode, LauraError


@pytest.fixture
def store(metadata_store: MetadataStore) -> MetadataStore:
    return metadata_store  # both backends (tests/conftest.py)


@pytest.fixture
def catalog(store: MetadataStore) -> Catalog:
    return Catalog(store)


@pytest.fixture
def meta(catalog: Catalog) -> MigrationMetadata:
    return MigrationMetadata(catalog)


def set_draining(catalog: Catalog, shard_id: str) -> None:
    shard = catalog.get_shard(shard_id)
    with catalog.store.transaction() as tx:
        tx.put_shard(replace(shard, draining=True))


def add_shards(catalog: Catalog, n: int) -> list[str]:
    ids = [f"shard{i}" for i in range(n)]
    for i, sid in enumerate(ids):
        catalog.add_shard(sid, "127.0.0.1", 30000 + i)
    return ids


def ranged(catalog: Catalog, points: list[int], db: str = "db", coll: str = "c") -> list[str]:
    """Shard db.c on {a: 1} (primary shard0) and split at ``points``: chunk ids in order."""
    catalog.shard_collection(db, coll, ["a"], "RANGE")
    for p in points:
        chunk = next(
            c for c in catalog.list_chunks(f"{db}.{coll}")
            if _lo(c) < p < _hi(c)
        )
        catalog.split_chunk(chunk.chunk_id, {"a": p})
    return [c.chunk_id for c in catalog.list_chunks(f"{db}.{coll}")]


def _val(raw: bytes) -> float:
    v = bson.decode(raw)["a"]
    if isinstance(v, MinKey):
        return float("-inf")
    if isinstance(v, MaxKey):
        return float("inf")
    return float(v)


def _lo(c: ChunkRecord) -> float:
    return _val(c.min_key)


def _hi(c: ChunkRecord) -> float:
    return _val(c.max_key)


def raises(code: ErrorCode, fn: Any, *args: Any, **kw: Any) -> LauraError:
    with pytest.raises(LauraError) as exc:
        fn(*args, **kw)
    assert exc.value.code == code, exc.value
    return exc.value


def snapshot(store: MetadataStore) -> tuple[Any, ...]:
    with store.snapshot() as tx:
        return (
            tx.list_chunks(),
            tx.list_migrations(),
            tx.topology_version(),
            tx.list_shards(),
            tx.list_databases(),
        )


# ------------------------------------------------------------------------- begin


def test_begin_persists_a_running_row(catalog: Catalog, meta: MigrationMetadata) -> None:
    add_shards(catalog, 3)
    c0, _ = ranged(catalog, [10])
    start = meta.begin(c0, "", "shard1")  # from_shard defaults to the owner
    row = start.record
    assert (row.from_shard, row.to_shard, row.state) == ("shard0", "shard1", MIGRATION_RUNNING)
    assert row.epoch == catalog.get_collection("db", "c").epoch  # type: ignore[union-attr]
    assert bson.decode(row.max_key) == {"a": 10}
    assert (start.donor.shard_id, start.recipient.shard_id) == ("shard0", "shard1")
    assert meta.get(row.migration_id) == row
    assert meta.busy_shards() == {"shard0", "shard1"}
    assert [m.migration_id for m in meta.list_migrations(active_only=True)] == [row.migration_id]


def test_begin_validates(catalog: Catalog, meta: MigrationMetadata) -> None:
    add_shards(catalog, 4)
    c0, c1, _c2 = ranged(catalog, [10, 20])
    before = snapshot(catalog.store)
    raises(ErrorCode.BAD_VALUE, meta.begin, "", "shard0", "shard1")
    raises(ErrorCode.BAD_VALUE, meta.begin, c0, "shard0", "")
    raises(ErrorCode.CHUNK_NOT_FOUND, meta.begin, "nope", "shard0", "shard1")
    raises(ErrorCode.BAD_VALUE, meta.begin, c0, "shard2", "shard1")  # not the owner
    raises(ErrorCode.SHARD_NOT_FOUND, meta.begin, c0, "shard0", "ghost")
    raises(ErrorCode.ILLEGAL_OPERATION, meta.begin, c0, "shard0", "shard0")
    set_draining(catalog, "shard3")
    raises(ErrorCode.ILLEGAL_OPERATION, meta.begin, c0, "shard0", "shard3")
    assert snapshot(catalog.store)[:2] == before[:2]
    meta.begin(c0, "shard0", "shard1")
    e = raises(ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS, meta.begin, c0, "shard0", "shard2")
    assert "already being migrated" in e.message
    # one migration per shard: shard0 is donating, shard1 receiving
    raises(ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS, meta.begin, c1, "shard0", "shard2")
    assert len(meta.running()) == 1


def test_split_of_a_moving_chunk_is_refused(catalog: Catalog, meta: MigrationMetadata) -> None:
    add_shards(catalog, 2)
    (c0,) = ranged(catalog, [])
    meta.begin(c0, "shard0", "shard1")
    before = snapshot(catalog.store)
    raises(ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS, catalog.split_chunk, c0, {"a": 5})
    assert snapshot(catalog.store) == before


# ------------------------------------------------------------------------ commit


def test_commit_moves_the_chunk_and_bumps_versions(
    catalog: Catalog, meta: MigrationMetadata
) -> None:
    add_shards(catalog, 2)
    c0, c1, c2 = ranged(catalog, [10, 20])  # (1,1) (1,3) (1,4) after two splits
    coll = catalog.get_collection("db", "c")
    assert coll is not None
    with catalog.store.snapshot() as tx:
        old_major, old_minor = tx.collection_version("db.c")
    assert (old_major, old_minor) == (1, 4)
    row = meta.begin(c1, "shard0", "shard1").record
    topo = catalog.topology_version()
    result = meta.commit(row.migration_id, c1, "shard0", "shard1", coll.epoch)
    assert result.committed_now and (result.major, result.minor) == (old_major + 1, 0)
    chunks = {c.chunk_id: c for c in catalog.list_chunks("db.c")}
    assert chunks[c1].shard_id == "shard1" and (chunks[c1].major, chunks[c1].minor) == (2, 0)
    bumped = [c for c in chunks.values() if c.shard_id == "shard0" and c.major == 2]
    assert len(bumped) == 1 and bumped[0].minor == 1  # the donor's version changes too
    assert catalog.topology_version() == topo + 1
    assert meta.get(row.migration_id).state == MIGRATION_COMMITTED
    assert meta.counters() == (1, 0)
    assert meta.busy_shards() == set()
    # the shard map: new version, incremental refresh returns exactly the two changes
    view = catalog.shard_map("db", "c")
    assert view.version == combined_version(2, 1)
    delta = catalog.shard_map(
        "db", "c", version=combined_version(old_major, old_minor), epoch=coll.epoch,
        incremental=True,
    )
    assert delta.incremental
    assert {c.chunk_id for c in delta.chunks} == {c1, bumped[0].chunk_id}
    _ = c0, c2


def test_commit_of_the_donors_last_chunk(catalog: Catalog, meta: MigrationMetadata) -> None:
    add_shards(catalog, 2)
    (c0,) = ranged(catalog, [])
    row = meta.begin(c0, "shard0", "shard1").record
    result = meta.commit(row.migration_id)
    assert (result.major, result.minor) == (2, 0)
    assert [c.shard_id for c in catalog.list_chunks("db.c")] == ["shard1"]


def test_commit_is_idempotent(catalog: Catalog, meta: MigrationMetadata) -> None:
    add_shards(catalog, 2)
    c0, _ = ranged(catalog, [10])
    row = meta.begin(c0, "shard0", "shard1").record
    first = meta.commit(row.migration_id, c0, "shard0", "shard1")
    before = snapshot(catalog.store)
    again = meta.commit(row.migration_id, c0, "shard0", "shard1")
    assert not again.committed_now
    assert (again.major, again.minor) == (first.major, first.minor)
    assert snapshot(catalog.store) == before
    assert meta.counters() == (1, 0)


def test_commit_refusals_change_nothing(catalog: Catalog, meta: MigrationMetadata) -> None:
    add_shards(catalog, 3)
    c0, c1 = ranged(catalog, [10])
    row = meta.begin(c0, "shard0", "shard1").record
    before = snapshot(catalog.store)
    raises(ErrorCode.BAD_VALUE, meta.commit, "")
    raises(ErrorCode.NO_SUCH_KEY, meta.commit, "0123456789abcdef01234567")
    raises(ErrorCode.STALE_EPOCH, meta.commit, row.migration_id, epoch="not-the-epoch")
    raises(ErrorCode.BAD_VALUE, meta.commit, row.migration_id, to_shard="shard2")
    raises(ErrorCode.BAD_VALUE, meta.commit, row.migration_id, chunk_id=c1)
    raises(ErrorCode.BAD_VALUE, meta.commit, row.migration_id, from_shard="shard2")
    assert snapshot(catalog.store) == before
    # the chunk changed owner behind the migration's back: refused, nothing changes
    with catalog.store.transaction() as tx:
        chunk = tx.get_chunk(c0)
        assert chunk is not None
        tx.put_chunk(replace(chunk, shard_id="shard2"))
    before = snapshot(catalog.store)
    e = raises(ErrorCode.ILLEGAL_OPERATION, meta.commit, row.migration_id)
    assert "not the donor" in e.message
    assert snapshot(catalog.store) == before


def test_commit_after_failure_is_refused(catalog: Catalog, meta: MigrationMetadata) -> None:
    add_shards(catalog, 2)
    c0, _ = ranged(catalog, [10])
    row = meta.begin(c0, "shard0", "shard1").record
    failed = meta.finish(row.migration_id, error="recipient died")
    assert (failed.state, failed.error) == (MIGRATION_FAILED, "recipient died")
    assert meta.counters() == (0, 1)
    before = snapshot(catalog.store)
    raises(ErrorCode.OPERATION_FAILED, meta.commit, row.migration_id)
    assert snapshot(catalog.store) == before
    assert meta.finish(row.migration_id, error="again").error == "recipient died"


def test_commit_after_drop_and_reshard_is_stale(
    catalog: Catalog, meta: MigrationMetadata
) -> None:
    add_shards(catalog, 2)
    c0, _ = ranged(catalog, [10])
    row = meta.begin(c0, "shard0", "shard1").record
    catalog.drop_collection_metadata("db", "c")
    raises(ErrorCode.NAMESPACE_NOT_FOUND, meta.commit, row.migration_id)
    catalog.shard_collection("db", "c", ["a"], "RANGE")
    raises(ErrorCode.STALE_EPOCH, meta.commit, row.migration_id)


def test_finish_records_documents_of_a_committed_row(
    catalog: Catalog, meta: MigrationMetadata
) -> None:
    add_shards(catalog, 2)
    (c0,) = ranged(catalog, [])
    row = meta.begin(c0, "shard0", "shard1").record
    meta.commit(row.migration_id)
    done = meta.finish(row.migration_id, documents=42)
    assert (done.state, done.documents_migrated) == (MIGRATION_COMMITTED, 42)
    assert meta.get(row.migration_id).documents_migrated == 42
    # a donor that claims success without a commit: failed
    other = meta.begin(c0, "shard1", "shard0").record
    assert meta.finish(other.migration_id).state == MIGRATION_FAILED


def test_list_migrations_newest_first_with_limit(
    catalog: Catalog, meta: MigrationMetadata
) -> None:
    add_shards(catalog, 2)
    (c0,) = ranged(catalog, [])
    ids = []
    for i in range(4):
        frm, to = ("shard0", "shard1") if i % 2 == 0 else ("shard1", "shard0")
        row = meta.begin(c0, frm, to).record
        meta.commit(row.migration_id)
        ids.append(row.migration_id)
    assert [m.migration_id for m in meta.list_migrations()] == ids[::-1]
    assert [m.migration_id for m in meta.list_migrations(limit=2)] == ids[:1:-1]
    assert meta.list_migrations(active_only=True) == []
    raises(ErrorCode.BAD_VALUE, meta.list_migrations, limit=-1)
    raises(ErrorCode.NO_SUCH_KEY, meta.get, "nope")


# ---------------------------------------------------------------------- recovery


def _row() -> MigrationRecord:
    return MigrationRecord(
        migration_id="m", namespace="db.c", chunk_id="c", min_key=b"", max_key=b"",
        epoch="e1", from_shard="a", to_shard="b",
    )


def _chunk(shard: str) -> ChunkRecord:
    return ChunkRecord("c", "db.c", b"", b"", b"", shard, 1, 0)


def test_recovery_state_decisions() -> None:
    assert recovery_state(_row(), _chunk("b"), "e1") == MIGRATION_COMMITTED
    assert recovery_state(_row(), _chunk("a"), "e1") == MIGRATION_FAILED
    assert recovery_state(_row(), None, "e1") == MIGRATION_FAILED  # chunk gone
    assert recovery_state(_row(), _chunk("b"), None) == MIGRATION_FAILED  # dropped
    assert recovery_state(_row(), _chunk("b"), "e2") == MIGRATION_FAILED  # re-sharded


def test_recover_marks_running_rows(catalog: Catalog, meta: MigrationMetadata) -> None:
    add_shards(catalog, 4)
    c0, c1 = ranged(catalog, [10])
    stuck = meta.begin(c0, "shard0", "shard1").record
    with catalog.store.transaction() as tx:  # c1 reached shard3 (as if committed)
        chunk = tx.get_chunk(c1)
        assert chunk is not None
        tx.put_chunk(replace(chunk, shard_id="shard3"))
        tx.put_migration(replace(stuck, migration_id="m2", chunk_id=c1, from_shard="shard2",
                                 to_shard="shard3", max_key=chunk.max_key))
    rows = {r.migration_id: r for r in MigrationMetadata(catalog).recover()}
    assert rows[stuck.migration_id].state == MIGRATION_FAILED
    assert rows[stuck.migration_id].error == RESTART_ERROR
    assert rows["m2"].state == MIGRATION_COMMITTED
    assert meta.running() == []
    assert meta.counters() == (1, 1)
    raises(ErrorCode.OPERATION_FAILED, meta.commit, stuck.migration_id)  # never commits now
    assert MigrationMetadata(catalog).recover() == []


def test_store_upgrades_a_version_2_file(tmp_path: Path) -> None:
    s = SqliteMetadataStore(tmp_path / "old")
    with s.transaction() as tx:
        s._conn.execute("DROP TABLE migrations")
        tx.set_meta("schema_version", "2")
    s.close()
    s = SqliteMetadataStore(tmp_path / "old")
    with s.snapshot() as tx:
        assert tx.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert tx.list_migrations() == []
    s.close()


# ------------------------------------------------------------ orchestrator (fakes)


@dataclass
class FakeNotifier:
    refreshed: list[tuple[str, str, str]] = field(default_factory=list)

    async def refresh(self, shards: Any, database: str, collection: str) -> list[str]:
        self.refreshed += [(s.shard_id, database, collection) for s in shards]
        return []

    async def count_documents(self, shard: Any, database: str, collection: str) -> int | None:
        return 0


@dataclass
class FakeShardRpc:
    """Donors that commit (like a real donor) or fail; stats and split points."""

    migrator: Migrator | None = None
    fail_with: LauraError | None = None
    commit: bool = True
    documents: int = 7
    delay: float = 0.0
    aborts: list[tuple[str, str]] = field(default_factory=list)
    moves: list[shard_pb2.MoveRangeRequest] = field(default_factory=list)
    stats: dict[str, list[shard_pb2.ChunkStat]] = field(default_factory=dict)
    split_points: dict[bytes, bytes] = field(default_factory=dict)  # chunk min_key -> point
    collections: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    async def move_range(
        self, donor: ShardRecord, request: shard_pb2.MoveRangeRequest, timeout: float = 0
    ) -> shard_pb2.MoveRangeResponse:
        self.moves.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        if self.commit:
            assert self.migrator is not None
            self.migrator.commit(
                request.migration_id, request.chunk_id, donor.shard_id, request.to_shard_id,
                request.epoch,
            )
        return shard_pb2.MoveRangeResponse(documents_migrated=self.documents)

    async def abort_receive(self, recipient: ShardRecord, migration_id: str) -> bool:
        self.aborts.append((recipient.shard_id, migration_id))
        return True

    async def chunk_stats(
        self, shard: ShardRecord, database: str, collection: str
    ) -> list[shard_pb2.ChunkStat]:
        return self.stats.get(shard.shard_id, [])

    async def split_vector(
        self, shard: ShardRecord, database: str, collection: str, min_key: bytes, max_key: bytes
    ) -> shard_pb2.SplitVectorResponse:
        point = self.split_points.get(min_key)
        if point is None:
            return shard_pb2.SplitVectorResponse(jumbo=True)
        return shard_pb2.SplitVectorResponse(split_points=[point])

    async def list_collections(self, shard: ShardRecord, database: str) -> list[str]:
        return self.collections.get((shard.shard_id, database), [])


def make_migrator(catalog: Catalog, **kw: Any) -> tuple[Migrator, FakeShardRpc, FakeNotifier]:
    rpc = FakeShardRpc(**kw)
    notifier = FakeNotifier()
    migrator = Migrator(catalog, cast(Any, notifier), cast(Any, rpc))
    rpc.migrator = migrator
    return migrator, rpc, notifier


async def settle(migrator: Migrator) -> None:
    while migrator._tasks:
        await asyncio.gather(*list(migrator._tasks), return_exceptions=True)


async def test_migrate_success_commits_and_refreshes(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    c0, _ = ranged(catalog, [10])
    migrator, rpc, notifier = make_migrator(catalog)
    outcome = await migrator.migrate(c0, "shard0", "shard1")
    assert outcome.success and outcome.error is None
    assert outcome.record.documents_migrated == 7
    request = rpc.moves[0]
    assert (request.database, request.collection, request.to_shard_id) == ("db", "c", "shard1")
    assert request.to_port == 30001 and bson.decode(request.max_key) == {"a": 10}
    await settle(migrator)
    assert sorted(notifier.refreshed) == [("shard0", "db", "c"), ("shard1", "db", "c")]
    assert catalog.get_chunk(c0).shard_id == "shard1"
    assert rpc.aborts == []


async def test_migrate_failure_marks_failed_and_aborts_recipient(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    c0, _ = ranged(catalog, [10])
    boom = LauraError(ErrorCode.HOST_UNREACHABLE, "shard1 is unreachable")
    migrator, rpc, _ = make_migrator(catalog, fail_with=boom)
    outcome = await migrator.migrate(c0, "shard0", "shard1")
    assert not outcome.success and outcome.error is boom
    assert outcome.record.state == MIGRATION_FAILED and "unreachable" in outcome.record.error
    assert rpc.aborts == [("shard1", outcome.record.migration_id)]
    assert catalog.get_chunk(c0).shard_id == "shard0"
    # a donor that answers OK without committing is a failure too
    rpc.fail_with, rpc.commit = None, False
    outcome = await migrator.migrate(c0, "shard0", "shard1")
    assert not outcome.success and outcome.error is not None
    assert outcome.error.code == ErrorCode.OPERATION_FAILED


async def test_migrate_validation_errors_raise(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    c0, _ = ranged(catalog, [10])
    migrator, rpc, _ = make_migrator(catalog)
    with pytest.raises(LauraError) as exc:
        await migrator.migrate(c0, "shard0", "nowhere")
    assert exc.value.code == ErrorCode.SHARD_NOT_FOUND
    assert rpc.moves == [] and migrator.meta.list_migrations() == []


async def test_cancelled_caller_does_not_orphan_the_row(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    c0, _ = ranged(catalog, [10])
    migrator, _, _ = make_migrator(catalog, delay=0.2)
    call = asyncio.create_task(migrator.migrate(c0, "shard0", "shard1"))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await settle(migrator)
    (row,) = migrator.meta.list_migrations()
    assert row.state == MIGRATION_COMMITTED


async def test_concurrent_migrations_on_one_shard_conflict(catalog: Catalog) -> None:
    add_shards(catalog, 3)
    c0, c1 = ranged(catalog, [10])
    migrator, _, _ = make_migrator(catalog, delay=0.1)
    first = asyncio.create_task(migrator.migrate(c0, "shard0", "shard1"))
    await asyncio.sleep(0)
    with pytest.raises(LauraError) as exc:
        await migrator.migrate(c1, "shard0", "shard2")
    assert exc.value.code == ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS
    assert (await first).success


async def test_recover_aborts_recipients(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    c0, _ = ranged(catalog, [10])
    row = MigrationMetadata(catalog).begin(c0, "shard0", "shard1").record
    migrator, rpc, _ = make_migrator(catalog)
    (recovered,) = migrator.recover()
    assert recovered.state == MIGRATION_FAILED
    await settle(migrator)
    assert rpc.aborts == [("shard1", row.migration_id)]


# ------------------------------------------------------------------- removal


def test_remove_shard_drains(catalog: Catalog, meta: MigrationMetadata) -> None:
    add_shards(catalog, 2)
    (c0,) = ranged(catalog, [])  # db primary + chunk on shard0
    removal = ShardRemoval(catalog)
    raises(ErrorCode.SHARD_NOT_FOUND, removal.request, "ghost")
    first = removal.request("shard0")
    assert (first.state, first.remaining_chunks, first.remaining_databases) == (STARTED, 1, 1)
    assert catalog.get_shard("shard0").draining
    assert removal.request("shard0").state == ONGOING
    # a draining shard never becomes a primary nor receives chunks
    assert catalog.ensure_database("db2")[0].primary_shard == "shard1"
    row = meta.begin(c0, "shard0", "shard1").record
    meta.commit(row.migration_id)
    assert removal.reassign_primary("db", "shard0") == "shard1"
    assert removal.reassign_primary("db", "shard0") is None  # moved already
    done = removal.request("shard0")
    assert done.state == COMPLETED
    assert [s.shard_id for s in catalog.list_shards()] == ["shard1"]
    raises(ErrorCode.ILLEGAL_OPERATION, removal.request, "shard1")  # the last shard


def test_remove_shard_waits_for_its_migrations(
    catalog: Catalog, meta: MigrationMetadata
) -> None:
    add_shards(catalog, 4)
    (c0,) = ranged(catalog, [])
    removal = ShardRemoval(catalog, lambda sid: ["db"])
    meta.begin(c0, "shard0", "shard2")
    status = removal.request("shard2")  # receiving: not removable yet
    assert status.state == STARTED and "migration(s) in progress" in status.message
    assert removal.request("shard1").state == COMPLETED  # owns nothing
    status = removal.request("shard0")
    assert "movePrimary is not supported" in status.message
    assert catalog.get_shard("shard2").draining


def test_remove_last_active_shard_is_refused(catalog: Catalog) -> None:
    add_shards(catalog, 1)
    before = snapshot(catalog.store)
    raises(ErrorCode.ILLEGAL_OPERATION, ShardRemoval(catalog).request, "shard0")
    assert snapshot(catalog.store) == before


# ------------------------------------------------------------ balancer round (fakes)


def make_balancer(
    catalog: Catalog, **settings: Any
) -> tuple[Balancer, FakeShardRpc, Migrator]:
    migrator, rpc, notifier = make_migrator(catalog)
    removal = ShardRemoval(catalog)
    balancer = Balancer(
        catalog, migrator, cast(Any, notifier), cast(Any, rpc), removal,
        BalancerSettings(**settings),
    )
    return balancer, rpc, migrator


def stat(chunk: ChunkRecord, size: int) -> shard_pb2.ChunkStat:
    return shard_pb2.ChunkStat(
        chunk_id=chunk.chunk_id, min_key=chunk.min_key, max_key=chunk.max_key, bytes=size
    )


async def test_balancer_round_splits_marks_jumbo_and_balances(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    c0, c1 = ranged(catalog, [10])
    chunks = {c.chunk_id: c for c in catalog.list_chunks("db.c")}
    balancer, rpc, _ = make_balancer(catalog, chunk_size_bytes=100, threshold=1)
    rpc.stats["shard0"] = [stat(chunks[c0], 500), stat(chunks[c1], 500)]
    rpc.split_points[chunks[c0].min_key] = bson.encode({"a": 5})  # c1: single key -> jumbo
    report = await balancer.run_round()
    assert (report.splits, report.jumbo) == (1, 1)
    after = catalog.list_chunks("db.c")
    assert len(after) == 3
    assert [c.chunk_id for c in after if c.jumbo] == [c1]
    # 3 chunks on shard0, 0 on shard1 (threshold 1): one balancing move of a non-jumbo chunk
    assert report.committed == 1
    moved = [c for c in after if catalog.get_chunk(c.chunk_id).shard_id == "shard1"]
    assert len(moved) == 1 and not moved[0].jumbo
    status = balancer.status()
    assert (status.splits, status.migrations_committed, status.rounds) == (1, 1, 1)
    assert status.jumbo_chunks == [c1]
    # the jumbo chunk is not retried; once it fits again it is unmarked
    rpc.stats["shard0"] = [stat(chunks[c1], 500)]
    report = await balancer.run_round()
    assert report.jumbo == 0 and catalog.get_chunk(c1).jumbo
    rpc.stats["shard0"] = [stat(chunks[c1], 50)]
    await balancer.run_round()
    assert not catalog.get_chunk(c1).jumbo


async def test_balancer_drains_and_moves_empty_primaries(catalog: Catalog) -> None:
    add_shards(catalog, 3)
    ranged(catalog, [10, 20])  # 3 chunks, db primary shard0
    catalog.ensure_database("other")  # primary shard1, no collections
    balancer, rpc, _ = make_balancer(catalog, threshold=1)
    rpc.collections[("shard0", "db")] = ["c"]  # only the sharded collection
    ShardRemoval(catalog).request("shard0")
    ShardRemoval(catalog).request("shard1")
    for _ in range(5):
        await balancer.run_round()
    assert {c.shard_id for c in catalog.list_chunks("db.c")} == {"shard2"}
    assert catalog.get_database("db").primary_shard == "shard2"
    assert catalog.get_database("other").primary_shard == "shard2"
    assert ShardRemoval(catalog).request("shard0").state == COMPLETED
    assert ShardRemoval(catalog).request("shard1").state == COMPLETED


async def test_balancer_keeps_primary_with_unsharded_data(catalog: Catalog) -> None:
    add_shards(catalog, 2)
    catalog.ensure_database("db")  # primary shard0
    balancer, rpc, _ = make_balancer(catalog)
    rpc.collections[("shard0", "db")] = ["plain"]
    cast(Any, balancer.notifier).count_documents = _count_three
    ShardRemoval(catalog).request("shard0")
    await balancer.run_round()
    assert catalog.get_database("db").primary_shard == "shard0"
    assert balancer.blocked_databases("shard0") == ["db"]


async def _count_three(shard: Any, database: str, collection: str) -> int:
    return 3


def test_balancer_state_is_persisted(catalog: Catalog) -> None:
    balancer, _, _ = make_balancer(catalog)
    assert balancer.enabled
    balancer.set_enabled(False)
    again, _, _ = make_balancer(catalog)
    assert not again.enabled
    again.set_enabled(True)
    assert make_balancer(catalog)[0].enabled
    assert not make_balancer(catalog, start_enabled=False)[0].enabled  # --no-balancer
    assert not make_balancer(catalog)[0].enabled  # and it stays so until enabled


async def test_balancer_skips_shards_that_are_down(catalog: Catalog) -> None:
    add_shards(catalog, 3)
    ranged(catalog, [10, 20, 30])  # 4 chunks on shard0
    for i, sid in enumerate(["shard1", "shard2"]):
        catalog.register_node(
            NodeRecord(f"n{i}", "127.0.0.1", 30001 + i, 2, tags={"shard_id": sid})
        )
    catalog.set_node_up("n0", False)  # shard1's only process is down
    balancer, rpc, _ = make_balancer(catalog, threshold=1)
    await balancer.run_round()
    assert [m.to_shard_id for m in rpc.moves] == ["shard2"]
