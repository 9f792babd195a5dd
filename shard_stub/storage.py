"""The shard's storage engine: BSON documents in one SQLite database (WAL).

Layout: a ``catalog`` table (namespace -> table name, shard key pattern) and per
collection a table ``(id_key BLOB PRIMARY KEY, shard_key BLOB, doc BLOB)`` with an
index on ``(shard_key, id_key)``. ``id_key`` is ``keys.encode_value(_id)`` (memcmp
order == BSON order), ``shard_key`` the collection's chunk-space key
(``ShardKeyPattern.key_for_doc``) or NULL while the collection is unsharded, so a
chunk's documents are one range scan of the index.

Secondary indexes: an ``indexes`` table (namespace, name, table, fields, options,
multikey) and per index a table ``(index_key BLOB, id_key BLOB, aux INTEGER)`` keyed
by ``(index_key, id_key)``; ``index_key`` is ``keys.encode_key(values, directions)``
(see ``index_keys`` for the values of a document). A unique index adds a UNIQUE
index on ``index_key`` over its non-auxiliary entries. Every insert, update and
delete maintains the indexes in its own transaction; an insert that violates a
unique index fails for that document only (a savepoint undoes its partial writes).

Durability: WAL with ``synchronous=NORMAL``; a committed transaction survives a
crash of the process (kill -9). Automatic checkpoints run every ~40 MB of WAL. Every insert batch, update and delete is one
transaction. One writer connection (serialised by a lock) and one reader
connection: reads page through results with short statements (``id_key > last``),
so a reader never holds the database for long and cursors can resume later.

All methods are synchronous and thread-safe; the service calls them through
``asyncio.to_thread``.

Replication (``shard_stub.oplog``): with ``oplog`` set, every write transaction also
appends the oplog entries describing its changes, in the same SQLite transaction (a
standalone shard has ``oplog = None`` and writes none).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import bson
from bson.objectid import ObjectId
from bson.regex import Regex

from lauradb.bsonkit.codec import MAX_DOCUMENT_BYTES, decode_document, encode_document
from lauradb.bsonkit.keys import decode_key, encode_value
from lauradb.cluster import common_pb2, replication_pb2, shard_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.filter import Matcher, compile_filter
from lauradb.query.update import build_upsert_document, compile_update
from lauradb.sharding.hashing import hash_encoded
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub import retry_records
from shard_stub.index_keys import (
    ID_INDEX_NAME,
    IndexDef,
    IndexEntries,
    fields_from_json,
    index_entries,
    is_id_index,
    key_value_document,
)
from shard_stub.ownership import KeyRange, OwnedRanges
from shard_stub.retry_records import RetryBatch, RetryStatement, StoredRecord
from shard_stub.scan_plan import (
    ID_COLUMN,
    IndexScan,
    PlanChoice,
    Points,
    Range,
    ScanPlan,
    choose_plan,
)
from shard_stub.transactions.locks import LockTable
from shard_stub.write_guard import NamespaceGuard

if TYPE_CHECKING:
    from shard_stub.oplog import Oplog

log = logging.getLogger("lauradb.shard.storage")

ConnFn = Callable[[], sqlite3.Connection]
T = TypeVar("T")

DB_FILENAME = "shard.sqlite3"
WAL_CHECKPOINT_PAGES = 10_000  # automatic checkpoint once the WAL holds this many pages
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes of WAL file kept after a checkpoint
FIRST_PAGE = 64
MAX_PAGE = 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS catalog (
    ns TEXT PRIMARY KEY,
    tbl TEXT NOT NULL UNIQUE,
    key_fields TEXT,
    key_strategy TEXT
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS indexes (
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    tbl TEXT NOT NULL UNIQUE,
    fields TEXT NOT NULL,
    is_unique INTEGER NOT NULL,
    is_sparse INTEGER NOT NULL,
    multikey INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ns, name)
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', '1');
CREATE TABLE IF NOT EXISTS txn_rows (
    tbl TEXT NOT NULL,
    key TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (tbl, key)
);
""" + retry_records.SCHEMA


@dataclass(frozen=True)
class Collection:
    """A catalog entry: where a namespace lives and how its shard keys are computed."""

    ns: str
    table: str
    pattern: ShardKeyPattern | None
    indexes: tuple[IndexDef, ...] = ()

    def index(self, name: str) -> IndexDef | None:
        return next((ix for ix in self.indexes if ix.name == name), None)


class Row:
    """One stored document: its keys, its BSON bytes and (decoded on demand) the document."""

    __slots__ = ("_doc", "id_key", "raw", "shard_key")

    def __init__(
        self, id_key: bytes, shard_key: bytes | None, raw: bytes,
        doc: dict[str, Any] | None = None,
    ) -> None:
        self.id_key = id_key
        self.shard_key = shard_key
        self.raw = raw
        self._doc = doc

    @property
    def doc(self) -> dict[str, Any]:
        if self._doc is None:
            self._doc = bson.decode(self.raw)
        return self._doc


@dataclass
class WriteError:
    index: int
    error: LauraError


@dataclass
class InsertResult:
    inserted: int = 0  # includes the statements answered from their retry records
    errors: list[WriteError] = field(default_factory=list)
    retried: int = 0  # statements answered from their retry records (not applied again)
    op_id: int = 0  # oplog: the last entry the write produced (see shard_stub.oplog)


@dataclass
class UpdateResult:
    matched: int = 0
    modified: int = 0
    upserted: bool = False
    upserted_id: Any = None
    retried: bool = False  # answered from the statement's retry record
    op_id: int = 0  # oplog: the last entry the write produced (see shard_stub.oplog)


class OpCount(int):
    """A count returned by a write (``delete``), with the op id of the last oplog entry
    the write produced (``op_id``; see ``shard_stub.oplog``)."""

    op_id: int

    def __new__(cls, value: int, op_id: int = 0) -> OpCount:
        out = super().__new__(cls, value)
        out.op_id = op_id
        return out


@dataclass
class ScanStats:
    """Documents read from storage by a scan (``documents_examined``)."""

    examined: int = 0


@dataclass(slots=True)  # not frozen: built once per inserted document (cheaper)
class _Prepared:
    index: int
    id_value: Any
    id_key: bytes
    shard_key: bytes | None
    raw: bytes
    decoded: Mapping[str, Any] | None = None  # ``bson.decode(raw)`` when already done


def _duplicate_error(ns: str, id_value: Any) -> LauraError:
    return LauraError(
        ErrorCode.DUPLICATE_KEY,
        f"E11000 duplicate key error collection: {ns} index: _id_ dup key: {{ _id: {id_value!r} }}",
        {"keyPattern": {"_id": 1}, "keyValue": {"_id": id_value}},
    )


_PLAIN_ID_TYPES = frozenset({int, str, float, ObjectId})  # always valid ``_id`` values


def check_id(value: Any) -> None:
    """MongoDB's rules for ``_id`` values (no arrays, no regular expressions)."""
    if type(value) in _PLAIN_ID_TYPES:
        return
    if isinstance(value, (list, tuple)):
        raise LauraError(ErrorCode.BAD_VALUE, "can't use an array for _id")
    if isinstance(value, Regex):
        raise LauraError(ErrorCode.BAD_VALUE, "can't use a regex for _id")
    if isinstance(value, Mapping) and any(str(k).startswith("$") for k in value):
        raise LauraError(
            ErrorCode.DOLLAR_PREFIXED_FIELD_NAME,
            "_id fields may not contain '$'-prefixed fields",
        )


def with_id_first(doc: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """``doc`` with ``_id`` as its first field (an ObjectId if missing); changed?"""
    if "_id" in doc:
        if next(iter(doc)) == "_id":
            return dict(doc) if not isinstance(doc, dict) else doc, False
        out = {"_id": doc["_id"]}
        out.update((k, v) for k, v in doc.items() if k != "_id")
        return out, True
    out = {"_id": ObjectId()}
    out.update(doc)
    return out, True


_LENGTH = struct.Struct("<i")
KeyOf = Callable[[Mapping[str, Any], bytes], bytes | None]  # (document, id_key) -> shard key


def _key_function(pattern: ShardKeyPattern | None) -> KeyOf:
    """How ``_prepare`` computes a document's chunk-space key from the document and
    its (already encoded) ``_id``: a key on ``_id`` alone reuses the ``_id``'s encoding
    (``key_for_doc`` would encode the same value again: ``hash_value(v)`` is
    ``hash_encoded(encode_value(v))``; a ranged ``_id`` key is ``encode_value(_id)``).
    ``check_id`` has already refused the values a shard key may not hold (arrays and
    regular expressions)."""
    if pattern is None:
        return lambda doc, id_key: None  # unsharded: no stored shard key
    if pattern.fields == ("_id",):
        if pattern.hashed:
            return lambda doc, id_key: encode_value(hash_encoded(id_key))
        return lambda doc, id_key: id_key
    return lambda doc, id_key: pattern.key_for_doc(doc)


def _decode_batch(docs: Sequence[bytes | Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """Every document of an insert batch decoded in one C call (``bson.decode_all``
    over the documents joined), or None when one is not raw BSON or is not well
    formed (the caller then decodes one at a time and reports the culprits)."""
    for item in docs:
        if type(item) is not bytes:
            return None
        n = len(item)
        if n < 5 or n > MAX_DOCUMENT_BYTES or item[-1] != 0 or _LENGTH.unpack_from(item)[0] != n:
            return None
    try:
        out: list[dict[str, Any]] = bson.decode_all(b"".join(docs))  # type: ignore[arg-type]
    except Exception:  # reported per document by the one-at-a-time path
        return None
    return out if len(out) == len(docs) else None


def _index_duplicate_error(ns: str, index: IndexDef, key: bytes) -> LauraError:
    values = key_value_document(index, key)
    shown = ", ".join(f"{k}: {v!r}" for k, v in values.items())
    return LauraError(
        ErrorCode.DUPLICATE_KEY,
        f"E11000 duplicate key error collection: {ns} index: {index.name} dup key: {{ {shown} }}",
        {"keyPattern": index.keys_document(), "keyValue": values},
    )


def _history_gone(retry: RetryStatement) -> LauraError:
    return LauraError(
        ErrorCode.OPERATION_FAILED,
        f"the outcome of statement {retry.stmt_id} of request {retry.retry_id!r} is no longer "
        f"recorded on this shard (its retry record expired): the write may or may not have "
        f"been applied",
        {"request_id": retry.retry_id},
    )


def _plan_killed(what: str, exc: sqlite3.Error) -> LauraError:
    return LauraError(
        ErrorCode.OPERATION_FAILED,
        f"query plan killed: {what} was dropped while the query ran ({exc})",
    )


def _encode_checked(doc: Mapping[str, Any]) -> bytes:
    raw = encode_document(doc)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise LauraError(
            ErrorCode.BSON_OBJECT_TOO_LARGE,
            f"document is {len(raw)} bytes, over the 16 MiB limit",
        )
    return raw


class _Keep:
    """Default of ``pattern`` arguments: keep the collection's current key pattern."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()
PatternArg = ShardKeyPattern | None | _Keep

RETRY_KIND = "retry"  # an oplog entry carrying retry records only
NOOP_KIND = "noop"  # a new primary's first entry
TXN_ROW_KIND = "txn_row"  # a transaction record row (shard_stub.transactions.records)

# A transaction record row change: (table, key, BSON document or None to delete).
TxnRowChange = tuple[str, str, bytes | None]
# A document lock a transaction takes: (namespace, id_key, shard_key).
LockedDoc = tuple[str, bytes, bytes | None]


def unique_lock_ns(ns: str, index: str) -> str:
    """The lock "namespace" of a unique index's keys (a prepared transaction that
    writes a key of a unique index locks it, so no other write can take the key before
    the transaction's Commit applies it)."""
    return f"{ns}\x00ix\x00{index}"


class _Capture:
    """A running capture (``ShardStorage.capture``): who runs it and what it locked."""

    def __init__(self, txn_id: str) -> None:
        self.txn_id = txn_id
        self.thread = threading.get_ident()
        self.locked: dict[tuple[str, bytes], bytes | None] = {}


class _CaptureGuard:
    """A write guard seen by a capture: checks as usual, records no transfer-log
    changes (nothing is written; the Commit's apply notifies the real guard)."""

    def __init__(self, guard: NamespaceGuard) -> None:
        self._guard = guard

    def check(self, shard_key: bytes | None, owned: OwnedRanges | None) -> None:
        self._guard.check(shard_key, owned)

    def written(self, shard_key: bytes | None, id_key: bytes, id_value: Any) -> None:
        return None

    def deleted(self, shard_key: bytes | None, id_key: bytes, id_value: Any) -> None:
        return None



class ShardStorage:
    """Collections of BSON documents in one SQLite file under ``data_dir``."""

    def __init__(self, data_dir: str | Path, filename: str = DB_FILENAME) -> None:
        self.path = Path(data_dir) / filename
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self._wlock = threading.RLock()
        self._rlock = threading.RLock()
        self._catalog: dict[str, Collection] = {}  # committed: what readers see
        self._txn_catalog: dict[str, Collection] | None = None  # inside a write transaction
        # Indexes that became multikey: (ns, name); dropping an index forgets its mark
        # (one transaction may drop and re-create it, e.g. an oplog apply batch).
        self._txn_multikey: set[tuple[str, str]] = set()
        self._closed = False
        # Chunk migration hooks by namespace (see write_guard); empty in the steady state.
        self.write_guards: dict[str, NamespaceGuard] = {}
        # Replication (see shard_stub.oplog): None on a standalone shard (no entries).
        self.oplog: Oplog | None = None
        self.oplog_term = 0  # the term stamped on the entries this (primary) node writes
        self.on_commit: Callable[[int], None] | None = None  # last op id of a commit
        # False on a secondary: writes that would log entries fail (NOT_WRITABLE_PRIMARY);
        # shard key recomputations (``set_key_pattern``, derived data) run unlogged.
        self.is_primary = True
        self._txn_ops: list[replication_pb2.OplogEntry] | None = None
        self._local = threading.local()
        # Transactions (shard_stub.transactions): documents locked by prepared
        # transactions, consulted by every insert/update/delete per affected row (not
        # by migration recipient writes, range deletion or oplog application).
        self.txn_locks = LockTable()
        self._capture: _Capture | None = None  # a Prepare computing its effects
        self._lock_owner = ""  # the transaction whose Commit is being applied
        self._lock_exempt = False  # a migration recipient's write: no lock checks
        # Node-local state kept outside this file that replicates as whole snapshots in
        # ``UNKNOWN_OP`` entries of its kind (``log_state``): a follower hands them to
        # ``state_appliers[kind]``; an initial sync copies ``state_sources[kind]()``.
        self.state_appliers: dict[str, Callable[[bytes], None]] = {}
        self.state_sources: dict[str, Callable[[], bytes]] = {}

    # ------------------------------------------------------------------ lifecycle

    def open(self, *, recover_corrupt: bool = False) -> None:
        """Open (creating if needed) the database; OPERATION_FAILED when impossible.

        A corrupt file (SQLite cannot read its header, schema or catalog): with
        ``recover_corrupt`` (a replica-set member, which can resync from its set) it is
        moved aside to ``<file>.corrupt-<time>`` and the member starts empty (the follower
        then runs an initial sync); otherwise (a standalone shard has nowhere to resync
        from) OPERATION_FAILED says so."""
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._close_connections()
            if not recover_corrupt:
                raise LauraError(
                    ErrorCode.OPERATION_FAILED,
                    f"shard storage {self.path} is corrupt ({exc}); a standalone shard has no "
                    f"replica to resync from: restore the file from a backup, or move it "
                    f"aside to start empty",
                ) from None
            aside = self._move_aside(str(exc))
            try:
                self._open()
            except (OSError, sqlite3.Error) as again:
                raise LauraError(
                    ErrorCode.OPERATION_FAILED,
                    f"cannot open shard storage at {self.path} (the corrupt file was moved to "
                    f"{aside}): {again}",
                ) from None
        except OSError as exc:
            self._close_connections()
            raise LauraError(
                ErrorCode.OPERATION_FAILED, f"cannot open shard storage at {self.path}: {exc}"
            ) from None

    def _close_connections(self) -> None:
        for conn in (self._r, self._w):
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        self._r = self._w = None
        self._catalog = {}

    def _move_aside(self, why: str) -> Path:
        """Rename the corrupt database file (and its WAL/shared-memory files)."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.rename(Path(f"{aside}{suffix}"))
        log.error(
            "storage %s is corrupt (%s): moved it to %s; this replica-set member starts "
            "empty and resyncs from its replica set", self.path, why, aside,
        )
        return aside

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        w = self._connect()
        w.execute("PRAGMA journal_mode=WAL")
        # Checkpoint (copy the WAL into the database file) every ~40 MB of WAL rather
        # than SQLite's default ~4 MB: pages that many commits rewrite (a hashed shard
        # key's index) are copied once per checkpoint, which cuts the CPU of a bulk
        # insert by ~15%. Durability is the same (a commit is in the WAL either way);
        # the WAL is truncated back to 64 MB after a checkpoint that made it bigger.
        w.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        w.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        w.executescript(_SCHEMA)
        self._w = w
        self._r = self._connect()
        self._r.execute("PRAGMA query_only=ON")
        indexes: dict[str, list[IndexDef]] = {}
        for ns, name, tbl, fields, unique, sparse, multikey in w.execute(
            "SELECT ns, name, tbl, fields, is_unique, is_sparse, multikey FROM indexes"
        ).fetchall():
            indexes.setdefault(ns, []).append(
                IndexDef(
                    name, fields_from_json(fields), bool(unique), bool(sparse), tbl,
                    bool(multikey),
                )
            )
        for ns, tbl, fields, strategy in w.execute(
            "SELECT ns, tbl, key_fields, key_strategy FROM catalog"
        ).fetchall():
            self._catalog[ns] = Collection(
                ns, tbl, _pattern_from_row(fields, strategy), tuple(indexes.get(ns, ()))
            )
        log.info("storage open at %s (%d collections)", self.path, len(self._catalog))

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA cache_size=-32000")
        return conn

    def close(self) -> None:
        """Close both connections (waits for a running write); idempotent."""
        with self._wlock, self._rlock:
            if self._closed:
                return
            self._closed = True
            for conn in (self._r, self._w):
                if conn is not None:
                    conn.close()
            self._r = self._w = None

    @property
    def is_open(self) -> bool:
        return self._w is not None and not self._closed

    def _writer(self) -> sqlite3.Connection:
        if self._w is None:
            raise LauraError(ErrorCode.HOST_UNREACHABLE, "shard storage is closed")
        return self._w

    def _reader(self) -> sqlite3.Connection:
        if self._r is None:
            raise LauraError(ErrorCode.HOST_UNREACHABLE, "shard storage is closed")
        return self._r

    @contextmanager
    def _transaction(self, log: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; with an oplog (and ``log``) the entries the writes
        describe (``_txn_ops``) are appended to it before COMMIT."""
        with self._wlock:
            cap = self._capture
            if cap is not None and cap.thread == threading.get_ident():
                with self._captured_step() as conn:
                    yield conn
                return
            conn = self._writer()
            conn.execute("BEGIN IMMEDIATE")
            self._txn_catalog = dict(self._catalog)
            self._txn_multikey = set()
            oplog = self.oplog if log else None
            self._txn_ops = [] if oplog is not None else None
            written = 0
            try:
                yield conn
                self._flush_multikey(conn)
                if oplog is not None and self._txn_ops:
                    written = oplog.write_local(conn, self._txn_ops)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            else:
                # Catalog changes become visible to readers only once committed.
                self._catalog = self._txn_catalog
                if oplog is not None:
                    self._local.op_id = written
                    if written:
                        oplog.committed_local(written)
                        self._notify(written)
            finally:
                self._txn_catalog = None
                self._txn_multikey = set()
                self._txn_ops = None

    @contextmanager
    def _captured_step(self) -> Iterator[sqlite3.Connection]:
        """One write inside a capture: a savepoint of the capture's transaction (a
        failed write leaves nothing behind); its entries join the capture's."""
        conn = self._writer()
        assert self._txn_ops is not None and self._txn_catalog is not None
        n_ops = len(self._txn_ops)
        catalog = dict(self._txn_catalog)
        multikey = set(self._txn_multikey)
        conn.execute("SAVEPOINT captured_write")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO captured_write")
            conn.execute("RELEASE captured_write")
            del self._txn_ops[n_ops:]
            self._txn_catalog = catalog
            self._txn_multikey = multikey
            raise
        conn.execute("RELEASE captured_write")
        self._local.op_id = 0  # nothing was logged (the capture rolls back)

    def _notify(self, op_id: int) -> None:
        hook = self.on_commit
        if hook is None:
            return
        try:
            hook(op_id)
        except Exception:  # a hook must not turn a committed write into an error
            log.exception("on_commit hook failed for op %d", op_id)

    def last_write_op_id(self) -> int:
        """The op id of the last oplog entry written by the calling thread's last write
        transaction (0: none, or no oplog). ``InsertResult.op_id``, ``UpdateResult.op_id``
        and ``OpCount.op_id`` carry the same value across threads."""
        return int(getattr(self._local, "op_id", 0))

    def log_state(self, kind: str, document: bytes) -> int:
        """Log a snapshot of node-local state (e.g. the migration state) as an entry of
        ``kind``; its op id (0 without an oplog: nothing to replicate)."""
        if self.oplog is None:
            return 0
        with self._transaction():
            self._log(common_pb2.UNKNOWN_OP, "", document, kind=kind)
        return self.last_write_op_id()

    def _last_op_id(self) -> int:
        """The newest op id (0 without an oplog): what an answer read from committed
        state (a retried statement) must wait for."""
        return self.oplog.last().op_id if self.oplog is not None else 0

    def _log(
        self,
        op_type: common_pb2.OperationType,
        ns: str,
        document: bytes = b"",
        query: bytes = b"",
        kind: str = "",
    ) -> None:
        """Describe one change for the oplog (callers check ``_txn_ops is not None``)."""
        assert self._txn_ops is not None
        self._txn_ops.append(
            replication_pb2.OplogEntry(
                namespace=ns, op_type=op_type, document=document, query=query, kind=kind
            )
        )

    def _add_record(
        self,
        conn: sqlite3.Connection,
        retry_id: str,
        stmt_id: int,
        ns: str,
        kind: str,
        fingerprint: bytes,
        id_key: bytes | None,
        shard_key: bytes | None,
        outcome: Mapping[str, Any] | None = None,
    ) -> None:
        """Record an executed retryable statement; with an oplog the record travels in
        the transaction's last entry (the write's own) or in a ``retry`` entry."""
        created = time.time()
        retry_records.add(
            conn, retry_id, stmt_id, ns, kind, fingerprint, id_key, shard_key, outcome, created
        )
        ops = self._txn_ops
        if ops is None:
            return
        record = shard_pb2.RetryRecord(
            retry_id=retry_id, stmt_id=stmt_id, kind=kind, fingerprint=fingerprint,
            created_at=created, id_key=id_key or b"", shard_key=shard_key or b"",
            outcome=bson.encode(outcome) if outcome else b"",
        )
        if not ops or ops[-1].namespace != ns:
            self._log(common_pb2.UNKNOWN_OP, ns, kind=RETRY_KIND)
        ops[-1].retry_records.append(record)

    def _flush_multikey(self, conn: sqlite3.Connection) -> None:
        """Persist the multikey flags set by this transaction's writes."""
        if not self._txn_multikey:
            return
        catalog = self._wcat()
        for ns, name in sorted(self._txn_multikey):
            c = catalog.get(ns)
            ix = c.index(name) if c is not None else None
            if c is None or ix is None or ix.multikey:
                continue
            conn.execute(
                "UPDATE indexes SET multikey = 1 WHERE ns = ? AND name = ?", (ns, name)
            )
            marked = replace(ix, multikey=True)
            catalog[ns] = replace(
                c, indexes=tuple(marked if i.name == name else i for i in c.indexes)
            )
    def _wcat(self) -> dict[str, Collection]:
        """The catalog as the running write transaction sees it."""
        assert self._txn_catalog is not None
        return self._txn_catalog

    def _guard(self, ns: str) -> NamespaceGuard | _CaptureGuard | None:
        """The migration write guard of ``ns`` for the running write (None: none)."""
        guard = self.write_guards.get(ns) if self.write_guards else None
        if guard is not None and self._capture is not None:
            return _CaptureGuard(guard)
        return guard

    def _lock_check(self, ns: str, id_key: bytes, shard_key: bytes | None = None) -> None:
        """A write (or a capture) is about to touch document ``id_key`` of ``ns``:
        ``DocumentLocked`` when another transaction holds it; a capture records it."""
        if self._lock_exempt:
            return
        cap = self._capture
        if cap is not None:
            self.txn_locks.check(ns, id_key, cap.txn_id)
            cap.locked[(ns, id_key)] = shard_key
            return
        if len(self.txn_locks):
            self.txn_locks.check(ns, id_key, self._lock_owner)

    # ------------------------------------------------------------------ catalog

    def collection(self, ns: str) -> Collection | None:
        return self._catalog.get(ns)

    def namespaces(self) -> list[str]:
        return sorted(self._catalog)

    def key_pattern(self, ns: str) -> ShardKeyPattern | None:
        c = self._catalog.get(ns)
        return c.pattern if c is not None else None

    def needs_rekey(self, ns: str, pattern: ShardKeyPattern | None) -> bool:
        """True when the stored shard keys of ``ns`` were computed for another pattern."""
        c = self._catalog.get(ns)
        return c is not None and c.pattern != pattern

    def set_key_pattern(self, ns: str, pattern: ShardKeyPattern | None) -> int:
        """Recompute the ``shard_key`` column of ``ns`` for ``pattern`` (one transaction).

        Returns the number of documents rewritten. Documents whose key cannot be
        computed (an array on the key path) get a NULL key: no chunk owns them.
        """
        with self._transaction(log=self.is_primary) as conn:
            c = self._wcat().get(ns)
            if c is None or c.pattern == pattern:
                return 0
            return self._rekey(conn, c, pattern)

    def _rekey(
        self, conn: sqlite3.Connection, c: Collection, pattern: ShardKeyPattern | None
    ) -> int:
        changed = 0
        bad = 0
        after: bytes | None = None
        while True:
            if after is None:
                rows = conn.execute(
                    f"SELECT id_key, doc FROM {c.table} ORDER BY id_key LIMIT ?", (MAX_PAGE,)
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT id_key, doc FROM {c.table} WHERE id_key > ? ORDER BY id_key LIMIT ?",
                    (after, MAX_PAGE),
                ).fetchall()
            if not rows:
                break
            updates: list[tuple[bytes | None, bytes]] = []
            for id_key, raw in rows:
                key: bytes | None = None
                if pattern is not None:
                    try:
                        key = pattern.key_for_doc(bson.decode(raw))
                    except LauraError:
                        bad += 1
                updates.append((key, id_key))
            conn.executemany(f"UPDATE {c.table} SET shard_key = ? WHERE id_key = ?", updates)
            changed += len(updates)
            after = rows[-1][0]
        fields, strategy = _pattern_columns(pattern)
        conn.execute(
            "UPDATE catalog SET key_fields = ?, key_strategy = ? WHERE ns = ?",
            (fields, strategy, c.ns),
        )
        self._wcat()[c.ns] = replace(c, pattern=pattern)
        if self._txn_ops is not None:
            self._log(common_pb2.CREATE_COLLECTION, c.ns, _pattern_document(pattern))
        if bad:
            log.warning(
                "%s: %d documents have no valid shard key for %r and are owned by no chunk",
                c.ns, bad, pattern,
            )
        log.info("%s: recomputed shard keys of %d documents for %r", c.ns, changed, pattern)
        return changed

    def _ensure_collection(
        self, conn: sqlite3.Connection, ns: str, pattern: PatternArg
    ) -> Collection:
        catalog = self._wcat()
        c = catalog.get(ns)
        if isinstance(pattern, _Keep):
            pattern = c.pattern if c is not None else None
        if c is not None:
            if c.pattern != pattern:
                self._rekey(conn, c, pattern)
                c = catalog[ns]
            return c
        (n,) = conn.execute("SELECT COUNT(*) FROM catalog").fetchone()
        table = f"docs_{n + 1}"
        while conn.execute("SELECT 1 FROM catalog WHERE tbl = ?", (table,)).fetchone():
            n += 1
            table = f"docs_{n + 1}"
        conn.execute(
            f"CREATE TABLE {table} (id_key BLOB PRIMARY KEY, shard_key BLOB, doc BLOB NOT NULL)"
        )
        conn.execute(f"CREATE INDEX {table}_shard_key ON {table} (shard_key, id_key)")
        fields, strategy = _pattern_columns(pattern)
        conn.execute(
            "INSERT INTO catalog (ns, tbl, key_fields, key_strategy) VALUES (?, ?, ?, ?)",
            (ns, table, fields, strategy),
        )
        c = Collection(ns, table, pattern)
        catalog[ns] = c
        if self._txn_ops is not None:
            self._log(common_pb2.CREATE_COLLECTION, ns, _pattern_document(pattern))
        return c

    # ------------------------------------------------------------------ scans

    def plan(
        self,
        ns: str,
        filter_spec: Mapping[str, Any] | None = None,
        sort_fields: Sequence[tuple[str, int]] | None = None,
    ) -> PlanChoice | None:
        """How ``scan`` would read ``ns`` (None: the collection does not exist)."""
        c = self._catalog.get(ns)
        if c is None:
            return None
        return choose_plan(filter_spec or {}, c.pattern, c.indexes, sort_fields)

    def scan(
        self,
        ns: str,
        filter_spec: Mapping[str, Any] | None = None,
        *,
        owned: OwnedRanges | None = None,
        stats: ScanStats | None = None,
        matcher: Matcher | None = None,
        choice: PlanChoice | None = None,
    ) -> Iterator[Row]:
        """The stored documents of ``ns`` matching ``filter_spec`` (and ``owned``), lazily.

        Reads page by page through the reader connection: a generator can be kept
        across calls (cursors) and sees writes committed meanwhile (like MongoDB's
        non-snapshot cursors). ``choice`` (from ``plan``) fixes the plan, e.g. one
        that yields a sort order.
        """
        spec = filter_spec or {}
        if matcher is None:
            matcher = compile_filter(spec)
        c = self._catalog.get(ns)
        if c is None:
            return iter(())
        return self._matching(
            self._reader, self._rlock, c, spec, matcher, owned, stats or ScanStats(),
            choice.plan if choice is not None else None,
        )

    def _matching(
        self,
        conn_fn: ConnFn,
        lock: threading.RLock,
        c: Collection,
        spec: Mapping[str, Any],
        matcher: Matcher,
        owned: OwnedRanges | None,
        stats: ScanStats,
        plan: ScanPlan | None = None,
    ) -> Iterator[Row]:
        if plan is None:
            plan = choose_plan(spec, c.pattern, c.indexes).plan
        match = None if matcher.matches_everything else matcher.match
        decode = bson.decode
        for id_key, shard_key, raw in self._rows(conn_fn, lock, c.table, plan):
            if owned is not None and not owned(shard_key):
                continue
            stats.examined += 1
            if match is None:
                yield Row(id_key, shard_key, raw)  # decoded only if someone needs it
                continue
            doc = decode(raw)
            if match(doc):
                yield Row(id_key, shard_key, raw, doc)

    def _rows(
        self, conn_fn: ConnFn, lock: threading.RLock, table: str, plan: ScanPlan
    ) -> Iterator[tuple[bytes, bytes | None, bytes]]:
        try:
            if isinstance(plan, IndexScan):
                yield from self._index_rows(conn_fn, lock, table, plan)
            else:
                yield from self._table_rows(conn_fn, lock, table, plan)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise _plan_killed("the collection or index", exc) from None
            raise

    def _index_rows(
        self, conn_fn: ConnFn, lock: threading.RLock, table: str, plan: IndexScan
    ) -> Iterator[tuple[bytes, bytes | None, bytes]]:
        """Documents of an index's key ranges in key order (reversed: descending),
        each document once (multikey entries and moves during updates)."""
        order = "DESC" if plan.reverse else "ASC"
        after = "<" if plan.reverse else ">"
        base = (
            f"SELECT d.id_key, d.shard_key, d.doc, i.index_key FROM {plan.index.table} AS i "
            f"JOIN {table} AS d ON d.id_key = i.id_key "
            f"WHERE i.index_key >= ? AND i.index_key < ?"
        )
        tail = f" ORDER BY i.index_key {order}, i.id_key {order} LIMIT ?"
        seen: set[bytes] = set()
        ranges = reversed(plan.ranges) if plan.reverse else iter(plan.ranges)
        for lo, hi in ranges:
            page = FIRST_PAGE
            last: tuple[bytes, bytes] | None = None
            while True:
                with lock:
                    if last is None:
                        rows = conn_fn().execute(base + tail, (lo, hi, page)).fetchall()
                    else:
                        rows = conn_fn().execute(
                            base + f" AND (i.index_key, i.id_key) {after} (?, ?)" + tail,
                            (lo, hi, *last, page),
                        ).fetchall()
                for id_key, shard_key, raw, _ in rows:
                    if id_key in seen:
                        continue
                    seen.add(id_key)
                    yield id_key, shard_key, raw
                if len(rows) < page:
                    break
                last = (rows[-1][3], rows[-1][0])
                page = min(page * 4, MAX_PAGE)

    def _table_rows(
        self, conn_fn: ConnFn, lock: threading.RLock, table: str, plan: Points | Range
    ) -> Iterator[tuple[bytes, bytes | None, bytes]]:
        cols = "id_key, shard_key, doc"
        if isinstance(plan, Points):
            col = plan.column
            for key in plan.keys:
                after: bytes | None = None
                while True:
                    with lock:
                        if after is None:
                            rows = conn_fn().execute(
                                f"SELECT {cols} FROM {table} WHERE {col} = ? "
                                f"ORDER BY id_key LIMIT ?",
                                (key, MAX_PAGE),
                            ).fetchall()
                        else:
                            rows = conn_fn().execute(
                                f"SELECT {cols} FROM {table} WHERE {col} = ? AND id_key > ? "
                                f"ORDER BY id_key LIMIT ?",
                                (key, after, MAX_PAGE),
                            ).fetchall()
                    yield from rows
                    if len(rows) < MAX_PAGE:
                        break
                    after = rows[-1][0]
            return
        yield from self._range_rows(conn_fn, lock, table, plan)

    def _range_rows(
        self, conn_fn: ConnFn, lock: threading.RLock, table: str, plan: Range
    ) -> Iterator[tuple[bytes, bytes | None, bytes]]:
        col = plan.column
        bounds: list[str] = []
        args: list[Any] = []
        if plan.lo is not None:
            bounds.append(f"{col} {'>=' if plan.lo_inclusive else '>'} ?")
            args.append(plan.lo)
        if plan.hi is not None:
            bounds.append(f"{col} {'<=' if plan.hi_inclusive else '<'} ?")
            args.append(plan.hi)
        if col == ID_COLUMN:
            order = "id_key"
            resume = "id_key > ?"
        else:
            bounds.append(f"{col} IS NOT NULL")
            order = f"{col}, id_key"
            resume = f"({col}, id_key) > (?, ?)"
        base = f"SELECT id_key, shard_key, doc FROM {table}"
        page = FIRST_PAGE
        last: tuple[Any, ...] | None = None
        while True:
            conds = list(bounds)
            params = list(args)
            if last is not None:
                conds.append(resume)
                params.extend(last)
            where = f" WHERE {' AND '.join(conds)}" if conds else ""
            with lock:
                rows = conn_fn().execute(
                    f"{base}{where} ORDER BY {order} LIMIT ?", (*params, page)
                ).fetchall()
            yield from rows
            if len(rows) < page:
                return
            tail = rows[-1]
            last = (tail[0],) if col == ID_COLUMN else (tail[1], tail[0])
            page = min(page * 4, MAX_PAGE)

    def count(
        self, ns: str, filter_spec: Mapping[str, Any] | None = None, *,
        owned: OwnedRanges | None = None,
    ) -> int:
        """The exact number of (owned) documents matching ``filter_spec``."""
        spec = filter_spec or {}
        matcher = compile_filter(spec)
        c = self._catalog.get(ns)
        if c is None:
            return 0
        if matcher.matches_everything:
            with self._rlock:
                conn = self._reader()
                if owned is None:
                    return int(conn.execute(f"SELECT COUNT(*) FROM {c.table}").fetchone()[0])
                total = 0
                for r in owned.ranges:
                    op = "<=" if r.hi_inclusive else "<"
                    total += conn.execute(
                        f"SELECT COUNT(*) FROM {c.table} WHERE shard_key >= ? AND shard_key {op} ?",
                        (r.lo, r.hi),
                    ).fetchone()[0]
                return int(total)
        return sum(1 for _ in self.scan(ns, spec, owned=owned, matcher=matcher))

    # ------------------------------------------------------------------ inserts

    def insert(
        self,
        ns: str,
        docs: Sequence[bytes | Mapping[str, Any]],
        *,
        ordered: bool = True,
        pattern: PatternArg = KEEP,
        owned: OwnedRanges | None = None,
        unique_key: bool = False,
        retry: RetryBatch | None = None,
    ) -> InsertResult:
        """Insert a batch in one transaction; per-document errors by index.

        Documents without ``_id`` get an ObjectId (``_id`` always becomes the first
        field). Ordered batches stop at the first error; unordered ones go on. A
        document whose shard key is in a chunk this shard does not own (``owned``)
        fails the whole request with STALE_CONFIG before anything is written.
        ``pattern`` is the collection's current shard key pattern (None: unsharded);
        stored keys are recomputed first if they follow another one. ``KEEP`` keeps
        whatever the collection has. ``unique_key`` enforces a unique (ranged) shard
        key: chunks partition the key space, so uniqueness on this shard is global.
        ``retry`` (retryable writes, see ``retry_records``): documents whose statement
        has a record count as inserted and are not inserted again; the others get a
        record with the document.
        """
        result = InsertResult()
        if not docs:
            return result
        stmt_ids: Sequence[int] | None = None
        if retry is not None:
            if len(retry.stmt_ids) != len(docs):
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    f"a retryable insert needs one statement id per document "
                    f"({len(retry.stmt_ids)} for {len(docs)} documents)",
                )
            stmt_ids = retry.stmt_ids
        with self._transaction() as conn:
            guard = self._guard(ns)
            executed: dict[int, retry_records.RecordRow] = {}
            if retry is not None:
                executed = retry_records.lookup_many(conn, retry.retry_id)
                for stmt in retry.stmt_ids if executed else ():
                    found = executed.get(stmt)
                    if found is not None:
                        found.check(retry.retry_id, ns, retry_records.INSERT, retry.fingerprint)
            c = self._ensure_collection(conn, ns, pattern)
            prepared = self._prepare_batch(docs, c.pattern, ordered, result.errors)
            if owned is not None:
                for p in prepared:
                    if not owned(p.shard_key):
                        raise owned.stale_error(f"insert into {ns}")
            if guard is not None:
                for p in prepared:
                    guard.check(p.shard_key, owned)
            stop_at = result.errors[0].index if (ordered and result.errors) else None
            check_unique = unique_key and c.pattern is not None and not c.pattern.hashed
            if (
                not c.indexes
                and not check_unique
                and self._capture is None
                and (self._lock_exempt or not len(self.txn_locks))
            ):
                # The common bulk case: rows only (no index entries or document locks
                # to check), many rows (and retry records) per statement.
                self._insert_rows(conn, c, prepared, ordered, result, guard, retry, executed)
                prepared = []
            for p in prepared:
                if stop_at is not None and p.index > stop_at:
                    break
                if executed and stmt_ids is not None and stmt_ids[p.index] in executed:
                    result.inserted += 1  # executed before: answered from its record
                    result.retried += 1
                    continue
                self._lock_check(ns, p.id_key, p.shard_key)
                try:
                    self._insert_row(conn, c, p, check_unique)
                except LauraError as err:
                    result.errors.append(WriteError(p.index, err))
                    if ordered:
                        break
                    continue
                if self._txn_ops is not None:
                    self._log(common_pb2.INSERT, ns, p.raw)
                if retry is not None and stmt_ids is not None:
                    self._add_record(
                        conn, retry.retry_id, stmt_ids[p.index], ns, retry_records.INSERT,
                        retry.fingerprint, p.id_key, p.shard_key,
                    )
                if guard is not None:
                    guard.written(p.shard_key, p.id_key, p.id_value)
                result.inserted += 1
        if self.oplog is not None:
            result.op_id = self._local.op_id or (self._last_op_id() if result.retried else 0)
        result.errors.sort(key=lambda e: e.index)
        if ordered and len(result.errors) > 1:
            del result.errors[1:]
        return result

    def _insert_row(
        self, conn: sqlite3.Connection, c: Collection, p: _Prepared, check_unique: bool
    ) -> None:
        """Insert one document and its index entries, all or nothing."""
        if not c.indexes:
            self._insert_doc(conn, c, p, check_unique)
            return
        # Entries come from the stored bytes: deletes recompute them the same way.
        doc = p.decoded if p.decoded is not None else bson.decode(p.raw)
        entries = self._entries(c, doc)  # parallel arrays fail before writing
        if not any(ix.unique for ix, _ in entries):
            # Nothing can fail after the document row is in (entries are new keys).
            self._insert_doc(conn, c, p, check_unique)
            for ix, e in entries:
                self._add_entries(conn, c, ix, p.id_key, e.keys)
        else:
            conn.execute("SAVEPOINT doc_write")
            try:
                self._insert_doc(conn, c, p, check_unique)
                for ix, e in entries:
                    self._add_entries(conn, c, ix, p.id_key, e.keys)
            except BaseException:
                conn.execute("ROLLBACK TO doc_write")
                conn.execute("RELEASE doc_write")
                raise
            conn.execute("RELEASE doc_write")
        # Only a stored document makes an index multikey (not a failed insert).
        for ix, e in entries:
            if e.multikey and not ix.multikey:
                self._txn_multikey.add((c.ns, ix.name))

    def _entries(
        self, c: Collection, doc: Mapping[str, Any]
    ) -> list[tuple[IndexDef, IndexEntries]]:
        """The document's entries in every index of ``c`` (sparse skips left out)."""
        out: list[tuple[IndexDef, IndexEntries]] = []
        for ix in c.indexes:
            e = index_entries(doc, ix)
            if e is None:
                continue
            out.append((ix, e))
        return out

    def _add_entries(
        self,
        conn: sqlite3.Connection,
        c: Collection,
        ix: IndexDef,
        id_key: bytes,
        keys: Mapping[bytes, bool],
    ) -> None:
        sql = f"INSERT INTO {ix.table} (index_key, id_key, aux) VALUES (?, ?, ?)"
        if not ix.unique:
            conn.executemany(sql, [(k, id_key, int(aux)) for k, aux in keys.items()])
            return
        if self._capture is not None or len(self.txn_locks):
            lock_ns = unique_lock_ns(c.ns, ix.name)
            for k, aux in keys.items():
                if not aux:
                    self._lock_check(lock_ns, k)
        for k, aux in keys.items():
            try:
                conn.execute(sql, (k, id_key, int(aux)))
            except sqlite3.IntegrityError:
                raise _index_duplicate_error(c.ns, ix, k) from None

    def _remove_entries(
        self,
        conn: sqlite3.Connection,
        ix: IndexDef,
        id_key: bytes,
        keys: Iterable[bytes],
    ) -> None:
        conn.executemany(
            f"DELETE FROM {ix.table} WHERE index_key = ? AND id_key = ?",
            [(k, id_key) for k in keys],
        )

    def _reindex(
        self,
        conn: sqlite3.Connection,
        c: Collection,
        id_key: bytes,
        old_doc: Mapping[str, Any],
        new_doc: Mapping[str, Any],
    ) -> None:
        """Move a document's index entries from ``old_doc`` to ``new_doc``."""
        for ix in c.indexes:
            old = index_entries(old_doc, ix)
            new = index_entries(new_doc, ix)
            old_keys = old.keys if old is not None else {}
            new_keys = new.keys if new is not None else {}
            if new is not None and new.multikey and not ix.multikey:
                self._txn_multikey.add((c.ns, ix.name))  # even when the keys are the same
            if old_keys == new_keys:
                continue
            gone = [k for k, aux in old_keys.items() if new_keys.get(k) != aux]
            added = {k: aux for k, aux in new_keys.items() if old_keys.get(k) != aux}
            self._remove_entries(conn, ix, id_key, gone)
            self._add_entries(conn, c, ix, id_key, added)

    def _insert_doc(
        self, conn: sqlite3.Connection, c: Collection, p: _Prepared, check_unique: bool
    ) -> None:
        if check_unique and p.shard_key is not None and (
            self._capture is not None or len(self.txn_locks)
        ):
            self._lock_check(unique_lock_ns(c.ns, ""), p.shard_key)
        if check_unique and p.shard_key is not None and conn.execute(
            f"SELECT 1 FROM {c.table} WHERE shard_key = ? LIMIT 1", (p.shard_key,)
        ).fetchone():
            assert c.pattern is not None
            fields = list(c.pattern.fields)
            values = dict(zip(fields, decode_key(p.shard_key), strict=False))
            raise LauraError(
                ErrorCode.DUPLICATE_KEY,
                f"E11000 duplicate key error collection: {c.ns} index: shard key "
                f"{fields} dup key: {values!r}",
                {"keyPattern": dict.fromkeys(fields, 1), "keyValue": values},
            )
        try:
            conn.execute(
                f"INSERT INTO {c.table} (id_key, shard_key, doc) VALUES (?, ?, ?)",
                (p.id_key, p.shard_key, p.raw),
            )
        except sqlite3.IntegrityError:
            raise _duplicate_error(c.ns, p.id_value) from None

    def _insert_rows(
        self,
        conn: sqlite3.Connection,
        c: Collection,
        prepared: Sequence[_Prepared],
        ordered: bool,
        result: InsertResult,
        guard: NamespaceGuard | _CaptureGuard | None,
        retry: RetryBatch | None = None,
        executed: Mapping[int, Any] | None = None,
    ) -> None:
        """Insert document rows (no index entries) with ``executemany``; the same
        outcome as one ``_insert_doc`` each: a duplicate ``_id`` fails that document
        only (the statement that failed wrote nothing; the rows before it stay), an
        ordered batch stops there, an unordered one goes on with the next document.
        The failing row is found by counting the rows written (``total_changes``).
        With ``retry``: statements ``executed`` before count as inserted (up to an
        ordered batch's error) and are not inserted again; the others get a record
        (in one statement; with an oplog, in their document's entry)."""
        retried: list[int] = []  # indexes of the statements executed before
        if retry is not None and executed:
            stmt_ids = retry.stmt_ids
            retried = [p.index for p in prepared if stmt_ids[p.index] in executed]
            prepared = [p for p in prepared if stmt_ids[p.index] not in executed]
        sql = f"INSERT INTO {c.table} (id_key, shard_key, doc) VALUES (?, ?, ?)"
        rows = [(p.id_key, p.shard_key, p.raw) for p in prepared]
        ops = self._txn_ops
        created = time.time()
        written: list[_Prepared] = []
        stopped_at: int | None = None  # an ordered batch's failing document
        pos, n = 0, len(rows)
        while pos < n:
            before = conn.total_changes
            failed: _Prepared | None = None
            try:
                conn.executemany(sql, itertools.islice(rows, pos, None))
                end = n
            except sqlite3.IntegrityError:
                end = pos + conn.total_changes - before
                failed = prepared[end]
            written.extend(prepared[pos:end])
            if failed is None:
                break
            result.errors.append(WriteError(failed.index, _duplicate_error(c.ns, failed.id_value)))
            if ordered:
                stopped_at = failed.index
                break
            pos = end + 1
        if ops is not None or guard is not None:
            for p in written:
                if ops is not None:
                    self._log(common_pb2.INSERT, c.ns, p.raw)
                    if retry is not None:
                        ops[-1].retry_records.append(shard_pb2.RetryRecord(
                            retry_id=retry.retry_id, stmt_id=retry.stmt_ids[p.index],
                            kind=retry_records.INSERT, fingerprint=retry.fingerprint,
                            created_at=created, id_key=p.id_key, shard_key=p.shard_key or b"",
                        ))  # fmt: skip
                if guard is not None:
                    guard.written(p.shard_key, p.id_key, p.id_value)
        if retry is not None and written:
            retry_records.add_statements(
                conn, retry.retry_id, c.ns, retry_records.INSERT, retry.fingerprint, created,
                ((retry.stmt_ids[p.index], p.id_key, p.shard_key) for p in written),
            )  # fmt: skip
        if stopped_at is not None:
            retried = [i for i in retried if i < stopped_at]
        result.inserted += len(written) + len(retried)
        result.retried += len(retried)

    def _prepare_batch(
        self,
        docs: Sequence[bytes | Mapping[str, Any]],
        pattern: ShardKeyPattern | None,
        ordered: bool,
        errors: list[WriteError],
    ) -> list[_Prepared]:
        """``_prepare`` every document; per-document errors go to ``errors`` (an
        ordered batch stops at the first). Raw BSON is decoded in one C call when
        every document is well formed (``_decode_batch``), else one at a time."""
        key_of = _key_function(pattern)
        decoded = _decode_batch(docs)
        out: list[_Prepared] = []
        for i, item in enumerate(docs):
            try:
                if decoded is not None:  # ``item`` is bytes (``_decode_batch``)
                    out.append(self._prepare_decoded(i, cast(bytes, item), decoded[i], key_of))
                else:
                    out.append(self._prepare(i, item, pattern, key_of))
            except LauraError as err:
                errors.append(WriteError(i, err))
                if ordered:
                    break
        return out

    def _prepare(
        self,
        index: int,
        item: bytes | Mapping[str, Any],
        pattern: ShardKeyPattern | None,
        key_of: KeyOf | None = None,
    ) -> _Prepared:
        if key_of is None:
            key_of = _key_function(pattern)
        if isinstance(item, (bytes, bytearray, memoryview)):
            raw = bytes(item)
            doc = decode_document(raw, f"document {index}")
            if len(raw) > MAX_DOCUMENT_BYTES:
                raise LauraError(ErrorCode.BSON_OBJECT_TOO_LARGE, "document over 16 MiB")
            return self._prepare_decoded(index, raw, doc, key_of)
        doc, _ = with_id_first(item)
        raw = _encode_checked(doc)
        id_value = doc["_id"]
        check_id(id_value)
        id_key = encode_value(id_value)
        return _Prepared(index, id_value, id_key, key_of(doc, id_key), raw, None)

    @staticmethod
    def _prepare_decoded(
        index: int, raw: bytes, doc: dict[str, Any], key_of: KeyOf
    ) -> _Prepared:
        """A raw BSON document (``raw``, decoded as ``doc``): stored as it came when
        ``_id`` is its first field (not re-encoded), else re-encoded with ``_id`` first."""
        if next(iter(doc), None) != "_id":
            doc, _ = with_id_first(doc)
            raw = _encode_checked(doc)
        id_value = doc["_id"]
        check_id(id_value)
        id_key = encode_value(id_value)
        # ``doc``: the values of ``raw``, as decoding it gives them (index entries).
        return _Prepared(index, id_value, id_key, key_of(doc, id_key), raw, doc)

    # ------------------------------------------------------------------ updates

    def update(
        self,
        ns: str,
        filter_spec: Mapping[str, Any] | None,
        update_spec: Mapping[str, Any],
        *,
        multi: bool = False,
        upsert: bool = False,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
        pattern: PatternArg = KEEP,
        owned: OwnedRanges | None = None,
        unique_key: bool = False,
        retry: RetryStatement | None = None,
    ) -> UpdateResult:
        """Update matching (owned) documents in one transaction.

        Each document's new version is computed by the update engine and only then
        written; any failure rolls the whole request back. Changing ``_id`` is
        IMMUTABLE_FIELD; changing the shard key value of a document in a sharded
        collection is SHARD_KEY_IMMUTABLE. With ``upsert`` and no match, the
        document built from the filter's equalities and the update is inserted.
        ``retry`` (a single update only; multi updates are not retryable): a statement
        with a record is answered from it; one that matched or upserted gets a record.
        """
        spec = filter_spec or {}
        matcher = compile_filter(spec)
        upd = compile_update(update_spec, array_filters=list(array_filters) if array_filters else None)
        if multi and upd.is_replacement:
            raise LauraError(
                ErrorCode.FAILED_TO_PARSE,
                "multi update is not supported for replacement-style update",
            )
        if multi:
            retry = None
        result = UpdateResult()
        touched: tuple[bytes, bytes | None] | None = None
        with self._transaction() as conn:
            if retry is not None:
                found = retry_records.lookup(conn, retry.retry_id, retry.stmt_id)
                if found is not None:
                    found.check(retry.retry_id, ns, retry_records.UPDATE, retry.fingerprint)
                    out = found.outcome_doc()
                    retry.retried = True
                    return UpdateResult(
                        matched=int(out.get("n", 0)), modified=int(out.get("m", 0)),
                        upserted="u" in out, upserted_id=out.get("u"), retried=True,
                        op_id=self._last_op_id(),
                    )
                if retry.history_only:
                    raise _history_gone(retry)
            guard = self._guard(ns)
            c = self._wcat().get(ns)
            if c is not None and not isinstance(pattern, _Keep) and c.pattern != pattern:
                c = self._ensure_collection(conn, ns, pattern)
            if c is not None:
                sql = f"UPDATE {c.table} SET doc = ? WHERE id_key = ?"
                rows = self._matching(
                    self._writer, self._wlock, c, spec, matcher, owned, ScanStats()
                )
                for row in rows:
                    self._lock_check(ns, row.id_key, row.shard_key)
                    result.matched += 1
                    touched = (row.id_key, row.shard_key)
                    position = None
                    if upd.needs_position:
                        _, position = matcher.match_with_position(row.doc)
                    new_doc, modified = upd.apply(row.doc, position=position)
                    if modified:
                        raw = self._checked_update(c, row, new_doc)
                        if raw != row.raw:
                            if guard is not None:
                                guard.check(row.shard_key, owned)
                            conn.execute(sql, (raw, row.id_key))
                            if c.indexes:
                                self._reindex(conn, c, row.id_key, row.doc, bson.decode(raw))
                            if self._txn_ops is not None:
                                self._log(
                                    common_pb2.UPDATE, ns, raw,
                                    bson.encode({"_id": row.doc["_id"]}),
                                )
                            if guard is not None:
                                guard.written(row.shard_key, row.id_key, row.doc["_id"])
                            result.modified += 1
                    if not multi:
                        break
            if result.matched == 0 and upsert:
                c = self._ensure_collection(conn, ns, pattern)
                doc = build_upsert_document(spec, upd)
                p = self._prepare(0, doc, c.pattern)
                if owned is not None and not owned(p.shard_key):
                    raise owned.stale_error(f"upsert into {ns}")
                if guard is not None:
                    guard.check(p.shard_key, owned)
                self._lock_check(ns, p.id_key, p.shard_key)
                self._insert_row(
                    conn, c, p, unique_key and c.pattern is not None and not c.pattern.hashed
                )
                if self._txn_ops is not None:
                    self._log(common_pb2.INSERT, ns, p.raw)
                if guard is not None:
                    guard.written(p.shard_key, p.id_key, p.id_value)
                result.upserted = True
                result.upserted_id = p.id_value
                if retry is not None:
                    self._add_record(
                        conn, retry.retry_id, retry.stmt_id, ns, retry_records.UPDATE,
                        retry.fingerprint, p.id_key, p.shard_key,
                        {"n": 0, "m": 0, "u": p.id_value},
                    )
            elif retry is not None and touched is not None:
                self._add_record(
                    conn, retry.retry_id, retry.stmt_id, ns, retry_records.UPDATE,
                    retry.fingerprint, touched[0], touched[1],
                    {"n": result.matched, "m": result.modified},
                )
        if self.oplog is not None:
            result.op_id = self._local.op_id
        return result

    def _checked_update(self, c: Collection, row: Row, new_doc: Mapping[str, Any]) -> bytes:
        old_id = row.doc.get("_id")
        if "_id" not in new_doc:
            new_doc = {"_id": old_id, **new_doc}
        elif encode_value(new_doc["_id"]) != row.id_key:
            raise LauraError(
                ErrorCode.IMMUTABLE_FIELD,
                "Performing an update on the path '_id' would modify the immutable field '_id'",
            )
        new_doc, _ = with_id_first(new_doc)
        if c.pattern is not None:
            try:
                new_key = c.pattern.key_for_doc(new_doc)
            except LauraError as err:
                raise LauraError(
                    ErrorCode.SHARD_KEY_IMMUTABLE,
                    f"the update would make the shard key invalid: {err.message}",
                ) from None
            if new_key != row.shard_key:
                raise LauraError(
                    ErrorCode.SHARD_KEY_IMMUTABLE,
                    f"After applying the update, the (immutable) shard key "
                    f"{list(c.pattern.fields)} of document with _id {old_id!r} was found "
                    f"to have been altered; shard key values cannot be changed "
                    f"(delete and re-insert the document instead)",
                    {"_id": old_id},
                )
        return _encode_checked(new_doc)

    # ------------------------------------------------------------------ deletes

    def delete(
        self,
        ns: str,
        filter_spec: Mapping[str, Any] | None,
        *,
        multi: bool = False,
        owned: OwnedRanges | None = None,
        retry: RetryStatement | None = None,
    ) -> OpCount:
        """Delete matching (owned) documents (at most one unless ``multi``); how many
        (an int, with ``op_id``: the write's last oplog entry).

        ``retry`` (a single delete only; multi deletes are not retryable): a statement
        with a record is answered from it (``retry.retried`` set); a deletion is recorded.
        """
        n = self._delete(ns, filter_spec, multi, owned, retry)
        if self.oplog is None:
            return OpCount(n)
        if retry is not None and retry.retried:
            return OpCount(n, self._last_op_id())
        return OpCount(n, self._local.op_id)

    def _delete(
        self,
        ns: str,
        filter_spec: Mapping[str, Any] | None,
        multi: bool,
        owned: OwnedRanges | None,
        retry: RetryStatement | None,
    ) -> int:
        spec = filter_spec or {}
        matcher = compile_filter(spec)
        if multi:
            retry = None
        with self._transaction() as conn:
            if retry is not None:
                found = retry_records.lookup(conn, retry.retry_id, retry.stmt_id)
                if found is not None:
                    found.check(retry.retry_id, ns, retry_records.DELETE, retry.fingerprint)
                    retry.retried = True
                    return int(found.outcome_doc().get("n", 0))
                if retry.history_only:
                    raise _history_gone(retry)
            guard = self._guard(ns)
            c = self._wcat().get(ns)
            if c is None:
                return 0
            deleted = 0
            sql = f"DELETE FROM {c.table} WHERE id_key = ?"
            for row in self._matching(
                self._writer, self._wlock, c, spec, matcher, owned, ScanStats()
            ):
                if guard is not None:
                    guard.check(row.shard_key, owned)
                self._lock_check(ns, row.id_key, row.shard_key)
                conn.execute(sql, (row.id_key,))
                if self._txn_ops is not None:
                    self._log(common_pb2.DELETE, ns, query=bson.encode({"_id": row.doc["_id"]}))
                if guard is not None:
                    guard.deleted(row.shard_key, row.id_key, row.doc["_id"])
                for ix in c.indexes:
                    e = index_entries(row.doc, ix)
                    if e is not None:
                        self._remove_entries(conn, ix, row.id_key, e.keys)
                deleted += 1
                if retry is not None:
                    self._add_record(
                        conn, retry.retry_id, retry.stmt_id, ns, retry_records.DELETE,
                        retry.fingerprint, row.id_key, row.shard_key, {"n": 1},
                    )
                if not multi:
                    break
            return deleted

    # ------------------------------------------------------------------ retry records

    def retry_executed(self, retry_id: str, stmt_id: int) -> bool:
        """Whether this shard has a record of the statement (committed ones)."""
        with self._rlock:
            return retry_records.lookup(self._reader(), retry_id, stmt_id) is not None

    def prune_retry_records(self, cutoff: float, max_records: int, limit: int) -> int:
        """Delete up to ``limit`` of the oldest retry records that are due (one
        transaction): created before ``cutoff``, or over ``max_records``."""
        with self._transaction(log=False) as conn:  # local retention: not replicated
            return retry_records.prune(conn, cutoff, max_records, limit)

    def retry_history_page(
        self, ns: str, keys: KeyRange, after_seq: int, limit: int, *, writer: bool = False
    ) -> tuple[list[StoredRecord], int, bool]:
        """Retry records of documents of ``ns`` in ``keys`` among the next ``limit``
        records after ``after_seq``; the last sequence number scanned; more?

        Records are numbered in commit order (one writer), so a page never skips one
        that commits later. ``writer``: read under the write lock (a migration's
        critical section: every write that recorded one has finished).
        """
        conn_fn, lock = (self._writer, self._wlock) if writer else (self._reader, self._rlock)
        with lock:
            records, last, more = retry_records.page(conn_fn(), ns, after_seq, limit)
        return (
            [r for r in records if r.shard_key is not None and keys.contains(r.shard_key)],
            last,
            more,
        )

    def store_retry_records(self, records: Sequence[StoredRecord]) -> int:
        """Store retry records received with a chunk (one transaction); how many were new."""
        if not records:
            return 0
        with self._transaction() as conn:
            if self._txn_ops is not None:
                for r in records:
                    if not self._txn_ops or self._txn_ops[-1].namespace != r.ns:
                        self._log(common_pb2.UNKNOWN_OP, r.ns, kind=RETRY_KIND)
                    self._txn_ops[-1].retry_records.append(retry_records.record_to_proto(r))
            return retry_records.add_many(conn, records)


    # ------------------------------------------------------------------ transaction rows

    def txn_rows_write(self, changes: Sequence[TxnRowChange]) -> int:
        """Put/delete transaction record rows (``shard_stub.transactions.records``) in
        one transaction; the op id of its last oplog entry (0 without an oplog)."""
        if not changes:
            return 0
        with self._transaction() as conn:
            for tbl, key, doc in changes:
                self._txn_row(conn, tbl, key, doc)
        return self.last_write_op_id()

    def txn_row_get(self, tbl: str, key: str) -> bytes | None:
        with self._rlock:
            row = self._reader().execute(
                "SELECT doc FROM txn_rows WHERE tbl = ? AND key = ?", (tbl, key)
            ).fetchone()
        return bytes(row[0]) if row is not None else None

    def txn_row_scan(self, tbl: str) -> list[tuple[str, bytes]]:
        with self._rlock:
            rows = self._reader().execute(
                "SELECT key, doc FROM txn_rows WHERE tbl = ? ORDER BY key", (tbl,)
            ).fetchall()
        return [(str(k), bytes(d)) for k, d in rows]

    def _txn_row(self, conn: sqlite3.Connection, tbl: str, key: str, doc: bytes | None) -> None:
        """Write one transaction record row inside the running write transaction (and
        describe it for the oplog: kind ``txn_row``, document {t, k, d})."""
        self._store_txn_row(conn, tbl, key, doc)
        if self._txn_ops is not None:
            self._log(
                common_pb2.UNKNOWN_OP, "",
                bson.encode({"t": tbl, "k": key, "d": doc}), kind=TXN_ROW_KIND,
            )

    @staticmethod
    def _store_txn_row(conn: sqlite3.Connection, tbl: str, key: str, doc: bytes | None) -> None:
        if doc is None:
            conn.execute("DELETE FROM txn_rows WHERE tbl = ? AND key = ?", (tbl, key))
        else:
            conn.execute(
                "INSERT OR REPLACE INTO txn_rows (tbl, key, doc) VALUES (?, ?, ?)",
                (tbl, key, doc),
            )

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def _exempt_from_locks(self) -> Iterator[None]:
        before, self._lock_exempt = self._lock_exempt, True
        try:
            yield
        finally:
            self._lock_exempt = before

    def capture(
        self, txn_id: str, fn: Callable[[], T]
    ) -> tuple[T, list[replication_pb2.OplogEntry], list[LockedDoc]]:
        """Run ``fn`` (storage writes and ``locking_read``s) in one write transaction and
        ROLL IT BACK: ``fn``'s result, the changes it made (oplog entries: ``INSERT`` /
        ``UPDATE`` post-images, ``DELETE`` by ``_id``, ``CREATE_COLLECTION``; also
        without an oplog) and the documents it touched (to lock).

        Writes inside check ownership, migration guards (no transfer-log notes: nothing
        is written) and document locks like ordinary writes: a document locked by
        another transaction raises ``DocumentLocked``. Each write is a savepoint, so a
        failed one leaves nothing behind. Callers that act on the result atomically
        (write the prepared record, take the locks) hold ``write_lock()`` around.
        """
        with self._wlock:
            if self._capture is not None or self._txn_catalog is not None:
                raise LauraError(
                    ErrorCode.INTERNAL_ERROR, "a capture cannot run inside a write transaction"
                )
            conn = self._writer()
            conn.execute("BEGIN IMMEDIATE")
            cap = _Capture(txn_id)
            self._txn_catalog = dict(self._catalog)
            self._txn_multikey = set()
            self._txn_ops = []
            self._capture = cap
            try:
                out = fn()
                ops = list(self._txn_ops)
            finally:
                self._capture = None
                self._txn_catalog = None
                self._txn_multikey = set()
                self._txn_ops = None
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        locked = [(ns, id_key, shard_key) for (ns, id_key), shard_key in cap.locked.items()]
        return out, ops, locked

    def locking_read(
        self,
        ns: str,
        filter_spec: Mapping[str, Any] | None,
        *,
        owned: OwnedRanges | None = None,
    ) -> list[bytes]:
        """(Inside ``capture``) the (owned) documents of ``ns`` matching the filter, as
        the capture sees them (its own earlier writes included); each is checked
        against the locks and the migration guards and locked by the capture."""
        if self._capture is None:
            raise LauraError(ErrorCode.INTERNAL_ERROR, "a locking read needs a capture")
        spec = filter_spec or {}
        matcher = compile_filter(spec)
        out: list[bytes] = []
        with self._transaction():
            c = self._wcat().get(ns)
            if c is None:
                return out
            guard = self._guard(ns)
            for row in self._matching(
                self._writer, self._wlock, c, spec, matcher, owned, ScanStats()
            ):
                if guard is not None:
                    guard.check(row.shard_key, owned)
                self._lock_check(ns, row.id_key, row.shard_key)
                out.append(row.raw)
        return out

    def apply_effects(
        self,
        txn_id: str,
        entries: Sequence[replication_pb2.OplogEntry],
        rows: Sequence[TxnRowChange] = (),
    ) -> int:
        """Apply a capture's changes (a transaction's Commit) and the transaction record
        row changes ``rows`` in ONE storage transaction; the op id of its last oplog
        entry (0 without an oplog).

        Logged as ordinary writes (the same entries), the migration transfer logs are
        notified as for ordinary writes, indexes are maintained. The transaction's own
        locks (``txn_id``) do not block it; the write guards' checks are not asked (the
        decision is made: a chunk with locked documents does not migrate)."""
        with self._transaction() as conn:
            before, self._lock_owner = self._lock_owner, txn_id
            try:
                self._apply_changes(conn, entries)
                for tbl, key, doc in rows:
                    self._txn_row(conn, tbl, key, doc)
            finally:
                self._lock_owner = before
        return self.last_write_op_id()

    def _apply_changes(
        self, conn: sqlite3.Connection, entries: Sequence[replication_pb2.OplogEntry]
    ) -> None:
        for e in entries:
            ns = e.namespace
            guard = self.write_guards.get(ns) if self.write_guards else None
            if e.op_type in (common_pb2.INSERT, common_pb2.UPDATE):
                id_key, shard_key, id_value = self._apply_put(conn, ns, e.document)
                if self._txn_ops is not None:
                    self._log(e.op_type, ns, e.document, e.query)
                if guard is not None:
                    guard.written(shard_key, id_key, id_value)
            elif e.op_type == common_pb2.DELETE:
                c = self._wcat().get(ns)
                if c is None:
                    continue
                id_value = bson.decode(e.query)["_id"]
                id_key = encode_value(id_value)
                row = conn.execute(
                    f"SELECT shard_key, doc FROM {c.table} WHERE id_key = ?", (id_key,)
                ).fetchone()
                if row is None:
                    continue
                self._delete_stored(conn, c, id_key, row[1])  # logs the DELETE
                if guard is not None:
                    guard.deleted(row[0], id_key, id_value)
            elif e.op_type == common_pb2.CREATE_COLLECTION:
                if ns not in self._wcat():  # created by the capture: create it again
                    self._ensure_collection(conn, ns, pattern_from_document(e.document))
            elif e.op_type == common_pb2.UNKNOWN_OP and e.kind == RETRY_KIND:
                continue
            else:
                raise LauraError(
                    ErrorCode.INTERNAL_ERROR,
                    f"a transaction's effects cannot hold operation {e.op_type} "
                    f"(kind {e.kind!r}) on {ns}",
                )

    # ------------------------------------------------------------------ migrations

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the write lock: no write transaction runs meanwhile."""
        with self._wlock:
            yield

    def change_guard(self, ns: str, change: Callable[[NamespaceGuard], None]) -> None:
        """Change the write guard of ``ns`` under the write lock (dropped once empty)."""
        with self._wlock:
            guard = self.write_guards.get(ns) or NamespaceGuard(ns)
            change(guard)
            guards = dict(self.write_guards)
            if guard.empty:
                guards.pop(ns, None)
            else:
                guards[ns] = guard
            self.write_guards = guards

    def ensure_collection(self, ns: str, pattern: PatternArg = KEEP) -> None:
        """Create ``ns`` if needed (and re-key it for ``pattern``)."""
        with self._transaction() as conn:
            self._ensure_collection(conn, ns, pattern)

    def range_id_keys(self, ns: str, keys: KeyRange) -> list[bytes]:
        """The sorted ``_id`` keys of the documents whose shard key is in ``keys``."""
        c = self._catalog.get(ns)
        if c is None:
            return []
        cond, args = keys.sql()
        with self._rlock:
            rows = self._reader().execute(
                f"SELECT id_key FROM {c.table} WHERE {cond}", args
            ).fetchall()
        out = [r[0] for r in rows]
        out.sort()
        return out

    def id_page(self, ns: str, after: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` ``(id_key, BSON)`` rows with ``id_key > after``, in key order."""
        c = self._catalog.get(ns)
        if c is None:
            return []
        with self._rlock:
            rows = self._reader().execute(
                f"SELECT id_key, doc FROM {c.table} WHERE id_key > ? ORDER BY id_key LIMIT ?",
                (after, limit),
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def rows_by_id(
        self, ns: str, id_keys: Sequence[bytes], *, writer: bool = False
    ) -> dict[bytes, tuple[bytes | None, bytes]]:
        """``id_key -> (shard_key, BSON)`` of the stored documents among ``id_keys``.

        ``writer``: read through the writer connection under the write lock (sees every
        committed write; used while draining a transfer log).
        """
        c = self._catalog.get(ns)
        out: dict[bytes, tuple[bytes | None, bytes]] = {}
        if c is None or not id_keys:
            return out
        conn_fn, lock = (self._writer, self._wlock) if writer else (self._reader, self._rlock)
        with lock:
            conn = conn_fn()
            for i in range(0, len(id_keys), 500):
                part = list(id_keys[i:i + 500])
                marks = ",".join("?" * len(part))
                for id_key, shard_key, raw in conn.execute(
                    f"SELECT id_key, shard_key, doc FROM {c.table} WHERE id_key IN ({marks})",
                    part,
                ):
                    out[id_key] = (shard_key, raw)
        return out

    def range_stats(self, ns: str, keys: KeyRange) -> tuple[int, int]:
        """(documents, BSON bytes) stored with a shard key in ``keys`` (one index range scan)."""
        c = self._catalog.get(ns)
        if c is None:
            return 0, 0
        cond, args = keys.sql()
        with self._rlock:
            n, size = self._reader().execute(
                f"SELECT COUNT(*), COALESCE(SUM(LENGTH(doc)), 0) FROM {c.table} WHERE {cond}",
                args,
            ).fetchone()
        return int(n), int(size)

    def range_key_sizes(self, ns: str, keys: KeyRange) -> Iterator[tuple[bytes, int]]:
        """``(shard_key, BSON length)`` of the documents in ``keys``, in shard key order."""
        c = self._catalog.get(ns)
        if c is None:
            return
        cond, args = keys.sql()
        base = f"SELECT shard_key, id_key, LENGTH(doc) FROM {c.table} WHERE {cond}"
        tail = " ORDER BY shard_key, id_key LIMIT ?"
        last: tuple[bytes, bytes] | None = None
        while True:
            with self._rlock:
                conn = self._reader()
                if last is None:
                    rows = conn.execute(base + tail, (*args, MAX_PAGE)).fetchall()
                else:
                    rows = conn.execute(
                        base + " AND (shard_key, id_key) > (?, ?)" + tail,
                        (*args, *last, MAX_PAGE),
                    ).fetchall()
            for shard_key, _, size in rows:
                yield shard_key, int(size)
            if len(rows) < MAX_PAGE:
                return
            last = (rows[-1][0], rows[-1][1])

    def document_with_key(self, ns: str, shard_key: bytes) -> dict[str, Any] | None:
        """One stored document whose shard key is ``shard_key`` (None if there is none)."""
        c = self._catalog.get(ns)
        if c is None:
            return None
        with self._rlock:
            row = self._reader().execute(
                f"SELECT doc FROM {c.table} WHERE shard_key = ? LIMIT 1", (shard_key,)
            ).fetchone()
        return bson.decode(row[0]) if row is not None else None

    def upsert_documents(self, ns: str, docs: Sequence[bytes], keys: KeyRange) -> int:
        """Insert or replace documents by ``_id`` (a migration's recipient), one transaction.

        Bypasses write guards and ownership. A stored document with the same ``_id``
        but a shard key outside ``keys`` is another (owned) document: DUPLICATE_KEY.
        """
        if not docs:
            return 0
        with self._transaction() as conn, self._exempt_from_locks():
            c = self._ensure_collection(conn, ns, KEEP)
            select = f"SELECT shard_key, doc FROM {c.table} WHERE id_key = ?"
            update = f"UPDATE {c.table} SET shard_key = ?, doc = ? WHERE id_key = ?"
            for i, raw in enumerate(docs):
                p = self._prepare(i, raw, c.pattern)
                old = conn.execute(select, (p.id_key,)).fetchone()
                if old is None:
                    self._insert_row(conn, c, p, False)
                    if self._txn_ops is not None:
                        self._log(common_pb2.INSERT, ns, p.raw)
                    continue
                old_key, old_raw = old
                if old_key is None or not keys.contains(old_key):
                    raise _duplicate_error(ns, p.id_value)
                if old_raw == p.raw:
                    continue
                conn.execute(update, (p.shard_key, p.raw, p.id_key))
                if self._txn_ops is not None:
                    self._log(common_pb2.INSERT, ns, p.raw)
                if c.indexes:
                    new_doc = p.decoded if p.decoded is not None else bson.decode(p.raw)
                    self._reindex(conn, c, p.id_key, bson.decode(old_raw), new_doc)
        return len(docs)

    def delete_ids(self, ns: str, id_keys: Sequence[bytes], keys: KeyRange) -> int:
        """Delete the documents with these ``_id`` keys whose shard key is in ``keys``."""
        if not id_keys:
            return 0
        with self._transaction() as conn:
            c = self._wcat().get(ns)
            if c is None:
                return 0
            deleted = 0
            select = f"SELECT shard_key, doc FROM {c.table} WHERE id_key = ?"
            for id_key in id_keys:
                row = conn.execute(select, (id_key,)).fetchone()
                if row is None or row[0] is None or not keys.contains(row[0]):
                    continue
                self._delete_stored(conn, c, id_key, row[1])
                deleted += 1
            return deleted

    def delete_range(self, ns: str, keys: KeyRange, limit: int = MAX_PAGE) -> int:
        """Delete up to ``limit`` documents whose shard key is in ``keys`` (one transaction).

        Bypasses write guards and ownership (range deletion, recipient cleanup).
        """
        with self._transaction() as conn:
            c = self._wcat().get(ns)
            if c is None:
                return 0
            cond, args = keys.sql()
            rows = conn.execute(
                f"SELECT id_key, doc FROM {c.table} WHERE {cond} LIMIT ?", (*args, limit)
            ).fetchall()
            for id_key, raw in rows:
                self._delete_stored(conn, c, id_key, raw)
            return len(rows)

    def _delete_stored(
        self, conn: sqlite3.Connection, c: Collection, id_key: bytes, raw: bytes
    ) -> None:
        conn.execute(f"DELETE FROM {c.table} WHERE id_key = ?", (id_key,))
        if not c.indexes and self._txn_ops is None:
            return
        doc = bson.decode(raw)
        for ix in c.indexes:
            e = index_entries(doc, ix)
            if e is not None:
                self._remove_entries(conn, ix, id_key, e.keys)
        if self._txn_ops is not None:
            self._log(common_pb2.DELETE, c.ns, query=bson.encode({"_id": doc["_id"]}))


    # ------------------------------------------------------------------ indexes

    def create_index(self, ns: str, index: IndexDef) -> bool:
        """Create and build a secondary index in one transaction; False if it exists.

        The collection is created if needed. A unique violation among the existing
        documents fails with DUPLICATE_KEY and leaves no index behind; so do parallel
        arrays (BAD_VALUE). Same name with other keys or options, or the same keys
        under another name: INDEX_ALREADY_EXISTS.
        """
        if is_id_index(index.fields):
            if index.name == ID_INDEX_NAME:
                with self._transaction() as conn:
                    self._ensure_collection(conn, ns, KEEP)
                return False
            raise LauraError(
                ErrorCode.INDEX_ALREADY_EXISTS,
                f"Index already exists with a different name: {ID_INDEX_NAME}",
            )
        if index.name == ID_INDEX_NAME:
            raise LauraError(
                ErrorCode.INDEX_ALREADY_EXISTS,
                f"Index with name: {ID_INDEX_NAME} already exists with different options",
            )
        with self._transaction() as conn:
            c = self._ensure_collection(conn, ns, KEEP)
            for existing in c.indexes:
                if existing.name == index.name:
                    if existing.same_spec(index):
                        return False
                    raise LauraError(
                        ErrorCode.INDEX_ALREADY_EXISTS,
                        f"Index with name: {index.name} already exists with different "
                        f"options (existing {existing.keys_document()!r}, unique="
                        f"{existing.unique}, sparse={existing.sparse})",
                    )
                if existing.fields == index.fields:
                    raise LauraError(
                        ErrorCode.INDEX_ALREADY_EXISTS,
                        f"Index already exists with a different name: {existing.name}",
                    )
            ix = self._add_index(conn, c, index)
            if self._txn_ops is not None:
                self._log(common_pb2.CREATE_INDEX, ns, bson.encode(index_document(ix)))
        log.info("%s: index %s %r built", ns, ix.name, ix.keys_document())
        return True

    def _add_index(
        self, conn: sqlite3.Connection, c: Collection, index: IndexDef, *, build: bool = True
    ) -> IndexDef:
        """Create an index's table, build it (``build``) and add it to the catalog."""
        table = self._new_table_name(conn, "ix")
        conn.execute(
            f"CREATE TABLE {table} (index_key BLOB NOT NULL, id_key BLOB NOT NULL, "
            f"aux INTEGER NOT NULL, PRIMARY KEY (index_key, id_key)) WITHOUT ROWID"
        )
        if index.unique:
            conn.execute(
                f"CREATE UNIQUE INDEX {table}_unique ON {table} (index_key) WHERE aux = 0"
            )
        ix = replace(index, table=table, multikey=False if build else index.multikey)
        if build:
            ix = replace(ix, multikey=self._build_index(conn, c, ix))
        conn.execute(
            "INSERT INTO indexes (ns, name, tbl, fields, is_unique, is_sparse, multikey) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (c.ns, ix.name, table, ix.fields_json(), int(ix.unique), int(ix.sparse),
             int(ix.multikey)),
        )
        self._wcat()[c.ns] = replace(c, indexes=(*c.indexes, ix))
        return ix

    def _remove_index(self, conn: sqlite3.Connection, c: Collection, ix: IndexDef) -> None:
        self._txn_multikey.discard((c.ns, ix.name))
        conn.execute(f"DROP TABLE IF EXISTS {ix.table}")
        conn.execute("DELETE FROM indexes WHERE ns = ? AND name = ?", (c.ns, ix.name))
        c = self._wcat()[c.ns]
        self._wcat()[c.ns] = replace(
            c, indexes=tuple(i for i in c.indexes if i.name != ix.name)
        )

    def _build_index(self, conn: sqlite3.Connection, c: Collection, ix: IndexDef) -> bool:
        """Index every stored document (orphans too); whether the index is multikey."""
        multikey = False
        after: bytes | None = None
        while True:
            if after is None:
                rows = conn.execute(
                    f"SELECT id_key, doc FROM {c.table} ORDER BY id_key LIMIT ?", (MAX_PAGE,)
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT id_key, doc FROM {c.table} WHERE id_key > ? ORDER BY id_key LIMIT ?",
                    (after, MAX_PAGE),
                ).fetchall()
            if not rows:
                return multikey
            batch: list[tuple[bytes, bytes, int]] = []
            for id_key, raw in rows:
                doc = bson.decode(raw)
                try:
                    e = index_entries(doc, ix)
                except LauraError as err:
                    raise LauraError(
                        err.code, f"{err.message}; document _id {doc.get('_id')!r}", err.details
                    ) from None
                if e is None:
                    continue
                multikey = multikey or e.multikey
                if ix.unique:
                    self._add_entries(conn, c, ix, id_key, e.keys)
                else:
                    batch.extend((k, id_key, int(aux)) for k, aux in e.keys.items())
            if batch:
                conn.executemany(
                    f"INSERT INTO {ix.table} (index_key, id_key, aux) VALUES (?, ?, ?)", batch
                )
            after = rows[-1][0]

    @staticmethod
    def _new_table_name(conn: sqlite3.Connection, prefix: str) -> str:
        (n,) = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()
        while True:
            n += 1
            name = f"{prefix}_{n}"
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = ?", (name,)
            ).fetchone():
                return name

    def drop_index(self, ns: str, name: str) -> list[str]:
        """Drop one index by name, or every one but ``_id_`` with ``"*"``; their names."""
        with self._transaction() as conn:
            c = self._wcat().get(ns)
            if c is None:
                raise LauraError(ErrorCode.NAMESPACE_NOT_FOUND, f"ns not found: {ns}")
            if name == "*":
                targets = list(c.indexes)
            elif name == ID_INDEX_NAME:
                raise LauraError(ErrorCode.ILLEGAL_OPERATION, "cannot drop _id index")
            else:
                found = c.index(name)
                if found is None:
                    raise LauraError(
                        ErrorCode.INDEX_NOT_FOUND, f"index not found with name [{name}] in {ns}"
                    )
                targets = [found]
            for ix in targets:
                self._remove_index(conn, c, ix)
                if self._txn_ops is not None:
                    self._log(common_pb2.DROP_INDEX, ns, bson.encode({"name": ix.name}))
        if targets:
            log.info("%s: dropped indexes %s", ns, ", ".join(ix.name for ix in targets))
        return [ix.name for ix in targets]

    def list_indexes(self, ns: str) -> list[IndexDef]:
        """``_id_`` then the secondary indexes; NAMESPACE_NOT_FOUND without the collection."""
        c = self._catalog.get(ns)
        if c is None:
            raise LauraError(ErrorCode.NAMESPACE_NOT_FOUND, f"ns does not exist: {ns}")
        return [IndexDef(ID_INDEX_NAME, (("_id", 1),)), *c.indexes]

    def list_collections(self, database: str) -> list[str]:
        prefix = f"{database}."
        return sorted(ns[len(prefix):] for ns in self._catalog if ns.startswith(prefix))

    def drop_collection(self, ns: str) -> bool:
        """Drop a collection's documents and indexes; False if it did not exist."""
        with self._transaction() as conn:
            return self._drop(conn, ns)

    def drop_database(self, database: str) -> list[str]:
        """Drop every collection of ``database`` in one transaction; their namespaces."""
        prefix = f"{database}."
        with self._transaction() as conn:
            names = sorted(ns for ns in self._wcat() if ns.startswith(prefix))
            for ns in names:
                self._drop(conn, ns)
        return names

    def _drop(self, conn: sqlite3.Connection, ns: str) -> bool:
        c = self._wcat().pop(ns, None)
        if c is None:
            return False
        for ix in c.indexes:
            self._txn_multikey.discard((ns, ix.name))
            conn.execute(f"DROP TABLE IF EXISTS {ix.table}")
        conn.execute(f"DROP TABLE IF EXISTS {c.table}")
        conn.execute("DELETE FROM indexes WHERE ns = ?", (ns,))
        conn.execute("DELETE FROM catalog WHERE ns = ?", (ns,))
        if self._txn_ops is not None:
            self._log(common_pb2.DROP_COLLECTION, ns)
        log.info("%s: collection dropped", ns)
        return True

    # ------------------------------------------------------------------ replication

    def _apply_entry(self, conn: sqlite3.Connection, e: replication_pb2.OplogEntry) -> None:
        """Apply one oplog entry inside a (follower's, unlogged) write transaction.

        Idempotent: an insert/update of a stored ``_id`` replaces it, deleting a
        missing document does nothing, DDL converges on the entry's state.
        """
        op, ns = e.op_type, e.namespace
        if op == common_pb2.INSERT or op == common_pb2.UPDATE:
            self._apply_put(conn, ns, e.document)
        elif op == common_pb2.DELETE:
            self._apply_delete(conn, ns, e.query)
        elif op == common_pb2.CREATE_COLLECTION:
            self._ensure_collection(conn, ns, pattern_from_document(e.document))
        elif op == common_pb2.DROP_COLLECTION:
            self._drop(conn, ns)
        elif op == common_pb2.CREATE_INDEX:
            self._apply_create_index(conn, ns, index_from_document(bson.decode(e.document)))
        elif op == common_pb2.DROP_INDEX:
            c = self._wcat().get(ns)
            found = c.index(str(bson.decode(e.document)["name"])) if c is not None else None
            if c is not None and found is not None:
                self._remove_index(conn, c, found)
        elif op == common_pb2.UNKNOWN_OP and e.kind == TXN_ROW_KIND:
            row = bson.decode(e.document)
            d = row.get("d")
            self._store_txn_row(conn, str(row["t"]), str(row["k"]), bytes(d) if d is not None else None)
        elif op == common_pb2.UNKNOWN_OP and e.kind in self.state_appliers:
            self.state_appliers[e.kind](e.document)
        elif op != common_pb2.UNKNOWN_OP or not e.kind:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"oplog entry {e.op_id}: unknown operation {op} (kind {e.kind!r})",
            )
        if e.retry_records:
            retry_records.add_many(
                conn, [retry_records.record_from_proto(r, ns) for r in e.retry_records]
            )

    def _apply_put(
        self, conn: sqlite3.Connection, ns: str, raw: bytes
    ) -> tuple[bytes, bytes | None, Any]:
        """Store the document (insert or replace by ``_id``) with its index entries;
        its ``(id_key, shard_key, _id)``."""
        c = self._ensure_collection(conn, ns, KEEP)
        doc = decode_document(raw, "oplog document")
        id_value = doc["_id"]
        id_key = encode_value(id_value)
        shard_key: bytes | None = None
        if c.pattern is not None:
            try:
                shard_key = c.pattern.key_for_doc(doc)
            except LauraError:  # like a re-key: owned by no chunk
                shard_key = None
        old = conn.execute(f"SELECT doc FROM {c.table} WHERE id_key = ?", (id_key,)).fetchone()
        if old is None:
            self._insert_row(conn, c, _Prepared(0, id_value, id_key, shard_key, raw, doc), False)
            return id_key, shard_key, id_value
        if old[0] == raw:
            return id_key, shard_key, id_value
        conn.execute(
            f"UPDATE {c.table} SET shard_key = ?, doc = ? WHERE id_key = ?",
            (shard_key, raw, id_key),
        )
        if c.indexes:
            self._reindex(conn, c, id_key, bson.decode(old[0]), doc)
        return id_key, shard_key, id_value

    def _apply_delete(self, conn: sqlite3.Connection, ns: str, query: bytes) -> None:
        c = self._wcat().get(ns)
        if c is None:
            return
        id_key = encode_value(bson.decode(query)["_id"])
        row = conn.execute(f"SELECT doc FROM {c.table} WHERE id_key = ?", (id_key,)).fetchone()
        if row is not None:
            self._delete_stored(conn, c, id_key, row[0])

    def _apply_create_index(self, conn: sqlite3.Connection, ns: str, index: IndexDef) -> None:
        c = self._ensure_collection(conn, ns, KEEP)
        for existing in c.indexes:
            if existing.name == index.name and existing.same_spec(index):
                return
            if existing.name == index.name or existing.fields == index.fields:
                self._remove_index(conn, c, existing)  # the log's state wins
                c = self._wcat()[ns]
        self._add_index(conn, c, replace(index, multikey=False))


def _pattern_columns(pattern: ShardKeyPattern | None) -> tuple[str | None, str | None]:
    if pattern is None:
        return None, None
    return json.dumps(list(pattern.fields)), pattern.strategy


def _pattern_document(pattern: ShardKeyPattern | None) -> bytes:
    """A CREATE_COLLECTION entry's document: the collection's key pattern."""
    fields, strategy = _pattern_columns(pattern)
    return bson.encode({"key_fields": fields, "key_strategy": strategy})


def pattern_from_document(raw: bytes) -> ShardKeyPattern | None:
    doc = bson.decode(raw) if raw else {}
    return _pattern_from_row(doc.get("key_fields"), doc.get("key_strategy"))


def index_document(ix: IndexDef) -> dict[str, Any]:
    """A CREATE_INDEX entry's (and an initial sync chunk's) description of an index."""
    return {
        "name": ix.name, "fields": ix.fields_json(), "unique": ix.unique,
        "sparse": ix.sparse, "multikey": ix.multikey,
    }


def index_from_document(doc: Mapping[str, Any]) -> IndexDef:
    return IndexDef(
        str(doc["name"]), fields_from_json(str(doc["fields"])), bool(doc.get("unique")),
        bool(doc.get("sparse")), multikey=bool(doc.get("multikey")),
    )


def _pattern_from_row(fields: str | None, strategy: str | None) -> ShardKeyPattern | None:
    if not fields or not strategy:
        return None
    return ShardKeyPattern(json.loads(fields), strategy)
