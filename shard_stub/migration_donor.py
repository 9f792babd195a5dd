"""The donor side of a chunk migration (MongoDB's moveChunk, driven by the donor).

``MoveRange`` (from the config server's MigrateChunk):

1. check this shard owns the chunk at that epoch (freshly refreshed metadata);
   persist the migration (phase ``cloning``); hook a transfer log and a (not yet
   active) critical section into the storage write path for the range; snapshot the
   range's ``_id`` keys (``MigrateClone`` pages through that snapshot in ``_id``
   order; documents written later are in the transfer log; ``MigrateRetryHistory``
   pages through the retryable-write records of the range's documents);
2. ``RecvChunkStart`` on the recipient, then poll ``RecvChunkStatus`` until it is
   ``steady`` (clone done, mods drained to a few); a recipient that fails, stops
   answering (``recipient_unreachable_s``) or stops progressing aborts the migration;
3. once no prepared transaction locks a document of the range (bounded wait, see
   ``_enter_critical_section``; else the migration aborts and the balancer retries),
   critical section: writes to the range wait (reads never do); ``RecvChunkCommit``
   (the recipient drains the last mods: ``done``); persist ``committing``; the config
   server's ``CommitChunkMigration``. An uncertain outcome (config unreachable, deadline)
   is resolved by asking ``GetMigrationState`` (re-sending the idempotent commit while
   the config's record is still ``running`` or absent), never guessed; still unknown
   after ``commit_resolve_s``: the section stays active, MoveRange fails, and a
   background task keeps asking;
4. committed: refresh this shard's metadata, fence the range (writes placed with
   older metadata get STALE_CONFIG), leave the critical section (blocked writers
   retry and get STALE_CONFIG), persist the range deletion (atomically with forgetting
   the migration) and answer. Any failure before the commit: ``RecvChunkAbort``, the
   hooks are removed and this shard still owns (and holds) everything.

Restart: a persisted ``committing`` migration re-enters its critical section before
the shard serves and is resolved with the config server in the background; earlier
phases are aborted (the recipient is told, best effort).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lauradb.bsonkit.codec import encode_document
from lauradb.cluster import shard_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import ChannelPool
from lauradb.sharding.chunk_map import Chunk
from shard_stub.critical_section import CriticalSection
from shard_stub.cursors import CursorManager
from shard_stub.metadata import NamespaceMetadata, ShardMetadata
from shard_stub.migration_clients import CallFailed, ConfigClient, ShardPeer
from shard_stub.migration_metrics import CRITICAL_SECTION, DOCUMENTS_CLONED, OUTCOMES, set_phase
from shard_stub.migration_range import MigrationRange
from shard_stub.migration_settings import MigrationSettings
from shard_stub.migration_store import DonorRecord, MigrationStore
from shard_stub.ownership import KeyRange
from shard_stub.range_deleter import RangeDeleter
from shard_stub.retry_records import record_to_proto
from shard_stub.storage import ShardStorage
from shard_stub.transfer_log import TransferLog
from shard_stub.write_guard import Fence, NamespaceGuard

log = logging.getLogger("lauradb.shard.migration.donor")

ROLE = "donor"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_CLONE_BATCH = 10_000
FENCE_TTL_S = 60.0
_EMPTY = KeyRange(b"", b"")
# Refusals that may mean "another attempt is still in flight": treated as uncertain.
_RETRYABLE_REFUSALS = frozenset({ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS})


@dataclass
class DonorMigration:
    """One migration this shard donates."""

    record: DonorRecord
    section: CriticalSection
    log: TransferLog
    version_before: tuple[int, int] = (0, 0)  # this shard's version before the commit
    commit_version: tuple[int, int] = (0, 0)  # the moved chunk's version after it
    phase: str = "starting"
    snapshot: list[bytes] = field(default_factory=list)
    documents_cloned: int = 0
    bytes_cloned: int = 0
    mods_sent: int = 0
    started: float = field(default_factory=time.monotonic)
    next_log_at: int = 0

    @property
    def migration_id(self) -> str:
        return self.record.migration_id

    @property
    def range(self) -> MigrationRange:
        return self.record.range


GuardChange = Callable[[NamespaceGuard], None]


def _adding_section(section: CriticalSection) -> GuardChange:
    def change(guard: NamespaceGuard) -> None:
        guard.add_section(section)

    return change


def _find_chunk(meta: NamespaceMetadata, chunk_id: str) -> Chunk | None:
    if meta.chunk_map is None:
        return None
    return next((c for c in meta.chunk_map.chunks if c.chunk_id == chunk_id), None)


class MigrationDonor:
    """MoveRange, MigrateClone and MigrateTransferMods of one shard."""

    def __init__(
        self,
        shard_id: str,
        storage: ShardStorage,
        metadata: ShardMetadata,
        store: MigrationStore,
        deleter: RangeDeleter,
        cursors: CursorManager,
        pool: ChannelPool,
        config: ConfigClient,
        settings: MigrationSettings,
    ) -> None:
        self.shard_id = shard_id
        self.storage = storage
        self.metadata = metadata
        self.store = store
        self.deleter = deleter
        self.cursors = cursors
        self.pool = pool
        self.config = config
        self.settings = settings
        self.host = ""
        self.port = 0
        self.active: dict[str, DonorMigration] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Replica set (see ``Migrations.replicate``): False while this member is not
        # the primary; ``wait_majority`` blocks until everything written so far is
        # majority-committed (the "committing" state must be before the config commit).
        self.primary = True
        self.wait_majority: Callable[[], Awaitable[None]] | None = None

    @property
    def busy(self) -> bool:
        return bool(self.active)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _set_phase(self, mig: DonorMigration, phase: str) -> None:
        set_phase(ROLE, mig.phase, phase)
        mig.phase = phase

    # ------------------------------------------------------------------ MoveRange

    async def move_range(
        self, ns: str, req: shard_pb2.MoveRangeRequest, other_busy: bool
    ) -> shard_pb2.MoveRangeResponse:
        if not req.migration_id:
            raise LauraError(ErrorCode.BAD_VALUE, "MoveRange needs a migration_id")
        if self.active or other_busy:
            running = ", ".join(self.active) or "a chunk being received"
            raise LauraError(
                ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
                f"shard {self.shard_id} is already migrating ({running})",
            )
        if not req.to_shard_id or req.to_shard_id == self.shard_id:
            raise LauraError(
                ErrorCode.BAD_VALUE, f"invalid recipient shard {req.to_shard_id!r} for MoveRange"
            )
        if not req.to_host or not 0 < req.to_port < 65536:
            raise LauraError(ErrorCode.BAD_VALUE, "MoveRange needs the recipient's host and port")
        placeholder = DonorMigration(
            DonorRecord(req.migration_id, MigrationRange(ns, {}, {}, _EMPTY), req.chunk_id,
                        req.epoch, req.to_shard_id, "", "starting"),
            CriticalSection(ns, _EMPTY), TransferLog(_EMPTY),
        )
        self.active[req.migration_id] = placeholder  # reserved before the first await
        try:
            mig = await self._prepare(ns, req)
        except BaseException:
            self.active.pop(req.migration_id, None)
            raise
        self.active[req.migration_id] = mig
        # The migration runs on its own: a cancelled MoveRange call must not cut it short.
        task = self._spawn(self._run(mig), f"donate {mig.migration_id}")
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled() and not self.primary:
                raise LauraError(
                    ErrorCode.INTERRUPTED_DUE_TO_REPL_STATE_CHANGE,
                    f"migration {req.migration_id}: shard {self.shard_id}'s member stepped "
                    f"down from primary; the migration was abandoned",
                ) from None
            raise

    async def _prepare(self, ns: str, req: shard_pb2.MoveRangeRequest) -> DonorMigration:
        db, coll = ns.split(".", 1)
        meta = await self.metadata.refresh(db, coll)
        if not meta.sharded or meta.pattern is None:
            raise LauraError(ErrorCode.ILLEGAL_OPERATION, f"{ns} is not sharded: nothing to move")
        if req.epoch and req.epoch != meta.epoch:
            raise LauraError(
                ErrorCode.STALE_CONFIG,
                f"{ns}: MoveRange for epoch {req.epoch}, but the collection's epoch is "
                f"{meta.epoch}",
                meta.stale_details(),
            )
        r = MigrationRange.from_bounds(ns, meta.pattern, req.min_key, req.max_key)
        chunk = _find_chunk(meta, req.chunk_id)
        if chunk is None or chunk.shard != self.shard_id:
            owner = f"owned by {chunk.shard}" if chunk is not None else "unknown"
            raise LauraError(
                ErrorCode.CHUNK_NOT_FOUND,
                f"{ns}: chunk {req.chunk_id!r} is not owned by shard {self.shard_id} ({owner})",
            )
        if chunk.min_key != r.keys.lo or chunk.max_key != r.keys.hi:
            raise LauraError(
                ErrorCode.CHUNK_NOT_FOUND,
                f"{ns}: chunk {req.chunk_id!r} has bounds [{chunk.min!r}, {chunk.max!r}), not "
                f"[{r.min_bound!r}, {r.max_bound!r})",
            )
        record = DonorRecord(
            req.migration_id, r, req.chunk_id, meta.epoch, req.to_shard_id,
            f"{req.to_host}:{req.to_port}", "cloning",
        )
        return DonorMigration(
            record, CriticalSection(ns, r.keys, r.describe()), TransferLog(r.keys),
            version_before=meta.shard_version,
        )

    async def _run(self, mig: DonorMigration) -> shard_pb2.MoveRangeResponse:
        rec = mig.record
        r = rec.range
        peer = ShardPeer(self.pool, rec.to_address, self.settings.call_timeout_s)
        committing = False
        self._set_phase(mig, "cloning")
        log.info(
            "migration %s: donating %s (chunk %s) to %s at %s",
            rec.migration_id, r.describe(), rec.chunk_id, rec.to_shard, rec.to_address,
        )
        try:
            await asyncio.to_thread(self.store.save_donor, rec)
            await asyncio.to_thread(self.storage.change_guard, r.ns, self._hook(mig))
            mig.snapshot = await asyncio.to_thread(self.storage.range_id_keys, r.ns, r.keys)
            log.info("migration %s: %d documents to clone", rec.migration_id, len(mig.snapshot))
            await peer.recv_start(self._start_request(mig))
            await self._wait_steady(mig, peer)
            # Critical section: no write to the range from here on (once no prepared
            # transaction locks a document of the range).
            await self._enter_critical_section(mig)
            cached = self.metadata.cached(r.database, r.collection)
            if cached is not None and cached.epoch == rec.epoch:
                mig.version_before = max(mig.version_before, cached.shard_version)
            self._set_phase(mig, "critical")
            await asyncio.to_thread(self.store.set_donor_phase, rec.migration_id, "critical")
            status = await peer.recv_commit(rec.migration_id, self.settings.recv_commit_timeout_s)
            if status.state != "done":
                raise LauraError(
                    ErrorCode.OPERATION_FAILED,
                    f"recipient {rec.to_shard} answered {status.state!r} to RecvChunkCommit "
                    f"({status.failure})",
                )
            docs, size = await asyncio.to_thread(self.storage.range_stats, r.ns, r.keys)
            await asyncio.to_thread(self.store.set_donor_phase, rec.migration_id, "committing")
            if self.wait_majority is not None:
                # A primary elected after a failover must know the migration may have
                # committed (it re-enters the critical section and asks the config
                # server) before the config server can commit it.
                await self.wait_majority()
            self._set_phase(mig, "committing")
            committing = True
            outcome = await self._commit(mig)
        except BaseException as exc:
            if not committing:
                reason = exc.message if isinstance(exc, LauraError) else repr(exc)
                await self._abort(mig, peer, reason)
            elif not isinstance(exc, asyncio.CancelledError):
                # Outcome unknown: keep the critical section until the config server says.
                log.exception("migration %s: commit failed unexpectedly", rec.migration_id)
                self._spawn(self._resolve_in_background(mig), f"resolve {rec.migration_id}")
            raise
        if outcome is None:
            # Unknown even after commit_resolve_s: keep the critical section, keep asking.
            self._spawn(self._resolve_in_background(mig), f"resolve {rec.migration_id}")
            raise LauraError(
                ErrorCode.EXCEEDED_TIME_LIMIT,
                f"migration {rec.migration_id}: the config server's commit outcome is unknown "
                f"after {self.settings.commit_resolve_s:g}s; writes to {r.describe()} stay "
                f"blocked until it is known",
            )
        if not outcome:
            await self._abort(mig, peer, "the config server did not commit the migration")
            raise LauraError(
                ErrorCode.OPERATION_FAILED,
                f"migration {rec.migration_id}: the config server refused the commit",
            )
        section_s = await self._after_commit(mig)
        return shard_pb2.MoveRangeResponse(
            documents_migrated=docs, bytes_migrated=size,
            critical_section_ms=int(section_s * 1000),
        )

    def _hook(self, mig: DonorMigration) -> GuardChange:
        def change(guard: NamespaceGuard) -> None:
            guard.add_log(mig.log)
            guard.add_section(mig.section)

        return change

    def _unhook(self, mig: DonorMigration, fence: Fence | None = None) -> GuardChange:
        def change(guard: NamespaceGuard) -> None:
            guard.remove_log(mig.log)
            guard.remove_section(mig.section)
            if fence is not None:
                guard.add_fence(fence)

        return change

    def _start_request(self, mig: DonorMigration) -> shard_pb2.RecvChunkStartRequest:
        rec = mig.record
        min_raw, max_raw = rec.range.encoded_bounds()
        return shard_pb2.RecvChunkStartRequest(
            migration_id=rec.migration_id, database=rec.range.database,
            collection=rec.range.collection, min_key=min_raw, max_key=max_raw,
            epoch=rec.epoch, from_shard_id=self.shard_id, from_host=self.host,
            from_port=self.port,
        )

    async def _wait_steady(self, mig: DonorMigration, peer: ShardPeer) -> None:
        s = self.settings
        rec = mig.record
        start = time.monotonic()
        last_progress = start
        seen: tuple[int, ...] | None = None
        unreachable_since: float | None = None
        while True:
            now = time.monotonic()
            if now - start > s.max_duration_s:
                raise LauraError(
                    ErrorCode.EXCEEDED_TIME_LIMIT,
                    f"migration {rec.migration_id} did not catch up within {s.max_duration_s:g}s",
                )
            try:
                st = await peer.recv_status(rec.migration_id)
            except CallFailed as err:
                if not err.uncertain:
                    raise
                unreachable_since = unreachable_since or now
                if now - unreachable_since > s.recipient_unreachable_s:
                    raise LauraError(
                        ErrorCode.HOST_UNREACHABLE,
                        f"recipient {rec.to_shard} at {rec.to_address} unreachable for "
                        f"{s.recipient_unreachable_s:g}s: {err.message}",
                    ) from None
                await asyncio.sleep(s.status_poll_s)
                continue
            unreachable_since = None
            if st.state == "steady":
                log.info(
                    "migration %s: recipient steady (%d documents cloned, %d mods applied) "
                    "after %.2fs", rec.migration_id, st.documents_cloned, st.mods_applied,
                    time.monotonic() - start,
                )
                return
            if st.state in ("failed", "aborted"):
                raise LauraError(
                    ErrorCode.OPERATION_FAILED,
                    f"recipient {rec.to_shard} {st.state}: {st.failure or 'no reason given'}",
                )
            progress = (st.documents_cloned, st.mods_applied, mig.documents_cloned, mig.mods_sent)
            if progress != seen:
                seen = progress
                last_progress = now
            elif now - last_progress > s.stall_timeout_s:
                raise LauraError(
                    ErrorCode.EXCEEDED_TIME_LIMIT,
                    f"recipient {rec.to_shard} made no progress for {s.stall_timeout_s:g}s",
                )
            await asyncio.sleep(s.status_poll_s)

    async def _enter_critical_section(self, mig: DonorMigration) -> None:
        """Enter the critical section once no prepared transaction locks a document of
        the range: a chunk with prepared documents does not migrate until they resolve.

        A prepared transaction's effects are applied by its Commit on this shard (an
        ordinary write: the transfer log carries it to the recipient while cloning), so
        the range must not be frozen while one is pending. The section is entered first
        and the lock table read under the storage write lock afterwards: a Prepare after
        that sees the section (its capture checks the write guards) and votes no
        (retryable), one before it holds its locks already, so none slips in between.
        Locks found: the section is left again (blocked writers go on), the donor waits
        for a release and looks again, for at most ``settings.prepared_wait_s``; then
        the migration aborts (CONFLICTING_OPERATION_IN_PROGRESS) and the balancer
        retries it later (a transaction blocked on an unreachable coordinator shard
        could otherwise hold the chunk, and the migration, for ever)."""
        r = mig.range
        locks = self.storage.txn_locks
        wait_s = self.settings.prepared_wait_s
        deadline = time.monotonic() + wait_s

        def locked_in_range() -> set[str]:
            with self.storage.write_lock():
                return locks.in_range(r.ns, r.keys)

        logged = False
        while True:
            mig.section.enter()
            held = await asyncio.to_thread(locked_in_range)
            if not held:
                if logged:
                    log.info("migration %s: prepared transactions resolved; entering the "
                             "critical section", mig.migration_id)
                return
            mig.section.leave()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = ", ".join(sorted(held)[:5]) + (", ..." if len(held) > 5 else "")
                raise LauraError(
                    ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
                    f"migration {mig.migration_id}: {r.describe()} still has documents "
                    f"locked by {len(held)} prepared transaction(s) ({names}) after "
                    f"{wait_s:g}s; the chunk migrates once they resolve (retry later)",
                    {"txn_ids": sorted(held)[:20]},
                )
            if not logged:
                logged = True
                log.info("migration %s: waiting up to %gs for %d prepared transaction(s) "
                         "locking documents of %s", mig.migration_id, wait_s, len(held),
                         r.describe())
            # a release wakes us; look again at least every second regardless
            await locks.wait_any_release(min(remaining, 1.0))

    async def _abort(self, mig: DonorMigration, peer: ShardPeer | None, reason: str) -> None:
        rec = mig.record
        try:
            await asyncio.to_thread(self.storage.change_guard, rec.range.ns, self._unhook(mig))
        finally:
            mig.section.leave()
            mig.log.clear()
            self.active.pop(rec.migration_id, None)
            self._set_phase(mig, "")
        if not self.primary:
            # Stepped down: the state (and the recipient) are the new primary's business.
            log.warning("migration %s abandoned (member stepped down): %s",
                        rec.migration_id, reason)
            return
        with contextlib.suppress(LauraError):
            await asyncio.to_thread(self.store.drop_donor, rec.migration_id)
        OUTCOMES.labels(ROLE, "aborted").inc()
        log.warning("migration %s aborted: %s", rec.migration_id, reason)
        if peer is not None:
            try:
                await peer.recv_abort(rec.migration_id)
            except LauraError as err:
                log.info(
                    "migration %s: could not tell recipient %s to abort: %s",
                    rec.migration_id, rec.to_shard, err.message,
                )

    # ------------------------------------------------------------------ commit

    async def _commit(self, mig: DonorMigration) -> bool | None:
        """The config commit: True committed, False not, None unknown (after the bound)."""
        rec = mig.record
        log.info("migration %s: committing with the config server", rec.migration_id)
        try:
            resp = await self.config.commit(
                rec.migration_id, rec.chunk_id, self.shard_id, rec.to_shard, rec.epoch
            )
            if resp.committed:
                mig.commit_version = (resp.major, resp.minor)
                return True
            log.warning("migration %s: commit answered committed=false", rec.migration_id)
        except CallFailed as err:
            if not err.uncertain and err.code not in _RETRYABLE_REFUSALS:
                log.warning("migration %s: commit refused: %s", rec.migration_id, err.message)
                decided = await self._owner_decides(rec)
                if decided is not None:
                    return decided
            else:
                log.warning(
                    "migration %s: commit outcome uncertain (%s); asking the config server",
                    rec.migration_id, err.message,
                )
        return await self._resolve(mig, time.monotonic() + self.settings.commit_resolve_s)

    async def _resolve(self, mig: DonorMigration, deadline: float | None) -> bool | None:
        """Learn whether the config server committed; None when ``deadline`` passes."""
        rec = mig.record
        delay = 0.1
        while deadline is None or time.monotonic() < deadline:
            try:
                info = await self.config.migration_state(rec.migration_id)
                if info is not None and info.state == "committed":
                    return True
                if info is not None and info.state in ("aborted", "failed"):
                    return False
                # Running, or no record (a MoveRange driven directly): the commit is
                # idempotent, so ask for it again; its answer decides.
                resp = await self.config.commit(
                    rec.migration_id, rec.chunk_id, self.shard_id, rec.to_shard, rec.epoch
                )
                if resp.committed:
                    mig.commit_version = (resp.major, resp.minor)
                    return True
            except CallFailed as err:
                if not err.uncertain and err.code not in _RETRYABLE_REFUSALS:
                    decided = await self._owner_decides(rec)
                    if decided is not None:
                        return decided
                else:
                    log.info("migration %s: config server not answering: %s",
                             rec.migration_id, err.message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        return None

    async def _owner_decides(self, rec: DonorRecord) -> bool | None:
        """After a refused commit, the chunk's owner in the config's map decides (an
        earlier attempt may have committed already); None when the map is unavailable."""
        r = rec.range
        try:
            resp = await self.config.shard_map(r.database, r.collection)
        except CallFailed as err:
            return None if err.uncertain else False
        if not resp.sharded or resp.epoch != rec.epoch:
            return False
        for shard in resp.shards:
            for c in shard.chunks:
                if c.chunk_id == rec.chunk_id:
                    return bool(shard.shard_id == rec.to_shard)
        return False

    async def _after_commit(self, mig: DonorMigration, *, fenced: bool = True) -> float:
        """Refresh, fence, leave the critical section, schedule the range deletion.

        The fence (see ``write_guard``) catches writes that passed their placement check
        before the refresh; it is dropped after ``FENCE_TTL_S`` (no write waits that
        long between its check and its transaction). A restarted donor needs none.
        """
        rec = mig.record
        r = rec.range
        self._set_phase(mig, "committed")
        log.info("migration %s: committed: %s now belongs to %s",
                 rec.migration_id, r.describe(), rec.to_shard)
        try:
            await self.metadata.refresh(r.database, r.collection)
        except LauraError as err:  # the fence keeps stale writes out meanwhile
            log.warning("migration %s: metadata refresh after commit failed: %s",
                        rec.migration_id, err.message)
        deletion_id = await asyncio.to_thread(self.store.donor_committed, rec.migration_id, r, rec.epoch)
        # Writes placed with metadata older than the commit must not touch the range.
        before = (mig.version_before[0], mig.version_before[1] + 1)
        fence = (
            Fence(r.keys, rec.epoch, max(before, mig.commit_version), r.describe())
            if fenced else None
        )
        try:
            await asyncio.to_thread(self.storage.change_guard, r.ns, self._unhook(mig, fence))
        finally:
            section_s = mig.section.leave()
            mig.log.clear()
            self.active.pop(rec.migration_id, None)
            self._set_phase(mig, "")
        CRITICAL_SECTION.observe(section_s)
        OUTCOMES.labels(ROLE, "committed").inc()
        self.deleter.wake()
        if fence is not None:
            self._spawn(self._drop_fence_later(r.ns, fence), "drop fence")
        log.info(
            "migration %s: critical section lasted %.3fs; %d documents cloned in %.2fs; "
            "range deletion %d scheduled",
            rec.migration_id, section_s, mig.documents_cloned,
            time.monotonic() - mig.started, deletion_id,
        )
        return section_s

    async def _drop_fence_later(self, ns: str, fence: Fence) -> None:
        def change(guard: NamespaceGuard) -> None:
            guard.remove_fence(fence)

        try:
            await asyncio.sleep(FENCE_TTL_S)
        finally:  # also when a step-down cancels the wait
            await asyncio.to_thread(self.storage.change_guard, ns, change)

    async def _resolve_in_background(self, mig: DonorMigration, restarted: bool = False) -> None:
        rec = mig.record
        self.active[rec.migration_id] = mig
        self._set_phase(mig, "committing")
        outcome = await self._resolve(mig, None)
        if outcome:
            await self._after_commit(mig, fenced=not restarted)
        else:
            peer = ShardPeer(self.pool, rec.to_address, self.settings.call_timeout_s)
            await self._abort(mig, peer, "the config server did not commit the migration")

    # ------------------------------------------------------------------ recovery

    def fence_committing(self) -> None:
        """Re-enter the critical section of every persisted ``committing`` migration
        (worker thread; on a replica-set member at step-up, under the storage write lock
        before the member accepts writes): the config server may have committed it."""
        for rec in self.store.donors():
            if rec.phase != "committing" or rec.migration_id in self.active:
                continue
            mig = DonorMigration(
                rec, CriticalSection(rec.range.ns, rec.range.keys, rec.range.describe()),
                TransferLog(rec.range.keys),
            )
            mig.section.enter()
            self.storage.change_guard(rec.range.ns, _adding_section(mig.section))
            self.active[rec.migration_id] = mig

    async def step_down(self) -> None:
        """This member is no longer primary: stop every migration task and forget the
        in-memory state (the persisted state is the new primary's, via the oplog)."""
        self.primary = False
        await self.close()
        for mig in list(self.active.values()):
            try:
                await asyncio.to_thread(
                    self.storage.change_guard, mig.range.ns, self._unhook(mig)
                )
            finally:
                mig.section.leave()
                mig.log.clear()
                self._set_phase(mig, "")
        self.active.clear()

    async def recover(self) -> None:
        """Before serving (or on becoming primary): re-enter the critical section of
        migrations that were committing; abort the others (resolution and notices run
        in the background)."""
        await asyncio.to_thread(self.fence_committing)
        for rec in self.store.donors():
            peer = ShardPeer(self.pool, rec.to_address, self.settings.call_timeout_s)
            if rec.phase != "committing":
                log.warning(
                    "migration %s (%s) interrupted in phase %s by a restart or failover: aborted",
                    rec.migration_id, rec.range.describe(), rec.phase,
                )
                await asyncio.to_thread(self.store.drop_donor, rec.migration_id)
                OUTCOMES.labels(ROLE, "aborted").inc()
                self._spawn(self._notify_abort(peer, rec.migration_id), "abort notice")
                continue
            mig = self.active.get(rec.migration_id)
            if mig is None:  # fenced above
                continue
            log.warning(
                "migration %s (%s) was committing when the shard stopped (or its primary "
                "changed): writes to the range are blocked until the config server's "
                "outcome is known",
                rec.migration_id, rec.range.describe(),
            )
            self._spawn(
                self._resolve_in_background(mig, restarted=True), f"resolve {rec.migration_id}"
            )

    async def _notify_abort(self, peer: ShardPeer, migration_id: str) -> None:
        for _ in range(10):
            try:
                await peer.recv_abort(migration_id)
                return
            except CallFailed as err:
                if not err.uncertain:
                    return
            await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ recipient's pulls

    def _get(self, migration_id: str) -> DonorMigration:
        mig = self.active.get(migration_id)
        if mig is None or mig.phase in ("starting", "committed"):
            raise LauraError(
                ErrorCode.OPERATION_FAILED,
                f"shard {self.shard_id} has no active migration {migration_id!r} (aborted?)",
            )
        return mig

    def clone_page(self, req: shard_pb2.MigrateCloneRequest) -> shard_pb2.MigrateCloneResponse:
        """The next page of the range's documents in ``_id`` order (worker thread)."""
        mig = self._get(req.migration_id)
        r = mig.range
        batch = min(req.batch_size or 1000, MAX_CLONE_BATCH)
        i = bisect_right(mig.snapshot, req.after_id_key) if req.after_id_key else 0
        ids = mig.snapshot[i:i + batch]
        rows = self.storage.rows_by_id(r.ns, ids)
        docs: list[bytes] = []
        size = 0
        last = req.after_id_key
        consumed = 0
        for id_key in ids:
            row = rows.get(id_key)
            if row is not None and row[0] is not None and r.keys.contains(row[0]):
                raw = row[1]
                if docs and size + len(raw) > MAX_RESPONSE_BYTES:
                    break
                docs.append(raw)
                size += len(raw)
            last = id_key
            consumed += 1
        done = i + consumed >= len(mig.snapshot)
        mig.documents_cloned += len(docs)
        mig.bytes_cloned += size
        DOCUMENTS_CLONED.labels(ROLE).inc(len(docs))
        if mig.documents_cloned >= mig.next_log_at or done:
            mig.next_log_at = mig.documents_cloned + self.settings.log_every_docs
            log.info("migration %s: %d/%d documents cloned", mig.migration_id,
                     mig.documents_cloned, len(mig.snapshot))
        return shard_pb2.MigrateCloneResponse(documents=docs, last_id_key=last, done=done)

    def transfer_mods(
        self, req: shard_pb2.MigrateTransferModsRequest
    ) -> shard_pb2.MigrateTransferModsResponse:
        """Current versions of the documents written since the last call, and deletions
        (worker thread). Read under the write lock: every recorded write has finished."""
        mig = self._get(req.migration_id)
        r = mig.range
        limit = max(1, min(req.max_mods or 1000, MAX_CLONE_BATCH))
        with self.storage.write_lock():
            written, deleted = mig.log.take(limit)
            entries = written + deleted
            rows = self.storage.rows_by_id(r.ns, [k for k, _ in entries], writer=True)
        upserts: list[bytes] = []
        deleted_ids: list[bytes] = []
        put_back: list[tuple[bytes, Any]] = []
        size = 0
        for id_key, id_value in entries:
            row = rows.get(id_key)
            if row is not None and row[0] is not None and r.keys.contains(row[0]):
                raw = row[1]
                if upserts and size + len(raw) > MAX_RESPONSE_BYTES:
                    put_back.append((id_key, id_value))
                    continue
                upserts.append(raw)
                size += len(raw)
            else:
                deleted_ids.append(encode_document({"_id": id_value}))
        if put_back:
            mig.log.put_back(put_back)
        mig.mods_sent += len(upserts) + len(deleted_ids)
        return shard_pb2.MigrateTransferModsResponse(
            upserts=upserts, deleted_ids=deleted_ids, more=len(mig.log) > 0
        )

    def retry_history(
        self, req: shard_pb2.MigrateRetryHistoryRequest
    ) -> shard_pb2.MigrateRetryHistoryResponse:
        """The retryable-write records of the range's documents after ``after_seq``
        (worker thread). Records are only ever appended (in commit order), so paging by
        sequence number misses none; the recipient asks again in the critical section."""
        mig = self._get(req.migration_id)
        r = mig.range
        limit = max(1, min(req.max_records or 1000, MAX_CLONE_BATCH))
        records, last, more = self.storage.retry_history_page(
            r.ns, r.keys, req.after_seq, limit,
            writer=mig.phase != "cloning",  # the critical section's final pull
        )
        return shard_pb2.MigrateRetryHistoryResponse(
            records=[record_to_proto(rec) for rec in records], last_seq=last, more=more
        )

    # ------------------------------------------------------------------ status

    def progress(self) -> list[shard_pb2.MigrationProgress]:
        return [
            shard_pb2.MigrationProgress(
                migration_id=m.migration_id, namespace=m.range.ns, chunk_id=m.record.chunk_id,
                role=ROLE, phase=m.phase, documents_cloned=m.documents_cloned,
                bytes_cloned=m.bytes_cloned, peer_shard=m.record.to_shard,
            )
            for m in list(self.active.values())
        ]

