"""movePrimary orchestration on the config server.

``PrimaryMover.move(db, to_shard)`` validates (database and target exist, the target
is not draining and is not the current primary, no other move of the database
runs), remembers the operation and asks the old primary to ``MovePrimary``: it
blocks writes to the database's unsharded collections, has the new primary clone
them and calls ``CommitMovePrimary`` from its critical section. ``commit`` makes the
change in one metadata transaction (idempotent: a repeated call for a database
already on ``to_shard`` answers committed) and refreshes both shards before it
answers, so the new primary accepts the database when the old one lets writers go.

Running operations are kept in memory: after a config restart, a commit for an
operation this process does not know is refused, so the old primary aborts and
stays primary (nothing is lost).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import bson

from config_server.catalog import Catalog
from config_server.model import DatabaseRecord, ShardRecord
from config_server.shard_notifier import ShardNotifier
from config_server.shard_rpc import MOVE_RANGE_TIMEOUT_S, ShardRpc
from config_server.store import retry_conflicts
from lauradb.cluster import shard_pb2
from lauradb.errors import ErrorCode, LauraError

log = logging.getLogger("lauradb.config.move_primary")


@dataclass(frozen=True)
class PrimaryMove:
    operation_id: str
    database: str
    from_shard: str
    to_shard: str


@dataclass(frozen=True)
class MovePrimaryResult:
    move: PrimaryMove
    collections: list[str]
    documents: int


class PrimaryMover:
    def __init__(
        self,
        catalog: Catalog,
        notifier: ShardNotifier,
        rpc: ShardRpc,
        *,
        timeout: float = MOVE_RANGE_TIMEOUT_S,
    ) -> None:
        self.catalog = catalog
        self.notifier = notifier
        self.rpc = rpc
        self.timeout = timeout
        self.running: dict[str, PrimaryMove] = {}

    def _validate(self, database: str, to_shard: str) -> tuple[PrimaryMove, ShardRecord,
                                                                 ShardRecord]:
        if not database:
            raise LauraError(ErrorCode.BAD_VALUE, "movePrimary: the database is required")
        if not to_shard:
            raise LauraError(ErrorCode.BAD_VALUE, "movePrimary: the target shard is required")
        db = self.catalog.get_database(database)  # NAMESPACE_NOT_FOUND
        target = self.catalog.get_shard(to_shard)  # SHARD_NOT_FOUND
        if target.draining:
            raise LauraError(
                ErrorCode.ILLEGAL_OPERATION,
                f"movePrimary: shard '{to_shard}' is draining and cannot become a primary",
            )
        if db.primary_shard == to_shard:
            raise LauraError(
                ErrorCode.ILLEGAL_OPERATION,
                f"movePrimary: shard '{to_shard}' is already the primary of {database}",
            )
        if database in self.running:
            raise LauraError(
                ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
                f"movePrimary: a move of database {database} is already in progress",
            )
        source = self.catalog.get_shard(db.primary_shard)
        op = PrimaryMove(str(bson.ObjectId()), database, db.primary_shard, to_shard)
        return op, source, target

    async def move(self, database: str, to_shard: str) -> MovePrimaryResult:
        op, source, target = self._validate(database, to_shard)
        self.running[database] = op
        log.info("movePrimary %s: database %s %s -> %s", op.operation_id, database,
                 op.from_shard, op.to_shard)
        try:
            if target.members:  # a replica set: the old primary shard dials its primary
                target = await self.rpc.primary_record(target)
            resp = await self.rpc.move_primary(
                source,
                shard_pb2.MovePrimaryRequest(
                    database=database, to_shard_id=target.shard_id, to_host=target.host,
                    to_port=target.port, operation_id=op.operation_id,
                ),
                self.timeout,
            )
        except LauraError as err:
            log.warning("movePrimary %s of %s failed: %s", op.operation_id, database, err)
            if self.catalog.get_database(database).primary_shard == to_shard:
                # committed, but the old primary's answer was lost
                return MovePrimaryResult(op, [], 0)
            raise
        finally:
            self.running.pop(database, None)
        return MovePrimaryResult(op, list(resp.collections_moved), int(resp.documents_moved))

    @retry_conflicts
    async def commit(
        self, database: str, from_shard: str, to_shard: str, operation_id: str
    ) -> bool:
        """CommitMovePrimary (the old primary calls it from its critical section)."""
        changed = False
        with self.catalog.store.transaction() as tx:
            db = tx.get_database(database)
            if db is None:
                raise LauraError(ErrorCode.NAMESPACE_NOT_FOUND, f"database '{database}' not found")
            if db.primary_shard != to_shard:
                op = self.running.get(database)
                if op is None or op.operation_id != operation_id:
                    raise LauraError(
                        ErrorCode.ILLEGAL_OPERATION,
                        f"CommitMovePrimary: no movePrimary {operation_id!r} of {database} "
                        "is in progress",
                    )
                if db.primary_shard != from_shard or op.to_shard != to_shard:
                    raise LauraError(
                        ErrorCode.ILLEGAL_OPERATION,
                        f"CommitMovePrimary: {database}'s primary is {db.primary_shard}, "
                        f"not {from_shard}",
                    )
                shard = tx.get_shard(to_shard)
                if shard is None:
                    raise LauraError(ErrorCode.SHARD_NOT_FOUND, f"shard '{to_shard}' not found")
                tx.put_database(DatabaseRecord(database, to_shard))
                self.catalog.mark_changed(tx)
                changed = True
        if changed:
            log.info("movePrimary %s committed: %s is the primary of %s", operation_id, to_shard,
                     database)
        targets = [s for s in self.catalog.list_shards() if s.shard_id in (from_shard, to_shard)]
        failed = await self.notifier.refresh(targets, database, "")
        if failed:
            log.warning("movePrimary of %s committed; shards not refreshed: %s", database,
                        ", ".join(failed))
        return True

    def busy(self) -> bool:
        return bool(self.running)
