"""The oplog of a replica-set member: a Raft log in the shard's own SQLite file.

Tables (created by ``Oplog(storage)``; a standalone shard has neither):

* ``oplog (op_id INTEGER PRIMARY KEY, term INTEGER, entry BLOB)``: ``entry`` is a
  serialized ``replication_pb2.OplogEntry``; op ids are gap-free (1, 2, 3, ...).
* ``oplog_state``: one row: ``applied`` (the last op id whose effects are in the
  documents), ``base_id``/``base_term`` (the position just before the oldest retained
  entry, after a trim or an initial sync: ``term_at(base_id)`` stays answerable) and
  ``syncing`` (an initial sync was started and not finished: the data is incomplete).

Entries (``shard_stub.storage`` writes them; ``ShardStorage._apply_entry`` applies
them, idempotently):

============================  ================================================
``INSERT``                    ``document``: the full document (insert or replace)
``UPDATE``                    ``document``: the full post-image; ``query``: {_id}
``DELETE``                    ``query``: {_id} (a missing document: no-op)
``CREATE_COLLECTION``         ``document``: {key_fields, key_strategy} (also a
                              change of the shard key pattern: re-key)
``DROP_COLLECTION``           (``drop_database``: one per collection)
``CREATE_INDEX``              ``document``: {name, fields, unique, sparse, multikey}
``DROP_INDEX``                ``document``: {name}
``UNKNOWN_OP`` kind ``noop``  a new primary's first entry of its term
``UNKNOWN_OP`` kind ``retry`` retry records only (an update that matched without
                              modifying, migrated records)
============================  ================================================

Every entry may carry ``retry_records`` (``shard.proto`` ``RetryRecord``, namespace =
the entry's): the retryable-write records written in the same transaction, so a retry
after a failover is answered from the record on the new primary.

Write path (primary): with ``storage.oplog`` set, each write transaction collects its
entries and ``write_local`` appends them (op ids ``last + 1 ...``, ``storage.oplog_term``,
one timestamp) and advances ``applied``, all before COMMIT; after COMMIT
``storage.on_commit(last_op_id)`` runs in the writing thread (under the storage write
lock, so calls come in op id order). The op id of a write's last entry is returned
with it: ``InsertResult.op_id``, ``UpdateResult.op_id``, ``OpCount.op_id`` (``delete``);
for the other write methods ``storage.last_write_op_id()`` in the same thread (e.g.
``asyncio.to_thread(lambda: (storage.create_index(ns, ix), storage.last_write_op_id()))``).
0 means the write produced no entry; a statement answered from its retry record carries
the newest op id instead (its answer must be majority-committed too).
``storage.is_primary = False`` (a secondary) makes logged writes fail with
NOT_WRITABLE_PRIMARY; a secondary's re-keys (``set_key_pattern``, derived data) run
unlogged. Pruning retry records is local retention and never logged.

Follower path: ``append`` (durable, contiguous), ``apply_through(commit point)`` in
batches (each one transaction advancing ``applied``, writing no entries),
``truncate_after`` (never below ``applied``), ``trim`` (retention, never above
``applied``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from lauradb.cluster import common_pb2, replication_pb2
from lauradb.errors import ErrorCode, LauraError

if TYPE_CHECKING:
    from shard_stub.storage import ShardStorage

__all__ = ["APPLY_BATCH", "SCHEMA", "Oplog", "OplogPosition"]

APPLY_BATCH = 500  # entries per apply transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS oplog (
    op_id INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    entry BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS oplog_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    applied INTEGER NOT NULL,
    base_id INTEGER NOT NULL,
    base_term INTEGER NOT NULL,
    syncing INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO oplog_state (id, applied, base_id, base_term) VALUES (1, 0, 0, 0);
"""

NOOP_KIND = "noop"


class OplogPosition(NamedTuple):
    op_id: int
    term: int


class Oplog:
    """The oplog of one ``ShardStorage`` (open). Mutations hold the storage's write
    lock; the in-memory positions are read lock-free."""

    def __init__(self, storage: ShardStorage) -> None:
        self._s = storage
        self._pending: tuple[int, OplogPosition] | None = None  # (first, last) being written
        with storage._wlock:
            conn = storage._writer()
            conn.executescript(SCHEMA)
            self._load(conn)

    def _load(self, conn: sqlite3.Connection) -> None:
        applied, base_id, base_term, syncing = conn.execute(
            "SELECT applied, base_id, base_term, syncing FROM oplog_state WHERE id = 1"
        ).fetchone()
        row = conn.execute("SELECT op_id, term FROM oplog ORDER BY op_id DESC LIMIT 1").fetchone()
        (first,) = conn.execute("SELECT MIN(op_id) FROM oplog").fetchone()
        self._base = OplogPosition(int(base_id), int(base_term))
        self._last = OplogPosition(int(row[0]), int(row[1])) if row else self._base
        self._first = int(first or 0)
        self._applied = int(applied)
        self._syncing = bool(syncing)

    # ------------------------------------------------------------------ positions

    def last(self) -> OplogPosition:
        """The newest entry ((0, 0) when the log never had one; the base after a
        trim of everything or an initial sync)."""
        return self._last

    def base(self) -> OplogPosition:
        """The position just before the oldest retained entry ((0, 0): nothing trimmed)."""
        return self._base

    def first_op_id(self) -> int:
        """The oldest retained entry (0: none retained)."""
        return self._first

    @property
    def applied(self) -> int:
        """The last op id whose effects are in the documents (durable)."""
        return self._applied

    @property
    def sync_pending(self) -> bool:
        """An initial sync started and did not finish: the data is incomplete (resync)."""
        return self._syncing

    def term_at(self, op_id: int) -> int | None:
        """The term of entry ``op_id`` (0 for op id 0, the position before the first
        entry); None when there is no such entry (trimmed, or beyond the last)."""
        if op_id == 0:
            return 0
        last = self._last
        if op_id == last.op_id:
            return last.term
        if op_id > last.op_id or op_id < self._base.op_id:
            return None
        if op_id == self._base.op_id:
            return self._base.term
        with self._s._rlock:
            row = self._s._reader().execute(
                "SELECT term FROM oplog WHERE op_id = ?", (op_id,)
            ).fetchone()
        return int(row[0]) if row is not None else None

    def _term_locked(self, conn: sqlite3.Connection, op_id: int) -> int:
        """``term_at`` through the writer connection (write lock held)."""
        if op_id == 0:
            return 0
        if op_id == self._base.op_id:
            return self._base.term
        row = conn.execute("SELECT term FROM oplog WHERE op_id = ?", (op_id,)).fetchone()
        if row is None:
            raise LauraError(ErrorCode.INTERNAL_ERROR, f"oplog entry {op_id} is missing")
        return int(row[0])

    # ------------------------------------------------------------------ reading

    def read(
        self, start: int, max_entries: int = 1000, max_bytes: int = 4 << 20
    ) -> list[replication_pb2.OplogEntry]:
        """Committed entries from ``start`` on (at least one if any, then up to
        ``max_entries`` / ``max_bytes``). OPERATION_FAILED (details ``oplog_trimmed``)
        when entries from ``start`` on are no longer retained (the reader must resync)."""
        start = max(start, 1)
        if start <= self._base.op_id:
            raise LauraError(
                ErrorCode.OPERATION_FAILED,
                f"oplog entries up to {self._base.op_id} are no longer retained "
                f"(requested from {start}): a full resync is needed",
                {"oplog_trimmed": True, "base_op_id": self._base.op_id},
            )
        with self._s._rlock:
            rows = self._s._reader().execute(
                "SELECT entry FROM oplog WHERE op_id >= ? ORDER BY op_id LIMIT ?",
                (start, max(1, max_entries)),
            ).fetchall()
        out: list[replication_pb2.OplogEntry] = []
        size = 0
        for (blob,) in rows:
            if out and size + len(blob) > max_bytes:
                break
            size += len(blob)
            out.append(replication_pb2.OplogEntry.FromString(blob))
        return out

    # ------------------------------------------------------------------ primary

    def write_local(
        self, conn: sqlite3.Connection, entries: Sequence[replication_pb2.OplogEntry]
    ) -> int:
        """Append a primary's entries inside the storage's running write transaction
        (stamps op id, term, timestamp); the last op id. Memory follows on commit
        (``committed_local``)."""
        s = self._s
        if not s.is_primary:
            raise LauraError(
                ErrorCode.NOT_WRITABLE_PRIMARY, "not primary: this member does not accept writes"
            )
        term = s.oplog_term
        last = self._last
        if term < last.term:
            raise LauraError(
                ErrorCode.ILLEGAL_OPERATION,
                f"cannot write entries of term {term} after entries of term {last.term}",
            )
        if self._applied != last.op_id:
            raise LauraError(
                ErrorCode.ILLEGAL_OPERATION,
                f"the oplog tail ({self._applied}, {last.op_id}] is not applied: a new "
                f"primary applies its whole log before writing",
            )
        ts = int(time.time() * 1000)
        op_id = last.op_id
        rows: list[tuple[int, int, bytes]] = []
        for e in entries:
            op_id += 1
            e.op_id = op_id
            e.term = term
            e.timestamp = ts
            rows.append((op_id, term, e.SerializeToString()))
        conn.executemany("INSERT INTO oplog (op_id, term, entry) VALUES (?, ?, ?)", rows)
        conn.execute("UPDATE oplog_state SET applied = ? WHERE id = 1", (op_id,))
        self._pending = (last.op_id + 1, OplogPosition(op_id, term))
        return op_id

    def committed_local(self, op_id: int) -> None:
        """The transaction that ``write_local`` wrote into committed."""
        pending, self._pending = self._pending, None
        assert pending is not None and pending[1].op_id == op_id
        self._last = pending[1]
        self._applied = op_id
        if not self._first:
            self._first = pending[0]

    def noop(self, term: int) -> int:
        """Append a no-op entry of ``term`` (a new primary, after applying its log);
        its op id. Counts as applied when everything before it was."""
        s = self._s
        with s._wlock:
            last = self._last
            if term < last.term:
                raise LauraError(
                    ErrorCode.ILLEGAL_OPERATION,
                    f"cannot append a no-op of term {term} after entries of term {last.term}",
                )
            op_id = last.op_id + 1
            e = replication_pb2.OplogEntry(
                op_id=op_id, term=term, timestamp=int(time.time() * 1000),
                op_type=common_pb2.UNKNOWN_OP, kind=NOOP_KIND,
            )
            applied = op_id if self._applied == last.op_id else self._applied
            with s._transaction(log=False) as conn:
                conn.execute(
                    "INSERT INTO oplog (op_id, term, entry) VALUES (?, ?, ?)",
                    (op_id, term, e.SerializeToString()),
                )
                conn.execute("UPDATE oplog_state SET applied = ? WHERE id = 1", (applied,))
            self._last = OplogPosition(op_id, term)
            self._applied = applied
            if not self._first:
                self._first = op_id
            s._notify(op_id)
            return op_id

    # ------------------------------------------------------------------ follower

    def append(self, entries: Sequence[replication_pb2.OplogEntry]) -> None:
        """Append entries received from the primary (durably, one transaction).

        ``entries[0].op_id`` must be ``last().op_id + 1``, ids contiguous and terms
        non-decreasing; else BAD_VALUE and nothing is appended.
        """
        if not entries:
            return
        s = self._s
        with s._wlock:
            last = self._last
            expect, prev_term = last.op_id + 1, last.term
            rows: list[tuple[int, int, bytes]] = []
            for e in entries:
                if e.op_id != expect:
                    raise LauraError(
                        ErrorCode.BAD_VALUE,
                        f"oplog entry {e.op_id} does not follow {expect - 1} "
                        f"(the log ends at {last.op_id})",
                    )
                if e.term < prev_term:
                    raise LauraError(
                        ErrorCode.BAD_VALUE,
                        f"oplog entry {e.op_id} has term {e.term}, older than {prev_term}",
                    )
                rows.append((e.op_id, e.term, e.SerializeToString()))
                expect, prev_term = expect + 1, e.term
            with s._transaction(log=False) as conn:
                conn.executemany("INSERT INTO oplog (op_id, term, entry) VALUES (?, ?, ?)", rows)
            self._last = OplogPosition(entries[-1].op_id, entries[-1].term)
            if not self._first:
                self._first = entries[0].op_id

    def truncate_after(self, op_id: int) -> None:
        """Drop the entries after ``op_id`` (a diverged, unapplied tail).
        ILLEGAL_OPERATION below ``applied`` (their effects are in the documents)."""
        s = self._s
        with s._wlock:
            if op_id < self._applied:
                raise LauraError(
                    ErrorCode.ILLEGAL_OPERATION,
                    f"cannot truncate the oplog after {op_id}: entries up to "
                    f"{self._applied} are applied (a resync is needed)",
                )
            if op_id >= self._last.op_id:
                return
            with s._transaction(log=False) as conn:
                term = self._term_locked(conn, op_id)
                conn.execute("DELETE FROM oplog WHERE op_id > ?", (op_id,))
            self._last = OplogPosition(op_id, term)
            if self._first > op_id:
                self._first = 0

    def trim(self, keep_from: int) -> int:
        """Drop the entries before ``keep_from`` (retention; never an unapplied entry:
        ``keep_from`` is capped at ``applied + 1``); how many were dropped."""
        s = self._s
        with s._wlock:
            keep_from = min(keep_from, self._applied + 1)
            if not self._first or keep_from <= self._first:
                return 0
            base_id = keep_from - 1
            with s._transaction(log=False) as conn:
                base_term = self._term_locked(conn, base_id)
                cur = conn.execute("DELETE FROM oplog WHERE op_id < ?", (keep_from,))
                conn.execute(
                    "UPDATE oplog_state SET base_id = ?, base_term = ? WHERE id = 1",
                    (base_id, base_term),
                )
            self._base = OplogPosition(base_id, base_term)
            self._first = keep_from if keep_from <= self._last.op_id else 0
            return int(cur.rowcount)

    def apply_through(self, op_id: int) -> int:
        """Apply the entries (applied, op_id] in order to documents, indexes, catalog
        and retry records (batches of ``APPLY_BATCH``, each one transaction that also
        advances ``applied``; no entries written); the new ``applied``."""
        s = self._s
        while True:
            with s._wlock:
                start = self._applied
                target = min(op_id, self._last.op_id)
                if start >= target:
                    return start
                with s._transaction(log=False) as conn:
                    rows = conn.execute(
                        "SELECT op_id, entry FROM oplog WHERE op_id > ? AND op_id <= ? "
                        "ORDER BY op_id LIMIT ?",
                        (start, target, APPLY_BATCH),
                    ).fetchall()
                    expect = start + 1
                    for oid, blob in rows:
                        if oid != expect:
                            raise LauraError(
                                ErrorCode.INTERNAL_ERROR,
                                f"oplog entry {expect} is missing (found {oid})",
                            )
                        entry = replication_pb2.OplogEntry.FromString(blob)
                        s._apply_entry(conn, entry)
                        expect += 1
                    if not rows:
                        raise LauraError(
                            ErrorCode.INTERNAL_ERROR, f"oplog entry {start + 1} is missing"
                        )
                    applied = int(rows[-1][0])
                    conn.execute("UPDATE oplog_state SET applied = ? WHERE id = 1", (applied,))
                self._applied = applied

    # ------------------------------------------------------------------ initial sync

    def _reset(self, conn: sqlite3.Connection, base: OplogPosition, syncing: bool) -> None:
        """Empty the log and set its base (inside a write transaction; ``reload`` after)."""
        conn.execute("DELETE FROM oplog")
        conn.execute(
            "UPDATE oplog_state SET applied = ?, base_id = ?, base_term = ?, syncing = ? "
            "WHERE id = 1",
            (base.op_id, base.op_id, base.term, int(syncing)),
        )

    def reload(self) -> None:
        with self._s._wlock:
            self._load(self._s._writer())
