"""Migration rows and the chunk-ownership transactions of a migration.

Synchronous, one store transaction each (the event loop serializes them), so the
row's state decides races: a migration commits only while its row is "running",
and a row marked "failed" (orchestrator gave up, or the config server restarted)
can never commit afterwards. See /work/notes/migration_contract.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from bson.objectid import ObjectId

from config_server.catalog import Catalog
from config_server.model import (
    MIGRATION_COMMITTED,
    MIGRATION_FAILED,
    MIGRATION_RUNNING,
    ChunkRecord,
    MigrationRecord,
    ShardRecord,
)
from config_server.names import split_namespace
from config_server.store import MetadataTransaction, retry_conflicts
from lauradb.errors import ErrorCode, LauraError

COMMITTED_KEY = "migrations_committed"
FAILED_KEY = "migrations_failed"
HISTORY_KEPT = 1000  # finished migration rows kept for ListMigrations
RESTART_ERROR = "the config server restarted during the migration"


@dataclass(frozen=True)
class MigrationStart:
    record: MigrationRecord
    donor: ShardRecord
    recipient: ShardRecord


@dataclass(frozen=True)
class CommitResult:
    record: MigrationRecord
    committed_now: bool  # False: it had committed before (idempotent repeat)
    major: int
    minor: int


def recovery_state(record: MigrationRecord, chunk: ChunkRecord | None, epoch: str | None) -> str:
    """What a "running" row found at start-up becomes: committed when the chunk
    (same collection epoch) is owned by the recipient, failed otherwise."""
    if (
        chunk is not None
        and epoch is not None
        and epoch == record.epoch
        and chunk.shard_id == record.to_shard
    ):
        return MIGRATION_COMMITTED
    return MIGRATION_FAILED


class MigrationMetadata:
    def __init__(self, catalog: Catalog, *, clock: Callable[[], float] = time.time) -> None:
        self.catalog = catalog
        self.store = catalog.store
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # ------------------------------------------------------------------ start

    @retry_conflicts
    def begin(self, chunk_id: str, from_shard: str, to_shard: str) -> MigrationStart:
        """Validate a migration and persist its "running" row (one transaction).

        ``from_shard`` empty: the chunk's owner. Errors: CHUNK_NOT_FOUND,
        BAD_VALUE (not the owner), SHARD_NOT_FOUND, ILLEGAL_OPERATION (same shard,
        draining recipient), CONFLICTING_OPERATION_IN_PROGRESS (the chunk or either
        shard is migrating already).
        """
        if not chunk_id:
            raise LauraError(ErrorCode.BAD_VALUE, "chunk_id is required")
        if not to_shard:
            raise LauraError(ErrorCode.BAD_VALUE, "to_shard is required")
        with self.store.transaction() as tx:
            chunk = tx.get_chunk(chunk_id)
            if chunk is None:
                raise LauraError(ErrorCode.CHUNK_NOT_FOUND, f"chunk '{chunk_id}' not found")
            donor_id = from_shard or chunk.shard_id
            if chunk.shard_id != donor_id:
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    f"chunk '{chunk_id}' is owned by shard '{chunk.shard_id}', "
                    f"not '{donor_id}'",
                )
            database, collection = split_namespace(chunk.namespace)
            coll = tx.get_collection(database, collection)
            if coll is None:
                raise LauraError(
                    ErrorCode.NAMESPACE_NOT_FOUND,
                    f"collection '{chunk.namespace}' of chunk '{chunk_id}' is not sharded",
                )
            donor = tx.get_shard(donor_id)
            if donor is None:
                raise LauraError(ErrorCode.SHARD_NOT_FOUND, f"shard '{donor_id}' not found")
            recipient = tx.get_shard(to_shard)
            if recipient is None:
                raise LauraError(ErrorCode.SHARD_NOT_FOUND, f"shard '{to_shard}' not found")
            if to_shard == donor_id:
                raise LauraError(
                    ErrorCode.ILLEGAL_OPERATION,
                    f"chunk '{chunk_id}' is already on shard '{to_shard}'",
                )
            if recipient.draining:
                raise LauraError(
                    ErrorCode.ILLEGAL_OPERATION,
                    f"shard '{to_shard}' is draining (being removed): it cannot receive chunks",
                )
            _check_no_conflict(tx, chunk_id, donor_id, to_shard)
            record = MigrationRecord(
                migration_id=str(ObjectId()),
                namespace=chunk.namespace,
                chunk_id=chunk_id,
                min_key=chunk.min_key,
                max_key=chunk.max_key,
                epoch=coll.epoch,
                from_shard=donor_id,
                to_shard=to_shard,
                started_ms=self._now_ms(),
            )
            tx.put_migration(record)
        return MigrationStart(record, donor, recipient)

    # ------------------------------------------------------------------ commit

    @retry_conflicts
    def commit(
        self,
        migration_id: str,
        chunk_id: str = "",
        from_shard: str = "",
        to_shard: str = "",
        epoch: str = "",
    ) -> CommitResult:
        """CommitChunkMigration: in ONE transaction the chunk goes to the recipient at
        version (collection major + 1, 0), one other chunk of the donor (if any) to
        (major + 1, 1), and the row to "committed". Repeating a committed migration
        answers the same; anything inconsistent fails without changing anything."""
        if not migration_id:
            raise LauraError(ErrorCode.BAD_VALUE, "migration_id is required")
        with self.store.transaction() as tx:
            row = _get(tx, migration_id)
            for name, given, recorded in (
                ("chunk_id", chunk_id, row.chunk_id),
                ("from_shard", from_shard, row.from_shard),
                ("to_shard", to_shard, row.to_shard),
            ):
                if given and given != recorded:
                    raise LauraError(
                        ErrorCode.BAD_VALUE,
                        f"migration {migration_id} has {name} '{recorded}', not '{given}'",
                    )
            if row.state == MIGRATION_COMMITTED:
                chunk = tx.get_chunk(row.chunk_id)
                major, minor = (chunk.major, chunk.minor) if chunk is not None else (0, 0)
                return CommitResult(row, False, major, minor)
            if row.state != MIGRATION_RUNNING:
                raise LauraError(
                    ErrorCode.OPERATION_FAILED,
                    f"migration {migration_id} is {row.state}"
                    + (f" ({row.error})" if row.error else "")
                    + ": it cannot commit",
                )
            database, collection = split_namespace(row.namespace)
            coll = tx.get_collection(database, collection)
            if coll is None:
                raise LauraError(
                    ErrorCode.NAMESPACE_NOT_FOUND,
                    f"collection '{row.namespace}' is no longer sharded",
                )
            if coll.epoch != row.epoch or (epoch and epoch != coll.epoch):
                raise LauraError(
                    ErrorCode.STALE_EPOCH,
                    f"migration {migration_id}: collection '{row.namespace}' has epoch "
                    f"{coll.epoch}, the migration was for {epoch or row.epoch}",
                )
            chunk = tx.get_chunk(row.chunk_id)
            if chunk is None or (chunk.min_key, chunk.max_key) != (row.min_key, row.max_key):
                raise LauraError(
                    ErrorCode.CHUNK_NOT_FOUND,
                    f"chunk '{row.chunk_id}' of migration {migration_id} no longer exists",
                )
            if chunk.shard_id != row.from_shard:
                raise LauraError(
                    ErrorCode.ILLEGAL_OPERATION,
                    f"chunk '{row.chunk_id}' is owned by shard '{chunk.shard_id}', "
                    f"not the donor '{row.from_shard}'",
                )
            if tx.get_shard(row.to_shard) is None:
                raise LauraError(
                    ErrorCode.SHARD_NOT_FOUND, f"recipient shard '{row.to_shard}' not found"
                )
            major, _ = tx.collection_version(row.namespace)
            moved = replace(chunk, shard_id=row.to_shard, major=major + 1, minor=0)
            tx.put_chunk(moved)
            rest = [
                c
                for c in tx.list_chunks(row.namespace, shard_id=row.from_shard)
                if c.chunk_id != chunk.chunk_id
            ]
            if rest:
                tx.put_chunk(replace(rest[0], major=major + 1, minor=1))
            done = replace(row, state=MIGRATION_COMMITTED, finished_ms=self._now_ms())
            tx.put_migration(done)
            tx.bump_counter(COMMITTED_KEY)
            self.catalog.mark_changed(tx)
        return CommitResult(done, True, moved.major, moved.minor)

    # ------------------------------------------------------------------ finish

    @retry_conflicts
    def finish(self, migration_id: str, *, documents: int = 0, error: str = "") -> MigrationRecord:
        """After the donor answered: a committed row records the document count; a
        row still "running" becomes "failed" (with ``error``, or a note that the donor
        claimed success without a commit). Returns the final row."""
        with self.store.transaction() as tx:
            row = _get(tx, migration_id)
            if row.state == MIGRATION_COMMITTED:
                if documents and documents != row.documents_migrated:
                    row = replace(row, documents_migrated=documents)
                    tx.put_migration(row)
                return row
            if row.state != MIGRATION_RUNNING:
                return row
            row = replace(
                row,
                state=MIGRATION_FAILED,
                finished_ms=self._now_ms(),
                error=error or "the donor finished without committing the migration",
            )
            tx.put_migration(row)
            tx.bump_counter(FAILED_KEY)
            tx.prune_migrations(HISTORY_KEPT)
            return row

    @retry_conflicts
    def recover(self) -> list[MigrationRecord]:
        """At start-up: every "running" row (its orchestrator died with the previous
        process) becomes committed (the recipient owns the chunk) or failed. Returns
        the rows after the decision."""
        out: list[MigrationRecord] = []
        with self.store.transaction() as tx:
            for row in tx.list_migrations(states=(MIGRATION_RUNNING,)):
                database, collection = split_namespace(row.namespace)
                coll = tx.get_collection(database, collection)
                state = recovery_state(
                    row, tx.get_chunk(row.chunk_id), coll.epoch if coll is not None else None
                )
                final = replace(
                    row,
                    state=state,
                    finished_ms=self._now_ms(),
                    error="" if state == MIGRATION_COMMITTED else RESTART_ERROR,
                )
                tx.put_migration(final)
                tx.bump_counter(COMMITTED_KEY if state == MIGRATION_COMMITTED else FAILED_KEY)
                out.append(final)
        return out

    # ------------------------------------------------------------------ reads

    def get(self, migration_id: str) -> MigrationRecord:
        if not migration_id:
            raise LauraError(ErrorCode.BAD_VALUE, "migration_id is required")
        with self.store.snapshot() as tx:
            return _get(tx, migration_id)

    def list_migrations(
        self, *, active_only: bool = False, limit: int = 0
    ) -> list[MigrationRecord]:
        if limit < 0:
            raise LauraError(ErrorCode.BAD_VALUE, f"limit must be >= 0, got {limit}")
        states = (MIGRATION_RUNNING,) if active_only else None
        with self.store.snapshot() as tx:
            return tx.list_migrations(states=states, limit=limit)

    def running(self) -> list[MigrationRecord]:
        return self.list_migrations(active_only=True)

    def busy_shards(self) -> set[str]:
        """Shards taking part in a running migration."""
        return {s for m in self.running() for s in (m.from_shard, m.to_shard)}

    def counters(self) -> tuple[int, int]:
        """(committed, failed) migrations, persisted across restarts."""
        with self.store.snapshot() as tx:
            return tx.counter(COMMITTED_KEY), tx.counter(FAILED_KEY)


def _get(tx: MetadataTransaction, migration_id: str) -> MigrationRecord:
    row = tx.get_migration(migration_id)
    if row is None:
        raise LauraError(ErrorCode.NO_SUCH_KEY, f"migration '{migration_id}' not found")
    return row


def _check_no_conflict(tx: MetadataTransaction, chunk_id: str, donor: str, recipient: str) -> None:
    for other in tx.list_migrations(states=(MIGRATION_RUNNING,)):
        if other.chunk_id == chunk_id:
            raise LauraError(
                ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
                f"chunk '{chunk_id}' is already being migrated "
                f"(migration {other.migration_id} to '{other.to_shard}')",
            )
        busy = next((s for s in (donor, recipient) if other.involves(s)), None)
        if busy is not None:
            raise LauraError(
                ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
                f"shard '{busy}' is already taking part in migration {other.migration_id} "
                f"({other.from_shard} -> {other.to_shard}); one migration per shard at a time",
            )
