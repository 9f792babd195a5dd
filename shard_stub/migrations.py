"""Chunk migrations of one shard: donor, recipient, range deleter and their state.

``Migrations`` wires the pieces together (see ``migration_donor``,
``migration_recipient``, ``range_deleter``, ``migration_store``) and enforces one
migration per shard at a time, in either role. ``open`` runs the restart recovery
before the shard serves (a donor that was committing re-enters its critical section
first).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from lauradb.cluster import shard_pb2
from lauradb.rpc.channels import ChannelPool
from shard_stub.cursors import CursorManager
from shard_stub.metadata import ShardMetadata
from shard_stub.migration_clients import ConfigClient
from shard_stub.migration_donor import MigrationDonor
from shard_stub.migration_recipient import EnsureIndexes, MigrationRecipient
from shard_stub.migration_settings import MigrationSettings
from shard_stub.migration_store import MigrationStore
from shard_stub.move_primary import PrimaryMoves
from shard_stub.range_deleter import RangeDeleter
from shard_stub.storage import ShardStorage


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
        self.primary = PrimaryMoves(shard_id, storage, metadata, cursors, pool, config_address)
        self._opened = False

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

    async def open(self) -> None:
        """Open the state store and recover interrupted migrations (before serving)."""
        await asyncio.to_thread(self.store.open)
        self._opened = True
        await self.donor.recover()
        await self.recipient.recover()
        self.deleter.start()

    async def close(self) -> None:
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
        return await self.donor.move_range(ns, req, other_busy=self.recipient.busy)

    async def recv_start(
        self, ns: str, req: shard_pb2.RecvChunkStartRequest
    ) -> shard_pb2.RecvChunkStatusResponse:
        return await self.recipient.start(ns, req, other_busy=self.donor.busy)

    def status(self) -> shard_pb2.MigrationStatusResponse:
        return shard_pb2.MigrationStatusResponse(
            migrations=[*self.donor.progress(), *self.recipient.progress()],
            pending_range_deletions=[d.range.describe() for d in self.deleter.pending()],
        )
