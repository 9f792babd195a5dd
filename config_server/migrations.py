"""MigrateChunk orchestration (config side of the donor-driven migration).

``Migrator.migrate`` validates and persists a "running" row, asks the donor to
``MoveRange`` (the donor clones to the recipient and calls CommitChunkMigration
from its critical section), then finishes the row: committed -> success; anything
else -> "failed", the recipient told to abort (best effort). The work runs in a task
of its own, so a caller that goes away (deadline, cancelled RPC) does not leave the
row behind. ``recover`` handles the rows of a previous process at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import bson

from config_server import metrics
from config_server.catalog import Catalog
from config_server.migration_metadata import CommitResult, MigrationMetadata
from config_server.model import MIGRATION_COMMITTED, MigrationRecord, ShardRecord
from config_server.names import split_namespace
from config_server.shard_notifier import ShardNotifier
from config_server.shard_rpc import MOVE_RANGE_TIMEOUT_S, ShardRpc
from lauradb.cluster import shard_pb2
from lauradb.errors import ErrorCode, LauraError

log = logging.getLogger("lauradb.config.migrations")

ABORT_RETRIES = 5  # RecvChunkAbort to a replica-set recipient that was failing over
ABORT_RETRY_S = 1.0


@dataclass(frozen=True)
class MigrationOutcome:
    record: MigrationRecord
    error: LauraError | None = None

    @property
    def success(self) -> bool:
        return self.record.state == MIGRATION_COMMITTED


def _bounds_text(record: MigrationRecord) -> str:
    try:
        return f"[{bson.decode(record.min_key)}, {bson.decode(record.max_key)})"
    except Exception:
        return "[?, ?)"


class Migrator:
    def __init__(
        self,
        catalog: Catalog,
        notifier: ShardNotifier,
        rpc: ShardRpc,
        *,
        move_timeout: float = MOVE_RANGE_TIMEOUT_S,
    ) -> None:
        self.catalog = catalog
        self.meta = MigrationMetadata(catalog)
        self.notifier = notifier
        self.rpc = rpc
        self.move_timeout = move_timeout
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ migrate

    async def migrate(
        self, chunk_id: str, from_shard: str, to_shard: str, *, reason: str = "manual"
    ) -> MigrationOutcome:
        """Move a chunk; validation errors raise, migration failures are reported
        in the outcome (row "failed", ``error`` set)."""
        start = self.meta.begin(chunk_id, from_shard, to_shard)
        record = start.record
        log.info(
            "migration %s (%s): moving chunk %s of %s %s from %s to %s",
            record.migration_id, reason, record.chunk_id, record.namespace,
            _bounds_text(record), record.from_shard, record.to_shard,
        )
        task = self._spawn(
            self._run(record, start.donor, start.recipient), f"migration-{record.migration_id}"
        )
        result: MigrationOutcome = await asyncio.shield(task)
        return result

    async def _run(
        self, record: MigrationRecord, donor: ShardRecord, recipient: ShardRecord
    ) -> MigrationOutcome:
        database, collection = split_namespace(record.namespace)
        request = shard_pb2.MoveRangeRequest(
            migration_id=record.migration_id,
            database=database,
            collection=collection,
            chunk_id=record.chunk_id,
            min_key=record.min_key,
            max_key=record.max_key,
            epoch=record.epoch,
            to_shard_id=recipient.shard_id,
            to_host=recipient.host,
            to_port=recipient.port,
        )
        error: LauraError | None = None
        documents = 0
        try:
            if recipient.members:  # a replica set: the donor dials its primary
                target = await self.rpc.primary_record(recipient)
                request.to_host, request.to_port = target.host, target.port
            resp = await self.rpc.move_range(donor, request, self.move_timeout)
            documents = int(resp.documents_migrated)
        except LauraError as err:
            error = err
        except Exception as exc:  # a bug: still finish the row
            log.exception("migration %s: MoveRange failed unexpectedly", record.migration_id)
            error = LauraError(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        final = self.meta.finish(
            record.migration_id, documents=documents, error=str(error) if error else ""
        )
        if final.state == MIGRATION_COMMITTED:
            metrics.MIGRATIONS.labels("committed").inc()
            log.info(
                "migration %s committed: chunk %s of %s is on %s (%d documents)",
                final.migration_id, final.chunk_id, final.namespace, final.to_shard,
                final.documents_migrated,
            )
            return MigrationOutcome(final)
        metrics.MIGRATIONS.labels("failed").inc()
        log.warning(
            "migration %s failed: chunk %s of %s stays on %s: %s",
            final.migration_id, final.chunk_id, final.namespace, final.from_shard, final.error,
        )
        await self._abort_receive(recipient, record.migration_id)
        if error is None:
            error = LauraError(ErrorCode.OPERATION_FAILED, final.error)
        return MigrationOutcome(final, error)

    # ------------------------------------------------------------------ commit

    def commit(
        self, migration_id: str, chunk_id: str, from_shard: str, to_shard: str, epoch: str
    ) -> CommitResult:
        """CommitChunkMigration (the donor calls it from its critical section). The
        shards are told to refresh in the background: the donor is waiting."""
        result = self.meta.commit(migration_id, chunk_id, from_shard, to_shard, epoch)
        if result.committed_now:
            record = result.record
            log.info(
                "migration %s: commit of chunk %s of %s: %s -> %s, version (%d, %d)",
                migration_id, record.chunk_id, record.namespace, record.from_shard,
                record.to_shard, result.major, result.minor,
            )
            self._spawn(self._refresh_after(record), f"refresh-{migration_id}")
        return result

    async def _refresh_after(self, record: MigrationRecord) -> None:
        shards = {s.shard_id: s for s in self.catalog.list_shards()}
        targets = [shards[s] for s in (record.from_shard, record.to_shard) if s in shards]
        database, collection = split_namespace(record.namespace)
        failed = await self.notifier.refresh(targets, database, collection)
        if failed:
            log.warning(
                "migration %s committed; shards not refreshed: %s",
                record.migration_id, ", ".join(failed),
            )

    # ------------------------------------------------------------------ recovery

    def recover(self) -> list[MigrationRecord]:
        """Decide the rows left "running" by a previous process (call before serving);
        recipients of the failed ones are told to abort in the background."""
        rows = self.meta.recover()
        if not rows:
            return rows
        shards = {s.shard_id: s for s in self.catalog.list_shards()}
        for row in rows:
            log.warning(
                "migration %s of chunk %s (%s -> %s) was running at restart: %s",
                row.migration_id, row.chunk_id, row.from_shard, row.to_shard, row.state,
            )
            metrics.MIGRATIONS.labels(
                "committed" if row.state == MIGRATION_COMMITTED else "failed"
            ).inc()
            recipient = shards.get(row.to_shard)
            if row.state != MIGRATION_COMMITTED and recipient is not None:
                self._spawn(
                    self._abort_receive(recipient, row.migration_id),
                    f"abort-{row.migration_id}",
                )
        return rows

    async def _abort_receive(self, recipient: ShardRecord, migration_id: str) -> None:
        """Tell the recipient to abort (best effort). A replica-set recipient in a
        failover is told again in the background, at its new primary (the monitor finds
        it), so it drops the received documents without waiting for its own timeouts."""
        if await self.rpc.abort_receive(recipient, migration_id) or not recipient.members:
            return

        async def again() -> None:
            for _ in range(ABORT_RETRIES):
                await asyncio.sleep(ABORT_RETRY_S)
                if await self.rpc.abort_receive(recipient, migration_id):
                    return

        self._spawn(again(), f"abort-{migration_id}")

    def busy_shards(self) -> set[str]:
        return self.meta.busy_shards()

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
