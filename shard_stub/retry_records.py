"""Retryable writes on a shard: the records of executed statements.

A retryable write carries a ``retry_id`` (the client's request id) and a statement id
per statement (inserts: the document's index in the client's request; a single
update/delete: 0), like MongoDB's lsid + txnNumber + stmtId. When a shard executes a
statement it records ``(retry_id, stmt_id) -> outcome`` in the ``retry_records`` table
**in the same SQLite transaction as the write itself**, so the record and the write
survive (or vanish) together. Before executing a statement the shard looks for its
record (one indexed lookup; one per request for an insert batch): a recorded statement
is answered from the record and not applied again. A statement that failed (e.g. a
duplicate key) changed nothing and has no record: a retry runs it again.

Each record keeps the written document's ``_id`` key and shard key, so a chunk
migration can carry the records of the moving range to the recipient
(``MigrateRetryHistory``), and a fingerprint of the client's request: a record hit by a
request with another fingerprint means the client reused a request id for a different
write, which fails with ILLEGAL_OPERATION instead of silently answering for another write.

Records are bounded: ``RetryPruner`` deletes them after ``ttl_s`` (default 30 minutes,
``--retry-history-ttl``) and keeps at most ``max_records``, oldest first, in small
batches off the write path. Writes without a ``retry_id`` never touch the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import bson
from prometheus_client import Counter

from lauradb.cluster import shard_pb2
from lauradb.errors import ErrorCode, LauraError

if TYPE_CHECKING:
    from shard_stub.storage import ShardStorage

__all__ = [
    "DEFAULT_MAX_RECORDS",
    "DEFAULT_TTL_S",
    "RETRIED_STATEMENTS",
    "SCHEMA",
    "RecordRow",
    "RetryBatch",
    "RetryPruner",
    "RetryStatement",
    "StoredRecord",
    "record_from_proto",
    "record_to_proto",
]

log = logging.getLogger("lauradb.shard.retry")

DEFAULT_TTL_S = 30 * 60.0
DEFAULT_MAX_RECORDS = 5_000_000
PRUNE_BATCH = 1000

INSERT = "insert"
UPDATE = "update"
DELETE = "delete"

SCHEMA = """
CREATE TABLE IF NOT EXISTS retry_records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    retry_id TEXT NOT NULL,
    stmt_id INTEGER NOT NULL,
    ns TEXT NOT NULL,
    kind TEXT NOT NULL,
    fingerprint BLOB,
    created_at REAL NOT NULL,
    id_key BLOB,
    shard_key BLOB,
    outcome BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS retry_records_stmt ON retry_records (retry_id, stmt_id);
"""

RETRIED_STATEMENTS = Counter(
    "lauradb_shard_retried_statements",
    "Retried write statements answered from their records instead of being applied again",
    ["kind"],
)


@dataclass
class RetryStatement:
    """The retry identity of a single update/delete statement (``retried``: set by the
    storage when the statement was answered from its record)."""

    retry_id: str
    stmt_id: int = 0
    fingerprint: bytes = b""
    history_only: bool = False
    retried: bool = False


@dataclass
class RetryBatch:
    """The retry identity of an insert batch: one statement id per document."""

    retry_id: str
    stmt_ids: Sequence[int]
    fingerprint: bytes = b""


@dataclass(frozen=True)
class RecordRow:
    """A record as the write path reads it."""

    stmt_id: int
    ns: str
    kind: str
    fingerprint: bytes | None
    outcome: bytes | None

    def check(self, retry_id: str, ns: str, kind: str, fingerprint: bytes) -> None:
        """ILLEGAL_OPERATION when the record was made for another write."""
        same_print = not fingerprint or not self.fingerprint or fingerprint == self.fingerprint
        if self.ns != ns or self.kind != kind or not same_print:
            raise LauraError(
                ErrorCode.ILLEGAL_OPERATION,
                f"request id {retry_id!r} was already used by a different write "
                f"({self.kind} on {self.ns}, statement {self.stmt_id}); a request id "
                f"identifies one write, and a retry must resend that same write",
                {"request_id": retry_id},
            )

    def outcome_doc(self) -> dict[str, Any]:
        return dict(bson.decode(self.outcome)) if self.outcome else {}


@dataclass(frozen=True)
class StoredRecord:
    """A whole record (migrations)."""

    seq: int
    retry_id: str
    stmt_id: int
    ns: str
    kind: str
    fingerprint: bytes
    created_at: float
    id_key: bytes
    shard_key: bytes | None
    outcome: bytes


def record_to_proto(r: StoredRecord) -> shard_pb2.RetryRecord:
    return shard_pb2.RetryRecord(
        retry_id=r.retry_id, stmt_id=r.stmt_id, kind=r.kind, fingerprint=r.fingerprint,
        created_at=r.created_at, id_key=r.id_key, shard_key=r.shard_key or b"",
        outcome=r.outcome,
    )


def record_from_proto(msg: shard_pb2.RetryRecord, ns: str) -> StoredRecord:
    if msg.kind not in (INSERT, UPDATE, DELETE) or not msg.retry_id:
        raise LauraError(ErrorCode.BAD_VALUE, f"malformed retry record {msg.retry_id!r}")
    return StoredRecord(
        0, msg.retry_id, msg.stmt_id, ns, msg.kind, msg.fingerprint, msg.created_at,
        msg.id_key, msg.shard_key or None, msg.outcome,
    )


_COLUMNS = "stmt_id, ns, kind, fingerprint, outcome"


def lookup_many(conn: sqlite3.Connection, retry_id: str) -> dict[int, RecordRow]:
    """Every record of ``retry_id`` by statement id (one index range scan)."""
    return {
        row[0]: RecordRow(*row)
        for row in conn.execute(
            f"SELECT {_COLUMNS} FROM retry_records WHERE retry_id = ?", (retry_id,)
        )
    }


def lookup(conn: sqlite3.Connection, retry_id: str, stmt_id: int) -> RecordRow | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM retry_records WHERE retry_id = ? AND stmt_id = ?",
        (retry_id, stmt_id),
    ).fetchone()
    return RecordRow(*row) if row is not None else None


def add(
    conn: sqlite3.Connection,
    retry_id: str,
    stmt_id: int,
    ns: str,
    kind: str,
    fingerprint: bytes,
    id_key: bytes | None,
    shard_key: bytes | None,
    outcome: Mapping[str, Any] | None = None,
    created_at: float | None = None,
) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO retry_records "
        "(retry_id, stmt_id, ns, kind, fingerprint, created_at, id_key, shard_key, outcome) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            retry_id, stmt_id, ns, kind, fingerprint or None,
            time.time() if created_at is None else created_at, id_key, shard_key,
            bson.encode(outcome) if outcome else None,
        ),
    )


def add_statements(
    conn: sqlite3.Connection,
    retry_id: str,
    ns: str,
    kind: str,
    fingerprint: bytes,
    created_at: float,
    statements: Iterable[tuple[int, bytes | None, bytes | None]],
) -> None:
    """``add`` for many statements of one request, without outcomes: ``statements``
    are ``(stmt_id, id_key, shard_key)`` (an insert batch's documents)."""
    conn.executemany(
        "INSERT OR IGNORE INTO retry_records "
        "(retry_id, stmt_id, ns, kind, fingerprint, created_at, id_key, shard_key, outcome) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
        [
            (retry_id, stmt_id, ns, kind, fingerprint or None, created_at, id_key, shard_key)
            for stmt_id, id_key, shard_key in statements
        ],
    )


def add_many(conn: sqlite3.Connection, records: Iterable[StoredRecord]) -> int:
    """Store migrated records (kept: a record already here); how many were new."""
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO retry_records "
        "(retry_id, stmt_id, ns, kind, fingerprint, created_at, id_key, shard_key, outcome) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (r.retry_id, r.stmt_id, r.ns, r.kind, r.fingerprint or None, r.created_at,
             r.id_key, r.shard_key, r.outcome or None)
            for r in records
        ],
    )
    return conn.total_changes - before


def page(
    conn: sqlite3.Connection, ns: str | None, after_seq: int, limit: int
) -> tuple[list[StoredRecord], int, bool]:
    """The records of ``ns`` (None: every namespace) among the next ``limit`` records
    after ``after_seq`` (in sequence order, every namespace scanned); the last sequence
    number scanned; more?"""
    rows = conn.execute(
        "SELECT seq, retry_id, stmt_id, ns, kind, fingerprint, created_at, id_key, "
        "shard_key, outcome FROM retry_records WHERE seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    ).fetchall()
    records = [
        StoredRecord(
            seq, rid, stmt, rns, kind, fp or b"", created, idk or b"", sk, out or b""
        )
        for seq, rid, stmt, rns, kind, fp, created, idk, sk, out in rows
        if ns is None or rns == ns
    ]
    return records, (rows[-1][0] if rows else after_seq), len(rows) >= limit


def prune(conn: sqlite3.Connection, cutoff: float, max_records: int, limit: int) -> int:
    """Delete up to ``limit`` of the oldest records: those created before ``cutoff``
    (from the oldest on, up to the first younger one) and those over ``max_records``."""
    rows = conn.execute(
        "SELECT seq, created_at FROM retry_records ORDER BY seq LIMIT ?", (limit,)
    ).fetchall()
    if not rows:
        return 0
    upto: int | None = None
    for seq, created_at in rows:
        if created_at >= cutoff:
            break
        upto = seq
    (last,) = conn.execute("SELECT MAX(seq) FROM retry_records").fetchone()
    excess = (last - rows[0][0] + 1) - max_records  # seqs are dense: deletes are oldest first
    if excess > 0:
        over = rows[min(excess, len(rows)) - 1][0]
        upto = over if upto is None else max(upto, over)
    if upto is None:
        return 0
    cur = conn.execute("DELETE FROM retry_records WHERE seq <= ?", (upto,))
    return int(cur.rowcount)


@dataclass
class RetryPruner:
    """Deletes expired records in the background, one small transaction at a time."""

    storage: ShardStorage
    ttl_s: float = DEFAULT_TTL_S
    max_records: int = DEFAULT_MAX_RECORDS
    batch: int = PRUNE_BATCH
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    @property
    def interval_s(self) -> float:
        return min(max(self.ttl_s / 4, 0.1), 60.0)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="retry pruner")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def prune_once(self) -> int:
        """Delete everything due now (batch by batch); how many records."""
        total = 0
        while True:
            cutoff = time.time() - self.ttl_s
            n = await asyncio.to_thread(
                self.storage.prune_retry_records, cutoff, self.max_records, self.batch
            )
            total += n
            if n < self.batch:
                return total

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                n = await self.prune_once()
            except LauraError as err:  # storage closed or busy: try again later
                log.debug("retry record pruning failed: %s", err)
                continue
            except sqlite3.Error as exc:
                log.warning("retry record pruning failed: %s", exc)
                continue
            if n:
                log.debug("pruned %d retry records", n)
