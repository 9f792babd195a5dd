"""Persisted migration state of one shard (``DIR/migrations.sqlite3``, WAL).

Three small tables, each change one transaction (survives kill -9):

* ``donor``: migrations this shard donates, with their phase (``cloning``,
  ``critical``, ``committing``). On restart a ``committing`` row means the config
  commit may have happened: the donor asks the config server before doing anything
  else with the range; earlier phases are simply aborted.
* ``recipient``: migrations this shard receives (``cloning``, ``steady``, ``done``).
  On restart the documents received for an unfinished migration are deleted unless
  the range is now owned here (or, for ``done``, the outcome is still unknown).
* ``range_deletions``: ranges given away whose documents still have to be deleted
  (the range deleter resumes them after a restart).

The tables are tiny and rarely written; calls are synchronous and fast.

Replica sets: the state must survive a failover, so it replicates through the shard's
oplog as whole-state snapshots (the tables are tiny): with ``on_change`` set, every
change calls it with ``dump()`` (BSON of all three tables, in change order); a follower
applies such a snapshot with ``restore_dump`` (idempotent: replaces everything).
``Migrations.replicate`` wires it on replica-set members: ``on_change`` logs the
snapshot (``storage.log_state``), ``change_scope`` holds the storage write lock and
refuses changes on a non-primary, ``storage.state_appliers``/``state_sources`` apply
and copy (initial sync) the snapshots. Mutators are synchronous (they may wait for the
storage write lock): call them from a worker thread, not the event loop.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import bson

from lauradb.errors import ErrorCode, LauraError
from shard_stub.migration_range import MigrationRange

FILENAME = "migrations.sqlite3"
MIGRATION_STATE = "migration_state"  # the oplog entry kind of this state's snapshots
_TABLES = ("donor", "recipient", "range_deletions")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS donor (
    migration_id TEXT PRIMARY KEY,
    ns TEXT NOT NULL, min_bound BLOB NOT NULL, max_bound BLOB NOT NULL,
    lo BLOB NOT NULL, hi BLOB NOT NULL, hi_inclusive INTEGER NOT NULL,
    chunk_id TEXT NOT NULL, epoch TEXT NOT NULL,
    to_shard TEXT NOT NULL, to_address TEXT NOT NULL,
    phase TEXT NOT NULL, updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS recipient (
    migration_id TEXT PRIMARY KEY,
    ns TEXT NOT NULL, min_bound BLOB NOT NULL, max_bound BLOB NOT NULL,
    lo BLOB NOT NULL, hi BLOB NOT NULL, hi_inclusive INTEGER NOT NULL,
    epoch TEXT NOT NULL, from_shard TEXT NOT NULL, from_address TEXT NOT NULL,
    state TEXT NOT NULL, updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS range_deletions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ns TEXT NOT NULL, min_bound BLOB NOT NULL, max_bound BLOB NOT NULL,
    lo BLOB NOT NULL, hi BLOB NOT NULL, hi_inclusive INTEGER NOT NULL,
    epoch TEXT NOT NULL, migration_id TEXT NOT NULL, created_ms INTEGER NOT NULL
);
"""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class DonorRecord:
    migration_id: str
    range: MigrationRange
    chunk_id: str
    epoch: str
    to_shard: str
    to_address: str
    phase: str


@dataclass(frozen=True)
class RecipientRecord:
    migration_id: str
    range: MigrationRange
    epoch: str
    from_shard: str
    from_address: str
    state: str


@dataclass(frozen=True)
class RangeDeletion:
    deletion_id: int
    range: MigrationRange
    epoch: str  # the collection incarnation whose documents are deleted
    migration_id: str
    created_ms: int


def _range_columns(r: MigrationRange) -> tuple[str, bytes, bytes, bytes, bytes, int]:
    min_raw, max_raw = r.encoded_bounds()
    return r.ns, min_raw, max_raw, r.keys.lo, r.keys.hi, int(r.keys.hi_inclusive)


def _range(row: tuple[Any, ...]) -> MigrationRange:
    ns, min_raw, max_raw, lo, hi, inclusive = row
    return MigrationRange.from_stored(ns, min_raw, max_raw, lo, hi, bool(inclusive))


_RANGE_COLS = "ns, min_bound, max_bound, lo, hi, hi_inclusive"

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _replicated(
    fn: Callable[Concatenate[MigrationStore, _P], _T],
) -> Callable[Concatenate[MigrationStore, _P], _T]:
    """Report the whole state to ``on_change`` after the change (in change order)."""

    @functools.wraps(fn)
    def wrapper(self: MigrationStore, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self.on_change is None:
            return fn(self, *args, **kwargs)
        scope = self.change_scope() if self.change_scope is not None else nullcontext()
        with scope, self._log_lock:
            out = fn(self, *args, **kwargs)
            self.on_change(self.dump())
            return out

    return wrapper


class MigrationStore:
    """The ``donor``, ``recipient`` and ``range_deletions`` tables."""

    def __init__(self, data_dir: str | Path, filename: str = FILENAME) -> None:
        self.path = Path(data_dir) / filename
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()  # (change + on_change) in order; never under _lock
        self.on_change: Callable[[bytes], None] | None = None
        # Entered around (change + on_change): on a replica-set member it holds the
        # storage write lock and refuses changes unless the member is primary, so a
        # change is never made locally without its oplog entry (no step-down between).
        self.change_scope: Callable[[], AbstractContextManager[Any]] | None = None

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LauraError(
                ErrorCode.OPERATION_FAILED, f"cannot open migration state at {self.path}: {exc}"
            ) from None
        self._conn = conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LauraError(ErrorCode.HOST_UNREACHABLE, "migration state store is closed")
        return self._conn

    def _write(self, *statements: tuple[str, tuple[object, ...]]) -> None:
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    conn.execute(sql, args)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db().execute(sql, args).fetchall())

    # ------------------------------------------------------------------ donor

    @_replicated
    def save_donor(self, rec: DonorRecord) -> None:
        self._write((
            f"INSERT OR REPLACE INTO donor (migration_id, {_RANGE_COLS}, chunk_id, epoch, "
            "to_shard, to_address, phase, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rec.migration_id, *_range_columns(rec.range), rec.chunk_id, rec.epoch,
             rec.to_shard, rec.to_address, rec.phase, now_ms()),
        ))

    @_replicated
    def set_donor_phase(self, migration_id: str, phase: str) -> None:
        self._write((
            "UPDATE donor SET phase = ?, updated_ms = ? WHERE migration_id = ?",
            (phase, now_ms(), migration_id),
        ))

    @_replicated
    def drop_donor(self, migration_id: str) -> None:
        self._write(("DELETE FROM donor WHERE migration_id = ?", (migration_id,)))

    @_replicated
    def donor_committed(self, migration_id: str, r: MigrationRange, epoch: str) -> int:
        """The commit is known: forget the donor row and schedule the range deletion
        (one transaction); the deletion's id."""
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM donor WHERE migration_id = ?", (migration_id,))
                cur = conn.execute(
                    f"INSERT INTO range_deletions ({_RANGE_COLS}, epoch, migration_id, "
                    "created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*_range_columns(r), epoch, migration_id, now_ms()),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return int(cur.lastrowid or 0)

    def donors(self) -> list[DonorRecord]:
        rows = self._read(
            f"SELECT migration_id, {_RANGE_COLS}, chunk_id, epoch, to_shard, to_address, phase "
            "FROM donor ORDER BY updated_ms"
        )
        return [DonorRecord(r[0], _range(r[1:7]), *r[7:12]) for r in rows]

    # ------------------------------------------------------------------ recipient

    @_replicated
    def save_recipient(self, rec: RecipientRecord) -> None:
        self._write((
            f"INSERT OR REPLACE INTO recipient (migration_id, {_RANGE_COLS}, epoch, from_shard, "
            "from_address, state, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rec.migration_id, *_range_columns(rec.range), rec.epoch, rec.from_shard,
             rec.from_address, rec.state, now_ms()),
        ))

    @_replicated
    def set_recipient_state(self, migration_id: str, state: str) -> None:
        self._write((
            "UPDATE recipient SET state = ?, updated_ms = ? WHERE migration_id = ?",
            (state, now_ms(), migration_id),
        ))

    @_replicated
    def drop_recipient(self, migration_id: str) -> None:
        self._write(("DELETE FROM recipient WHERE migration_id = ?", (migration_id,)))

    def recipients(self) -> list[RecipientRecord]:
        rows = self._read(
            f"SELECT migration_id, {_RANGE_COLS}, epoch, from_shard, from_address, state "
            "FROM recipient ORDER BY updated_ms"
        )
        return [RecipientRecord(r[0], _range(r[1:7]), *r[7:11]) for r in rows]

    # ------------------------------------------------------------------ range deletions

    @_replicated
    def add_range_deletion(self, r: MigrationRange, epoch: str, migration_id: str) -> int:
        with self._lock:
            cur = self._db().execute(
                f"INSERT INTO range_deletions ({_RANGE_COLS}, epoch, migration_id, created_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*_range_columns(r), epoch, migration_id, now_ms()),
            )
            return int(cur.lastrowid or 0)

    @_replicated
    def drop_range_deletion(self, deletion_id: int) -> None:
        self._write(("DELETE FROM range_deletions WHERE id = ?", (deletion_id,)))

    def range_deletions(self) -> list[RangeDeletion]:
        rows = self._read(
            f"SELECT id, {_RANGE_COLS}, epoch, migration_id, created_ms FROM range_deletions "
            "ORDER BY id"
        )
        return [RangeDeletion(r[0], _range(r[1:7]), r[7], r[8], r[9]) for r in rows]

    # ------------------------------------------------------------------ replication

    def dump(self) -> bytes:
        """The whole state (every row of the three tables) as one BSON document."""
        with self._lock:
            conn = self._db()
            return bson.encode(
                {t: [list(r) for r in conn.execute(f"SELECT * FROM {t}")] for t in _TABLES}
            )

    @_replicated
    def publish(self) -> None:
        """Log the whole state as it is (a new primary re-asserts its state)."""

    def restore_dump(self, raw: bytes) -> None:
        """Replace the whole state with a ``dump`` (one transaction; idempotent)."""
        doc = bson.decode(raw)
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for t in _TABLES:
                    conn.execute(f"DELETE FROM {t}")
                    rows = [tuple(r) for r in doc.get(t) or []]
                    if rows:
                        marks = ",".join("?" * len(rows[0]))
                        conn.executemany(f"INSERT INTO {t} VALUES ({marks})", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
