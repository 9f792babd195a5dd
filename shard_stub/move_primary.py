"""movePrimary on a shard: hand a database's unsharded collections to a new primary.

Old primary (``move``, called by the config server): enters a database-wide
critical section for the database's UNSHARDED collections (writes sent with
``unsharded=true`` wait, bounded, then fail with a retryable STALE_CONFIG; reads go
on), waits for the writes already running to finish, asks the new primary to
``ReceivePrimary`` (it drops any stale copy, builds the indexes and pulls
``CloneCollectionPage`` pages by ``_id`` key), then has the config server
``CommitMovePrimary``. After the commit it refreshes its metadata (it no longer
accepts unsharded requests), leaves the section (blocked writers get STALE_CONFIG,
routers refresh and go to the new primary) and drops its copies. Any failure
before the commit: the new primary's clones are dropped, this shard stays primary.

Prepared transactions (``shard_stub.transactions``) apply their effects at Commit,
after the copy could have read the documents: so before the copy, with the section
entered and the running writes drained, the old primary looks (under the storage
write lock) for documents of the database's unsharded collections locked by prepared
transactions. Found: it leaves the section (blocked writers go on), waits for a lock
release and tries again, for at most ``prepared_wait_s`` (``--migration-txn-wait-s``);
then the movePrimary fails with the retryable CONFLICTING_OPERATION_IN_PROGRESS and
nothing changed. A Prepare that comes after the look sees the active section (the
participant checks it under the same lock) and votes no (retryable STALE_CONFIG).

``CriticalSection`` and ``run_unblocked`` (see ``critical_section``) do the waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from lauradb.cluster import router_ext_pb2, routing_pb2_grpc, shard_pb2, shard_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import ChannelPool
from shard_stub.critical_section import CriticalSection
from shard_stub.cursors import CursorManager
from shard_stub.metadata import ShardMetadata, namespace_of
from shard_stub.migration_clients import CallFailed, call
from shard_stub.ownership import KeyRange
from shard_stub.storage import ShardStorage
from shard_stub.transactions.locks import LockTable

log = logging.getLogger("lauradb.shard.move_primary")

T = TypeVar("T")

CLONE_BATCH = 1000
MAX_PAGE_BYTES = 2 * 1024 * 1024
RECEIVE_TIMEOUT_S = 600.0
PAGE_TIMEOUT_S = 30.0
DRAIN_WRITES_TIMEOUT_S = 30.0
COMMIT_RETRY_S = 60.0
PREPARED_WAIT_S = 30.0  # default of ``MigrationSettings.prepared_wait_s``
EVERY_KEY = KeyRange(b"", b"")  # unsharded documents have no shard key

# (database, collection) -> recorded index names built
EnsureIndexes = Callable[[str, str], Awaitable[list[str]]]
IndexFromSpec = Callable[[router_ext_pb2.IndexSpec], Any]


class PrimaryMoves:
    """The movePrimary roles of one shard (old primary and new primary)."""

    def __init__(
        self,
        shard_id: str,
        storage: ShardStorage,
        metadata: ShardMetadata,
        cursors: CursorManager,
        pool: ChannelPool,
        config_address: str,
        *,
        prepared_wait_s: float = PREPARED_WAIT_S,
    ) -> None:
        self.shard_id = shard_id
        self.prepared_wait_s = prepared_wait_s
        self.storage = storage
        self.metadata = metadata
        self.cursors = cursors
        self.pool = pool
        self.config_address = config_address
        self.host = ""
        self.port = 0
        self.ensure_indexes: EnsureIndexes | None = None
        self.index_from_spec: IndexFromSpec | None = None
        self.sections: dict[str, CriticalSection] = {}
        self._inflight: dict[str, int] = {}
        self._receiving: set[str] = set()

    # ------------------------------------------------------------------ write path

    async def guarded(
        self, database: str, version: shard_pb2.ShardVersion, op: Callable[[], Awaitable[T]]
    ) -> T:
        """Run an unsharded write unless the database's critical section is active
        (then raise ``RangeBlocked`` for ``run_unblocked`` to wait on)."""
        if version.ignore or version.epoch:
            return await op()
        section = self.sections.get(database)
        if section is not None and section.active:
            raise section.blocked()
        self._inflight[database] = self._inflight.get(database, 0) + 1
        try:
            return await op()
        finally:
            left = self._inflight[database] - 1
            if left:
                self._inflight[database] = left
            else:
                del self._inflight[database]

    async def _drain_writes(self, database: str) -> None:
        deadline = time.monotonic() + DRAIN_WRITES_TIMEOUT_S
        while self._inflight.get(database):
            if time.monotonic() > deadline:
                raise LauraError(
                    ErrorCode.EXCEEDED_TIME_LIMIT,
                    f"movePrimary of {database}: writes in progress did not finish",
                )
            await asyncio.sleep(0.005)

    async def _quiesce(self, db: str, section: CriticalSection) -> list[str]:
        """Enter ``section`` with no write running and no document of the database's
        unsharded collections locked by a prepared transaction; those collections.
        CONFLICTING_OPERATION_IN_PROGRESS when locks remain after ``prepared_wait_s``."""
        locks = self.storage.txn_locks
        deadline = time.monotonic() + self.prepared_wait_s
        logged = False
        while True:
            section.enter()
            await self._drain_writes(db)
            names = await self._unsharded_collections(db)
            held = await asyncio.to_thread(
                self._locked, locks, {namespace_of(db, coll) for coll in names}
            )
            if not held:
                if logged:
                    log.info("movePrimary of %s: prepared transactions resolved", db)
                return names
            section.leave()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                shown = ", ".join(sorted(held)[:5]) + (", ..." if len(held) > 5 else "")
                raise LauraError(
                    ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
                    f"movePrimary of {db}: documents of its unsharded collections are still "
                    f"locked by {len(held)} prepared transaction(s) ({shown}) after "
                    f"{self.prepared_wait_s:g}s; retry once they resolve",
                    {"database": db, "txn_ids": sorted(held)[:20]},
                )
            if not logged:
                logged = True
                log.info("movePrimary of %s: waiting up to %gs for %d prepared "
                         "transaction(s) locking its unsharded documents", db,
                         self.prepared_wait_s, len(held))  # fmt: skip
            # a release wakes us; look again at least every second regardless
            await locks.wait_any_release(min(remaining, 1.0))

    def _locked(self, locks: LockTable, namespaces: set[str]) -> set[str]:
        with self.storage.write_lock():
            return locks.in_namespaces(namespaces)

    # ------------------------------------------------------------------ old primary

    def _shard_stub(self, host: str, port: int) -> shard_pb2_grpc.ShardServiceStub:
        return shard_pb2_grpc.ShardServiceStub(self.pool.get(f"{host}:{port}"))

    async def _unsharded_collections(self, database: str) -> list[str]:
        names: list[str] = []
        for coll in self.storage.list_collections(database):
            meta = await self.metadata.refresh(database, coll)
            if meta.sharded:
                continue
            if meta.known_database and not meta.is_primary:
                raise LauraError(
                    ErrorCode.ILLEGAL_OPERATION,
                    f"movePrimary of {database}: shard '{self.shard_id}' is not its primary "
                    f"(the primary is '{meta.primary_shard}')",
                )
            names.append(coll)
        return names

    async def move(self, req: shard_pb2.MovePrimaryRequest) -> shard_pb2.MovePrimaryResponse:
        db = req.database
        if not db or not req.to_shard_id or not req.to_host or not req.to_port:
            raise LauraError(ErrorCode.BAD_VALUE, "movePrimary needs a database and a target")
        if req.to_shard_id == self.shard_id:
            raise LauraError(ErrorCode.ILLEGAL_OPERATION, "movePrimary to the same shard")
        if db in self.sections or db in self._receiving:
            raise LauraError(
                ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
                f"a movePrimary of database {db} is already running on this shard",
            )
        section = CriticalSection(
            f"{db}.*", EVERY_KEY, f"the unsharded collections of database {db} (movePrimary)"
        )
        self.sections[db] = section
        committed = False
        names: list[str] = []
        cloned = 0
        peer = self._shard_stub(req.to_host, req.to_port)
        target = f"shard {req.to_shard_id} at {req.to_host}:{req.to_port}"
        try:
            names = await self._quiesce(db, section)
            log.info("movePrimary %s of %s: %s -> %s, collections %s", req.operation_id, db,
                     self.shard_id, req.to_shard_id, names)
            try:
                resp = await call(
                    peer.ReceivePrimary,
                    shard_pb2.ReceivePrimaryRequest(
                        database=db, collections=names, from_shard_id=self.shard_id,
                        from_host=self.host, from_port=self.port,
                        operation_id=req.operation_id,
                    ),
                    timeout=RECEIVE_TIMEOUT_S, target=target,
                )
                cloned = int(resp.documents_cloned)
                committed = await self._commit(db, req.to_shard_id, req.operation_id)
            finally:
                if not committed:
                    await self._drop_remote(peer, db, names, target)
            for coll in names:
                await self.metadata.refresh(db, coll)
        finally:
            section.leave()
            self.sections.pop(db, None)
        for coll in names:
            ns = namespace_of(db, coll)
            self.cursors.kill_namespace(ns)
            await asyncio.to_thread(self.storage.drop_collection, ns)
        log.info("movePrimary %s: %s is now primary of %s (%d documents)",
                 req.operation_id, req.to_shard_id, db, cloned)
        return shard_pb2.MovePrimaryResponse(collections_moved=names, documents_moved=cloned)

    async def _commit(self, database: str, to_shard: str, operation_id: str) -> bool:
        """CommitMovePrimary; retried while the outcome is uncertain (it is idempotent)."""
        stub = routing_pb2_grpc.ConfigServiceStub(self.pool.get(self.config_address))
        request = router_ext_pb2.CommitMovePrimaryRequest(
            database=database, from_shard=self.shard_id, to_shard=to_shard,
            operation_id=operation_id,
        )
        deadline = time.monotonic() + COMMIT_RETRY_S
        delay = 0.1
        while True:
            try:
                resp = await call(stub.CommitMovePrimary, request, timeout=10.0,
                                  target=self.config_address)
                if not resp.committed:
                    raise LauraError(ErrorCode.OPERATION_FAILED,
                                     f"movePrimary of {database} was not committed")
                return True
            except CallFailed as err:
                if not err.uncertain or time.monotonic() > deadline:
                    raise
                log.warning("CommitMovePrimary(%s): %s; retrying", database, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _drop_remote(
        self, peer: shard_pb2_grpc.ShardServiceStub, database: str, names: list[str],
        target: str,
    ) -> None:
        for coll in names:
            try:
                await call(
                    peer.DropCollection,
                    shard_pb2.ShardDropCollectionRequest(database=database, collection=coll),
                    timeout=10.0, target=target,
                )
            except LauraError as err:
                log.warning("movePrimary of %s aborted: cannot drop the clone of %s on %s: %s",
                            database, coll, target, err)

    def clone_page(
        self, req: shard_pb2.CloneCollectionPageRequest
    ) -> shard_pb2.MigrateCloneResponse:
        """The next documents of a collection in ``_id`` key order (worker thread)."""
        if req.database not in self.sections:
            raise LauraError(
                ErrorCode.ILLEGAL_OPERATION,
                f"no movePrimary of database {req.database} is running on this shard",
            )
        ns = namespace_of(req.database, req.collection)
        limit = min(req.batch_size or CLONE_BATCH, 10 * CLONE_BATCH)
        rows = self.storage.id_page(ns, req.after_id_key, limit)
        docs: list[bytes] = []
        size = 0
        last = req.after_id_key
        for id_key, raw in rows:
            if docs and size + len(raw) > MAX_PAGE_BYTES:
                return shard_pb2.MigrateCloneResponse(documents=docs, last_id_key=last)
            docs.append(raw)
            size += len(raw)
            last = id_key
        return shard_pb2.MigrateCloneResponse(
            documents=docs, last_id_key=last, done=len(rows) < limit
        )

    # ------------------------------------------------------------------ new primary

    async def receive(
        self, req: shard_pb2.ReceivePrimaryRequest
    ) -> shard_pb2.ReceivePrimaryResponse:
        db = req.database
        if not db or not req.from_host or not req.from_port:
            raise LauraError(ErrorCode.BAD_VALUE, "ReceivePrimary needs a database and a source")
        if db in self.sections or db in self._receiving:
            raise LauraError(
                ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
                f"a movePrimary of database {db} is already running on this shard",
            )
        self._receiving.add(db)
        peer = self._shard_stub(req.from_host, req.from_port)
        target = f"shard {req.from_shard_id} at {req.from_host}:{req.from_port}"
        total = 0
        try:
            for coll in req.collections:
                total += await self._receive_collection(peer, target, db, coll, req.operation_id)
        except BaseException:
            for coll in req.collections:
                ns = namespace_of(db, coll)
                self.cursors.kill_namespace(ns)
                await asyncio.to_thread(self.storage.drop_collection, ns)
            raise
        finally:
            self._receiving.discard(db)
        return shard_pb2.ReceivePrimaryResponse(documents_cloned=total)

    async def _receive_collection(
        self, peer: shard_pb2_grpc.ShardServiceStub, target: str, db: str, coll: str,
        operation_id: str,
    ) -> int:
        ns = namespace_of(db, coll)
        self.cursors.kill_namespace(ns)
        if await asyncio.to_thread(self.storage.drop_collection, ns):
            log.info("movePrimary of %s: dropped a stale copy of %s", db, ns)
        await asyncio.to_thread(self.storage.ensure_collection, ns)
        if self.ensure_indexes is not None:
            await self.ensure_indexes(db, coll)
        listed = await call(
            peer.ListIndexes,
            shard_pb2.ShardListIndexesRequest(database=db, collection=coll),
            timeout=PAGE_TIMEOUT_S, target=target,
        )
        if self.index_from_spec is not None:
            for spec in listed.indexes:
                if spec.name == "_id_":
                    continue
                index = self.index_from_spec(spec)
                await asyncio.to_thread(self.storage.create_index, ns, index)
        after = b""
        count = 0
        while True:
            page = await call(
                peer.CloneCollectionPage,
                shard_pb2.CloneCollectionPageRequest(
                    database=db, collection=coll, after_id_key=after, batch_size=CLONE_BATCH,
                    operation_id=operation_id,
                ),
                timeout=PAGE_TIMEOUT_S, target=target,
            )
            if page.documents:
                await asyncio.to_thread(
                    self.storage.upsert_documents, ns, list(page.documents), EVERY_KEY
                )
                count += len(page.documents)
            after = page.last_id_key
            if page.done:
                return count
