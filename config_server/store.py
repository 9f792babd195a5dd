"""The metadata store: a small transactional interface and its SQLite backend.

The catalog (``config_server.catalog``) does every metadata change inside one
``store.transaction()``: either all of its writes land or none do. Another backend
only has to implement ``MetadataStore``/``MetadataTransaction``: the etcd one
(``config_server.store_etcd``) is optimistic, so its commit may fail with
``MetadataConflict`` when another config server changed what the transaction read;
every metadata-changing method is wrapped in ``retry_conflicts``, which runs it again
(the body of a ``with store.transaction()`` cannot be re-run by the store itself).
SQLite never conflicts (one writer, BEGIN IMMEDIATE).

``open_store(spec, data_dir)`` opens the store a ``--store`` value names.
"""

from __future__ import annotations

import abc
import functools
import inspect
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from config_server.model import (
    ChunkRecord,
    CollectionRecord,
    DatabaseRecord,
    IndexRecord,
    MigrationRecord,
    NodeRecord,
    ShardRecord,
    combined_version,
)
from lauradb.errors import ErrorCode, LauraError

log = logging.getLogger("lauradb.config.store")

DB_FILE_NAME = "config.sqlite3"
SCHEMA_VERSION = 4  # 2: index records; 3: migrations; 4: shards.members
TOPOLOGY_VERSION_KEY = "topology_version"
CONFLICT_RETRIES = 50  # attempts of a metadata change that keeps conflicting

F = TypeVar("F", bound=Callable[..., Any])


class MetadataConflict(LauraError):
    """The commit lost a race with another writer (nothing of it was applied)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.WRITE_CONFLICT, message)


def retry_conflicts(fn: F) -> F:
    """Run a metadata-changing function (sync or async) again when its transaction
    hits a ``MetadataConflict``; the last conflict propagates after
    ``CONFLICT_RETRIES`` attempts. The function must do nothing outside its
    transactions that a second run would repeat wrongly."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(CONFLICT_RETRIES):
                try:
                    return await fn(*args, **kwargs)
                except MetadataConflict:
                    if attempt + 1 >= CONFLICT_RETRIES:
                        raise
                    log.debug("%s: metadata conflict, retrying", fn.__qualname__)
            raise AssertionError("unreachable")

        return cast(F, run_async)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(CONFLICT_RETRIES):
            try:
                return fn(*args, **kwargs)
            except MetadataConflict:
                if attempt + 1 >= CONFLICT_RETRIES:
                    raise
                log.debug("%s: metadata conflict, retrying", fn.__qualname__)
        raise AssertionError("unreachable")

    return cast(F, run)


class MetadataTransaction(abc.ABC):
    """Reads and writes of one transaction (a consistent view while it lasts)."""

    # shards
    @abc.abstractmethod
    def get_shard(self, shard_id: str) -> ShardRecord | None: ...

    @abc.abstractmethod
    def list_shards(self) -> list[ShardRecord]: ...

    @abc.abstractmethod
    def put_shard(self, shard: ShardRecord) -> None: ...

    @abc.abstractmethod
    def delete_shard(self, shard_id: str) -> None: ...

    # databases
    @abc.abstractmethod
    def get_database(self, name: str) -> DatabaseRecord | None: ...

    @abc.abstractmethod
    def list_databases(self) -> list[DatabaseRecord]: ...

    @abc.abstractmethod
    def put_database(self, db: DatabaseRecord) -> None: ...

    @abc.abstractmethod
    def delete_database(self, name: str) -> None: ...

    # sharded collections
    @abc.abstractmethod
    def get_collection(self, database: str, collection: str) -> CollectionRecord | None: ...

    @abc.abstractmethod
    def list_collections(self, database: str | None = None) -> list[CollectionRecord]: ...

    @abc.abstractmethod
    def put_collection(self, coll: CollectionRecord) -> None: ...

    @abc.abstractmethod
    def delete_collection(self, database: str, collection: str) -> None: ...

    # index records
    @abc.abstractmethod
    def list_indexes(
        self, database: str, collection: str | None = None
    ) -> list[IndexRecord]:
        """Index records of a collection (or of every collection of the database),
        ordered by collection then name."""

    @abc.abstractmethod
    def put_index(self, index: IndexRecord) -> None: ...

    @abc.abstractmethod
    def delete_index(self, database: str, collection: str, name: str) -> None: ...

    @abc.abstractmethod
    def delete_indexes(self, database: str, collection: str | None = None) -> int:
        """Remove the index records of a collection (or database); how many."""

    # chunks
    @abc.abstractmethod
    def get_chunk(self, chunk_id: str) -> ChunkRecord | None: ...

    @abc.abstractmethod
    def list_chunks(
        self,
        namespace: str | None = None,
        *,
        shard_id: str | None = None,
        since_version: int | None = None,
    ) -> list[ChunkRecord]:
        """Chunks ordered by (namespace, lower bound); ``since_version``: only
        those whose combined version is greater."""

    @abc.abstractmethod
    def insert_chunks(self, chunks: list[ChunkRecord]) -> None: ...

    @abc.abstractmethod
    def put_chunk(self, chunk: ChunkRecord) -> None:
        """Replace an existing chunk row (owner, version, jumbo flag)."""

    @abc.abstractmethod
    def delete_chunk(self, chunk_id: str) -> None: ...

    @abc.abstractmethod
    def delete_chunks(self, namespace: str) -> int:
        """Remove every chunk of a namespace; how many."""

    @abc.abstractmethod
    def collection_version(self, namespace: str) -> tuple[int, int]:
        """The highest (major, minor) among the namespace's chunks, (0, 0) if none."""

    # nodes
    @abc.abstractmethod
    def get_node(self, node_id: str) -> NodeRecord | None: ...

    @abc.abstractmethod
    def list_nodes(self) -> list[NodeRecord]: ...

    @abc.abstractmethod
    def put_node(self, node: NodeRecord) -> None: ...

    @abc.abstractmethod
    def delete_node(self, node_id: str) -> None: ...

    # migrations
    @abc.abstractmethod
    def get_migration(self, migration_id: str) -> MigrationRecord | None: ...

    @abc.abstractmethod
    def list_migrations(
        self, *, states: tuple[str, ...] | None = None, limit: int = 0
    ) -> list[MigrationRecord]:
        """Migrations newest first (``states``: only those; ``limit`` 0: all)."""

    @abc.abstractmethod
    def put_migration(self, migration: MigrationRecord) -> None: ...

    @abc.abstractmethod
    def prune_migrations(self, keep: int) -> int:
        """Forget finished migrations beyond the ``keep`` newest; how many."""

    # small key/value settings (topology version, ...)
    @abc.abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abc.abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    def topology_version(self) -> int:
        raw = self.get_meta(TOPOLOGY_VERSION_KEY)
        return int(raw) if raw else 0

    def bump_topology_version(self) -> int:
        version = self.topology_version() + 1
        self.set_meta(TOPOLOGY_VERSION_KEY, str(version))
        return version

    def counter(self, key: str) -> int:
        raw = self.get_meta(key)
        return int(raw) if raw else 0

    def bump_counter(self, key: str, by: int = 1) -> int:
        value = self.counter(key) + by
        self.set_meta(key, str(value))
        return value


class MetadataStore(abc.ABC):
    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[MetadataTransaction]:
        """Context manager yielding a write ``MetadataTransaction``: committed when
        the block ends normally, rolled back entirely when it raises."""

    @abc.abstractmethod
    def snapshot(self) -> AbstractContextManager[MetadataTransaction]:
        """Context manager yielding a read-only ``MetadataTransaction``."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def sync(self) -> None:
        """Make the next snapshots show every change committed so far by any config
        server sharing the store (a no-op for a store only this process writes)."""
        return None

    @property
    def generation(self) -> int:
        """Changes whenever the stored data may have changed under this process (the
        etcd mirror's revision: other config servers commit too); constant for a store
        only this process writes, whose caches its own changes clear."""
        return 0


def open_store(spec: str, data_dir: str | Path) -> MetadataStore:
    """The store a ``--store`` value names: ``sqlite`` (the file in ``data_dir``) or
    ``etcd://host:port[,host:port...][/name]``."""
    if spec in ("", "sqlite"):
        return SqliteMetadataStore(data_dir)
    if spec.startswith("etcd://"):
        from config_server.store_etcd import EtcdMetadataStore  # optional dependency

        return EtcdMetadataStore(spec)
    raise LauraError(
        ErrorCode.BAD_VALUE,
        f"unknown metadata store '{spec}': use sqlite or etcd://host:port[,host:port...][/name]",
    )


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS shards (
        shard_id TEXT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL,
        node_id TEXT NOT NULL DEFAULT '', draining INTEGER NOT NULL DEFAULT 0,
        members TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS databases (
        name TEXT PRIMARY KEY, primary_shard TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS collections (
        database TEXT NOT NULL, collection TEXT NOT NULL, epoch TEXT NOT NULL,
        key_fields TEXT NOT NULL, strategy TEXT NOT NULL, is_unique INTEGER NOT NULL,
        created_ms INTEGER NOT NULL, PRIMARY KEY (database, collection))""",
    """CREATE TABLE IF NOT EXISTS chunks (
        chunk_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, min_key BLOB NOT NULL,
        max_key BLOB NOT NULL, min_sort BLOB NOT NULL, shard_id TEXT NOT NULL,
        major INTEGER NOT NULL, minor INTEGER NOT NULL, version INTEGER NOT NULL,
        jumbo INTEGER NOT NULL DEFAULT 0)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS chunks_by_range ON chunks (namespace, min_sort)",
    "CREATE INDEX IF NOT EXISTS chunks_by_version ON chunks (namespace, version)",
    "CREATE INDEX IF NOT EXISTS chunks_by_shard ON chunks (shard_id)",
    """CREATE TABLE IF NOT EXISTS indexes (
        database TEXT NOT NULL, collection TEXT NOT NULL, name TEXT NOT NULL,
        keys TEXT NOT NULL, is_unique INTEGER NOT NULL, is_sparse INTEGER NOT NULL,
        PRIMARY KEY (database, collection, name))""",
    """CREATE TABLE IF NOT EXISTS migrations (
        migration_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, chunk_id TEXT NOT NULL,
        min_key BLOB NOT NULL, max_key BLOB NOT NULL, epoch TEXT NOT NULL,
        from_shard TEXT NOT NULL, to_shard TEXT NOT NULL, state TEXT NOT NULL,
        documents INTEGER NOT NULL, started_ms INTEGER NOT NULL,
        finished_ms INTEGER NOT NULL, error TEXT NOT NULL, seq INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS migrations_by_state ON migrations (state)",
    "CREATE INDEX IF NOT EXISTS migrations_by_seq ON migrations (seq)",
    """CREATE TABLE IF NOT EXISTS nodes (
        node_id TEXT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL,
        role INTEGER NOT NULL, priority INTEGER NOT NULL, tags TEXT NOT NULL,
        shard_id TEXT NOT NULL, up INTEGER NOT NULL, last_heartbeat_ms INTEGER NOT NULL)""",
)

# (table, column, declaration) added by later schema versions (4: shards.members).
_ADDED_COLUMNS = (("shards", "members", "TEXT NOT NULL DEFAULT ''"),)

_CHUNK_COLUMNS = "chunk_id, namespace, min_key, max_key, min_sort, shard_id, major, minor, jumbo"


_MIGRATION_COLUMNS = (
    "migration_id, namespace, chunk_id, min_key, max_key, epoch, from_shard, to_shard, "
    "state, documents, started_ms, finished_ms, error"
)


def _migration(row: tuple[Any, ...]) -> MigrationRecord:
    return MigrationRecord(
        migration_id=row[0],
        namespace=row[1],
        chunk_id=row[2],
        min_key=bytes(row[3]),
        max_key=bytes(row[4]),
        epoch=row[5],
        from_shard=row[6],
        to_shard=row[7],
        state=row[8],
        documents_migrated=row[9],
        started_ms=row[10],
        finished_ms=row[11],
        error=row[12],
    )


def _chunk(row: tuple[Any, ...]) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=row[0],
        namespace=row[1],
        min_key=bytes(row[2]),
        max_key=bytes(row[3]),
        min_sort=bytes(row[4]),
        shard_id=row[5],
        major=row[6],
        minor=row[7],
        jumbo=bool(row[8]),
    )


def _collection(row: tuple[Any, ...]) -> CollectionRecord:
    return CollectionRecord(
        database=row[0],
        collection=row[1],
        epoch=row[2],
        key_fields=tuple(json.loads(row[3])),
        strategy=row[4],
        unique=bool(row[5]),
        created_ms=row[6],
    )


def _node(row: tuple[Any, ...]) -> NodeRecord:
    return NodeRecord(
        node_id=row[0],
        host=row[1],
        port=row[2],
        role=row[3],
        priority=row[4],
        tags=dict(json.loads(row[5])),
        shard_id=row[6],
        up=bool(row[7]),
        last_heartbeat_ms=row[8],
    )


def _index(row: tuple[Any, ...]) -> IndexRecord:
    return IndexRecord(
        database=row[0],
        collection=row[1],
        name=row[2],
        keys=tuple((str(f), int(d)) for f, d in json.loads(row[3])),
        unique=bool(row[4]),
        sparse=bool(row[5]),
    )


_SHARD_COLUMNS = "shard_id, host, port, node_id, draining, members"


def _shard(row: tuple[Any, ...]) -> ShardRecord:
    return ShardRecord(
        shard_id=row[0], host=row[1], port=row[2], node_id=row[3], draining=bool(row[4]),
        members=tuple(m for m in row[5].split(",") if m),
    )


class SqliteTransaction(MetadataTransaction):
    def __init__(self, conn: sqlite3.Connection, *, writable: bool) -> None:
        self._conn = conn
        self._writable = writable

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        if not self._writable:
            raise LauraError(ErrorCode.INTERNAL_ERROR, "write in a read-only metadata snapshot")
        self._conn.execute(sql, params)

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._conn.execute(sql, params).fetchone()
        return row

    # shards
    def get_shard(self, shard_id: str) -> ShardRecord | None:
        row = self._one(
            f"SELECT {_SHARD_COLUMNS} FROM shards WHERE shard_id = ?",
            (shard_id,),
        )
        return _shard(row) if row else None

    def list_shards(self) -> list[ShardRecord]:
        rows = self._all(
            f"SELECT {_SHARD_COLUMNS} FROM shards ORDER BY shard_id"
        )
        return [_shard(r) for r in rows]

    def put_shard(self, shard: ShardRecord) -> None:
        self._write(
            f"INSERT OR REPLACE INTO shards ({_SHARD_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                shard.shard_id, shard.host, shard.port, shard.node_id, int(shard.draining),
                ",".join(shard.members),
            ),
        )

    def delete_shard(self, shard_id: str) -> None:
        self._write("DELETE FROM shards WHERE shard_id = ?", (shard_id,))

    # databases
    def get_database(self, name: str) -> DatabaseRecord | None:
        row = self._one("SELECT name, primary_shard FROM databases WHERE name = ?", (name,))
        return DatabaseRecord(row[0], row[1]) if row else None

    def list_databases(self) -> list[DatabaseRecord]:
        rows = self._all("SELECT name, primary_shard FROM databases ORDER BY name")
        return [DatabaseRecord(r[0], r[1]) for r in rows]

    def put_database(self, db: DatabaseRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO databases (name, primary_shard) VALUES (?, ?)",
            (db.name, db.primary_shard),
        )

    def delete_database(self, name: str) -> None:
        self._write("DELETE FROM databases WHERE name = ?", (name,))

    # collections
    def get_collection(self, database: str, collection: str) -> CollectionRecord | None:
        row = self._one(
            "SELECT database, collection, epoch, key_fields, strategy, is_unique, created_ms "
            "FROM collections WHERE database = ? AND collection = ?",
            (database, collection),
        )
        return _collection(row) if row else None

    def list_collections(self, database: str | None = None) -> list[CollectionRecord]:
        sql = (
            "SELECT database, collection, epoch, key_fields, strategy, is_unique, created_ms "
            "FROM collections"
        )
        if database is None:
            rows = self._all(sql + " ORDER BY database, collection")
        else:
            rows = self._all(sql + " WHERE database = ? ORDER BY collection", (database,))
        return [_collection(r) for r in rows]

    def put_collection(self, coll: CollectionRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO collections "
            "(database, collection, epoch, key_fields, strategy, is_unique, created_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                coll.database,
                coll.collection,
                coll.epoch,
                json.dumps(list(coll.key_fields)),
                coll.strategy,
                int(coll.unique),
                coll.created_ms,
            ),
        )

    def delete_collection(self, database: str, collection: str) -> None:
        self._write(
            "DELETE FROM collections WHERE database = ? AND collection = ?",
            (database, collection),
        )

    # index records
    def list_indexes(self, database: str, collection: str | None = None) -> list[IndexRecord]:
        sql = (
            "SELECT database, collection, name, keys, is_unique, is_sparse FROM indexes "
            "WHERE database = ?"
        )
        if collection is None:
            rows = self._all(sql + " ORDER BY collection, name", (database,))
        else:
            rows = self._all(
                sql + " AND collection = ? ORDER BY name", (database, collection)
            )
        return [_index(r) for r in rows]

    def put_index(self, index: IndexRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO indexes "
            "(database, collection, name, keys, is_unique, is_sparse) VALUES (?, ?, ?, ?, ?, ?)",
            (
                index.database,
                index.collection,
                index.name,
                json.dumps([[f, d] for f, d in index.keys]),
                int(index.unique),
                int(index.sparse),
            ),
        )

    def delete_index(self, database: str, collection: str, name: str) -> None:
        self._write(
            "DELETE FROM indexes WHERE database = ? AND collection = ? AND name = ?",
            (database, collection, name),
        )

    def delete_indexes(self, database: str, collection: str | None = None) -> int:
        if not self._writable:
            raise LauraError(ErrorCode.INTERNAL_ERROR, "write in a read-only metadata snapshot")
        if collection is None:
            cur = self._conn.execute("DELETE FROM indexes WHERE database = ?", (database,))
        else:
            cur = self._conn.execute(
                "DELETE FROM indexes WHERE database = ? AND collection = ?",
                (database, collection),
            )
        return int(cur.rowcount)

    # chunks
    def get_chunk(self, chunk_id: str) -> ChunkRecord | None:
        row = self._one(f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE chunk_id = ?", (chunk_id,))
        return _chunk(row) if row else None

    def list_chunks(
        self,
        namespace: str | None = None,
        *,
        shard_id: str | None = None,
        since_version: int | None = None,
    ) -> list[ChunkRecord]:
        where: list[str] = []
        params: list[Any] = []
        if namespace is not None:
            where.append("namespace = ?")
            params.append(namespace)
        if shard_id is not None:
            where.append("shard_id = ?")
            params.append(shard_id)
        if since_version is not None:
            where.append("version > ?")
            params.append(since_version)
        sql = f"SELECT {_CHUNK_COLUMNS} FROM chunks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY namespace, min_sort"
        return [_chunk(r) for r in self._all(sql, tuple(params))]

    def insert_chunks(self, chunks: list[ChunkRecord]) -> None:
        if not self._writable:
            raise LauraError(ErrorCode.INTERNAL_ERROR, "write in a read-only metadata snapshot")
        self._conn.executemany(
            f"INSERT INTO chunks ({_CHUNK_COLUMNS}, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    c.chunk_id,
                    c.namespace,
                    c.min_key,
                    c.max_key,
                    c.min_sort,
                    c.shard_id,
                    c.major,
                    c.minor,
                    int(c.jumbo),
                    combined_version(c.major, c.minor),
                )
                for c in chunks
            ],
        )

    def put_chunk(self, chunk: ChunkRecord) -> None:
        self._write(
            "UPDATE chunks SET namespace = ?, min_key = ?, max_key = ?, min_sort = ?, "
            "shard_id = ?, major = ?, minor = ?, version = ?, jumbo = ? WHERE chunk_id = ?",
            (
                chunk.namespace,
                chunk.min_key,
                chunk.max_key,
                chunk.min_sort,
                chunk.shard_id,
                chunk.major,
                chunk.minor,
                combined_version(chunk.major, chunk.minor),
                int(chunk.jumbo),
                chunk.chunk_id,
            ),
        )

    def delete_chunk(self, chunk_id: str) -> None:
        self._write("DELETE FROM chunks WHERE chunk_id = ?", (chunk_id,))

    def delete_chunks(self, namespace: str) -> int:
        if not self._writable:
            raise LauraError(ErrorCode.INTERNAL_ERROR, "write in a read-only metadata snapshot")
        cur = self._conn.execute("DELETE FROM chunks WHERE namespace = ?", (namespace,))
        return int(cur.rowcount)

    def collection_version(self, namespace: str) -> tuple[int, int]:
        row = self._one(
            "SELECT major, minor FROM chunks WHERE namespace = ? ORDER BY version DESC LIMIT 1",
            (namespace,),
        )
        return (row[0], row[1]) if row else (0, 0)

    # nodes
    def get_node(self, node_id: str) -> NodeRecord | None:
        row = self._one(
            "SELECT node_id, host, port, role, priority, tags, shard_id, up, last_heartbeat_ms "
            "FROM nodes WHERE node_id = ?",
            (node_id,),
        )
        return _node(row) if row else None

    def list_nodes(self) -> list[NodeRecord]:
        rows = self._all(
            "SELECT node_id, host, port, role, priority, tags, shard_id, up, last_heartbeat_ms "
            "FROM nodes ORDER BY node_id"
        )
        return [_node(r) for r in rows]

    def put_node(self, node: NodeRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO nodes "
            "(node_id, host, port, role, priority, tags, shard_id, up, last_heartbeat_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                node.node_id,
                node.host,
                node.port,
                node.role,
                node.priority,
                json.dumps(node.tags, sort_keys=True),
                node.shard_id,
                int(node.up),
                node.last_heartbeat_ms,
            ),
        )

    def delete_node(self, node_id: str) -> None:
        self._write("DELETE FROM nodes WHERE node_id = ?", (node_id,))

    # migrations
    def get_migration(self, migration_id: str) -> MigrationRecord | None:
        row = self._one(
            f"SELECT {_MIGRATION_COLUMNS} FROM migrations WHERE migration_id = ?",
            (migration_id,),
        )
        return _migration(row) if row else None

    def list_migrations(
        self, *, states: tuple[str, ...] | None = None, limit: int = 0
    ) -> list[MigrationRecord]:
        sql = f"SELECT {_MIGRATION_COLUMNS} FROM migrations"
        params: list[Any] = []
        if states is not None:
            if not states:
                return []
            sql += f" WHERE state IN ({', '.join('?' for _ in states)})"
            params.extend(states)
        sql += " ORDER BY seq DESC"
        if limit > 0:
            sql += " LIMIT ?"
            params.append(limit)
        return [_migration(r) for r in self._all(sql, tuple(params))]

    def put_migration(self, migration: MigrationRecord) -> None:
        m = migration
        self._write(
            f"INSERT INTO migrations ({_MIGRATION_COLUMNS}, seq) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "COALESCE((SELECT MAX(seq) FROM migrations), 0) + 1) "
            "ON CONFLICT (migration_id) DO UPDATE SET namespace = excluded.namespace, "
            "chunk_id = excluded.chunk_id, min_key = excluded.min_key, "
            "max_key = excluded.max_key, epoch = excluded.epoch, "
            "from_shard = excluded.from_shard, to_shard = excluded.to_shard, "
            "state = excluded.state, documents = excluded.documents, "
            "started_ms = excluded.started_ms, finished_ms = excluded.finished_ms, "
            "error = excluded.error",
            (
                m.migration_id,
                m.namespace,
                m.chunk_id,
                m.min_key,
                m.max_key,
                m.epoch,
                m.from_shard,
                m.to_shard,
                m.state,
                m.documents_migrated,
                m.started_ms,
                m.finished_ms,
                m.error,
            ),
        )

    def prune_migrations(self, keep: int) -> int:
        if not self._writable:
            raise LauraError(ErrorCode.INTERNAL_ERROR, "write in a read-only metadata snapshot")
        cur = self._conn.execute(
            "DELETE FROM migrations WHERE state != 'running' AND seq NOT IN "
            "(SELECT seq FROM migrations ORDER BY seq DESC LIMIT ?)",
            (max(keep, 0),),
        )
        return int(cur.rowcount)

    # meta
    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


class SqliteMetadataStore(MetadataStore):
    """One SQLite file (WAL, synchronous=FULL) in the data directory.

    Used from one thread (the server's event loop); a lock guards against misuse
    from others. Transactions do not nest.
    """

    def __init__(self, data_dir: str | Path) -> None:
        directory = Path(data_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.path = directory / DB_FILE_NAME
            self._conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=5000")
        except (OSError, sqlite3.Error) as exc:
            raise LauraError(
                ErrorCode.INTERNAL_ERROR, f"cannot open the metadata store in {directory}: {exc}"
            ) from None
        self._lock = threading.RLock()
        self._active = False
        self._create_schema()

    def _create_schema(self) -> None:
        with self.transaction() as tx:
            for statement in _SCHEMA:
                self._conn.execute(statement)
            self._add_missing_columns()
            stored = tx.get_meta("schema_version")
            if stored is None:
                tx.set_meta("schema_version", str(SCHEMA_VERSION))
                tx.set_meta(TOPOLOGY_VERSION_KEY, "0")
            elif int(stored) > SCHEMA_VERSION:
                raise LauraError(
                    ErrorCode.INTERNAL_ERROR,
                    f"metadata store {self.path} has schema version {stored}, "
                    f"newer than this server's {SCHEMA_VERSION}",
                )
            elif int(stored) < SCHEMA_VERSION:  # new tables/columns: created above
                tx.set_meta("schema_version", str(SCHEMA_VERSION))

    def _add_missing_columns(self) -> None:
        """Columns added to existing tables after their first release (data dirs of
        older versions get them with their defaults)."""
        for table, column, decl in _ADDED_COLUMNS:
            have = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    @contextmanager
    def _begin(self, *, writable: bool) -> Iterator[SqliteTransaction]:
        with self._lock:
            if self._active:
                raise LauraError(ErrorCode.INTERNAL_ERROR, "metadata transactions do not nest")
            self._active = True
            try:
                self._conn.execute("BEGIN IMMEDIATE" if writable else "BEGIN")
                try:
                    yield SqliteTransaction(self._conn, writable=writable)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise LauraError(
                    ErrorCode.INTERNAL_ERROR, f"metadata store error: {exc}"
                ) from None
            finally:
                self._active = False

    def transaction(self) -> AbstractContextManager[MetadataTransaction]:
        return self._begin(writable=True)

    def snapshot(self) -> AbstractContextManager[MetadataTransaction]:
        return self._begin(writable=False)

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                log.warning("closing the metadata store failed", exc_info=True)
