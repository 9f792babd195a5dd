"""Document locks of prepared transactions: ``(ns, id_key) -> (txn_id, shard_key)``.

Strict two-phase locking on documents: a transaction's Prepare locks the documents it
writes (and those its READ operations return); Commit/Abort release them. The table is
node-local memory, rebuilt from the durable prepared records on start-up and when a
member becomes primary.

Threading: the table is read by writer threads under the storage write lock (every
insert/update/delete asks ``check`` per affected row) and changed under the same lock
(the participant's prepare/commit/abort run as storage writes), so a write sees a
consistent table. Waiting for a release happens on the event loop (``wait_released``):
releases wake the registered waiters through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import TypeVar

from lauradb.errors import ErrorCode, LauraError
from shard_stub.ownership import KeyRange

LockKey = tuple[str, bytes]  # (namespace, id_key)


class DocumentLocked(Exception):
    """A write touched a document locked by a prepared transaction; nothing was written
    (the write's storage transaction rolled back)."""

    def __init__(self, ns: str, id_key: bytes, txn_id: str) -> None:
        super().__init__(f"{ns}: a document is locked by prepared transaction {txn_id}")
        self.ns = ns
        self.id_key = id_key
        self.txn_id = txn_id


class LockTable:
    """The documents locked by prepared transactions on this node."""

    def __init__(self) -> None:
        self._locks: dict[LockKey, tuple[str, bytes | None]] = {}
        self._mutex = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def __len__(self) -> int:
        return len(self._locks)

    def __bool__(self) -> bool:  # an empty table is still a table
        return True

    # ------------------------------------------------------------------ queries

    def holder(self, ns: str, id_key: bytes) -> str | None:
        if not self._locks:
            return None
        entry = self._locks.get((ns, id_key))
        return entry[0] if entry is not None else None

    def check(self, ns: str, id_key: bytes, txn_id: str = "") -> None:
        """Raise ``DocumentLocked`` when a transaction other than ``txn_id`` holds the
        document (the write path's per-row test; one dict lookup when locks exist)."""
        if not self._locks:
            return
        entry = self._locks.get((ns, id_key))
        if entry is not None and entry[0] != txn_id:
            raise DocumentLocked(ns, id_key, entry[0])

    def held_by(self, txn_id: str) -> list[LockKey]:
        return [k for k, (t, _) in self._locks.items() if t == txn_id]

    def transactions(self) -> set[str]:
        return {t for t, _ in self._locks.values()}

    def in_range(self, ns: str, keys: KeyRange) -> set[str]:
        """The transactions locking a document of ``ns`` whose shard key is in ``keys``
        (a chunk migration waits for them before its critical section). A document
        without a stored shard key (unsharded) is in no range."""
        out: set[str] = set()
        for (lns, _), (txn, shard_key) in list(self._locks.items()):
            if lns == ns and shard_key is not None and keys.contains(shard_key):
                out.add(txn)
        return out

    def in_namespaces(self, namespaces: Collection[str]) -> set[str]:
        """The transactions locking a document of any of ``namespaces`` (a movePrimary
        waits for those of the database's unsharded collections before it copies)."""
        if not self._locks:
            return set()
        return {txn for (lns, _), (txn, _) in list(self._locks.items()) if lns in namespaces}

    # ------------------------------------------------------------------ changes
    # (callers hold the storage write lock)

    def acquire(self, txn_id: str, keys: Iterable[tuple[str, bytes, bytes | None]]) -> None:
        """Lock ``(ns, id_key, shard_key)`` documents for ``txn_id``."""
        for ns, id_key, shard_key in keys:
            self._locks[(ns, id_key)] = (txn_id, shard_key)

    def release(self, txn_id: str) -> int:
        """Drop every lock ``txn_id`` holds and wake the waiters; how many."""
        gone = [k for k, (t, _) in self._locks.items() if t == txn_id]
        for k in gone:
            del self._locks[k]
        if gone:
            self._wake()
        return len(gone)

    def clear(self) -> None:
        had = bool(self._locks)
        self._locks = {}
        if had:
            self._wake()

    # ------------------------------------------------------------------ waiting

    def _wake(self) -> None:
        with self._mutex:
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # the loop is closed
                pass

    async def wait_released(self, ns: str, id_key: bytes, txn_id: str, timeout: float) -> bool:
        """Wait until ``txn_id`` no longer holds ``(ns, id_key)``; False after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            with self._mutex:
                self._waiters.append((loop, fut))
            if self.holder(ns, id_key) != txn_id:
                self._forget(fut)
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._forget(fut)
                return False
            try:
                await asyncio.wait({fut}, timeout=remaining)
            finally:
                self._forget(fut)

    async def wait_any_release(self, timeout: float) -> bool:
        """Wait for the next release of any lock; False after ``timeout``."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._mutex:
            self._waiters.append((loop, fut))
        try:
            done, _ = await asyncio.wait({fut}, timeout=timeout)
            return bool(done)
        finally:
            self._forget(fut)

    def _forget(self, fut: asyncio.Future[None]) -> None:
        with self._mutex:
            self._waiters = [(lp, f) for lp, f in self._waiters if f is not fut]
        if not fut.done():
            fut.cancel()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


T = TypeVar("T")


async def run_unlocked(
    op: Callable[[], Awaitable[T]], locks: LockTable, max_wait: float, what: str = "write"
) -> T:
    """Run ``op`` (an ordinary write); while it hits a document locked by a prepared
    transaction, wait (outside the storage write lock) for that lock to clear and run it
    again. WRITE_CONFLICT once ``max_wait`` seconds were spent waiting."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        try:
            return await op()
        except DocumentLocked as exc:
            left = max_wait - (loop.time() - start)
            if left <= 0 or not await locks.wait_released(exc.ns, exc.id_key, exc.txn_id, left):
                raise write_conflict(exc, loop.time() - start, what) from None


def write_conflict(exc: DocumentLocked, waited: float, what: str) -> LauraError:
    """WRITE_CONFLICT for a write that found ``exc``'s document locked too long."""
    ns = exc.ns.split("\x00")[0]
    return LauraError(
        ErrorCode.WRITE_CONFLICT,
        f"{what}: a document of {ns} is locked by prepared transaction {exc.txn_id} "
        f"(waited {waited * 1000:.0f} ms); retry",
        {"namespace": ns, "locked_by": exc.txn_id},
    )
