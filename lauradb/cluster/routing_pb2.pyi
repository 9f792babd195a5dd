from lauradb.cluster import common_pb2 as _common_pb2
from lauradb.cluster import error_pb2 as _error_pb2
from lauradb.cluster import replset_pb2 as _replset_pb2
from lauradb.cluster import router_ext_pb2 as _router_ext_pb2
from lauradb.cluster import transaction_pb2 as _transaction_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ShardingStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN_STRATEGY: _ClassVar[ShardingStrategy]
    HASH: _ClassVar[ShardingStrategy]
    RANGE: _ClassVar[ShardingStrategy]
    COMPOUND: _ClassVar[ShardingStrategy]
UNKNOWN_STRATEGY: ShardingStrategy
HASH: ShardingStrategy
RANGE: ShardingStrategy
COMPOUND: ShardingStrategy

class QueryRequest(_message.Message):
    __slots__ = ("request_id", "database", "collection", "query", "projection", "limit", "skip", "sort", "shard_key", "batch_size", "read_preference", "read_concern")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SKIP_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    SHARD_KEY_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    READ_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    READ_CONCERN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    database: str
    collection: str
    query: bytes
    projection: bytes
    limit: int
    skip: int
    sort: bytes
    shard_key: bytes
    batch_size: int
    read_preference: _replset_pb2.ReadPreference
    read_concern: _replset_pb2.ReadConcern
    def __init__(self, request_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., query: _Optional[bytes] = ..., projection: _Optional[bytes] = ..., limit: _Optional[int] = ..., skip: _Optional[int] = ..., sort: _Optional[bytes] = ..., shard_key: _Optional[bytes] = ..., batch_size: _Optional[int] = ..., read_preference: _Optional[_Union[_replset_pb2.ReadPreference, _Mapping]] = ..., read_concern: _Optional[_Union[_replset_pb2.ReadConcern, _Mapping]] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("request_id", "documents", "more_available", "cursor_id", "stats", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    MORE_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_ID_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    documents: _containers.RepeatedScalarFieldContainer[bytes]
    more_available: bool
    cursor_id: str
    stats: QueryStats
    error: _error_pb2.Error
    def __init__(self, request_id: _Optional[str] = ..., documents: _Optional[_Iterable[bytes]] = ..., more_available: _Optional[bool] = ..., cursor_id: _Optional[str] = ..., stats: _Optional[_Union[QueryStats, _Mapping]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class QueryStats(_message.Message):
    __slots__ = ("documents_examined", "documents_returned", "execution_time_ms", "shards_queried")
    DOCUMENTS_EXAMINED_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_RETURNED_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_QUERIED_FIELD_NUMBER: _ClassVar[int]
    documents_examined: int
    documents_returned: int
    execution_time_ms: int
    shards_queried: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, documents_examined: _Optional[int] = ..., documents_returned: _Optional[int] = ..., execution_time_ms: _Optional[int] = ..., shards_queried: _Optional[_Iterable[str]] = ...) -> None: ...

class InsertRequest(_message.Message):
    __slots__ = ("request_id", "database", "collection", "documents", "ordered", "write_concern")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    ORDERED_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    database: str
    collection: str
    documents: _containers.RepeatedScalarFieldContainer[bytes]
    ordered: bool
    write_concern: _replset_pb2.WriteConcern
    def __init__(self, request_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., documents: _Optional[_Iterable[bytes]] = ..., ordered: _Optional[bool] = ..., write_concern: _Optional[_Union[_replset_pb2.WriteConcern, _Mapping]] = ...) -> None: ...

class InsertResponse(_message.Message):
    __slots__ = ("request_id", "inserted_count", "errors", "error", "write_concern_error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSERTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    inserted_count: int
    errors: _containers.RepeatedCompositeFieldContainer[InsertError]
    error: _error_pb2.Error
    write_concern_error: _replset_pb2.WriteConcernError
    def __init__(self, request_id: _Optional[str] = ..., inserted_count: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[InsertError, _Mapping]]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., write_concern_error: _Optional[_Union[_replset_pb2.WriteConcernError, _Mapping]] = ...) -> None: ...

class InsertError(_message.Message):
    __slots__ = ("index", "error", "code", "code_name")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CODE_NAME_FIELD_NUMBER: _ClassVar[int]
    index: int
    error: str
    code: int
    code_name: str
    def __init__(self, index: _Optional[int] = ..., error: _Optional[str] = ..., code: _Optional[int] = ..., code_name: _Optional[str] = ...) -> None: ...

class UpdateRequest(_message.Message):
    __slots__ = ("request_id", "database", "collection", "query", "update", "multi", "upsert", "array_filters", "write_concern")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    MULTI_FIELD_NUMBER: _ClassVar[int]
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FILTERS_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    database: str
    collection: str
    query: bytes
    update: bytes
    multi: bool
    upsert: bool
    array_filters: _containers.RepeatedScalarFieldContainer[bytes]
    write_concern: _replset_pb2.WriteConcern
    def __init__(self, request_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., query: _Optional[bytes] = ..., update: _Optional[bytes] = ..., multi: _Optional[bool] = ..., upsert: _Optional[bool] = ..., array_filters: _Optional[_Iterable[bytes]] = ..., write_concern: _Optional[_Union[_replset_pb2.WriteConcern, _Mapping]] = ...) -> None: ...

class UpdateResponse(_message.Message):
    __slots__ = ("request_id", "matched_count", "modified_count", "upserted_count", "error", "upserted_id", "write_concern_error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MATCHED_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_COUNT_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_ID_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    matched_count: int
    modified_count: int
    upserted_count: int
    error: _error_pb2.Error
    upserted_id: bytes
    write_concern_error: _replset_pb2.WriteConcernError
    def __init__(self, request_id: _Optional[str] = ..., matched_count: _Optional[int] = ..., modified_count: _Optional[int] = ..., upserted_count: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., upserted_id: _Optional[bytes] = ..., write_concern_error: _Optional[_Union[_replset_pb2.WriteConcernError, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("request_id", "database", "collection", "query", "multi", "write_concern")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    MULTI_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    database: str
    collection: str
    query: bytes
    multi: bool
    write_concern: _replset_pb2.WriteConcern
    def __init__(self, request_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., query: _Optional[bytes] = ..., multi: _Optional[bool] = ..., write_concern: _Optional[_Union[_replset_pb2.WriteConcern, _Mapping]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("request_id", "deleted_count", "error", "write_concern_error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    deleted_count: int
    error: _error_pb2.Error
    write_concern_error: _replset_pb2.WriteConcernError
    def __init__(self, request_id: _Optional[str] = ..., deleted_count: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., write_concern_error: _Optional[_Union[_replset_pb2.WriteConcernError, _Mapping]] = ...) -> None: ...

class AggregationRequest(_message.Message):
    __slots__ = ("request_id", "database", "collection", "pipeline", "batch_size", "allow_disk_use", "max_memory_bytes", "read_preference", "read_concern")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DISK_USE_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    READ_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    READ_CONCERN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    database: str
    collection: str
    pipeline: _containers.RepeatedScalarFieldContainer[bytes]
    batch_size: int
    allow_disk_use: bool
    max_memory_bytes: int
    read_preference: _replset_pb2.ReadPreference
    read_concern: _replset_pb2.ReadConcern
    def __init__(self, request_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., pipeline: _Optional[_Iterable[bytes]] = ..., batch_size: _Optional[int] = ..., allow_disk_use: _Optional[bool] = ..., max_memory_bytes: _Optional[int] = ..., read_preference: _Optional[_Union[_replset_pb2.ReadPreference, _Mapping]] = ..., read_concern: _Optional[_Union[_replset_pb2.ReadConcern, _Mapping]] = ...) -> None: ...

class AggregationResponse(_message.Message):
    __slots__ = ("request_id", "results", "error", "cursor_id", "more_available", "stats")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CURSOR_ID_FIELD_NUMBER: _ClassVar[int]
    MORE_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    results: _containers.RepeatedScalarFieldContainer[bytes]
    error: _error_pb2.Error
    cursor_id: str
    more_available: bool
    stats: QueryStats
    def __init__(self, request_id: _Optional[str] = ..., results: _Optional[_Iterable[bytes]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., cursor_id: _Optional[str] = ..., more_available: _Optional[bool] = ..., stats: _Optional[_Union[QueryStats, _Mapping]] = ...) -> None: ...

class ShardRouteInfo(_message.Message):
    __slots__ = ("shard_id", "node_id", "host", "port", "chunks", "members")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    node_id: str
    host: str
    port: int
    chunks: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChunkRange]
    members: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, shard_id: _Optional[str] = ..., node_id: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., chunks: _Optional[_Iterable[_Union[_common_pb2.ChunkRange, _Mapping]]] = ..., members: _Optional[_Iterable[str]] = ...) -> None: ...

class GetShardMapRequest(_message.Message):
    __slots__ = ("database", "collection", "version", "epoch", "incremental")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    INCREMENTAL_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    version: int
    epoch: str
    incremental: bool
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., version: _Optional[int] = ..., epoch: _Optional[str] = ..., incremental: _Optional[bool] = ...) -> None: ...

class GetShardMapResponse(_message.Message):
    __slots__ = ("version", "shards", "shard_key_field", "strategy", "error", "shard_key_fields", "epoch", "sharded", "primary_shard", "unique", "incremental", "not_modified")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    SHARD_KEY_FIELD_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SHARD_KEY_FIELDS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SHARDED_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_SHARD_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_FIELD_NUMBER: _ClassVar[int]
    INCREMENTAL_FIELD_NUMBER: _ClassVar[int]
    NOT_MODIFIED_FIELD_NUMBER: _ClassVar[int]
    version: int
    shards: _containers.RepeatedCompositeFieldContainer[ShardRouteInfo]
    shard_key_field: str
    strategy: ShardingStrategy
    error: _error_pb2.Error
    shard_key_fields: _containers.RepeatedScalarFieldContainer[str]
    epoch: str
    sharded: bool
    primary_shard: str
    unique: bool
    incremental: bool
    not_modified: bool
    def __init__(self, version: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[ShardRouteInfo, _Mapping]]] = ..., shard_key_field: _Optional[str] = ..., strategy: _Optional[_Union[ShardingStrategy, str]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., shard_key_fields: _Optional[_Iterable[str]] = ..., epoch: _Optional[str] = ..., sharded: _Optional[bool] = ..., primary_shard: _Optional[str] = ..., unique: _Optional[bool] = ..., incremental: _Optional[bool] = ..., not_modified: _Optional[bool] = ...) -> None: ...

class ShardCollectionRequest(_message.Message):
    __slots__ = ("database", "collection", "shard_key_fields", "strategy", "initial_chunks", "unique")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SHARD_KEY_FIELDS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    INITIAL_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    shard_key_fields: _containers.RepeatedScalarFieldContainer[str]
    strategy: ShardingStrategy
    initial_chunks: int
    unique: bool
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., shard_key_fields: _Optional[_Iterable[str]] = ..., strategy: _Optional[_Union[ShardingStrategy, str]] = ..., initial_chunks: _Optional[int] = ..., unique: _Optional[bool] = ...) -> None: ...

class ShardCollectionResponse(_message.Message):
    __slots__ = ("success", "message", "epoch", "version", "chunks", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    epoch: str
    version: int
    chunks: int
    error: _error_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., epoch: _Optional[str] = ..., version: _Optional[int] = ..., chunks: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class AddShardRequest(_message.Message):
    __slots__ = ("shard_id", "node_id", "host", "port", "members")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    node_id: str
    host: str
    port: int
    members: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, shard_id: _Optional[str] = ..., node_id: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ...) -> None: ...

class AddShardResponse(_message.Message):
    __slots__ = ("success", "message", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    error: _error_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class RemoveShardRequest(_message.Message):
    __slots__ = ("shard_id",)
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    def __init__(self, shard_id: _Optional[str] = ...) -> None: ...

class RemoveShardResponse(_message.Message):
    __slots__ = ("success", "message", "error", "state", "remaining_chunks", "remaining_databases")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REMAINING_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_DATABASES_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    error: _error_pb2.Error
    state: str
    remaining_chunks: int
    remaining_databases: int
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., state: _Optional[str] = ..., remaining_chunks: _Optional[int] = ..., remaining_databases: _Optional[int] = ...) -> None: ...

class SplitChunkRequest(_message.Message):
    __slots__ = ("chunk_id", "split_point")
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_FIELD_NUMBER: _ClassVar[int]
    chunk_id: str
    split_point: bytes
    def __init__(self, chunk_id: _Optional[str] = ..., split_point: _Optional[bytes] = ...) -> None: ...

class SplitChunkResponse(_message.Message):
    __slots__ = ("success", "left_chunk_id", "right_chunk_id", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LEFT_CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    RIGHT_CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    left_chunk_id: str
    right_chunk_id: str
    error: _error_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., left_chunk_id: _Optional[str] = ..., right_chunk_id: _Optional[str] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class MigrateChunkRequest(_message.Message):
    __slots__ = ("chunk_id", "from_shard", "to_shard")
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SHARD_FIELD_NUMBER: _ClassVar[int]
    TO_SHARD_FIELD_NUMBER: _ClassVar[int]
    chunk_id: str
    from_shard: str
    to_shard: str
    def __init__(self, chunk_id: _Optional[str] = ..., from_shard: _Optional[str] = ..., to_shard: _Optional[str] = ...) -> None: ...

class MigrateChunkResponse(_message.Message):
    __slots__ = ("success", "documents_migrated", "error", "error_info")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_MIGRATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_INFO_FIELD_NUMBER: _ClassVar[int]
    success: bool
    documents_migrated: int
    error: str
    error_info: _error_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., documents_migrated: _Optional[int] = ..., error: _Optional[str] = ..., error_info: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...
