"""The range deleter: deletes the documents of chunks this shard gave away.

A committed migration leaves its range's documents on the donor (orphans, filtered
from every read). Their deletion is persisted (``MigrationStore.range_deletions``,
so it resumes after a restart) and runs in the background, in batches (one short
transaction each, so writes interleave), once

* no open cursor may still return documents of the range: a cursor keeps the
  ownership snapshot it was created with, so one opened before the commit goes on
  returning the moved documents it was going to return; the deletion waits for it
  (``CursorManager.reading_range``), and
* this shard's metadata says it no longer owns any part of the range (refreshed
  from the config server if the cache still says so; a range owned again, or a
  collection dropped or re-created meanwhile (other epoch), is never deleted: the
  deletion is dropped instead).

``cancel_overlapping`` (a recipient starting to receive the range again) removes
pending deletions of that range, waiting for a batch in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from lauradb.aio import wait_event
from lauradb.errors import LauraError
from shard_stub.cursors import CursorManager
from shard_stub.metadata import ShardMetadata
from shard_stub.migration_metrics import RANGE_DELETED_DOCUMENTS, RANGE_DELETIONS_PENDING
from shard_stub.migration_store import MigrationStore, RangeDeletion
from shard_stub.ownership import KeyRange
from shard_stub.storage import ShardStorage

log = logging.getLogger("lauradb.shard.range_deleter")

BATCH_PAUSE_S = 0.002


class RangeDeleter:
    """Background deletion of the persisted ranges, one at a time, in batches."""

    def __init__(
        self,
        storage: ShardStorage,
        store: MigrationStore,
        cursors: CursorManager,
        metadata: ShardMetadata,
        *,
        batch_size: int = 1000,
        poll_s: float = 0.1,
    ) -> None:
        self.storage = storage
        self.store = store
        self.cursors = cursors
        self.metadata = metadata
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.deleted_ranges = 0
        self._wake = asyncio.Event()
        self._batch = asyncio.Lock()  # held while a batch runs
        self._cancelled: set[int] = set()
        self._waiting_logged: set[int] = set()
        self._postponed_logged: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="range deleter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Look at the pending deletions now (one was scheduled, a cursor closed...)."""
        self._wake.set()

    def pending(self) -> list[RangeDeletion]:
        return self.store.range_deletions()

    async def cancel_overlapping(self, ns: str, keys: KeyRange) -> int:
        """Drop the pending deletions of ``ns`` overlapping ``keys`` (after any running batch)."""
        async with self._batch:
            dropped = 0
            for d in self.store.range_deletions():
                if d.range.ns == ns and d.range.keys.overlaps(keys):
                    await asyncio.to_thread(self.store.drop_range_deletion, d.deletion_id)
                    self._cancelled.add(d.deletion_id)
                    dropped += 1
                    log.info(
                        "range deletion of %s cancelled: the range is being received again",
                        d.range.describe(),
                    )
            self._update_gauge()
            return dropped

    # ------------------------------------------------------------------ loop

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            pending = self.store.range_deletions()
            self._update_gauge()
            for d in pending:
                try:
                    if await self._ready(d):
                        await self._delete(d)
                except asyncio.CancelledError:
                    raise
                except LauraError as err:
                    if d.deletion_id not in self._postponed_logged:
                        self._postponed_logged.add(d.deletion_id)
                        log.warning(
                            "range deletion of %s postponed: %s", d.range.describe(), err
                        )
                except Exception:
                    log.exception("range deletion of %s failed", d.range.describe())
            if not pending:
                await self._wake.wait()
                continue
            await wait_event(self._wake, self.poll_s)

    async def _ready(self, d: RangeDeletion) -> bool:
        """Whether ``d`` can run now; drops it when the range must not be deleted."""
        r = d.range
        readers = self.cursors.reading_range(r.ns, r.keys)
        if readers:
            if d.deletion_id not in self._waiting_logged:
                self._waiting_logged.add(d.deletion_id)
                log.info(
                    "range deletion of %s waits for %d cursor(s) opened before the migration",
                    r.describe(), readers,
                )
            return False
        meta = self.metadata.cached(r.database, r.collection)
        if meta is None or meta.epoch != d.epoch or (
            meta.owned is not None and meta.owned.overlaps(r.keys)
        ):
            meta = await self.metadata.refresh(r.database, r.collection)
        if not meta.sharded or meta.epoch != d.epoch:
            await self._drop(d, "the collection was dropped or re-created meanwhile")
            return False
        if meta.owned is not None and meta.owned.overlaps(r.keys):
            await self._drop(d, "this shard owns (part of) the range again")
            return False
        return True

    async def _drop(self, d: RangeDeletion, why: str) -> None:
        log.warning("range deletion of %s dropped: %s", d.range.describe(), why)
        await asyncio.to_thread(self.store.drop_range_deletion, d.deletion_id)
        self._update_gauge()

    async def _delete(self, d: RangeDeletion) -> None:
        r = d.range
        start = time.monotonic()
        total = 0
        while True:
            async with self._batch:
                if d.deletion_id in self._cancelled:
                    return
                n = await asyncio.to_thread(
                    self.storage.delete_range, r.ns, r.keys, self.batch_size
                )
                total += n
                RANGE_DELETED_DOCUMENTS.inc(n)
                if n < self.batch_size:
                    await asyncio.to_thread(self.store.drop_range_deletion, d.deletion_id)
                    break
            await asyncio.sleep(BATCH_PAUSE_S)
        self.deleted_ranges += 1
        self._waiting_logged.discard(d.deletion_id)
        self._update_gauge()
        log.info(
            "range deleted: %s (%d documents in %.2fs, migration %s)",
            r.describe(), total, time.monotonic() - start, d.migration_id,
        )

    def _update_gauge(self) -> None:
        with contextlib.suppress(Exception):
            RANGE_DELETIONS_PENDING.set(len(self.store.range_deletions()))
