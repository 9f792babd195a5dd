"""Chunk migrations of one shard: donor, recipient, range deleter and their state.

``Migrations`` wires the pieces together (see ``migration_donor``,
``migration_recipient``, ``range_deleter``, ``migration_store``) and enforces one
migration per shard at a time, in either role. ``open`` runs the restart recovery
before the shard serves (a donor that was committing re-enters its critical section
first).

Replica-set members (``replicate``): the migration state replicates through the oplog
(whole-state snapshots, see ``migration_store``) and only the primary migrates. The
member driver calls ``role_switching`` (worker thread, under the storage write lock,
before a new primary accepts writes: the placement cache is dropped and ``committing``
donations re-enter their critical section) and ``role_changed`` (event loop): on
becoming primary the same recovery as after a restart runs and the range deleter
starts; on stepping down every donor/recipient/deleter task stops and the in-memory
state is forgotten. Migration RPCs wait (bounded) for the step-up recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from lauradb.cluster import shard_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import ChannelPool
from shard_stub.cursors import CursorManager
from shard_stub.metadata import ShardMetadata
from shard_stub.migration_clients import ConfigClient
from shard_stub.migration_donor import MigrationDonor
from shard_stub.migration_recipient import EnsureIndexes, MigrationRecipient
from shard_stub.migration_settings import MigrationSettings
from shard_stub.migration_store import MIGRATION_STATE, MigrationStore
from shard_stub.move_primary import PrimaryMoves
from shard_stub.range_deleter import RangeDeleter
from shard_stub.storage import ShardStorage

log = logging.getLogger("lauradb.shard.migration")

READY_WAIT_S = 10.0  # migration RPCs wait this long for a new primary's recovery


class Migrations:
    """The migration machinery of one shard."""

    def __init__(
        self,
        *,
        shard_id: str,
        storage: ShardStorage,
        metadata: ShardMetadata,
        cursors: CursorManager,
        pool: ChannelPool,
        config_address: str,
        data_dir: str | Path,
        settings: MigrationSettings | None = None,
    ) -> None:
        self.settings = settings or MigrationSettings()
        s = self.settings
        self.store = MigrationStore(data_dir)
        self.config = ConfigClient(pool, config_address)
        self.deleter = RangeDeleter(
            storage, self.store, cursors, metadata,
            batch_size=s.range_delete_batch, poll_s=s.range_delete_poll_s,
        )
        self.donor = MigrationDonor(
            shard_id, storage, metadata, self.store, self.deleter, cursors, pool, self.config, s
        )
        self.recipient = MigrationRecipient(
            shard_id, storage, metadata, self.store, self.deleter, pool, self.config, s
        )
        self.primary = PrimaryMoves(
            shard_id, storage, metadata, cursors, pool, config_address,
            prepared_wait_s=s.prepared_wait_s,
        )
        self.shard_id = shard_id
        self.storage = storage
        self.metadata = metadata
        self._opened = False
        self._replica = False
        self._is_primary = True  # a standalone shard always is
        self._ready = asyncio.Event()  # recovery done while primary
        self._transition: asyncio.Task[None] | None = None

    @property
    def write_wait_s(self) -> float:
        return self.settings.write_wait_s

    def set_ensure_indexes(self, ensure: EnsureIndexes) -> None:
        self.recipient.ensure_indexes = ensure

    def set_address(self, host: str, port: int) -> None:
        """The address other shards reach this one at (sent to recipients)."""
        self.donor.host = host
        self.donor.port = port
        self.primary.host = host
        self.primary.port = port

    def replicate(self, wait_majority: Callable[[], Awaitable[None]]) -> None:
        """This shard is a replica-set member (before ``open``): the state replicates
        through the oplog; migrations run only while primary (``role_changed``).
        ``wait_majority`` blocks until everything written so far is majority-committed."""
        store, storage = self.store, self.storage

        def on_change(raw: bytes) -> None:
            storage.log_state(MIGRATION_STATE, raw)

        store.on_change = on_change
        store.change_scope = self._primary_scope
        storage.state_appliers[MIGRATION_STATE] = store.restore_dump
        storage.state_sources[MIGRATION_STATE] = store.dump
        self.donor.wait_majority = wait_majority
        self.recipient.replication_wait = wait_majority
        self._replica = True
        self._is_primary = self.donor.primary = False

    @contextlib.contextmanager
    def _primary_scope(self) -> Iterator[None]:
        """A migration state change: under the storage write lock, primary only."""
        with self.storage.write_lock():
            if not self.storage.is_primary:
                raise LauraError(
                    ErrorCode.NOT_WRITABLE_PRIMARY,
                    f"shard {self.shard_id}: this member is not the primary; it does not "
                    f"change migration state",
                )
            yield

    async def open(self) -> None:
        """Open the state store and recover interrupted migrations (before serving;
        a replica-set member recovers when it becomes primary)."""
        await asyncio.to_thread(self.store.open)
        self._opened = True
        if not self._replica:
            await self._recover()

    async def _recover(self) -> None:
        await self.donor.recover()
        await self.recipient.recover()
        self.deleter.start()
        self._ready.set()

    # ------------------------------------------------------------------ replica set

    def role_switching(self, primary: bool) -> None:
        """(Replica set; worker thread, storage write lock held, the new role not yet
        visible.) Becoming primary: cached placement may predate commits made by the
        previous primary (drop it: the next request reloads it), and a donation that
        may have committed blocks writes to its range before the first write runs."""
        if not primary or not self._opened:
            return
        for ns in self.metadata.cached_namespaces():
            db, _, coll = ns.partition(".")
            self.metadata.forget(db, coll)
        self.donor.fence_committing()

    def role_changed(self, primary: bool) -> None:
        """(Replica set; event loop.) Start the step-up or step-down work (in order)."""
        if primary == self._is_primary or not self._replica:
            return
        self._is_primary = self.donor.primary = primary
        if not primary:
            self._ready.clear()
        previous = self._transition

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(BaseException):
                    await previous
            try:
                if primary:
                    await self._step_up()
                else:
                    await self._step_down()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("shard %s: migration %s failed", self.shard_id,
                              "step-up recovery" if primary else "step-down")

        self._transition = asyncio.create_task(
            run(), name=f"migrations {'step-up' if primary else 'step-down'}"
        )

    async def _step_up(self) -> None:
        if not self._is_primary or not self._opened:
            return
        try:
            # The oplog gets this member's state as it is (it may hold a change whose
            # entry a kill -9 lost); then the same recovery as after a restart.
            await asyncio.to_thread(self.store.publish)
        except LauraError as err:
            log.info("shard %s: migration recovery skipped: %s", self.shard_id, err.message)
            return
        log.info("shard %s: primary: recovering migrations", self.shard_id)
        await self._recover()

    async def _step_down(self) -> None:
        await self.deleter.stop()
        await self.donor.step_down()
        await self.recipient.step_down()
        log.info("shard %s: no longer primary: migrations stopped", self.shard_id)

    async def _wait_ready(self) -> None:
        if self._ready.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), READY_WAIT_S)
        if not self._ready.is_set():
            raise LauraError(
                ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
                f"shard {self.shard_id} is still recovering its migrations",
            )

    async def close(self) -> None:
        if self._transition is not None:
            self._transition.cancel()
            with contextlib.suppress(BaseException):
                await self._transition
        await self.donor.close()
        await self.recipient.close()
        await self.deleter.stop()
        if self._opened:
            await asyncio.to_thread(self.store.close)

    def on_refresh(self) -> None:
        """Placement metadata was refreshed: migrations waiting on it look again."""
        self.recipient.poke()
        self.deleter.wake()

    async def move_range(
        self, ns: str, req: shard_pb2.MoveRangeRequest
    ) -> shard_pb2.MoveRangeResponse:
        await self._wait_ready()
        return await self.donor.move_range(ns, req, other_busy=self.recipient.busy)

    async def recv_start(
        self, ns: str, req: shard_pb2.RecvChunkStartRequest
    ) -> shard_pb2.RecvChunkStatusResponse:
        await self._wait_ready()
        return await self.recipient.start(ns, req, other_busy=self.donor.busy)

    def status(self) -> shard_pb2.MigrationStatusResponse:
        return shard_pb2.MigrationStatusResponse(
            migrations=[*self.donor.progress(), *self.recipient.progress()],
            pending_range_deletions=[d.range.describe() for d in self.deleter.pending()],
        )
