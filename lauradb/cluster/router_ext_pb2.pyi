from lauradb.cluster import cluster_pb2 as _cluster_pb2
from lauradb.cluster import error_pb2 as _error_pb2
from lauradb.cluster import replset_pb2 as _replset_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetMoreRequest(_message.Message):
    __slots__ = ("cursor_id", "batch_size", "request_id")
    CURSOR_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    cursor_id: str
    batch_size: int
    request_id: str
    def __init__(self, cursor_id: _Optional[str] = ..., batch_size: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class KillCursorsRequest(_message.Message):
    __slots__ = ("cursor_ids",)
    CURSOR_IDS_FIELD_NUMBER: _ClassVar[int]
    cursor_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cursor_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class KillCursorsResponse(_message.Message):
    __slots__ = ("killed", "not_found", "error")
    KILLED_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    killed: _containers.RepeatedScalarFieldContainer[str]
    not_found: _containers.RepeatedScalarFieldContainer[str]
    error: _error_pb2.Error
    def __init__(self, killed: _Optional[_Iterable[str]] = ..., not_found: _Optional[_Iterable[str]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ("database", "collection", "query", "limit", "skip", "request_id", "read_preference", "read_concern")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SKIP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    READ_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    READ_CONCERN_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    query: bytes
    limit: int
    skip: int
    request_id: str
    read_preference: _replset_pb2.ReadPreference
    read_concern: _replset_pb2.ReadConcern
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., query: _Optional[bytes] = ..., limit: _Optional[int] = ..., skip: _Optional[int] = ..., request_id: _Optional[str] = ..., read_preference: _Optional[_Union[_replset_pb2.ReadPreference, _Mapping]] = ..., read_concern: _Optional[_Union[_replset_pb2.ReadConcern, _Mapping]] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count", "error")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    count: int
    error: _error_pb2.Error
    def __init__(self, count: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ListShardsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListShardsResponse(_message.Message):
    __slots__ = ("shards", "error")
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedCompositeFieldContainer[_cluster_pb2.ShardInfo]
    error: _error_pb2.Error
    def __init__(self, shards: _Optional[_Iterable[_Union[_cluster_pb2.ShardInfo, _Mapping]]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class EnsureDatabaseRequest(_message.Message):
    __slots__ = ("database",)
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    database: str
    def __init__(self, database: _Optional[str] = ...) -> None: ...

class EnsureDatabaseResponse(_message.Message):
    __slots__ = ("database", "primary_shard", "created", "error")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_SHARD_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    database: str
    primary_shard: str
    created: bool
    error: _error_pb2.Error
    def __init__(self, database: _Optional[str] = ..., primary_shard: _Optional[str] = ..., created: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ListDatabasesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DatabaseInfo(_message.Message):
    __slots__ = ("name", "primary_shard", "collections", "sharded_collections")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_SHARD_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    SHARDED_COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    primary_shard: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    sharded_collections: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., primary_shard: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ..., sharded_collections: _Optional[_Iterable[str]] = ...) -> None: ...

class ListDatabasesResponse(_message.Message):
    __slots__ = ("databases", "error")
    DATABASES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    databases: _containers.RepeatedCompositeFieldContainer[DatabaseInfo]
    error: _error_pb2.Error
    def __init__(self, databases: _Optional[_Iterable[_Union[DatabaseInfo, _Mapping]]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class DistinctRequest(_message.Message):
    __slots__ = ("database", "collection", "key", "query", "request_id", "read_preference", "read_concern")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    READ_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    READ_CONCERN_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    key: str
    query: bytes
    request_id: str
    read_preference: _replset_pb2.ReadPreference
    read_concern: _replset_pb2.ReadConcern
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., key: _Optional[str] = ..., query: _Optional[bytes] = ..., request_id: _Optional[str] = ..., read_preference: _Optional[_Union[_replset_pb2.ReadPreference, _Mapping]] = ..., read_concern: _Optional[_Union[_replset_pb2.ReadConcern, _Mapping]] = ...) -> None: ...

class DistinctResponse(_message.Message):
    __slots__ = ("values", "error")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    values: bytes
    error: _error_pb2.Error
    def __init__(self, values: _Optional[bytes] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class IndexSpec(_message.Message):
    __slots__ = ("name", "keys", "unique", "sparse")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    name: str
    keys: bytes
    unique: bool
    sparse: bool
    def __init__(self, name: _Optional[str] = ..., keys: _Optional[bytes] = ..., unique: _Optional[bool] = ..., sparse: _Optional[bool] = ...) -> None: ...

class CreateIndexRequest(_message.Message):
    __slots__ = ("database", "collection", "index", "request_id")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    index: IndexSpec
    request_id: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., index: _Optional[_Union[IndexSpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateIndexResponse(_message.Message):
    __slots__ = ("name", "created", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    created: bool
    error: _error_pb2.Error
    def __init__(self, name: _Optional[str] = ..., created: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class DropIndexRequest(_message.Message):
    __slots__ = ("database", "collection", "name", "request_id")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    name: str
    request_id: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DropIndexResponse(_message.Message):
    __slots__ = ("dropped", "error")
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    error: _error_pb2.Error
    def __init__(self, dropped: _Optional[_Iterable[str]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ListIndexesRequest(_message.Message):
    __slots__ = ("database", "collection")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class ListIndexesResponse(_message.Message):
    __slots__ = ("indexes", "error")
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    indexes: _containers.RepeatedCompositeFieldContainer[IndexSpec]
    error: _error_pb2.Error
    def __init__(self, indexes: _Optional[_Iterable[_Union[IndexSpec, _Mapping]]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "sharded", "shard_key_fields", "strategy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHARDED_FIELD_NUMBER: _ClassVar[int]
    SHARD_KEY_FIELDS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    name: str
    sharded: bool
    shard_key_fields: _containers.RepeatedScalarFieldContainer[str]
    strategy: str
    def __init__(self, name: _Optional[str] = ..., sharded: _Optional[bool] = ..., shard_key_fields: _Optional[_Iterable[str]] = ..., strategy: _Optional[str] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ("database",)
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    database: str
    def __init__(self, database: _Optional[str] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections", "error")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    error: _error_pb2.Error
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("database", "collection", "request_id")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    request_id: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ("dropped", "error")
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    error: _error_pb2.Error
    def __init__(self, dropped: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class DropDatabaseRequest(_message.Message):
    __slots__ = ("database", "request_id")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    database: str
    request_id: str
    def __init__(self, database: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DropDatabaseResponse(_message.Message):
    __slots__ = ("dropped", "error")
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    error: _error_pb2.Error
    def __init__(self, dropped: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class RecordIndexRequest(_message.Message):
    __slots__ = ("database", "collection", "index")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    index: IndexSpec
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., index: _Optional[_Union[IndexSpec, _Mapping]] = ...) -> None: ...

class RecordIndexResponse(_message.Message):
    __slots__ = ("created", "error")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    created: bool
    error: _error_pb2.Error
    def __init__(self, created: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class RemoveIndexRecordRequest(_message.Message):
    __slots__ = ("database", "collection", "name")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    name: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class RemoveIndexRecordResponse(_message.Message):
    __slots__ = ("removed", "error")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    error: _error_pb2.Error
    def __init__(self, removed: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class GetCollectionIndexesRequest(_message.Message):
    __slots__ = ("database", "collection")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class GetCollectionIndexesResponse(_message.Message):
    __slots__ = ("indexes", "error")
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    indexes: _containers.RepeatedCompositeFieldContainer[IndexSpec]
    error: _error_pb2.Error
    def __init__(self, indexes: _Optional[_Iterable[_Union[IndexSpec, _Mapping]]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class DropCollectionMetadataRequest(_message.Message):
    __slots__ = ("database", "collection")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class DropCollectionMetadataResponse(_message.Message):
    __slots__ = ("dropped", "error")
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    error: _error_pb2.Error
    def __init__(self, dropped: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class DropDatabaseMetadataRequest(_message.Message):
    __slots__ = ("database",)
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    database: str
    def __init__(self, database: _Optional[str] = ...) -> None: ...

class DropDatabaseMetadataResponse(_message.Message):
    __slots__ = ("dropped", "error")
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    error: _error_pb2.Error
    def __init__(self, dropped: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class CommitChunkMigrationRequest(_message.Message):
    __slots__ = ("migration_id", "chunk_id", "from_shard", "to_shard", "epoch")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SHARD_FIELD_NUMBER: _ClassVar[int]
    TO_SHARD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    chunk_id: str
    from_shard: str
    to_shard: str
    epoch: str
    def __init__(self, migration_id: _Optional[str] = ..., chunk_id: _Optional[str] = ..., from_shard: _Optional[str] = ..., to_shard: _Optional[str] = ..., epoch: _Optional[str] = ...) -> None: ...

class CommitChunkMigrationResponse(_message.Message):
    __slots__ = ("committed", "major", "minor", "error")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    committed: bool
    major: int
    minor: int
    error: _error_pb2.Error
    def __init__(self, committed: _Optional[bool] = ..., major: _Optional[int] = ..., minor: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class GetMigrationStateRequest(_message.Message):
    __slots__ = ("migration_id",)
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    def __init__(self, migration_id: _Optional[str] = ...) -> None: ...

class MigrationInfo(_message.Message):
    __slots__ = ("migration_id", "namespace", "chunk_id", "from_shard", "to_shard", "state", "documents_migrated", "started_ms", "finished_ms", "error")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SHARD_FIELD_NUMBER: _ClassVar[int]
    TO_SHARD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_MIGRATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    namespace: str
    chunk_id: str
    from_shard: str
    to_shard: str
    state: str
    documents_migrated: int
    started_ms: int
    finished_ms: int
    error: str
    def __init__(self, migration_id: _Optional[str] = ..., namespace: _Optional[str] = ..., chunk_id: _Optional[str] = ..., from_shard: _Optional[str] = ..., to_shard: _Optional[str] = ..., state: _Optional[str] = ..., documents_migrated: _Optional[int] = ..., started_ms: _Optional[int] = ..., finished_ms: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class GetMigrationStateResponse(_message.Message):
    __slots__ = ("migration", "error")
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    migration: MigrationInfo
    error: _error_pb2.Error
    def __init__(self, migration: _Optional[_Union[MigrationInfo, _Mapping]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ListMigrationsRequest(_message.Message):
    __slots__ = ("active_only", "limit")
    ACTIVE_ONLY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    active_only: bool
    limit: int
    def __init__(self, active_only: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class ListMigrationsResponse(_message.Message):
    __slots__ = ("migrations", "error")
    MIGRATIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    migrations: _containers.RepeatedCompositeFieldContainer[MigrationInfo]
    error: _error_pb2.Error
    def __init__(self, migrations: _Optional[_Iterable[_Union[MigrationInfo, _Mapping]]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class SetBalancerStateRequest(_message.Message):
    __slots__ = ("enabled",)
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    def __init__(self, enabled: _Optional[bool] = ...) -> None: ...

class SetBalancerStateResponse(_message.Message):
    __slots__ = ("enabled", "error")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    error: _error_pb2.Error
    def __init__(self, enabled: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class GetBalancerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetBalancerStatusResponse(_message.Message):
    __slots__ = ("enabled", "rounds", "splits", "migrations_committed", "migrations_failed", "in_progress", "jumbo_chunks", "last_error", "leader", "answered_by", "error")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    MIGRATIONS_COMMITTED_FIELD_NUMBER: _ClassVar[int]
    MIGRATIONS_FAILED_FIELD_NUMBER: _ClassVar[int]
    IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    JUMBO_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    rounds: int
    splits: int
    migrations_committed: int
    migrations_failed: int
    in_progress: _containers.RepeatedCompositeFieldContainer[MigrationInfo]
    jumbo_chunks: _containers.RepeatedScalarFieldContainer[str]
    last_error: str
    leader: str
    answered_by: str
    error: _error_pb2.Error
    def __init__(self, enabled: _Optional[bool] = ..., rounds: _Optional[int] = ..., splits: _Optional[int] = ..., migrations_committed: _Optional[int] = ..., migrations_failed: _Optional[int] = ..., in_progress: _Optional[_Iterable[_Union[MigrationInfo, _Mapping]]] = ..., jumbo_chunks: _Optional[_Iterable[str]] = ..., last_error: _Optional[str] = ..., leader: _Optional[str] = ..., answered_by: _Optional[str] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class MovePrimaryConfigRequest(_message.Message):
    __slots__ = ("database", "to_shard")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    TO_SHARD_FIELD_NUMBER: _ClassVar[int]
    database: str
    to_shard: str
    def __init__(self, database: _Optional[str] = ..., to_shard: _Optional[str] = ...) -> None: ...

class MovePrimaryConfigResponse(_message.Message):
    __slots__ = ("success", "from_shard", "to_shard", "collections_moved", "documents_moved", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FROM_SHARD_FIELD_NUMBER: _ClassVar[int]
    TO_SHARD_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_MOVED_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_MOVED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    from_shard: str
    to_shard: str
    collections_moved: _containers.RepeatedScalarFieldContainer[str]
    documents_moved: int
    error: _error_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., from_shard: _Optional[str] = ..., to_shard: _Optional[str] = ..., collections_moved: _Optional[_Iterable[str]] = ..., documents_moved: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class CommitMovePrimaryRequest(_message.Message):
    __slots__ = ("database", "from_shard", "to_shard", "operation_id")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    FROM_SHARD_FIELD_NUMBER: _ClassVar[int]
    TO_SHARD_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    database: str
    from_shard: str
    to_shard: str
    operation_id: str
    def __init__(self, database: _Optional[str] = ..., from_shard: _Optional[str] = ..., to_shard: _Optional[str] = ..., operation_id: _Optional[str] = ...) -> None: ...

class CommitMovePrimaryResponse(_message.Message):
    __slots__ = ("committed", "error")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    committed: bool
    error: _error_pb2.Error
    def __init__(self, committed: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...
