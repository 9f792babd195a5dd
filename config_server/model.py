"""Plain records of the metadata the config server keeps (backend independent)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lauradb.sharding.chunk_map import combined_version

# Strategy names as stored; they match the wire enum ShardingStrategy's names.
HASH = "HASH"
RANGE = "RANGE"
COMPOUND = "COMPOUND"
STRATEGIES = (HASH, RANGE, COMPOUND)

# Migration states (MigrationInfo.state on the wire).
MIGRATION_RUNNING = "running"
MIGRATION_COMMITTED = "committed"
MIGRATION_ABORTED = "aborted"
MIGRATION_FAILED = "failed"
MIGRATION_STATES = (MIGRATION_RUNNING, MIGRATION_COMMITTED, MIGRATION_ABORTED, MIGRATION_FAILED)

__all__ = [
    "COMPOUND",
    "HASH",
    "RANGE",
    "STRATEGIES",
    "ChunkRecord",
    "CollectionRecord",
    "DatabaseRecord",
    "IndexRecord",
    "MigrationRecord",
    "NodeRecord",
    "ShardRecord",
    "combined_version",
]


@dataclass(frozen=True)
class ShardRecord:
    shard_id: str
    host: str
    port: int
    node_id: str = ""
    draining: bool = False
    # Replica-set members (host:port, the seed host:port among them); () = standalone.
    members: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def member_addresses(self) -> tuple[str, ...]:
        """Every member's address (just ``address`` for a standalone shard)."""
        return self.members if self.members else (self.address,)


@dataclass(frozen=True)
class DatabaseRecord:
    name: str
    primary_shard: str


@dataclass(frozen=True)
class CollectionRecord:
    """A sharded collection (unsharded ones are not registered)."""

    database: str
    collection: str
    epoch: str
    key_fields: tuple[str, ...]
    strategy: str
    unique: bool = False
    created_ms: int = 0

    @property
    def namespace(self) -> str:
        return f"{self.database}.{self.collection}"


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk [min, max) of a sharded collection.

    ``min_key``/``max_key`` are the BSON bound documents; ``min_sort`` is the
    order-preserving encoding of the lower bound's values (memcmp order == key order).
    """

    chunk_id: str
    namespace: str
    min_key: bytes
    max_key: bytes
    min_sort: bytes
    shard_id: str
    major: int
    minor: int
    jumbo: bool = False

    @property
    def version(self) -> int:
        return combined_version(self.major, self.minor)


@dataclass(frozen=True)
class IndexRecord:
    """A secondary index recorded for a collection (sharded or not).

    ``keys`` are ``(field, 1 | -1)`` pairs in key order. The router applies the
    record on the shards; a shard that starts holding the collection builds it.
    """

    database: str
    collection: str
    name: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False
    sparse: bool = False

    @property
    def namespace(self) -> str:
        return f"{self.database}.{self.collection}"

    def same_spec(self, other: IndexRecord) -> bool:
        return (self.name, self.keys, self.unique, self.sparse) == (
            other.name,
            other.keys,
            other.unique,
            other.sparse,
        )


@dataclass(frozen=True)
class NodeRecord:
    node_id: str
    host: str
    port: int
    role: int
    priority: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    shard_id: str = ""
    up: bool = True
    last_heartbeat_ms: int = 0


@dataclass(frozen=True)
class MigrationRecord:
    """One chunk migration: persisted when it starts, finished exactly once.

    ``min_key``/``max_key`` are the chunk's BSON bound documents when it started;
    ``epoch`` the collection's epoch then. ``state`` is one of MIGRATION_STATES.
    """

    migration_id: str
    namespace: str
    chunk_id: str
    min_key: bytes
    max_key: bytes
    epoch: str
    from_shard: str
    to_shard: str
    state: str = MIGRATION_RUNNING
    documents_migrated: int = 0
    started_ms: int = 0
    finished_ms: int = 0
    error: str = ""

    @property
    def running(self) -> bool:
        return self.state == MIGRATION_RUNNING

    def involves(self, shard_id: str) -> bool:
        return shard_id in (self.from_shard, self.to_shard)
