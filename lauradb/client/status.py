"""``client.admin.status()``: the cluster at a glance, as data (what ``lauradb status``
shows): shards with their chunk counts, the balancer, running migrations, and per
database its primary shard and collections (document count, and for sharded ones the
key, strategy and chunks per shard)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from lauradb.client.errors import LauraDBError
from lauradb.client.ops import Call, Program
from lauradb.cluster import router_ext_pb2 as ext
from lauradb.cluster import routing_pb2 as r

__all__ = [
    "BalancerStatus",
    "ClusterStatus",
    "CollectionStatus",
    "DatabaseStatus",
    "MigrationStatus",
    "ShardStatus",
    "cluster_status",
    "key_pattern",
    "strategy_name",
]

_STRATEGY_NAMES: dict[int, str] = {r.HASH: "hashed", r.RANGE: "range", r.COMPOUND: "compound"}


def strategy_name(strategy: int) -> str:
    return _STRATEGY_NAMES.get(strategy, "?")


def key_pattern(fields: list[str], hashed: bool) -> dict[str, Any]:
    """``{"k": "hashed"}`` or ``{"k": 1, "k2": 1}``."""
    return {f: "hashed" if hashed and i == 0 else 1 for i, f in enumerate(fields)}


@dataclass
class ShardStatus:
    id: str
    address: str
    draining: bool
    chunks: int = 0  # over every sharded collection

    @property
    def state(self) -> str:
        return "draining" if self.draining else "active"


@dataclass
class BalancerStatus:
    enabled: bool
    rounds: int = 0
    splits: int = 0
    migrations_committed: int = 0
    migrations_failed: int = 0
    last_error: str = ""
    jumbo_chunks: list[str] = field(default_factory=list)


@dataclass
class MigrationStatus:
    namespace: str
    chunk_id: str
    from_shard: str
    to_shard: str
    state: str
    documents_migrated: int


@dataclass
class CollectionStatus:
    name: str
    documents: int | None  # None: the count failed (``error`` says why)
    error: str = ""
    sharded: bool = False
    key: dict[str, Any] = field(default_factory=dict)
    strategy: str = ""
    chunks: dict[str, int] = field(default_factory=dict)  # shard -> chunks

    @property
    def total_chunks(self) -> int:
        return sum(self.chunks.values())


@dataclass
class DatabaseStatus:
    name: str
    primary_shard: str
    collections: list[CollectionStatus] = field(default_factory=list)


@dataclass
class ClusterStatus:
    router: str
    shards: list[ShardStatus]
    balancer: BalancerStatus
    migrations: list[MigrationStatus]
    databases: list[DatabaseStatus]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _collection(db: str, name: str, sharded: bool) -> Program[CollectionStatus]:
    try:
        counted: ext.CountResponse = yield Call(
            "router", "Count", ext.CountRequest(database=db, collection=name)
        )
        status = CollectionStatus(name, int(counted.count))
    except LauraDBError as exc:
        status = CollectionStatus(name, None, error=exc.code_name)
    if not sharded:
        return status
    shard_map: r.GetShardMapResponse = yield Call(
        "config", "GetShardMap", r.GetShardMapRequest(database=db, collection=name)
    )
    if not shard_map.sharded:
        return status
    status.sharded = True
    status.strategy = strategy_name(shard_map.strategy)
    fields = list(shard_map.shard_key_fields) or [shard_map.shard_key_field]
    status.key = key_pattern(fields, shard_map.strategy == r.HASH)
    chunks: Counter[str] = Counter()
    for route in shard_map.shards:
        chunks[route.shard_id] += len(route.chunks)
    status.chunks = {s: n for s, n in sorted(chunks.items()) if n}
    return status


def _collection_names(info: ext.DatabaseInfo) -> Program[list[str]]:
    names = set(info.collections) | set(info.sharded_collections)
    try:
        resp: ext.ListCollectionsResponse = yield Call(
            "router", "ListCollections", ext.ListCollectionsRequest(database=info.name)
        )
        names |= {coll.name for coll in resp.collections}
    except LauraDBError:
        pass  # the config server's view is enough
    return sorted(names)


def cluster_status() -> Program[ClusterStatus]:
    first = Call("config", "ListShards", ext.ListShardsRequest())
    shards: ext.ListShardsResponse = yield first
    balancer: ext.GetBalancerStatusResponse = yield Call(
        "config", "GetBalancerStatus", ext.GetBalancerStatusRequest()
    )
    migrations: ext.ListMigrationsResponse = yield Call(
        "config", "ListMigrations", ext.ListMigrationsRequest(active_only=True)
    )
    databases: ext.ListDatabasesResponse = yield Call(
        "config", "ListDatabases", ext.ListDatabasesRequest()
    )
    dbs: list[DatabaseStatus] = []
    per_shard: Counter[str] = Counter()
    for info in sorted(databases.databases, key=lambda d: d.name):
        entry = DatabaseStatus(info.name, info.primary_shard)
        sharded = set(info.sharded_collections)
        for name in (yield from _collection_names(info)):
            coll = yield from _collection(info.name, name, name in sharded)
            per_shard.update(coll.chunks)
            entry.collections.append(coll)
        dbs.append(entry)
    return ClusterStatus(
        router=first.served_by,
        shards=[
            ShardStatus(s.shard_id, f"{s.host}:{s.port}", s.draining, per_shard.get(s.shard_id, 0))
            for s in sorted(shards.shards, key=lambda s: s.shard_id)
        ],
        balancer=BalancerStatus(
            enabled=balancer.enabled,
            rounds=balancer.rounds,
            splits=balancer.splits,
            migrations_committed=balancer.migrations_committed,
            migrations_failed=balancer.migrations_failed,
            last_error=balancer.last_error,
            jumbo_chunks=list(balancer.jumbo_chunks),
        ),
        migrations=[
            MigrationStatus(m.namespace, m.chunk_id, m.from_shard, m.to_shard, m.state,
                            m.documents_migrated)
            for m in migrations.migrations
        ],
        databases=dbs,
    )
