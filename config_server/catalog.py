"""The config server's metadata logic over a ``MetadataStore``.

Every change is one store transaction (all of it lands or none) and bumps the
persisted topology version. Methods are synchronous and short; the services call
them from the event loop, so two changes never interleave.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import bson
from bson.objectid import ObjectId

from config_server import index_records, key_bounds
from config_server.model import (
    HASH,
    MIGRATION_RUNNING,
    ChunkRecord,
    CollectionRecord,
    DatabaseRecord,
    IndexRecord,
    NodeRecord,
    ShardRecord,
    combined_version,
)
from config_server.names import split_namespace, validate_collection_name, validate_database_name
from config_server.store import MetadataStore, MetadataTransaction, retry_conflicts
from lauradb.bsonkit.codec import encode_ordered
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.shard_key import ShardKeyPattern

_UNSHARDABLE_DATABASES = frozenset({"admin", "local"})
AUTO_SPLITS_KEY = "balancer_splits"


@dataclass(frozen=True)
class ShardingPlan:
    """What ShardCollection will do, decided before asking the primary for data."""

    database: str
    collection: str
    pattern: ShardKeyPattern
    strategy: str
    chunk_count: int
    existing_primary: ShardRecord | None  # None: the database does not exist yet


@dataclass(frozen=True)
class ShardMapView:
    """A collection's placement as GetShardMap reports it."""

    database: str
    primary_shard: str
    shards: list[ShardRecord]
    collection: CollectionRecord | None = None  # None: unsharded
    version: int = 0
    chunks: list[ChunkRecord] = field(default_factory=list)
    incremental: bool = False
    not_modified: bool = False

    @property
    def sharded(self) -> bool:
        return self.collection is not None


@dataclass(frozen=True)
class TopologyView:
    version: int
    shards: list[ShardRecord]
    chunks: list[ChunkRecord]
    nodes: list[NodeRecord]


@dataclass(frozen=True)
class DroppedNamespaces:
    """What a drop removed: whether anything, and the sharded namespaces among it."""

    dropped: bool
    sharded: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DatabaseView:
    database: DatabaseRecord
    sharded_collections: list[str]


def _new_id() -> str:
    return str(ObjectId())


def _decode_bound(data: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = bson.decode(data)
    return doc


class Catalog:
    def __init__(self, store: MetadataStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        # (store generation, view): other config servers sharing the store change it
        # too, so the cache also ends when the store's generation moves
        self._topology_cache: tuple[int, TopologyView] | None = None

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _changed(self, tx: MetadataTransaction) -> int:
        self._topology_cache = None
        return tx.bump_topology_version()

    def mark_changed(self, tx: MetadataTransaction) -> int:
        """Bump the topology version for a change made in ``tx`` (drops caches)."""
        return self._changed(tx)

    # ------------------------------------------------------------------ shards

    @retry_conflicts
    def add_shard(
        self,
        shard_id: str,
        host: str,
        port: int,
        node_id: str = "",
        members: Sequence[str] = (),
    ) -> str:
        """Register a shard; returns "added", "updated" (it moved) or "unchanged".
        ``members``: a replica set's member addresses (``host:port`` among them); one
        member (or none) is a standalone shard."""
        if not shard_id:
            raise LauraError(ErrorCode.BAD_VALUE, "shard_id is required")
        if not host:
            raise LauraError(ErrorCode.BAD_VALUE, f"shard '{shard_id}': host is required")
        if not 0 < port < 65536:
            raise LauraError(ErrorCode.BAD_VALUE, f"shard '{shard_id}': invalid port {port}")
        seed = f"{host}:{port}"
        member_list = tuple(dict.fromkeys(members))
        if member_list and seed not in member_list:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"shard '{shard_id}': members {list(member_list)} must include {seed}",
            )
        if len(member_list) < 2:
            member_list = ()
        mine = set(member_list or (seed,))
        with self.store.transaction() as tx:
            for other in tx.list_shards():
                if other.shard_id == shard_id:
                    continue
                taken = mine & set(other.member_addresses)
                if taken:
                    raise LauraError(
                        ErrorCode.ILLEGAL_OPERATION,
                        f"address {', '.join(sorted(taken))} already belongs to shard "
                        f"'{other.shard_id}'",
                    )
            if not node_id:  # the shard's process may have registered before AddShard
                node_id = next(
                    (
                        n.node_id
                        for n in tx.list_nodes()
                        if n.shard_id == shard_id and (n.host, n.port) == (host, port)
                    ),
                    "",
                )
            existing = tx.get_shard(shard_id)
            if existing is None:
                tx.put_shard(ShardRecord(shard_id, host, port, node_id, members=member_list))
                self._changed(tx)
                return "added"
            wanted = replace(
                existing, host=host, port=port, node_id=node_id or existing.node_id,
                members=member_list,
            )
            if wanted == existing:
                return "unchanged"
            tx.put_shard(wanted)
            self._changed(tx)
            return "updated"

    @retry_conflicts
    def remove_shard(self, shard_id: str) -> None:
        with self.store.transaction() as tx:
            if tx.get_shard(shard_id) is None:
                raise LauraError(ErrorCode.SHARD_NOT_FOUND, f"shard '{shard_id}' not found")
            primaries = [d.name for d in tx.list_databases() if d.primary_shard == shard_id]
            if primaries:
                raise LauraError(
                    ErrorCode.ILLEGAL_OPERATION,
                    f"shard '{shard_id}' is the primary shard of database(s) "
                    f"{', '.join(primaries)}; draining is not supported yet",
                )
            owned = tx.list_chunks(shard_id=shard_id)
            if owned:
                raise LauraError(
                    ErrorCode.ILLEGAL_OPERATION,
                    f"shard '{shard_id}' still owns {len(owned)} chunk(s); "
                    "draining is not supported yet",
                )
            tx.delete_shard(shard_id)
            self._changed(tx)

    def list_shards(self) -> list[ShardRecord]:
        with self.store.snapshot() as tx:
            return tx.list_shards()

    def get_shard(self, shard_id: str) -> ShardRecord:
        with self.store.snapshot() as tx:
            shard = tx.get_shard(shard_id)
        if shard is None:
            raise LauraError(ErrorCode.SHARD_NOT_FOUND, f"shard '{shard_id}' not found")
        return shard

    # --------------------------------------------------------------- databases

    @staticmethod
    def _choose_primary(tx: MetadataTransaction) -> str:
        shards = [s for s in tx.list_shards() if not s.draining]
        if not shards:
            raise LauraError(
                ErrorCode.SHARD_NOT_FOUND, "no shards in the cluster: add a shard first"
            )
        load = {s.shard_id: 0 for s in shards}
        for db in tx.list_databases():
            if db.primary_shard in load:
                load[db.primary_shard] += 1
        return min(load, key=lambda sid: (load[sid], sid))

    def _ensure_database(self, tx: MetadataTransaction, name: str) -> tuple[DatabaseRecord, bool]:
        existing = tx.get_database(name)
        if existing is not None:
            return existing, False
        record = DatabaseRecord(name, self._choose_primary(tx))
        tx.put_database(record)
        self._changed(tx)
        return record, True

    @retry_conflicts
    def ensure_database(self, name: str) -> tuple[DatabaseRecord, bool]:
        """The database, created on first use (primary: the shard with the fewest
        databases, ties to the lowest id); the flag says whether it was created."""
        validate_database_name(name)
        with self.store.snapshot() as tx:
            existing = tx.get_database(name)
        if existing is not None:
            return existing, False
        with self.store.transaction() as tx:
            return self._ensure_database(tx, name)

    def get_database(self, name: str) -> DatabaseRecord:
        with self.store.snapshot() as tx:
            db = tx.get_database(name)
        if db is None:
            raise LauraError(ErrorCode.NAMESPACE_NOT_FOUND, f"database '{name}' not found")
        return db

    def list_databases(self) -> list[DatabaseView]:
        with self.store.snapshot() as tx:
            dbs = tx.list_databases()
            colls = tx.list_collections()
        by_db: dict[str, list[str]] = {}
        for c in colls:
            by_db.setdefault(c.database, []).append(c.collection)
        return [DatabaseView(db, by_db.get(db.name, [])) for db in dbs]

    # -------------------------------------------------------------- collections

    def plan_shard_collection(
        self,
        database: str,
        collection: str,
        key_fields: Sequence[str],
        strategy: str,
        initial_chunks: int = 0,
    ) -> ShardingPlan:
        """Validate a ShardCollection request without changing anything."""
        validate_database_name(database)
        validate_collection_name(database, collection)
        if database in _UNSHARDABLE_DATABASES:
            raise LauraError(
                ErrorCode.ILLEGAL_OPERATION, f"cannot shard collections in database '{database}'"
            )
        if collection.startswith("system."):
            raise LauraError(
                ErrorCode.ILLEGAL_OPERATION, f"cannot shard system collection '{collection}'"
            )
        resolved = key_bounds.resolve_strategy(strategy, len(key_fields))
        pattern = key_bounds.pattern_for(key_fields, resolved)
        with self.store.snapshot() as tx:
            if tx.get_collection(database, collection) is not None:
                raise LauraError(
                    ErrorCode.ALREADY_SHARDED,
                    f"collection '{database}.{collection}' is already sharded",
                )
            shards = [s for s in tx.list_shards() if not s.draining]
            db = tx.get_database(database)
            primary = tx.get_shard(db.primary_shard) if db is not None else None
            index_records.check_shard_key_for_indexes(
                f"{database}.{collection}",
                tx.list_indexes(database, collection),
                pattern.fields,
                resolved,
            )
        if not shards:
            raise LauraError(ErrorCode.SHARD_NOT_FOUND, "no shards in the cluster: add a shard first")
        count = key_bounds.check_initial_chunks(initial_chunks, len(shards), resolved)
        return ShardingPlan(database, collection, pattern, resolved, count, primary)

    @retry_conflicts
    def shard_collection(
        self,
        database: str,
        collection: str,
        key_fields: Sequence[str],
        strategy: str,
        initial_chunks: int = 0,
        unique: bool = False,
        *,
        primary_has_data: bool = False,
    ) -> tuple[CollectionRecord, list[ChunkRecord]]:
        """Shard a collection in one transaction (the database is created if needed).

        Range keys start as one chunk [MinKey, MaxKey) on the primary; hashed keys
        are pre-split into ``initial_chunks`` (0: two per shard) spread round-robin,
        unless ``primary_has_data``: then every chunk stays on the primary.
        """
        plan = self.plan_shard_collection(
            database, collection, key_fields, strategy, initial_chunks
        )
        namespace = f"{database}.{collection}"
        with self.store.transaction() as tx:
            if tx.get_collection(database, collection) is not None:
                raise LauraError(
                    ErrorCode.ALREADY_SHARDED, f"collection '{namespace}' is already sharded"
                )
            index_records.check_shard_key_for_indexes(
                namespace, tx.list_indexes(database, collection), plan.pattern.fields,
                plan.strategy,
            )
            db, _ = self._ensure_database(tx, database)
            record = CollectionRecord(
                database=database,
                collection=collection,
                epoch=_new_id(),
                key_fields=plan.pattern.fields,
                strategy=plan.strategy,
                unique=unique,
                created_ms=self._now_ms(),
            )
            ranges = key_bounds.initial_ranges(plan.pattern, plan.chunk_count)
            owners = [db.primary_shard]
            if plan.strategy == HASH and not primary_has_data:
                ids = sorted(s.shard_id for s in tx.list_shards() if not s.draining)
                start = ids.index(db.primary_shard) if db.primary_shard in ids else 0
                owners = ids[start:] + ids[:start]
            chunks = [
                ChunkRecord(
                    chunk_id=_new_id(),
                    namespace=namespace,
                    min_key=encode_ordered(lo),
                    max_key=encode_ordered(hi),
                    min_sort=key_bounds.sort_bytes(plan.pattern, lo),
                    shard_id=owners[i % len(owners)],
                    major=1,
                    minor=i,
                )
                for i, (lo, hi) in enumerate(ranges)
            ]
            tx.put_collection(record)
            tx.insert_chunks(chunks)
            self._changed(tx)
        return record, chunks

    def get_collection(self, database: str, collection: str) -> CollectionRecord | None:
        with self.store.snapshot() as tx:
            return tx.get_collection(database, collection)

    # ----------------------------------------------------------------- indexes

    @retry_conflicts
    def record_index(
        self,
        database: str,
        collection: str,
        name: str,
        keys: Sequence[tuple[str, int]],
        *,
        unique: bool = False,
        sparse: bool = False,
    ) -> bool:
        """Record an index of a collection; False when an identical one exists.

        The database is created on first use (as creating an index creates the
        collection). Same name with other keys or options, or the same keys under
        another name: INDEX_ALREADY_EXISTS. A unique index on a sharded collection
        must be prefixed by the shard key (else CANNOT_CREATE_INDEX).
        """
        validate_database_name(database)
        validate_collection_name(database, collection)
        index_records.validate_name(name)
        record = IndexRecord(database, collection, name, tuple(keys), unique, sparse)
        if record.keys == index_records.ID_INDEX_KEYS:
            if name == index_records.ID_INDEX_NAME:
                return False
            raise LauraError(
                ErrorCode.INDEX_ALREADY_EXISTS,
                f"Index already exists with a different name: {index_records.ID_INDEX_NAME}",
            )
        if name == index_records.ID_INDEX_NAME:
            raise LauraError(
                ErrorCode.INDEX_ALREADY_EXISTS,
                f"Index with name: {name} already exists with different options",
            )
        with self.store.transaction() as tx:
            coll = tx.get_collection(database, collection)
            if coll is not None:
                index_records.check_unique_for_shard_key(record, coll.key_fields, coll.strategy)
            for existing in tx.list_indexes(database, collection):
                if existing.name == name:
                    if existing.same_spec(record):
                        return False
                    raise LauraError(
                        ErrorCode.INDEX_ALREADY_EXISTS,
                        f"Index with name: {name} already exists with different options",
                    )
                if existing.keys == record.keys:
                    raise LauraError(
                        ErrorCode.INDEX_ALREADY_EXISTS,
                        f"Index already exists with a different name: {existing.name}",
                    )
            self._ensure_database(tx, database)
            tx.put_index(record)
        return True

    @retry_conflicts
    def remove_index_record(self, database: str, collection: str, name: str) -> bool:
        """Forget one index record (``"*"``: all of the collection); whether any was."""
        validate_database_name(database)
        validate_collection_name(database, collection)
        index_records.validate_name(name)
        if name == index_records.ID_INDEX_NAME:
            raise LauraError(ErrorCode.ILLEGAL_OPERATION, "cannot drop _id index")
        with self.store.transaction() as tx:
            existing = tx.list_indexes(database, collection)
            if name == "*":
                return tx.delete_indexes(database, collection) > 0
            if not any(ix.name == name for ix in existing):
                return False
            tx.delete_index(database, collection, name)
            return True

    def collection_indexes(self, database: str, collection: str) -> list[IndexRecord]:
        """The index records of a collection (empty when none or unknown)."""
        validate_database_name(database)
        validate_collection_name(database, collection)
        with self.store.snapshot() as tx:
            return tx.list_indexes(database, collection)

    # ------------------------------------------------------------------- drops

    @retry_conflicts
    def drop_collection_metadata(self, database: str, collection: str) -> DroppedNamespaces:
        """Forget a collection: its sharding (collection row, chunks) and its index
        records, in one transaction. Sharding it again later starts a new epoch."""
        validate_database_name(database)
        validate_collection_name(database, collection)
        namespace = f"{database}.{collection}"
        with self.store.transaction() as tx:
            coll = tx.get_collection(database, collection)
            removed = tx.delete_indexes(database, collection)
            if coll is not None:
                tx.delete_chunks(namespace)
                tx.delete_collection(database, collection)
                self._changed(tx)
        return DroppedNamespaces(
            coll is not None or removed > 0, [namespace] if coll is not None else []
        )

    @retry_conflicts
    def drop_database_metadata(self, database: str) -> DroppedNamespaces:
        """Forget a database: every sharded collection, chunk and index record of it
        and the database itself (with its primary shard choice), in one transaction."""
        validate_database_name(database)
        with self.store.transaction() as tx:
            db = tx.get_database(database)
            colls = tx.list_collections(database)
            removed = tx.delete_indexes(database)
            for coll in colls:
                tx.delete_chunks(coll.namespace)
                tx.delete_collection(database, coll.collection)
            if db is not None:
                tx.delete_database(database)
            if db is not None or colls:
                self._changed(tx)
        return DroppedNamespaces(
            db is not None or bool(colls) or removed > 0, [c.namespace for c in colls]
        )

    # ------------------------------------------------------------------ chunks

    @retry_conflicts
    def split_chunk(
        self, chunk_id: str, split_point: Mapping[str, Any], *, auto: bool = False
    ) -> tuple[ChunkRecord, ChunkRecord]:
        """Split a chunk at a point strictly inside it, in one transaction: the chunk
        is replaced by two new ones whose minor versions go above the collection's
        (neither is jumbo). A chunk being migrated cannot be split. ``auto``: the
        balancer's split (counted)."""
        with self.store.transaction() as tx:
            chunk = tx.get_chunk(chunk_id)
            if chunk is None:
                raise LauraError(ErrorCode.CHUNK_NOT_FOUND, f"chunk '{chunk_id}' not found")
            moving = [
                m for m in tx.list_migrations(states=(MIGRATION_RUNNING,))
                if m.chunk_id == chunk_id
            ]
            if moving:
                raise LauraError(
                    ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
                    f"chunk '{chunk_id}' is being migrated (migration "
                    f"{moving[0].migration_id}); split it after the migration",
                )
            database, collection = split_namespace(chunk.namespace)
            coll = tx.get_collection(database, collection)
            if coll is None:
                raise LauraError(
                    ErrorCode.NAMESPACE_NOT_FOUND,
                    f"collection '{chunk.namespace}' of chunk '{chunk_id}' is not sharded",
                )
            pattern = key_bounds.pattern_for(coll.key_fields, coll.strategy)
            point = key_bounds.normalize_split_point(split_point, pattern)
            point_sort = key_bounds.sort_bytes(pattern, point)
            max_sort = key_bounds.sort_bytes(pattern, _decode_bound(chunk.max_key))
            if not chunk.min_sort < point_sort < max_sort:
                raise LauraError(
                    ErrorCode.INVALID_SPLIT_POINT,
                    f"split point {point!r} is not strictly inside chunk '{chunk_id}' "
                    f"[{_decode_bound(chunk.min_key)!r}, {_decode_bound(chunk.max_key)!r})",
                )
            major, minor = tx.collection_version(chunk.namespace)
            point_bytes = encode_ordered(point)
            left = replace(
                chunk,
                chunk_id=_new_id(),
                max_key=point_bytes,
                major=major,
                minor=minor + 1,
                jumbo=False,
            )
            right = replace(
                chunk,
                chunk_id=_new_id(),
                min_key=point_bytes,
                min_sort=point_sort,
                major=major,
                minor=minor + 2,
                jumbo=False,
            )
            tx.delete_chunk(chunk_id)
            tx.insert_chunks([left, right])
            if auto:
                tx.bump_counter(AUTO_SPLITS_KEY)
            self._changed(tx)
        return left, right

    @retry_conflicts
    def set_chunk_jumbo(self, chunk_id: str, jumbo: bool) -> bool:
        """Mark (or unmark) a chunk jumbo (no version change); whether it changed."""
        with self.store.transaction() as tx:
            chunk = tx.get_chunk(chunk_id)
            if chunk is None or chunk.jumbo == jumbo:
                return False
            tx.put_chunk(replace(chunk, jumbo=jumbo))
            self._changed(tx)
            return True

    def jumbo_chunks(self) -> list[ChunkRecord]:
        with self.store.snapshot() as tx:
            return [c for c in tx.list_chunks() if c.jumbo]

    def list_chunks(
        self, namespace: str | None = None, *, shard_id: str | None = None
    ) -> list[ChunkRecord]:
        with self.store.snapshot() as tx:
            return tx.list_chunks(namespace, shard_id=shard_id)

    def list_collections(self) -> list[CollectionRecord]:
        with self.store.snapshot() as tx:
            return tx.list_collections()

    def get_chunk(self, chunk_id: str) -> ChunkRecord:
        with self.store.snapshot() as tx:
            chunk = tx.get_chunk(chunk_id)
        if chunk is None:
            raise LauraError(ErrorCode.CHUNK_NOT_FOUND, f"chunk '{chunk_id}' not found")
        return chunk

    def shard_map(
        self,
        database: str,
        collection: str,
        *,
        version: int = 0,
        epoch: str = "",
        incremental: bool = False,
    ) -> ShardMapView:
        """The collection's placement (see GetShardMap in the cluster contract)."""
        validate_database_name(database)
        validate_collection_name(database, collection)
        with self.store.snapshot() as tx:
            db = tx.get_database(database)
            if db is None:
                raise LauraError(
                    ErrorCode.NAMESPACE_NOT_FOUND, f"database '{database}' not found"
                )
            coll = tx.get_collection(database, collection)
            if coll is None:
                primary = tx.get_shard(db.primary_shard)
                return ShardMapView(
                    database=database,
                    primary_shard=db.primary_shard,
                    shards=[primary] if primary is not None else [],
                )
            current = combined_version(*tx.collection_version(coll.namespace))
            same_epoch = not epoch or epoch == coll.epoch
            if version and same_epoch and version == current:
                return ShardMapView(
                    database=database,
                    primary_shard=db.primary_shard,
                    shards=[],
                    collection=coll,
                    version=current,
                    not_modified=True,
                )
            delta = incremental and bool(epoch) and epoch == coll.epoch and 0 < version < current
            chunks = tx.list_chunks(coll.namespace, since_version=version if delta else None)
            return ShardMapView(
                database=database,
                primary_shard=db.primary_shard,
                shards=tx.list_shards(),
                collection=coll,
                version=current,
                chunks=chunks,
                incremental=delta,
            )

    # ------------------------------------------------------------------- nodes

    @retry_conflicts
    def register_node(self, node: NodeRecord) -> int:
        """Store (or replace) a node, up; link it to its shard. Returns the topology version."""
        if not node.node_id:
            raise LauraError(ErrorCode.BAD_VALUE, "node id is required")
        shard_id = node.shard_id or node.tags.get("shard_id", "")
        record = replace(node, shard_id=shard_id, up=True)
        with self.store.transaction() as tx:
            tx.put_node(record)
            shard = tx.get_shard(shard_id) if shard_id else None
            if (
                shard is not None
                and shard.node_id != node.node_id
                and (shard.host, shard.port) == (node.host, node.port)
            ):
                tx.put_shard(replace(shard, node_id=node.node_id))
            return self._changed(tx)

    @retry_conflicts
    def deregister_node(self, node_id: str) -> int:
        with self.store.transaction() as tx:
            if tx.get_node(node_id) is None:
                raise LauraError(ErrorCode.NODE_NOT_FOUND, f"node '{node_id}' not found")
            tx.delete_node(node_id)
            return self._changed(tx)

    def get_node(self, node_id: str) -> NodeRecord:
        with self.store.snapshot() as tx:
            node = tx.get_node(node_id)
        if node is None:
            raise LauraError(ErrorCode.NODE_NOT_FOUND, f"node '{node_id}' not found")
        return node

    def list_nodes(self) -> list[NodeRecord]:
        with self.store.snapshot() as tx:
            return tx.list_nodes()

    @retry_conflicts
    def set_node_up(self, node_id: str, up: bool, last_heartbeat_ms: int = 0) -> bool:
        """Mark a node up or down; True if that changed anything (topology bumped)."""
        with self.store.transaction() as tx:
            node = tx.get_node(node_id)
            if node is None or node.up == up:
                return False
            heartbeat = last_heartbeat_ms or node.last_heartbeat_ms
            tx.put_node(replace(node, up=up, last_heartbeat_ms=heartbeat))
            self._changed(tx)
            return True

    def topology_version(self) -> int:
        with self.store.snapshot() as tx:
            return tx.topology_version()

    def topology(self) -> TopologyView:
        """Shards with their chunks and nodes; cached until the next change (ours, or
        any seen in the store's generation)."""
        generation = self.store.generation
        cached = self._topology_cache
        if cached is not None and cached[0] == generation:
            return cached[1]
        with self.store.snapshot() as tx:
            view = TopologyView(
                version=tx.topology_version(),
                shards=tx.list_shards(),
                chunks=tx.list_chunks(),
                nodes=tx.list_nodes(),
            )
        self._topology_cache = (generation, view)
        return view

