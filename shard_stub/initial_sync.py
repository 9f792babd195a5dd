"""Initial sync: a consistent copy of a member's data, as a stream of BSON chunks.

``snapshot(storage)`` opens its own SQLite connection and one read transaction (WAL:
the reader sees one consistent state however long the copy takes) in which it reads
the sync point (the source's ``applied`` op id and its term), the catalog and the
document counts, and then pages through the documents and the retry records. The
chunks, each one BSON document with a type ``t``:

* ``header``: ``sync_point``, ``sync_term``, ``collections``, ``total_documents``;
* ``collection``: ``ns``, ``key_fields``/``key_strategy`` (the shard key pattern),
  ``indexes`` (name, fields, unique, sparse, multikey);
* ``docs``: ``ns``, ``docs`` (raw BSON documents, about ``CHUNK_BYTES`` per chunk);
* ``retry``: ``records`` (retry records, every namespace);
* ``txn``: ``rows`` (transaction record rows ``{t, k, d}``, see
  ``shard_stub.transactions.records``);
* ``state``: ``kind``, ``document``: node-local state (``storage.state_sources``, read
  when the snapshot is taken; later oplog entries of its kind replace it);
* ``end``: ``documents`` (the number sent).

``restore(storage, chunks, sync_point)`` wipes the member (documents, catalog,
indexes, retry records, oplog; marked ``syncing`` so a crash mid-way is seen by
``Oplog.sync_pending``), loads the chunks (a few transactions per chunk, indexes
maintained as documents arrive), then sets ``applied`` and the oplog's base to the
sync point: the member then streams entries from ``sync_point + 1``.
Progress: ``SnapshotChunks.documents`` / ``total_documents`` on the source, the
``progress`` callback of ``restore`` on the member.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

import bson

from lauradb.errors import ErrorCode, LauraError
from shard_stub import retry_records
from shard_stub.index_keys import IndexDef, fields_from_json
from shard_stub.oplog import OplogPosition
from shard_stub.storage import (
    KEEP,
    ShardStorage,
    _pattern_from_row,
    index_document,
    index_from_document,
)

__all__ = ["CHUNK_BYTES", "SnapshotChunks", "restore", "snapshot", "wipe"]

log = logging.getLogger("lauradb.shard.initial_sync")

CHUNK_BYTES = 1 << 20
CHUNK_DOCS = 2000
RECORDS_PER_CHUNK = 2000


class SnapshotChunks(Iterator[bytes]):
    """The chunks of one snapshot (holds its read transaction until exhausted or
    ``close``d); ``documents`` sent so far of ``total_documents``."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        sync: OplogPosition,
        states: dict[str, bytes],
        catalog: list[tuple[str, str, str | None, str | None]],
        indexes: dict[str, list[IndexDef]],
        counts: dict[str, int],
    ) -> None:
        self.sync_point = sync.op_id
        self.sync_term = sync.term
        self.total_documents = sum(counts.values())
        self.documents = 0
        self._conn: sqlite3.Connection | None = conn
        self._states = states
        self._gen = self._chunks(catalog, indexes)

    def __next__(self) -> bytes:
        try:
            return next(self._gen)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._gen.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LauraError(ErrorCode.OPERATION_FAILED, "the initial sync snapshot is closed")
        return self._conn

    def _chunks(
        self,
        catalog: list[tuple[str, str, str | None, str | None]],
        indexes: dict[str, list[IndexDef]],
    ) -> Generator[bytes, None, None]:
        yield bson.encode({
            "t": "header", "sync_point": self.sync_point, "sync_term": self.sync_term,
            "collections": len(catalog), "total_documents": self.total_documents,
        })
        for ns, _, fields, strategy in catalog:
            yield bson.encode({
                "t": "collection", "ns": ns, "key_fields": fields, "key_strategy": strategy,
                "indexes": [index_document(ix) for ix in indexes.get(ns, [])],
            })
        for ns, table, _, _ in catalog:
            after: bytes | None = None
            while True:
                if after is None:
                    rows = self._db().execute(
                        f"SELECT id_key, doc FROM {table} ORDER BY id_key LIMIT ?", (CHUNK_DOCS,)
                    ).fetchall()
                else:
                    rows = self._db().execute(
                        f"SELECT id_key, doc FROM {table} WHERE id_key > ? ORDER BY id_key "
                        f"LIMIT ?",
                        (after, CHUNK_DOCS),
                    ).fetchall()
                if not rows:
                    break
                page: list[bytes] = []
                size = 0
                for id_key, raw in rows:
                    if page and size + len(raw) > CHUNK_BYTES:
                        self.documents += len(page)
                        yield bson.encode({"t": "docs", "ns": ns, "docs": page})
                        page, size = [], 0
                    page.append(raw)
                    size += len(raw)
                    after = id_key
                self.documents += len(page)
                yield bson.encode({"t": "docs", "ns": ns, "docs": page})
        seq = 0
        while True:
            records, last, more = retry_records.page(self._db(), None, seq, RECORDS_PER_CHUNK)
            if records:
                yield bson.encode({"t": "retry", "records": [_record_doc(r) for r in records]})
            if not more:
                break
            seq = last
        txn_rows = self._db().execute("SELECT tbl, key, doc FROM txn_rows").fetchall()
        for i in range(0, len(txn_rows), RECORDS_PER_CHUNK):
            yield bson.encode({
                "t": "txn",
                "rows": [
                    {"t": t, "k": k, "d": bytes(d)}
                    for t, k, d in txn_rows[i:i + RECORDS_PER_CHUNK]
                ],
            })
        for kind, document in self._states.items():
            yield bson.encode({"t": "state", "kind": kind, "document": document})
        yield bson.encode({"t": "end", "documents": self.documents})


def _record_doc(r: retry_records.StoredRecord) -> dict[str, Any]:
    return {
        "retry_id": r.retry_id, "stmt_id": r.stmt_id, "ns": r.ns, "kind": r.kind,
        "fingerprint": r.fingerprint, "created_at": r.created_at, "id_key": r.id_key,
        "shard_key": r.shard_key, "outcome": r.outcome,
    }


def _record_from_doc(d: dict[str, Any]) -> retry_records.StoredRecord:
    return retry_records.StoredRecord(
        0, str(d["retry_id"]), int(d["stmt_id"]), str(d["ns"]), str(d["kind"]),
        bytes(d.get("fingerprint") or b""), float(d["created_at"]), bytes(d.get("id_key") or b""),
        bytes(d["shard_key"]) if d.get("shard_key") is not None else None,
        bytes(d.get("outcome") or b""),
    )


def snapshot(storage: ShardStorage) -> tuple[int, SnapshotChunks]:
    """(sync point, chunks) of ``storage``'s committed state (one read transaction)."""
    if storage.oplog is None:
        raise LauraError(ErrorCode.ILLEGAL_OPERATION, "initial sync needs a replica-set member")
    conn = sqlite3.connect(
        storage.path, isolation_level=None, check_same_thread=False, timeout=30.0
    )
    try:
        conn.execute("PRAGMA query_only=ON")
        conn.execute("BEGIN")
        applied, base_id, base_term = conn.execute(
            "SELECT applied, base_id, base_term FROM oplog_state WHERE id = 1"
        ).fetchone()
        if applied == base_id:
            term = int(base_term)
        else:
            row = conn.execute("SELECT term FROM oplog WHERE op_id = ?", (applied,)).fetchone()
            if row is None:
                raise LauraError(ErrorCode.INTERNAL_ERROR, f"oplog entry {applied} is missing")
            term = int(row[0])
        catalog = [
            (str(ns), str(tbl), fields, strategy)
            for ns, tbl, fields, strategy in conn.execute(
                "SELECT ns, tbl, key_fields, key_strategy FROM catalog ORDER BY ns"
            ).fetchall()
        ]
        indexes: dict[str, list[IndexDef]] = {}
        for ns, name, fields, unique, sparse, multikey in conn.execute(
            "SELECT ns, name, fields, is_unique, is_sparse, multikey FROM indexes ORDER BY rowid"
        ).fetchall():
            indexes.setdefault(ns, []).append(
                IndexDef(name, fields_from_json(fields), bool(unique), bool(sparse),
                         multikey=bool(multikey))
            )
        counts = {
            ns: int(conn.execute(f"SELECT COUNT(*) FROM {tbl}").fetchone()[0])
            for ns, tbl, _, _ in catalog
        }
        states = {kind: source() for kind, source in storage.state_sources.items()}
    except BaseException:
        conn.close()
        raise
    chunks = SnapshotChunks(
        conn, OplogPosition(int(applied), term), states, catalog, indexes, counts
    )
    log.info(
        "initial sync snapshot at op %d (term %d): %d collections, %d documents",
        chunks.sync_point, term, len(catalog), chunks.total_documents,
    )
    return chunks.sync_point, chunks


def wipe(storage: ShardStorage, *, syncing: bool = False) -> None:
    """Delete every collection, index, retry record and oplog entry (one transaction);
    ``syncing`` marks an initial sync in progress (``Oplog.sync_pending``)."""
    oplog = storage.oplog
    if oplog is None:
        raise LauraError(ErrorCode.ILLEGAL_OPERATION, "wipe needs a replica-set member")
    with storage._wlock:
        with storage._transaction(log=False) as conn:
            for ns in list(storage._wcat()):
                storage._drop(conn, ns)
            conn.execute("DELETE FROM retry_records")
            conn.execute("DELETE FROM txn_rows")
            oplog._reset(conn, OplogPosition(0, 0), syncing)
        oplog.reload()
    log.info("storage wiped%s", " for an initial sync" if syncing else "")


def restore(
    storage: ShardStorage,
    chunks: Iterable[bytes],
    sync_point: int,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Replace ``storage``'s data with a snapshot's ``chunks`` taken at ``sync_point``;
    ``progress(documents, total_documents)`` after each chunk of documents."""
    oplog = storage.oplog
    if oplog is None:
        raise LauraError(ErrorCode.ILLEGAL_OPERATION, "restore needs a replica-set member")
    wipe(storage, syncing=True)
    header: dict[str, Any] | None = None
    done = False
    loaded = 0
    for raw in chunks:
        chunk = bson.decode(raw)
        kind = chunk.get("t")
        if header is None:
            if kind != "header" or int(chunk["sync_point"]) != sync_point:
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    f"initial sync stream does not start with the header of sync point "
                    f"{sync_point}",
                )
            header = chunk
            continue
        with storage._transaction(log=False) as conn:
            if kind == "collection":
                ns = str(chunk["ns"])
                pattern = _pattern_from_row(chunk.get("key_fields"), chunk.get("key_strategy"))
                c = storage._ensure_collection(conn, ns, pattern)
                for spec in chunk.get("indexes") or []:
                    storage._add_index(conn, c, index_from_document(spec), build=False)
                    c = storage._wcat()[ns]
            elif kind == "docs":
                ns = str(chunk["ns"])
                storage._ensure_collection(conn, ns, KEEP)
                for doc in chunk["docs"]:
                    storage._apply_put(conn, ns, bytes(doc))
                loaded += len(chunk["docs"])
            elif kind == "retry":
                retry_records.add_many(conn, [_record_from_doc(d) for d in chunk["records"]])
            elif kind == "txn":
                for r in chunk["rows"]:
                    storage._store_txn_row(conn, str(r["t"]), str(r["k"]), bytes(r["d"]))
            elif kind == "state":
                applier = storage.state_appliers.get(str(chunk["kind"]))
                if applier is not None:
                    applier(bytes(chunk["document"]))
            elif kind == "end":
                done = True
            else:
                raise LauraError(ErrorCode.BAD_VALUE, f"unknown initial sync chunk {kind!r}")
        if kind == "docs" and progress is not None:
            progress(loaded, int(header.get("total_documents", 0)))
    if header is None or not done:
        raise LauraError(
            ErrorCode.OPERATION_FAILED, "the initial sync stream ended before its end chunk"
        )
    base = OplogPosition(sync_point, int(header["sync_term"]))
    with storage._wlock:
        with storage._transaction(log=False) as conn:
            oplog._reset(conn, base, False)
        oplog.reload()
    log.info("initial sync restored %d documents at op %d (term %d)", loaded, *base)
