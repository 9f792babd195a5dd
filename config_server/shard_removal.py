"""RemoveShard by draining (as MongoDB's removeShard).

The first call marks the shard draining ("started"); the balancer then moves its
chunks to the emptiest other shards and hands its databases to other primaries
(databases with unsharded data on it by movePrimary, once its chunks are drained:
see ``balancer`` and ``move_primary``). Later calls report "ongoing" with what remains;
once it owns no chunk, is primary of no database and takes part in no migration,
the call removes it ("completed"). A shard owning nothing is removed at once.
Removing the last (non-draining) shard is refused: ILLEGAL_OPERATION.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from config_server.catalog import Catalog
from config_server.model import MIGRATION_RUNNING, DatabaseRecord
from config_server.store import retry_conflicts
from lauradb.errors import ErrorCode, LauraError

STARTED = "started"
ONGOING = "ongoing"
COMPLETED = "completed"


@dataclass(frozen=True)
class RemovalStatus:
    shard_id: str
    state: str
    remaining_chunks: int = 0
    remaining_databases: int = 0
    jumbo_chunks: int = 0
    message: str = ""


class ShardRemoval:
    def __init__(
        self,
        catalog: Catalog,
        blocked_databases: Callable[[str], list[str]] | None = None,
        *,
        moves_primaries: bool = False,
    ) -> None:
        """``moves_primaries``: the balancer has a ``PrimaryMover`` (the server always
        does); without one, databases with unsharded data block the removal."""
        self.catalog = catalog
        self.store = catalog.store
        self._blocked = blocked_databases or (lambda shard_id: [])
        self.moves_primaries = moves_primaries

    @retry_conflicts
    def request(self, shard_id: str) -> RemovalStatus:
        """One RemoveShard call: start draining, report progress, or complete."""
        if not shard_id:
            raise LauraError(ErrorCode.BAD_VALUE, "shard_id is required")
        with self.store.transaction() as tx:
            shard = tx.get_shard(shard_id)
            if shard is None:
                raise LauraError(ErrorCode.SHARD_NOT_FOUND, f"shard '{shard_id}' not found")
            others = [s for s in tx.list_shards() if s.shard_id != shard_id and not s.draining]
            if not others:
                raise LauraError(
                    ErrorCode.ILLEGAL_OPERATION,
                    f"cannot remove shard '{shard_id}': it is the last shard of the cluster",
                )
            chunks = tx.list_chunks(shard_id=shard_id)
            databases = [d.name for d in tx.list_databases() if d.primary_shard == shard_id]
            migrating = [
                m for m in tx.list_migrations(states=(MIGRATION_RUNNING,)) if m.involves(shard_id)
            ]
            if not chunks and not databases and not migrating:
                tx.delete_shard(shard_id)
                self.catalog.mark_changed(tx)
                return RemovalStatus(
                    shard_id, COMPLETED, message=f"shard '{shard_id}' removed from the cluster"
                )
            first = not shard.draining
            if first:
                tx.put_shard(replace(shard, draining=True))
                self.catalog.mark_changed(tx)
        jumbo = sum(1 for c in chunks if c.jumbo)
        parts = [f"{len(chunks)} chunk(s)", f"{len(databases)} database(s) as primary"]
        if migrating:
            parts.append(f"{len(migrating)} migration(s) in progress")
        message = (
            f"draining shard '{shard_id}' "
            + ("started" if first else "ongoing")
            + ": remaining "
            + ", ".join(parts)
        )
        if jumbo:
            message += (
                f"; {jumbo} jumbo chunk(s) are never moved by the balancer: "
                "move them with MigrateChunk"
            )
        blocked = [d for d in self._blocked(shard_id) if d in databases]
        if blocked and self.moves_primaries:
            message += (
                f"; database(s) {', '.join(blocked)} hold unsharded collections on this "
                "shard: the balancer moves their primary (movePrimary) to another shard "
                "once its chunks are drained (or run MovePrimary to choose the shard)"
            )
        elif blocked:
            message += (
                f"; database(s) {', '.join(blocked)} hold unsharded collections on this "
                "shard and movePrimary is not supported by this balancer: drop or shard them"
            )
        return RemovalStatus(
            shard_id,
            STARTED if first else ONGOING,
            remaining_chunks=len(chunks),
            remaining_databases=len(databases),
            jumbo_chunks=jumbo,
            message=message,
        )

    @retry_conflicts
    def reassign_primary(self, database: str, from_shard: str) -> str | None:
        """Make another (non-draining, fewest databases) shard the primary of a
        database whose primary is ``from_shard``; the new primary, or None when the
        database moved on already or no shard can take it."""
        with self.store.transaction() as tx:
            db = tx.get_database(database)
            if db is None or db.primary_shard != from_shard:
                return None
            candidates = [s.shard_id for s in tx.list_shards() if not s.draining]
            if not candidates:
                return None
            load = dict.fromkeys(candidates, 0)
            for other in tx.list_databases():
                if other.primary_shard in load:
                    load[other.primary_shard] += 1
            target = min(candidates, key=lambda s: (load[s], s))
            tx.put_database(DatabaseRecord(database, target))
            self.catalog.mark_changed(tx)
            return target
