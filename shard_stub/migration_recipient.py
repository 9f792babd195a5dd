"""The recipient side of a chunk migration.

``RecvChunkStart`` (from the donor): check the epoch and that this shard does not own
any of the range, persist the migration (``cloning``, so a restart can clean up),
cancel any pending deletion of the range here, make sure the collection exists with
the indexes the config server records, answer; then in the background:

1. delete the documents this shard already holds in the range (leftovers of an
   earlier failed attempt: orphans, since it does not own the range);
2. clone: ``MigrateClone`` pages in ``_id`` order, inserted (upsert by ``_id``);
3. catch up: ``MigrateTransferMods`` (current versions of written documents, deleted
   ids) applied until a drain returns fewer than ``steady_mods`` entries: ``steady``;
   while steady keep draining every ``mods_poll_s``. Drains are serialised and never
   retried (the donor forgets what it returned): a failed one fails the migration.

Retryable-write records of the range's documents (``MigrateRetryHistory``) are pulled
once the clone is done, while catching up, and to the end in the commit (records are facts about
executed statements: they are kept even if the migration aborts). A donor without the
RPC (an older release) sends none.

``RecvChunkCommit`` (the donor is in its critical section): drain until empty, pull the
last retry records, persist ``done``, answer. The received documents are orphans (filtered from reads) until the
config commit makes this shard the owner. A ``done`` migration is then resolved: it
is finished once this shard's metadata owns the range, or aborted once the config
server (``GetMigrationState``) or the donor (no longer migrating, and the range not
ours after a refresh) says it did not commit. Never deleted on a guess.

``RecvChunkAbort``: stop, delete the range's documents (unless the range is owned
here now), forget the migration. A donor that stops answering for
``donor_unreachable_s`` before ``done`` fails the migration the same way.

Restart: a persisted migration that never reached ``done`` cannot have committed:
its documents are deleted (unless the range is owned here); a ``done`` one is
resolved as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lauradb.aio import wait_event
from lauradb.bsonkit.codec import decode_document
from lauradb.bsonkit.keys import encode_value
from lauradb.cluster import shard_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import ChannelPool
from shard_stub.metadata import NamespaceMetadata, ShardMetadata
from shard_stub.migration_clients import CallFailed, ConfigClient, ShardPeer
from shard_stub.migration_metrics import DOCUMENTS_CLONED, OUTCOMES, set_phase
from shard_stub.migration_range import MigrationRange
from shard_stub.migration_settings import MigrationSettings
from shard_stub.migration_store import MigrationStore, RecipientRecord
from shard_stub.ownership import KeyRange
from shard_stub.range_deleter import RangeDeleter
from shard_stub.retry_records import record_from_proto
from shard_stub.storage import ShardStorage

log = logging.getLogger("lauradb.shard.migration.recipient")

ROLE = "recipient"
RUNNING = ("cloning", "catchup", "steady")
TRACKED = (*RUNNING, "done")  # states counted in the phase gauge
_EMPTY = KeyRange(b"", b"")
KEEP_FINISHED = 64
HISTORY_BATCH = 5000
HISTORY_POLL_S = 0.5  # retry-record pulls while catching up, at most this often

EnsureIndexes = Callable[[str, str], Awaitable[Any]]


@dataclass
class RecipientMigration:
    """One migration this shard receives."""

    record: RecipientRecord
    state: str = "cloning"
    documents_cloned: int = 0
    bytes_cloned: int = 0
    mods_applied: int = 0
    failure: str = ""
    committing: bool = False
    broken: str = ""  # a catch-up drain failed: the migration cannot commit any more
    task: asyncio.Task[Any] | None = None
    pending_io: asyncio.Future[Any] | None = None  # storage work of the receive task
    mods_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started: float = field(default_factory=time.monotonic)
    history_after: int = 0  # the donor's retry-record sequence number pulled up to
    history_records: int = 0
    history_unsupported: bool = False
    history_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    history_pulled_at: float = 0.0

    @property
    def migration_id(self) -> str:
        return self.record.migration_id

    @property
    def range(self) -> MigrationRange:
        return self.record.range

    def status(self) -> shard_pb2.RecvChunkStatusResponse:
        return shard_pb2.RecvChunkStatusResponse(
            state=self.state, documents_cloned=self.documents_cloned,
            bytes_cloned=self.bytes_cloned, mods_applied=self.mods_applied,
            failure=self.failure,
        )


def owns_range(meta: NamespaceMetadata, epoch: str, r: MigrationRange) -> bool:
    return meta.sharded and meta.epoch == epoch and meta.owned is not None and (
        meta.owned.covers(r.keys)
    )


class MigrationRecipient:
    """RecvChunkStart/Status/Commit/Abort of one shard."""

    def __init__(
        self,
        shard_id: str,
        storage: ShardStorage,
        metadata: ShardMetadata,
        store: MigrationStore,
        deleter: RangeDeleter,
        pool: ChannelPool,
        config: ConfigClient,
        settings: MigrationSettings,
    ) -> None:
        self.shard_id = shard_id
        self.storage = storage
        self.metadata = metadata
        self.store = store
        self.deleter = deleter
        self.pool = pool
        self.config = config
        self.settings = settings
        self.ensure_indexes: EnsureIndexes | None = None
        # Replica sets: waits until everything written so far is majority-committed
        # (raises otherwise); the cloned range must be before the donor commits.
        self.replication_wait: Callable[[], Awaitable[None]] | None = None
        self.active: dict[str, RecipientMigration] = {}
        self.finished: OrderedDict[str, RecipientMigration] = OrderedDict()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def busy(self) -> bool:
        """Receiving right now (a ``done`` migration awaiting its outcome does not count)."""
        return any(m.state in RUNNING for m in self.active.values())

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

    async def step_down(self) -> None:
        """This member is no longer primary: stop receiving and resolving, forget the
        in-memory state (the persisted state is the new primary's, via the oplog)."""
        await self.close()
        for mig in [*self.active.values(), *self.finished.values()]:
            await self._stop(mig)
            if mig.state in TRACKED:
                self._set_state(mig, "stepped_down")
        self.active.clear()
        self.finished.clear()

    def poke(self) -> None:
        """Metadata changed (RefreshMetadata): look at ``done`` migrations now."""
        self._wake.set()

    def _set_state(self, mig: RecipientMigration, state: str) -> None:
        set_phase(ROLE, mig.state if mig.state in TRACKED else "",
                  state if state in TRACKED else "")
        mig.state = state

    def _retire(self, mig: RecipientMigration) -> None:
        if self.active.get(mig.migration_id) is mig:
            del self.active[mig.migration_id]
        self.finished[mig.migration_id] = mig
        while len(self.finished) > KEEP_FINISHED:
            self.finished.popitem(last=False)

    def _lookup(self, migration_id: str) -> RecipientMigration:
        mig = self.active.get(migration_id) or self.finished.get(migration_id)
        if mig is None:
            raise LauraError(
                ErrorCode.OPERATION_FAILED,
                f"shard {self.shard_id} is not receiving migration {migration_id!r}",
            )
        return mig

    # ------------------------------------------------------------------ RPCs

    async def start(
        self, ns: str, req: shard_pb2.RecvChunkStartRequest, other_busy: bool
    ) -> shard_pb2.RecvChunkStatusResponse:
        known = self.active.get(req.migration_id) or self.finished.get(req.migration_id)
        if known is not None:
            return known.status()  # a retried start
        if not req.migration_id:
            raise LauraError(ErrorCode.BAD_VALUE, "RecvChunkStart needs a migration_id")
        if self.busy or other_busy:
            raise LauraError(
                ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
                f"shard {self.shard_id} is already migrating a chunk",
            )
        if not req.from_host or not 0 < req.from_port < 65536:
            raise LauraError(ErrorCode.BAD_VALUE, "RecvChunkStart needs the donor's host and port")
        db, coll = ns.split(".", 1)
        placeholder = RecipientMigration(
            RecipientRecord(req.migration_id, MigrationRange(ns, {}, {}, _EMPTY), req.epoch,
                            req.from_shard_id, "", "cloning")
        )
        self.active[req.migration_id] = placeholder  # reserved before the first await
        try:
            mig = await self._prepare(ns, db, coll, req)
        except BaseException:
            self.active.pop(req.migration_id, None)
            raise
        self.active[req.migration_id] = mig
        set_phase(ROLE, "", "cloning")
        mig.task = self._spawn(self._receive(mig), f"receive {mig.migration_id}")
        return mig.status()

    async def _prepare(
        self, ns: str, db: str, coll: str, req: shard_pb2.RecvChunkStartRequest
    ) -> RecipientMigration:
        meta = await self.metadata.refresh(db, coll)
        if not meta.sharded or meta.pattern is None or meta.epoch != req.epoch:
            raise LauraError(
                ErrorCode.STALE_CONFIG,
                f"{ns}: RecvChunkStart for epoch {req.epoch or '-'}, this shard knows "
                f"{meta.epoch or 'an unsharded collection'}",
                meta.stale_details(),
            )
        r = MigrationRange.from_bounds(ns, meta.pattern, req.min_key, req.max_key)
        if meta.owned is not None and meta.owned.overlaps(r.keys):
            raise LauraError(
                ErrorCode.BAD_VALUE, f"shard {self.shard_id} already owns part of {r.describe()}"
            )
        record = RecipientRecord(
            req.migration_id, r, req.epoch, req.from_shard_id,
            f"{req.from_host}:{req.from_port}", "cloning",
        )
        await asyncio.to_thread(self.store.save_recipient, record)
        try:
            await self.deleter.cancel_overlapping(ns, r.keys)
            if self.storage.collection(ns) is None and self.ensure_indexes is not None:
                await self.ensure_indexes(db, coll)
            await asyncio.to_thread(self.storage.ensure_collection, ns, meta.pattern)
        except BaseException:
            await asyncio.to_thread(self.store.drop_recipient, req.migration_id)
            raise
        log.info(
            "migration %s: receiving %s from %s at %s",
            req.migration_id, r.describe(), req.from_shard_id, record.from_address,
        )
        return RecipientMigration(record)

    def status(self, migration_id: str) -> shard_pb2.RecvChunkStatusResponse:
        return self._lookup(migration_id).status()

    async def commit(self, migration_id: str) -> shard_pb2.RecvChunkStatusResponse:
        mig = self._lookup(migration_id)
        if mig.state == "done":
            return mig.status()
        if mig.state != "steady":
            raise LauraError(
                ErrorCode.OPERATION_FAILED,
                f"migration {migration_id} cannot commit in state {mig.state!r} "
                f"({mig.failure or 'not caught up'})",
            )
        mig.committing = True
        peer = self._donor(mig)
        try:
            while True:
                n, more = await self._apply_mods(mig, peer, final=True)
                if n == 0 and not more:
                    break
            await self._pull_history(mig, peer)
            await asyncio.to_thread(self.store.set_recipient_state, migration_id, "done")
            if self.replication_wait is not None:
                # Replica set: the received documents AND the "done" state must be
                # majority-committed before the donor may commit: a new primary then
                # has both (and resolves the outcome instead of deleting the range).
                await self.replication_wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(mig, f"final catch-up failed: {_reason(exc)}")
            raise
        self._set_state(mig, "done")
        log.info(
            "migration %s: caught up for the commit (%d documents cloned, %d mods applied, "
            "%d retry records)",
            migration_id, mig.documents_cloned, mig.mods_applied, mig.history_records,
        )
        self._spawn(self._resolve(mig), f"resolve {migration_id}")
        return mig.status()

    async def abort(self, migration_id: str) -> shard_pb2.RecvChunkStatusResponse:
        mig = self.active.get(migration_id)
        if mig is None:
            done = self.finished.get(migration_id)
            if done is not None:
                return done.status()
            return shard_pb2.RecvChunkStatusResponse(state="aborted")
        if mig.state == "done" and await self._owned_now(mig):
            log.warning("migration %s: abort refused, the range is owned here now", migration_id)
            await self._finish(mig)
            return mig.status()
        if mig.state == "done" and await self._config_undecided(mig):
            # The donor may still commit (e.g. the abort comes from a donor member that
            # was deposed while its commit was on the way): only the config server's
            # record decides; ``_resolve`` keeps asking it.
            log.warning("migration %s: abort postponed, the config server's record is still "
                        "running", migration_id)
            return mig.status()
        await self._stop(mig)
        await self._cleanup(mig, "aborted", "aborted by the donor or the config server")
        return mig.status()

    # ------------------------------------------------------------------ background

    def _donor(self, mig: RecipientMigration) -> ShardPeer:
        return ShardPeer(self.pool, mig.record.from_address, self.settings.call_timeout_s)

    async def _stop(self, mig: RecipientMigration) -> None:
        """Stop the receive task, and wait for its storage work (a worker thread runs on
        after a cancellation; the cleanup must come after it)."""
        task = mig.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        io = mig.pending_io
        if io is not None and not io.done():
            with contextlib.suppress(Exception):
                await asyncio.wait([io])

    async def _io(self, mig: RecipientMigration, fn: Callable[..., Any], *args: Any) -> Any:
        """Storage work in a worker thread, tracked so that ``_stop`` can wait for it."""
        fut: asyncio.Future[Any] = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        mig.pending_io = fut
        return await asyncio.shield(fut)

    async def _receive(self, mig: RecipientMigration) -> None:
        s = self.settings
        r = mig.range
        peer = self._donor(mig)
        try:
            leftovers = await self._delete_range(r)
            if leftovers:
                log.info("migration %s: deleted %d leftover documents of %s",
                         mig.migration_id, leftovers, r.describe())
            after = b""
            next_log = s.log_every_docs
            while True:
                page = await self._donor_call(
                    mig, peer.clone, mig.migration_id, after, s.clone_batch
                )
                docs = list(page.documents)
                if docs:
                    await self._io(mig, self.storage.upsert_documents, r.ns, docs, r.keys)
                    mig.documents_cloned += len(docs)
                    mig.bytes_cloned += sum(len(d) for d in docs)
                    DOCUMENTS_CLONED.labels(ROLE).inc(len(docs))
                    if mig.documents_cloned >= next_log:
                        next_log = mig.documents_cloned + s.log_every_docs
                        log.info("migration %s: %d documents received",
                                 mig.migration_id, mig.documents_cloned)
                after = page.last_id_key or after
                if page.done:
                    break
            self._set_state(mig, "catchup")
            log.info("migration %s: clone done (%d documents in %.2fs), catching up",
                     mig.migration_id, mig.documents_cloned, time.monotonic() - mig.started)
            await self._pull_history(mig, peer)
            while not mig.committing:
                n, more = await self._apply_mods(mig, peer, final=False)
                if mig.state == "catchup" and not more and n < s.steady_mods:
                    await asyncio.to_thread(self.store.set_recipient_state, mig.migration_id, "steady")
                    self._set_state(mig, "steady")
                if not more:
                    if time.monotonic() - mig.history_pulled_at > HISTORY_POLL_S:
                        await self._pull_history(mig, peer)  # keeps the commit's pull short
                    await asyncio.sleep(s.mods_poll_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not mig.committing:  # else the commit sees ``broken`` and fails it
                await self._fail(mig, _reason(exc))

    async def _donor_call(
        self, mig: RecipientMigration, fn: Callable[..., Awaitable[Any]], *args: Any
    ) -> Any:
        """Call the donor, retrying while it is unreachable (up to ``donor_unreachable_s``)."""
        since: float | None = None
        while True:
            try:
                return await fn(*args)
            except CallFailed as err:
                if not err.uncertain:
                    raise
                now = time.monotonic()
                since = since or now
                if now - since > self.settings.donor_unreachable_s:
                    raise LauraError(
                        ErrorCode.HOST_UNREACHABLE,
                        f"donor {mig.record.from_shard} unreachable for "
                        f"{self.settings.donor_unreachable_s:g}s: {err.message}",
                    ) from None
                await asyncio.sleep(0.2)

    async def _pull_history(self, mig: RecipientMigration, peer: ShardPeer) -> None:
        """Store the donor's retry records of the range from ``history_after`` on."""
        async with mig.history_lock:
            await self._pull_history_locked(mig, peer)
            mig.history_pulled_at = time.monotonic()

    async def _pull_history_locked(self, mig: RecipientMigration, peer: ShardPeer) -> None:
        if mig.history_unsupported:
            return
        ns = mig.range.ns
        while True:
            try:
                resp = await self._donor_call(
                    mig, peer.retry_history, mig.migration_id, mig.history_after, HISTORY_BATCH
                )
            except LauraError as err:
                if err.code != ErrorCode.NOT_IMPLEMENTED:
                    raise
                mig.history_unsupported = True
                log.warning(
                    "migration %s: the donor sends no retryable-write records (%s); retries "
                    "of writes to %s made before the migration may be applied again",
                    mig.migration_id, err.message, mig.range.describe(),
                )
                return
            records = [record_from_proto(r, ns) for r in resp.records]
            if records:
                await self._io(mig, self.storage.store_retry_records, records)
                mig.history_records += len(records)
            mig.history_after = max(mig.history_after, resp.last_seq)
            if not resp.more:
                return

    async def _apply_mods(
        self, mig: RecipientMigration, peer: ShardPeer, *, final: bool
    ) -> tuple[int, bool]:
        """One TransferMods drain applied; (entries, more). Drains never overlap, so
        they apply in the order the donor produced them."""
        r = mig.range
        async with mig.mods_lock:
            if mig.broken:
                raise LauraError(ErrorCode.OPERATION_FAILED, mig.broken)
            if mig.committing and not final:
                return 0, False
            try:
                # Not retried: the donor forgets what it returned, so a lost answer
                # would lose writes. Any failure fails the migration (the donor keeps
                # the range).
                resp = await peer.transfer_mods(mig.migration_id, self.settings.max_mods)
                upserts = list(resp.upserts)
                if upserts:
                    await self._io(mig, self.storage.upsert_documents, r.ns, upserts, r.keys)
                if resp.deleted_ids:
                    ids = [
                        encode_value(decode_document(raw, "deleted id").get("_id"))
                        for raw in resp.deleted_ids
                    ]
                    await self._io(mig, self.storage.delete_ids, r.ns, ids, r.keys)
            except BaseException as exc:
                mig.broken = f"catch-up failed: {_reason(exc)}"
                raise
            n = len(upserts) + len(resp.deleted_ids)
            mig.mods_applied += n
            return n, bool(resp.more)

    async def _fail(self, mig: RecipientMigration, reason: str) -> None:
        mig.failure = reason
        log.warning("migration %s failed on the recipient: %s", mig.migration_id, reason)
        await self._cleanup(mig, "failed", reason)

    async def _cleanup(self, mig: RecipientMigration, state: str, reason: str) -> None:
        """Delete what was received (unless owned here now), forget the migration."""
        r = mig.range
        try:
            deleted = await self._delete_range(r)
            log.info("migration %s %s: deleted %d received documents of %s (%s)",
                     mig.migration_id, state, deleted, r.describe(), reason)
            await asyncio.to_thread(self.store.drop_recipient, mig.migration_id)
        except LauraError as err:
            log.warning("migration %s: cleanup failed (retried after a restart): %s",
                        mig.migration_id, err.message)
        self._set_state(mig, state)
        OUTCOMES.labels(ROLE, state).inc()
        self._retire(mig)

    async def _finish(self, mig: RecipientMigration) -> None:
        with contextlib.suppress(LauraError):
            await asyncio.to_thread(self.store.drop_recipient, mig.migration_id)
        self._set_state(mig, "committed")
        OUTCOMES.labels(ROLE, "committed").inc()
        log.info("migration %s: committed, %s is owned here now",
                 mig.migration_id, mig.range.describe())
        self._retire(mig)

    async def _delete_range(self, r: MigrationRange) -> int:
        total = 0
        batch = self.settings.range_delete_batch
        while True:
            n = await asyncio.to_thread(self.storage.delete_range, r.ns, r.keys, batch)
            total += n
            if n < batch:
                return total

    async def _owned_now(self, mig: RecipientMigration, refresh: bool = True) -> bool:
        r = mig.range
        meta = self.metadata.cached(r.database, r.collection)
        if meta is not None and owns_range(meta, mig.record.epoch, r):
            return True
        if not refresh:
            return False
        meta = await self.metadata.refresh(r.database, r.collection)
        return owns_range(meta, mig.record.epoch, r)

    async def _config_undecided(self, mig: RecipientMigration) -> bool:
        """Whether the config server's record of ``mig`` may still commit (running, or
        the config server cannot be asked); False when it has no record (a MoveRange
        driven directly) or decided."""
        try:
            info = await self.config.migration_state(mig.migration_id)
        except CallFailed:
            return True
        return info is not None and info.state not in ("committed", "aborted", "failed")

    async def _resolve(self, mig: RecipientMigration) -> None:
        """A ``done`` migration: wait until it is known to be committed or not."""
        delay = 0.05
        mid = mig.migration_id
        while self.active.get(mid) is mig:
            try:
                if await self._owned_now(mig, refresh=False):
                    await self._finish(mig)
                    return
                info = await self.config.migration_state(mid)
                if info is not None and info.state == "committed":
                    if await self._owned_now(mig):
                        await self._finish(mig)
                        return
                elif info is not None and info.state in ("aborted", "failed"):
                    await self._cleanup(mig, "aborted", f"the config server says {info.state}")
                    return
                # A running record: the config server decides, not the donor (a donor
                # member that just took over may not know the migration yet). No record
                # (a MoveRange driven directly): the donor's answer.
                if info is None and not any(
                    m.migration_id == mid
                    for m in (await self._donor(mig).migration_status()).migrations
                ):
                    # The donor knows the outcome and moved on: our metadata decides.
                    if await self._owned_now(mig):
                        await self._finish(mig)
                    else:
                        await self._cleanup(mig, "aborted", "the donor did not commit")
                    return
            except asyncio.CancelledError:
                raise
            except LauraError as err:
                log.debug("migration %s: outcome still unknown: %s", mid, err.message)
            self._wake.clear()
            await wait_event(self._wake, delay)
            delay = min(delay * 2, 2.0)

    # ------------------------------------------------------------------ recovery

    async def recover(self) -> None:
        """Before serving (or on becoming primary): clean up interrupted receives;
        resolve ``done`` ones later."""
        for rec in self.store.recipients():
            if rec.migration_id in self.active:
                continue
            mig = RecipientMigration(rec, state="recovering")
            if rec.state == "done":
                self.active[rec.migration_id] = mig
                self._set_state(mig, "done")
                log.warning(
                    "migration %s (%s) was waiting for its commit when the shard stopped; "
                    "resolving", rec.migration_id, rec.range.describe(),
                )
                self._spawn(self._resolve(mig), f"resolve {rec.migration_id}")
                continue
            try:
                owned = await asyncio.wait_for(self._owned_now(mig), 2.0)
            except (TimeoutError, LauraError):
                owned = False  # before "done" the donor cannot have committed
            if owned:
                await self._finish(mig)
                continue
            deleted = await self._delete_range(rec.range)
            await asyncio.to_thread(self.store.drop_recipient, rec.migration_id)
            mig.state = "aborted"
            self._retire(mig)
            OUTCOMES.labels(ROLE, "aborted").inc()
            log.warning(
                "migration %s (%s) interrupted by a restart in state %s: deleted %d received "
                "documents", rec.migration_id, rec.range.describe(), rec.state, deleted,
            )

    # ------------------------------------------------------------------ status

    def progress(self) -> list[shard_pb2.MigrationProgress]:
        return [
            shard_pb2.MigrationProgress(
                migration_id=m.migration_id, namespace=m.range.ns, role=ROLE, phase=m.state,
                documents_cloned=m.documents_cloned, bytes_cloned=m.bytes_cloned,
                peer_shard=m.record.from_shard,
            )
            for m in list(self.active.values())
        ]


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, LauraError) else f"{type(exc).__name__}: {exc}"

