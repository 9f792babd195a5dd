"""The etcd backend of the metadata store (``--store etcd://host:port[,host:port...][/name]``).

Layout, under the cluster's root ``/lauradb/<name>/`` (``name`` defaults to
``default``): the store's keys are under ``<root>store/``, one key per record, the
identity parts percent-encoded::

    store/shards/<shard_id>              store/databases/<name>
    store/collections/<db>/<coll>        store/indexes/<db>/<coll>/<name>
    store/nodes/<node_id>                store/migrations/<migration_id>
    store/meta/<key>                     store/chunks/<namespace>/<page_id>
    store/_t/<table>  (table markers)    store/_rev  (the last commit's id)

Values are BSON (meta values: UTF-8 text). Chunks are kept in *pages* of up to
``PAGE_MAX`` chunks (zlib-compressed BSON), not one key per chunk: sharding a collection
into 8192 initial chunks is then ~32 puts, well inside etcd's default limits of 128
operations and 1.5 MiB per transaction, and a split or a migration commit rewrites one
page. Dropping a collection deletes its pages with one range delete, whatever its size.

Reads come from an in-memory *mirror* of ``store/``: loaded once (paged Range at one
revision), then kept current by a watch (a thread of its own); a watch response is
applied whole, so the mirror always shows the state at one etcd revision. Reads never
wait for the network; a ``snapshot()`` is the mirror at one revision.

A ``transaction()`` is optimistic: reads record the mod revision of each key read (0
for a key read as missing), and a range read (listing a table, or looking for a chunk
that is not there) records the table's marker key, which every commit writing the
table puts again. Writes are buffered (the transaction reads its own writes). The
commit is ONE etcd Txn: ``mod_revision(k) == seen`` for every key read, then every put
and delete, the markers of the tables written and ``_rev``. If any compare fails,
another writer got there first: the mirror catches up and ``MetadataConflict``
(WRITE_CONFLICT) is raised; ``store.retry_conflicts`` (on every metadata-changing
Catalog/migration method) runs the method again on the fresh state. So two config
servers can never both commit changes based on the same state, and counters (the
topology version is a meta key read then written) only ever go up. After a commit the
store waits until the mirror shows it (read-your-writes).

An optional *fence* (``set_fence``: the leader key and its create revision, from
``config_server.leadership``) is compared in every commit too: a config server that
lost its leadership can no longer commit (NOT_WRITABLE_PRIMARY).

Calls are synchronous (the ``MetadataStore`` interface is; the Catalog relies on it):
reads are memory lookups; a commit blocks its caller for one etcd round trip plus the
watch catching up (like SQLite's fsync), bounded by ``timeout``. The gRPC traffic is
plain (sync) grpc on grpc's own threads; the watch runs on a daemon thread, so nothing
here needs the caller's event loop.
"""

from __future__ import annotations

import logging
import queue
import re
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import bson
import grpc
from aetcd import rpc

from config_server.model import (
    MIGRATION_RUNNING,
    ChunkRecord,
    CollectionRecord,
    DatabaseRecord,
    IndexRecord,
    MigrationRecord,
    NodeRecord,
    ShardRecord,
    combined_version,
)
from config_server.store import (
    SCHEMA_VERSION,
    TOPOLOGY_VERSION_KEY,
    MetadataConflict,
    MetadataStore,
    MetadataTransaction,
    retry_conflicts,
)
from lauradb.errors import ErrorCode, LauraError

log = logging.getLogger("lauradb.config.store.etcd")

DEFAULT_CLUSTER = "default"
DEFAULT_TIMEOUT = 5.0
PAGE_TARGET = 256  # chunks per page when new pages are made
PAGE_MAX = 512  # a page growing past this (splits) is cut in two
# etcd's defaults (--max-txn-ops, --max-request-bytes); the store never needs more.
MAX_TXN_OPS = 128
MAX_REQUEST_BYTES = 1536 * 1024 - 16 * 1024  # some room for gRPC framing
PRUNE_BATCH = 32  # finished migration rows forgotten per transaction at most
RANGE_PAGE = 256  # keys per Range page when loading the mirror
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
)
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")

T = TypeVar("T")


# ---------------------------------------------------------------------- the URL


@dataclass(frozen=True)
class EtcdStoreSpec:
    """A parsed ``etcd://h:p[,h:p...][/name]`` store URL."""

    endpoints: tuple[tuple[str, int], ...]
    cluster: str = DEFAULT_CLUSTER

    @property
    def root(self) -> bytes:
        """The cluster's key root ``/lauradb/<cluster>/`` (the store and the leader
        key live under it)."""
        return f"/lauradb/{self.cluster}/".encode()

    @property
    def url(self) -> str:
        hosts = ",".join(_join_host(h, p) for h, p in self.endpoints)
        return f"etcd://{hosts}/{self.cluster}"


def _join_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_endpoint(text: str, url: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [v6]:port
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or not host:
            raise _bad_url(url, f"bad endpoint '{text}'")
    else:
        host, _, port_text = text.rpartition(":")
        if not _:
            host, port_text = text, ""
    if not host:
        raise _bad_url(url, f"endpoint '{text}' has no host")
    if not port_text:
        return host, 2379
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _bad_url(url, f"endpoint '{text}' has an invalid port")
    return host, int(port_text)


def _bad_url(url: str, why: str) -> LauraError:
    return LauraError(
        ErrorCode.BAD_VALUE,
        f"invalid store URL '{url}': {why} (expected etcd://host:port[,host:port...][/name])",
    )


def parse_etcd_url(url: str) -> EtcdStoreSpec:
    """``etcd://h1:2379,h2:2379/name``: endpoints (port 2379 if left out) and the
    cluster name (letters, digits, ``._-``, ``/``-separated; default ``default``)."""
    if not url.startswith("etcd://"):
        raise _bad_url(url, "it must start with etcd://")
    rest = url[len("etcd://"):]
    hosts, _, name = rest.partition("/")
    name = name.strip("/") or DEFAULT_CLUSTER
    if not _NAME_RE.match(name) or any(seg in (".", "..") for seg in name.split("/")):
        raise _bad_url(url, f"cluster name '{name}' may only hold letters, digits, '._-/'")
    parts = [h for h in hosts.split(",") if h.strip()]
    if not parts:
        raise _bad_url(url, "no endpoint")
    endpoints = tuple(_parse_endpoint(p, url) for p in parts)
    return EtcdStoreSpec(endpoints, name)


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix``."""
    data = bytearray(prefix)
    while data:
        if data[-1] < 0xFF:
            data[-1] += 1
            return bytes(data)
        data.pop()
    return b"\x00"


# ------------------------------------------------------------------- connection


class EtcdConnection:
    """Sync gRPC channels to the endpoints; a failing endpoint hands over to the next."""

    def __init__(self, endpoints: tuple[tuple[str, int], ...], timeout: float) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self._lock = threading.Lock()
        self._index = 0
        self._channel: grpc.Channel | None = None

    def channel(self) -> grpc.Channel:
        with self._lock:
            if self._channel is None:
                host, port = self.endpoints[self._index]
                self._channel = grpc.insecure_channel(
                    _join_host(host, port), options=_CHANNEL_OPTIONS
                )
            return self._channel

    @property
    def endpoint(self) -> str:
        host, port = self.endpoints[self._index]
        return _join_host(host, port)

    def rotate(self, failed: grpc.Channel | None = None) -> None:
        with self._lock:
            if failed is not None and failed is not self._channel:
                return  # someone rotated already
            if self._channel is not None:
                self._channel.close()
                self._channel = None
            self._index = (self._index + 1) % len(self.endpoints)

    def kv(self) -> rpc.KVStub:
        return rpc.KVStub(self.channel())

    def call(self, fn: Callable[[rpc.KVStub], T], what: str) -> T:
        """An idempotent KV call, tried once on every endpoint."""
        last: grpc.RpcError | None = None
        for _ in range(len(self.endpoints)):
            channel = self.channel()
            try:
                return fn(rpc.KVStub(channel))
            except grpc.RpcError as exc:
                last = exc
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED
                ):
                    break
                self.rotate(channel)
        raise _unreachable(what, self.endpoints, last)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None


def _unreachable(
    what: str, endpoints: tuple[tuple[str, int], ...], exc: grpc.RpcError | None
) -> LauraError:
    where = ",".join(_join_host(h, p) for h, p in endpoints)
    detail = f"{exc.code().name}: {exc.details()}" if exc is not None else "no endpoint"
    code = ErrorCode.HOST_UNREACHABLE
    if exc is not None and exc.code() in (
        grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        code = ErrorCode.INTERNAL_ERROR
    return LauraError(code, f"etcd metadata store ({where}): {what} failed: {detail}")


# ------------------------------------------------------------------------ mirror


@dataclass(frozen=True, slots=True)
class _KV:
    value: bytes
    mod: int
    create: int


@dataclass(frozen=True)
class _View:
    """The store's keys at one etcd revision, by table (immutable)."""

    revision: int
    tables: Mapping[str, Mapping[bytes, _KV]]

    def table(self, name: str) -> Mapping[bytes, _KV]:
        return self.tables.get(name, {})


# ------------------------------------------------------------------ record codecs


def _enc(parts: tuple[str, ...]) -> bytes:
    return "/".join(quote(p, safe="") for p in parts).encode()


def _doc(kv: _KV) -> dict[str, Any]:
    doc: dict[str, Any] = bson.decode(kv.value)
    return doc


def _encode_shard(s: ShardRecord) -> bytes:
    return bson.encode({
        "shard_id": s.shard_id, "host": s.host, "port": s.port, "node_id": s.node_id,
        "draining": s.draining, "members": list(s.members),
    })


def _decode_shard(kv: _KV) -> ShardRecord:
    d = _doc(kv)
    return ShardRecord(
        d["shard_id"], d["host"], int(d["port"]), d["node_id"], bool(d["draining"]),
        tuple(d["members"]),
    )


def _encode_database(db: DatabaseRecord) -> bytes:
    return bson.encode({"name": db.name, "primary_shard": db.primary_shard})


def _decode_database(kv: _KV) -> DatabaseRecord:
    d = _doc(kv)
    return DatabaseRecord(d["name"], d["primary_shard"])


def _encode_collection(c: CollectionRecord) -> bytes:
    return bson.encode({
        "database": c.database, "collection": c.collection, "epoch": c.epoch,
        "key_fields": list(c.key_fields), "strategy": c.strategy, "unique": c.unique,
        "created_ms": c.created_ms,
    })


def _decode_collection(kv: _KV) -> CollectionRecord:
    d = _doc(kv)
    return CollectionRecord(
        d["database"], d["collection"], d["epoch"], tuple(d["key_fields"]), d["strategy"],
        bool(d["unique"]), int(d["created_ms"]),
    )


def _encode_index(ix: IndexRecord) -> bytes:
    return bson.encode({
        "database": ix.database, "collection": ix.collection, "name": ix.name,
        "keys": [[f, d] for f, d in ix.keys], "unique": ix.unique, "sparse": ix.sparse,
    })


def _decode_index(kv: _KV) -> IndexRecord:
    d = _doc(kv)
    return IndexRecord(
        d["database"], d["collection"], d["name"],
        tuple((str(f), int(v)) for f, v in d["keys"]), bool(d["unique"]), bool(d["sparse"]),
    )


def _encode_node(n: NodeRecord) -> bytes:
    return bson.encode({
        "node_id": n.node_id, "host": n.host, "port": n.port, "role": n.role,
        "priority": n.priority, "tags": dict(n.tags), "shard_id": n.shard_id, "up": n.up,
        "last_heartbeat_ms": n.last_heartbeat_ms,
    })


def _decode_node(kv: _KV) -> NodeRecord:
    d = _doc(kv)
    return NodeRecord(
        d["node_id"], d["host"], int(d["port"]), int(d["role"]), int(d["priority"]),
        {str(k): str(v) for k, v in d["tags"].items()}, d["shard_id"], bool(d["up"]),
        int(d["last_heartbeat_ms"]),
    )


def _encode_migration(m: MigrationRecord) -> bytes:
    return bson.encode({
        "migration_id": m.migration_id, "namespace": m.namespace, "chunk_id": m.chunk_id,
        "min_key": m.min_key, "max_key": m.max_key, "epoch": m.epoch,
        "from_shard": m.from_shard, "to_shard": m.to_shard, "state": m.state,
        "documents_migrated": m.documents_migrated, "started_ms": m.started_ms,
        "finished_ms": m.finished_ms, "error": m.error,
    })


def _decode_migration(kv: _KV) -> MigrationRecord:
    d = _doc(kv)
    return MigrationRecord(
        d["migration_id"], d["namespace"], d["chunk_id"], bytes(d["min_key"]),
        bytes(d["max_key"]), d["epoch"], d["from_shard"], d["to_shard"], d["state"],
        int(d["documents_migrated"]), int(d["started_ms"]), int(d["finished_ms"]), d["error"],
    )


_Page = dict[str, ChunkRecord]  # chunk id -> chunk (one page of one namespace)


def _encode_page(page: _Page) -> bytes:
    rows = [
        [c.chunk_id, c.min_key, c.max_key, c.min_sort, c.shard_id, c.major, c.minor, c.jumbo]
        for c in page.values()
    ]
    namespace = next(iter(page.values())).namespace if page else ""
    return zlib.compress(bson.encode({"ns": namespace, "c": rows}), 6)


def _decode_page(kv: _KV) -> _Page:
    d: dict[str, Any] = bson.decode(zlib.decompress(kv.value))
    ns = d["ns"]
    page: _Page = {}
    for row in d["c"]:
        chunk = ChunkRecord(
            chunk_id=row[0], namespace=ns, min_key=bytes(row[1]), max_key=bytes(row[2]),
            min_sort=bytes(row[3]), shard_id=row[4], major=int(row[5]), minor=int(row[6]),
            jumbo=bool(row[7]),
        )
        page[chunk.chunk_id] = chunk
    return page


_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "shards": _encode_shard,
    "databases": _encode_database,
    "collections": _encode_collection,
    "indexes": _encode_index,
    "nodes": _encode_node,
    "migrations": _encode_migration,
    "chunks": _encode_page,
    "meta": lambda value: str(value).encode(),
}
_DECODERS: dict[str, Callable[[_KV], Any]] = {
    "shards": _decode_shard,
    "databases": _decode_database,
    "collections": _decode_collection,
    "indexes": _decode_index,
    "nodes": _decode_node,
    "migrations": _decode_migration,
    "chunks": _decode_page,
    "meta": lambda kv: kv.value.decode(),
}


class _Deleted:
    pass


_DELETED = _Deleted()


# ------------------------------------------------------------------- transaction


class EtcdTransaction(MetadataTransaction):
    def __init__(self, store: EtcdMetadataStore, view: _View, *, writable: bool) -> None:
        self._store = store
        self._view = view
        self._writable = writable
        self.reads: dict[bytes, int] = {}  # key -> mod revision seen (0: missing)
        self.writes: dict[bytes, Any] = {}  # key -> record (or page) / _DELETED
        self.range_deletes: list[tuple[str, bytes]] = []  # (table, key prefix)
        self.tables_written: set[str] = set()
        self._page_hint: dict[str, bytes] = {}  # namespace -> page key last changed

    # ----------------------------------------------------------- key plumbing

    def _key(self, table: str, *parts: str) -> bytes:
        return self._store.prefix + table.encode() + b"/" + _enc(parts)

    def _table_prefix(self, table: str, *parts: str) -> bytes:
        base = self._store.prefix + table.encode() + b"/"
        return base + _enc(parts) + b"/" if parts else base

    def _range_deleted(self, key: bytes) -> bool:
        return any(key.startswith(p) for _, p in self.range_deletes)

    def _check_writable(self) -> None:
        if not self._writable:
            raise LauraError(ErrorCode.INTERNAL_ERROR, "write in a read-only metadata snapshot")

    def _guard_table(self, table: str) -> None:
        marker = self._store.marker_key(table)
        if marker not in self.reads:
            kv = self._view.table("_t").get(marker)
            self.reads[marker] = kv.mod if kv is not None else 0

    def _get(self, table: str, key: bytes) -> Any:
        if key in self.writes:
            value = self.writes[key]
            return None if value is _DELETED else value
        if self._range_deleted(key):
            return None
        kv = self._view.table(table).get(key)
        self.reads.setdefault(key, kv.mod if kv is not None else 0)
        return self._store.decode(table, key, kv) if kv is not None else None

    def _scan(self, table: str, prefix: bytes) -> list[tuple[bytes, Any, int]]:
        """(key, record, seq) of every key under ``prefix`` (seq: the create revision,
        above every stored one for a key this transaction creates); guards the table."""
        self._guard_table(table)
        out: dict[bytes, tuple[Any, int]] = {}
        for key, kv in self._view.table(table).items():
            if key.startswith(prefix) and not self._range_deleted(key):
                out[key] = (self._store.decode(table, key, kv), kv.create)
        fresh = 1 << 62
        for key, value in self.writes.items():
            if not key.startswith(prefix):
                continue
            if value is _DELETED:
                out.pop(key, None)
            else:
                seq = out[key][1] if key in out else fresh
                fresh += 1
                out[key] = (value, seq)
        return [(k, v, seq) for k, (v, seq) in out.items()]

    def _put(self, table: str, key: bytes, value: Any) -> None:
        self._check_writable()
        self.writes[key] = value
        self.tables_written.add(table)

    def _delete(self, table: str, key: bytes) -> None:
        self._check_writable()
        self.writes[key] = _DELETED
        self.tables_written.add(table)

    def _delete_prefix(self, table: str, prefix: bytes) -> int:
        self._check_writable()
        count = len(self._scan(table, prefix))
        for key in [k for k in self.writes if k.startswith(prefix)]:
            del self.writes[key]
        self.range_deletes.append((table, prefix))
        self.tables_written.add(table)
        return count

    # ------------------------------------------------------------------ shards

    def get_shard(self, shard_id: str) -> ShardRecord | None:
        record: ShardRecord | None = self._get("shards", self._key("shards", shard_id))
        return record

    def list_shards(self) -> list[ShardRecord]:
        rows = [r for _, r, _ in self._scan("shards", self._table_prefix("shards"))]
        return sorted(rows, key=lambda s: s.shard_id)

    def put_shard(self, shard: ShardRecord) -> None:
        self._put("shards", self._key("shards", shard.shard_id), shard)

    def delete_shard(self, shard_id: str) -> None:
        self._delete("shards", self._key("shards", shard_id))

    # --------------------------------------------------------------- databases

    def get_database(self, name: str) -> DatabaseRecord | None:
        record: DatabaseRecord | None = self._get("databases", self._key("databases", name))
        return record

    def list_databases(self) -> list[DatabaseRecord]:
        rows = [r for _, r, _ in self._scan("databases", self._table_prefix("databases"))]
        return sorted(rows, key=lambda d: d.name)

    def put_database(self, db: DatabaseRecord) -> None:
        self._put("databases", self._key("databases", db.name), db)

    def delete_database(self, name: str) -> None:
        self._delete("databases", self._key("databases", name))

    # ------------------------------------------------------------- collections

    def get_collection(self, database: str, collection: str) -> CollectionRecord | None:
        record: CollectionRecord | None = self._get(
            "collections", self._key("collections", database, collection)
        )
        return record

    def list_collections(self, database: str | None = None) -> list[CollectionRecord]:
        prefix = (
            self._table_prefix("collections")
            if database is None
            else self._table_prefix("collections", database)
        )
        rows = [r for _, r, _ in self._scan("collections", prefix)]
        return sorted(rows, key=lambda c: (c.database, c.collection))

    def put_collection(self, coll: CollectionRecord) -> None:
        self._put("collections", self._key("collections", coll.database, coll.collection), coll)

    def delete_collection(self, database: str, collection: str) -> None:
        self._delete("collections", self._key("collections", database, collection))

    # ----------------------------------------------------------------- indexes

    def list_indexes(self, database: str, collection: str | None = None) -> list[IndexRecord]:
        parts = (database,) if collection is None else (database, collection)
        rows = [r for _, r, _ in self._scan("indexes", self._table_prefix("indexes", *parts))]
        return sorted(rows, key=lambda ix: (ix.collection, ix.name))

    def put_index(self, index: IndexRecord) -> None:
        key = self._key("indexes", index.database, index.collection, index.name)
        self._put("indexes", key, index)

    def delete_index(self, database: str, collection: str, name: str) -> None:
        self._delete("indexes", self._key("indexes", database, collection, name))

    def delete_indexes(self, database: str, collection: str | None = None) -> int:
        self._check_writable()
        parts = (database,) if collection is None else (database, collection)
        rows = self._scan("indexes", self._table_prefix("indexes", *parts))
        for key, _, _ in rows:
            self._delete("indexes", key)
        return len(rows)

    # ------------------------------------------------------------------ chunks

    def _pages(self, namespace: str | None) -> list[tuple[bytes, _Page]]:
        prefix = (
            self._table_prefix("chunks")
            if namespace is None
            else self._table_prefix("chunks", namespace)
        )
        return [(k, page) for k, page, _ in self._scan("chunks", prefix)]

    def _find_chunk(self, chunk_id: str) -> tuple[bytes, _Page] | None:
        """The page holding a chunk (a read of that page), or None (a read of the
        whole table: the chunk may appear anywhere)."""
        for key, value in self.writes.items():
            if value is not _DELETED and key.startswith(self._table_prefix("chunks")):
                if chunk_id in value:
                    return key, value
        for key, kv in self._view.table("chunks").items():
            if key in self.writes or self._range_deleted(key):
                continue
            page: _Page = self._store.decode("chunks", key, kv)
            if chunk_id in page:
                self.reads.setdefault(key, kv.mod)
                return key, page
        self._guard_table("chunks")
        return None

    def get_chunk(self, chunk_id: str) -> ChunkRecord | None:
        found = self._find_chunk(chunk_id)
        return found[1][chunk_id] if found is not None else None

    def list_chunks(
        self,
        namespace: str | None = None,
        *,
        shard_id: str | None = None,
        since_version: int | None = None,
    ) -> list[ChunkRecord]:
        out = [
            c
            for _, page in self._pages(namespace)
            for c in page.values()
            if (shard_id is None or c.shard_id == shard_id)
            and (since_version is None or combined_version(c.major, c.minor) > since_version)
        ]
        out.sort(key=lambda c: (c.namespace, c.min_sort))
        return out

    def _new_page_key(self, namespace: str) -> bytes:
        return self._key("chunks", namespace, secrets.token_hex(6))

    def _write_page(self, namespace: str, key: bytes, page: _Page) -> None:
        """Store a changed page: deleted when empty, cut in two when too big."""
        if not page:
            self._delete("chunks", key)
            self._page_hint.pop(namespace, None)
            return
        if len(page) > PAGE_MAX:
            chunks = sorted(page.values(), key=lambda c: c.min_sort)
            half = len(chunks) // 2
            self._put("chunks", key, {c.chunk_id: c for c in chunks[:half]})
            self._put(
                "chunks", self._new_page_key(namespace), {c.chunk_id: c for c in chunks[half:]}
            )
            self._page_hint[namespace] = key
            return
        self._put("chunks", key, page)
        self._page_hint[namespace] = key

    def insert_chunks(self, chunks: list[ChunkRecord]) -> None:
        self._check_writable()
        by_ns: dict[str, list[ChunkRecord]] = {}
        for chunk in chunks:
            by_ns.setdefault(chunk.namespace, []).append(chunk)
        for namespace, group in by_ns.items():
            hint = self._page_hint.get(namespace)
            if hint is not None and hint in self.writes and self.writes[hint] is not _DELETED:
                page = dict(self.writes[hint])
                page.update((c.chunk_id, c) for c in group)
                self._write_page(namespace, hint, page)
                continue
            for start in range(0, len(group), PAGE_TARGET):
                batch = group[start:start + PAGE_TARGET]
                self._write_page(
                    namespace, self._new_page_key(namespace), {c.chunk_id: c for c in batch}
                )

    def put_chunk(self, chunk: ChunkRecord) -> None:
        self._check_writable()
        found = self._find_chunk(chunk.chunk_id)
        if found is None:
            return  # like an UPDATE that matches no row
        key, page = found
        old = page[chunk.chunk_id]
        changed = dict(page)
        if old.namespace != chunk.namespace:  # never done; keep pages per namespace
            del changed[chunk.chunk_id]
            self._write_page(old.namespace, key, changed)
            self.insert_chunks([chunk])
            return
        changed[chunk.chunk_id] = chunk
        self._write_page(chunk.namespace, key, changed)

    def delete_chunk(self, chunk_id: str) -> None:
        self._check_writable()
        found = self._find_chunk(chunk_id)
        if found is None:
            return
        key, page = found
        namespace = page[chunk_id].namespace
        changed = dict(page)
        del changed[chunk_id]
        self._write_page(namespace, key, changed)

    def delete_chunks(self, namespace: str) -> int:
        self._check_writable()
        count = sum(len(page) for _, page in self._pages(namespace))
        self._delete_prefix("chunks", self._table_prefix("chunks", namespace))
        self._page_hint.pop(namespace, None)
        return count

    def collection_version(self, namespace: str) -> tuple[int, int]:
        best: tuple[int, int] = (0, 0)
        best_version = -1
        for _, page in self._pages(namespace):
            for c in page.values():
                version = combined_version(c.major, c.minor)
                if version > best_version:
                    best, best_version = (c.major, c.minor), version
        return best

    # ------------------------------------------------------------------- nodes

    def get_node(self, node_id: str) -> NodeRecord | None:
        record: NodeRecord | None = self._get("nodes", self._key("nodes", node_id))
        return record

    def list_nodes(self) -> list[NodeRecord]:
        rows = [r for _, r, _ in self._scan("nodes", self._table_prefix("nodes"))]
        return sorted(rows, key=lambda n: n.node_id)

    def put_node(self, node: NodeRecord) -> None:
        self._put("nodes", self._key("nodes", node.node_id), node)

    def delete_node(self, node_id: str) -> None:
        self._delete("nodes", self._key("nodes", node_id))

    # -------------------------------------------------------------- migrations

    def get_migration(self, migration_id: str) -> MigrationRecord | None:
        record: MigrationRecord | None = self._get(
            "migrations", self._key("migrations", migration_id)
        )
        return record

    def _migration_rows(self) -> list[tuple[bytes, MigrationRecord, int]]:
        rows = self._scan("migrations", self._table_prefix("migrations"))
        rows.sort(key=lambda row: row[2], reverse=True)  # newest (highest seq) first
        return rows

    def list_migrations(
        self, *, states: tuple[str, ...] | None = None, limit: int = 0
    ) -> list[MigrationRecord]:
        if states is not None and not states:
            return []
        out = [m for _, m, _ in self._migration_rows() if states is None or m.state in states]
        return out[:limit] if limit > 0 else out

    def put_migration(self, migration: MigrationRecord) -> None:
        self._put("migrations", self._key("migrations", migration.migration_id), migration)

    def prune_migrations(self, keep: int) -> int:
        self._check_writable()
        victims = [
            key for key, m, _ in self._migration_rows()[max(keep, 0):]
            if m.state != MIGRATION_RUNNING
        ]
        # the oldest first, a bounded number per transaction (etcd's operation limit);
        # the next finished migration prunes the rest
        victims = victims[::-1][:PRUNE_BATCH]
        for key in victims:
            self._delete("migrations", key)
        return len(victims)

    # -------------------------------------------------------------------- meta

    def get_meta(self, key: str) -> str | None:
        value: str | None = self._get("meta", self._key("meta", key))
        return value

    def set_meta(self, key: str, value: str) -> None:
        self._put("meta", self._key("meta", key), value)


# ------------------------------------------------------------------------- store


@dataclass(frozen=True)
class _Fence:
    key: bytes
    create_revision: int


class EtcdMetadataStore(MetadataStore):
    """The metadata store in etcd (see the module doc)."""

    def __init__(
        self, spec: EtcdStoreSpec | str, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.spec = parse_etcd_url(spec) if isinstance(spec, str) else spec
        self.timeout = timeout
        self.prefix = self.spec.root + b"store/"
        self._rev_key = self.prefix + b"_rev"
        self._conn = EtcdConnection(self.spec.endpoints, timeout)
        self._cond = threading.Condition()
        self._view = _View(0, {})
        self._decoded: dict[tuple[bytes, int], Any] = {}
        self._local = threading.local()
        self._closed = threading.Event()
        self._watch_call: Any = None
        self._fence: _Fence | None = None
        self.commits = 0
        self.conflicts = 0
        self._load()
        self._watcher = threading.Thread(
            target=self._watch_loop, name="lauradb-etcd-watch", daemon=True
        )
        self._watcher.start()
        try:
            self._init_schema()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------- keys, codecs

    def marker_key(self, table: str) -> bytes:
        return self.prefix + b"_t/" + table.encode()

    def _table_of(self, key: bytes) -> str:
        rest = key[len(self.prefix):]
        return rest.split(b"/", 1)[0].decode(errors="replace")

    def decode(self, table: str, key: bytes, kv: _KV) -> Any:
        if table != "chunks":
            return _DECODERS[table](kv)
        cached = self._decoded.get((key, kv.mod))
        if cached is None:
            cached = _decode_page(kv)
            self._decoded[(key, kv.mod)] = cached
        return cached

    @retry_conflicts
    def _init_schema(self) -> None:
        with self.transaction() as tx:
            stored = tx.get_meta("schema_version")
            if stored is None:
                tx.set_meta("schema_version", str(SCHEMA_VERSION))
                tx.set_meta(TOPOLOGY_VERSION_KEY, "0")
            elif int(stored) > SCHEMA_VERSION:
                raise LauraError(
                    ErrorCode.INTERNAL_ERROR,
                    f"metadata store {self.spec.url} has schema version {stored}, "
                    f"newer than this server's {SCHEMA_VERSION}",
                )
            elif int(stored) < SCHEMA_VERSION:
                tx.set_meta("schema_version", str(SCHEMA_VERSION))

    # ------------------------------------------------------------------ mirror

    def _load(self) -> None:
        """(Re)load the mirror with a paged Range at one revision."""
        end = prefix_end(self.prefix)
        tables: dict[str, dict[bytes, _KV]] = {}
        start = self.prefix
        revision = 0
        while True:
            req = rpc.RangeRequest(
                key=start, range_end=end, limit=RANGE_PAGE, revision=revision,
                sort_order=rpc.RangeRequest.ASCEND, sort_target=rpc.RangeRequest.KEY,
            )
            resp = self._conn.call(self._ranger(req), "loading the metadata")
            if not revision:
                revision = resp.header.revision
            for item in resp.kvs:
                tables.setdefault(self._table_of(item.key), {})[item.key] = _KV(
                    item.value, item.mod_revision, item.create_revision
                )
            if not resp.more or not resp.kvs:
                break
            start = resp.kvs[-1].key + b"\x00"
        with self._cond:
            if revision >= self._view.revision:
                self._view = _View(revision, tables)
                self._prune_decoded()
            self._cond.notify_all()

    def _ranger(self, req: Any) -> Callable[[rpc.KVStub], Any]:
        def call(kv: rpc.KVStub) -> Any:
            return kv.Range(req, timeout=self.timeout)

        return call

    def _prune_decoded(self) -> None:
        chunks = self._view.table("chunks")
        if len(self._decoded) > 2 * len(chunks) + 64:
            self._decoded = {
                k: v for k, v in self._decoded.items()
                if (kv := chunks.get(k[0])) is not None and kv.mod == k[1]
            }

    def _apply(self, header_revision: int, events: Any) -> None:
        with self._cond:
            view = self._view
            tables = dict(view.tables)
            copied: set[str] = set()
            revision = view.revision
            for event in events:
                kv = event.kv
                if kv.mod_revision <= view.revision:
                    continue  # already in the mirror (reloaded while the watch lagged)
                table = self._table_of(kv.key)
                if table not in copied:
                    tables[table] = dict(tables.get(table, {}))
                    copied.add(table)
                rows = tables[table]
                assert isinstance(rows, dict)
                if event.type == event.DELETE:
                    rows.pop(kv.key, None)
                else:
                    rows[kv.key] = _KV(kv.value, kv.mod_revision, kv.create_revision)
                revision = max(revision, kv.mod_revision)
            if not events:  # a progress notification: everything up to it was sent
                revision = max(revision, header_revision)
            if revision > view.revision or copied:
                self._view = _View(revision, tables)
                self._prune_decoded()
            self._cond.notify_all()

    def _watch_loop(self) -> None:
        backoff = 0.05
        while not self._closed.is_set():
            requests: queue.Queue[Any] = queue.Queue()
            channel = self._conn.channel()
            try:
                start = self._view.revision + 1
                requests.put(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                    key=self.prefix, range_end=prefix_end(self.prefix), start_revision=start,
                    progress_notify=True,
                )))
                call = rpc.WatchStub(channel).Watch(iter(requests.get, None))
                self._watch_call = call
                if self._closed.is_set():
                    call.cancel()
                for resp in call:
                    backoff = 0.05
                    if resp.compact_revision:
                        log.warning(
                            "metadata watch: revision %d compacted; reloading", start
                        )
                        self._load()
                        break
                    if resp.canceled:
                        break
                    if resp.created:
                        continue
                    self._apply(resp.header.revision, resp.events)
            except grpc.RpcError as exc:
                if self._closed.is_set():
                    break
                log.warning(
                    "metadata watch on %s failed (%s); retrying", self._conn.endpoint,
                    exc.code().name,
                )
                self._conn.rotate(channel)
            except Exception:
                if self._closed.is_set():
                    break
                log.exception("metadata watch failed; retrying")
            finally:
                requests.put(None)
            if self._closed.wait(backoff):
                break
            backoff = min(backoff * 2, 1.0)

    def _wait_revision(self, revision: int) -> None:
        """Until the mirror shows ``revision`` (reloaded if the watch lags too long)."""
        deadline = time.monotonic() + min(self.timeout, 2.0)
        with self._cond:
            while self._view.revision < revision:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._view.revision >= revision:
                return
        log.warning("metadata watch lags behind revision %d; reloading", revision)
        self._load()

    def sync(self) -> None:
        """Make the mirror show every commit made so far (by any config server)."""
        req = rpc.RangeRequest(key=self._rev_key)
        resp = self._conn.call(lambda kv: kv.Range(req, timeout=self.timeout), "sync")
        if resp.kvs:
            self._wait_revision(resp.kvs[0].mod_revision)

    @property
    def revision(self) -> int:
        return self._view.revision

    @property
    def generation(self) -> int:
        return self._view.revision

    # ------------------------------------------------------------------- fence

    def set_fence(self, key: bytes | None, create_revision: int = 0) -> None:
        """Every commit from now on also requires ``key`` to have this create revision
        (the leader key this config server created); None: no fence."""
        self._fence = _Fence(key, create_revision) if key is not None else None

    # ------------------------------------------------------------ transactions

    @contextmanager
    def _begin(self, *, writable: bool) -> Iterator[EtcdTransaction]:
        if self._closed.is_set():
            raise LauraError(ErrorCode.INTERNAL_ERROR, "the metadata store is closed")
        if getattr(self._local, "active", False):
            raise LauraError(ErrorCode.INTERNAL_ERROR, "metadata transactions do not nest")
        self._local.active = True
        try:
            tx = EtcdTransaction(self, self._view, writable=writable)
            yield tx
            if writable:
                self._commit(tx)
        finally:
            self._local.active = False

    def transaction(self) -> AbstractContextManager[MetadataTransaction]:
        return self._begin(writable=True)

    def snapshot(self) -> AbstractContextManager[MetadataTransaction]:
        return self._begin(writable=False)

    def _build_ops(self, tx: EtcdTransaction, txn_id: bytes) -> list[Any]:
        deletes = list(tx.range_deletes)
        puts = {k: v for k, v in tx.writes.items() if v is not _DELETED}
        # etcd refuses a put inside a range deleted by the same Txn: delete such a
        # range key by key instead
        ranges: list[bytes] = []
        singles: list[bytes] = [k for k, v in tx.writes.items() if v is _DELETED]
        for table, prefix in deletes:
            if any(k.startswith(prefix) for k in puts):
                singles.extend(
                    k for k in tx._view.table(table)
                    if k.startswith(prefix) and k not in puts
                )
            else:
                ranges.append(prefix)
        ops = [
            rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                key=p, range_end=prefix_end(p)
            ))
            for p in ranges
        ]
        ops.extend(
            rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k))
            for k in dict.fromkeys(singles)
            if not any(k.startswith(p) for p in ranges)
        )
        for key, value in puts.items():
            table = self._table_of(key)
            ops.append(rpc.RequestOp(request_put=rpc.PutRequest(
                key=key, value=_ENCODERS[table](value)
            )))
        for table in sorted(tx.tables_written):
            ops.append(rpc.RequestOp(request_put=rpc.PutRequest(
                key=self.marker_key(table), value=b""
            )))
        ops.append(rpc.RequestOp(request_put=rpc.PutRequest(key=self._rev_key, value=txn_id)))
        return ops

    def _commit(self, tx: EtcdTransaction) -> None:
        if not tx.writes and not tx.range_deletes:
            return
        txn_id = secrets.token_hex(8).encode()
        compares = [
            rpc.Compare(
                key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=rev
            )
            for key, rev in tx.reads.items()
        ]
        fence = self._fence
        if fence is not None:
            compares.append(rpc.Compare(
                key=fence.key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL,
                create_revision=fence.create_revision,
            ))
        ops = self._build_ops(tx, txn_id)
        failure = [rpc.RequestOp(request_range=rpc.RangeRequest(key=self._rev_key))]
        if fence is not None:
            failure.append(rpc.RequestOp(request_range=rpc.RangeRequest(key=fence.key)))
        request = rpc.TxnRequest(compare=compares, success=ops, failure=failure)
        if len(compares) > MAX_TXN_OPS or len(ops) > MAX_TXN_OPS:
            raise LauraError(
                ErrorCode.TRANSACTION_TOO_LARGE,
                f"metadata change too large for one etcd transaction: {len(compares)} "
                f"compares and {len(ops)} operations (at most {MAX_TXN_OPS} each)",
            )
        size = request.ByteSize()
        if size > MAX_REQUEST_BYTES:
            raise LauraError(
                ErrorCode.TRANSACTION_TOO_LARGE,
                f"metadata change too large for one etcd transaction: {size} bytes "
                f"(at most {MAX_REQUEST_BYTES})",
            )
        channel = self._conn.channel()
        try:
            resp = rpc.KVStub(channel).Txn(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._conn.rotate(channel)
                self._resolve_unknown_outcome(txn_id, exc)
                return
            raise _unreachable("commit", self.spec.endpoints, exc) from None
        if resp.succeeded:
            self.commits += 1
            self._wait_revision(resp.header.revision)
            return
        self.conflicts += 1
        last_commit = resp.header.revision
        ranges = [r.response_range for r in resp.responses]
        if ranges and ranges[0].kvs:
            last_commit = ranges[0].kvs[0].mod_revision
        if fence is not None:
            holder = ranges[1].kvs if len(ranges) > 1 else []
            if not holder or holder[0].create_revision != fence.create_revision:
                raise LauraError(
                    ErrorCode.NOT_WRITABLE_PRIMARY,
                    "this config server is no longer the leader: metadata change refused",
                )
        self._wait_revision(last_commit)
        raise MetadataConflict(
            "another config server changed the metadata concurrently; try again"
        )

    def _resolve_unknown_outcome(self, txn_id: bytes, exc: grpc.RpcError) -> None:
        """The Txn may or may not have been applied: ``_rev`` holding our id says it
        was; anything else and the outcome is unknown."""
        req = rpc.RangeRequest(key=self._rev_key)
        try:
            resp = self._conn.call(lambda kv: kv.Range(req, timeout=self.timeout), "commit")
        except LauraError:
            raise _unreachable("commit", self.spec.endpoints, exc) from None
        if resp.kvs and resp.kvs[0].value == txn_id:
            self.commits += 1
            self._wait_revision(resp.kvs[0].mod_revision)
            return
        if resp.kvs:
            self._wait_revision(resp.kvs[0].mod_revision)
        raise LauraError(
            ErrorCode.HOST_UNREACHABLE,
            f"etcd metadata store: the commit's outcome is unknown ({exc.code().name}); "
            "check the metadata and try again",
        )

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        call = self._watch_call
        if call is not None:
            call.cancel()
        watcher = getattr(self, "_watcher", None)
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(5.0)
        self._conn.close()
