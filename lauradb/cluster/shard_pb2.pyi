from lauradb.cluster import error_pb2 as _error_pb2
from lauradb.cluster import router_ext_pb2 as _router_ext_pb2
from lauradb.cluster import replset_pb2 as _replset_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ShardVersion(_message.Message):
    __slots__ = ("epoch", "major", "minor", "unsharded", "ignore")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    UNSHARDED_FIELD_NUMBER: _ClassVar[int]
    IGNORE_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    major: int
    minor: int
    unsharded: bool
    ignore: bool
    def __init__(self, epoch: _Optional[str] = ..., major: _Optional[int] = ..., minor: _Optional[int] = ..., unsharded: _Optional[bool] = ..., ignore: _Optional[bool] = ...) -> None: ...

class ShardFindRequest(_message.Message):
    __slots__ = ("request_id", "database", "collection", "filter", "projection", "sort", "limit", "skip", "batch_size", "version", "retry_id", "stmt_id", "read_concern", "secondary_ok")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SKIP_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RETRY_ID_FIELD_NUMBER: _ClassVar[int]
    STMT_ID_FIELD_NUMBER: _ClassVar[int]
    READ_CONCERN_FIELD_NUMBER: _ClassVar[int]
    SECONDARY_OK_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    database: str
    collection: str
    filter: bytes
    projection: bytes
    sort: bytes
    limit: int
    skip: int
    batch_size: int
    version: ShardVersion
    retry_id: str
    stmt_id: int
    read_concern: _replset_pb2.ReadConcern
    secondary_ok: bool
    def __init__(self, request_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., filter: _Optional[bytes] = ..., projection: _Optional[bytes] = ..., sort: _Optional[bytes] = ..., limit: _Optional[int] = ..., skip: _Optional[int] = ..., batch_size: _Optional[int] = ..., version: _Optional[_Union[ShardVersion, _Mapping]] = ..., retry_id: _Optional[str] = ..., stmt_id: _Optional[int] = ..., read_concern: _Optional[_Union[_replset_pb2.ReadConcern, _Mapping]] = ..., secondary_ok: _Optional[bool] = ...) -> None: ...

class ShardCursorBatch(_message.Message):
    __slots__ = ("documents", "cursor_id", "documents_examined", "retry_executed", "error")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_EXAMINED_FIELD_NUMBER: _ClassVar[int]
    RETRY_EXECUTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedScalarFieldContainer[bytes]
    cursor_id: str
    documents_examined: int
    retry_executed: bool
    error: _error_pb2.Error
    def __init__(self, documents: _Optional[_Iterable[bytes]] = ..., cursor_id: _Optional[str] = ..., documents_examined: _Optional[int] = ..., retry_executed: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ShardGetMoreRequest(_message.Message):
    __slots__ = ("cursor_id", "batch_size")
    CURSOR_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    cursor_id: str
    batch_size: int
    def __init__(self, cursor_id: _Optional[str] = ..., batch_size: _Optional[int] = ...) -> None: ...

class ShardKillCursorsRequest(_message.Message):
    __slots__ = ("cursor_ids",)
    CURSOR_IDS_FIELD_NUMBER: _ClassVar[int]
    cursor_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cursor_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ShardKillCursorsResponse(_message.Message):
    __slots__ = ("killed", "error")
    KILLED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    killed: int
    error: _error_pb2.Error
    def __init__(self, killed: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ShardWriteError(_message.Message):
    __slots__ = ("index", "code", "code_name", "message")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CODE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    code: int
    code_name: str
    message: str
    def __init__(self, index: _Optional[int] = ..., code: _Optional[int] = ..., code_name: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ShardInsertRequest(_message.Message):
    __slots__ = ("request_id", "database", "collection", "documents", "ordered", "version", "retry_id", "stmt_ids", "retry_fingerprint", "write_concern")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    ORDERED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RETRY_ID_FIELD_NUMBER: _ClassVar[int]
    STMT_IDS_FIELD_NUMBER: _ClassVar[int]
    RETRY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    database: str
    collection: str
    documents: _containers.RepeatedScalarFieldContainer[bytes]
    ordered: bool
    version: ShardVersion
    retry_id: str
    stmt_ids: _containers.RepeatedScalarFieldContainer[int]
    retry_fingerprint: bytes
    write_concern: _replset_pb2.WriteConcern
    def __init__(self, request_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., documents: _Optional[_Iterable[bytes]] = ..., ordered: _Optional[bool] = ..., version: _Optional[_Union[ShardVersion, _Mapping]] = ..., retry_id: _Optional[str] = ..., stmt_ids: _Optional[_Iterable[int]] = ..., retry_fingerprint: _Optional[bytes] = ..., write_concern: _Optional[_Union[_replset_pb2.WriteConcern, _Mapping]] = ...) -> None: ...

class ShardInsertResponse(_message.Message):
    __slots__ = ("inserted_count", "errors", "retried_count", "error", "write_concern_error")
    INSERTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    RETRIED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_ERROR_FIELD_NUMBER: _ClassVar[int]
    inserted_count: int
    errors: _containers.RepeatedCompositeFieldContainer[ShardWriteError]
    retried_count: int
    error: _error_pb2.Error
    write_concern_error: _replset_pb2.WriteConcernError
    def __init__(self, inserted_count: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[ShardWriteError, _Mapping]]] = ..., retried_count: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., write_concern_error: _Optional[_Union[_replset_pb2.WriteConcernError, _Mapping]] = ...) -> None: ...

class ShardUpdateRequest(_message.Message):
    __slots__ = ("request_id", "database", "collection", "filter", "update", "multi", "upsert", "array_filters", "version", "retry_id", "stmt_id", "retry_fingerprint", "history_only", "write_concern")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    MULTI_FIELD_NUMBER: _ClassVar[int]
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FILTERS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RETRY_ID_FIELD_NUMBER: _ClassVar[int]
    STMT_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_ONLY_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    database: str
    collection: str
    filter: bytes
    update: bytes
    multi: bool
    upsert: bool
    array_filters: _containers.RepeatedScalarFieldContainer[bytes]
    version: ShardVersion
    retry_id: str
    stmt_id: int
    retry_fingerprint: bytes
    history_only: bool
    write_concern: _replset_pb2.WriteConcern
    def __init__(self, request_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., filter: _Optional[bytes] = ..., update: _Optional[bytes] = ..., multi: _Optional[bool] = ..., upsert: _Optional[bool] = ..., array_filters: _Optional[_Iterable[bytes]] = ..., version: _Optional[_Union[ShardVersion, _Mapping]] = ..., retry_id: _Optional[str] = ..., stmt_id: _Optional[int] = ..., retry_fingerprint: _Optional[bytes] = ..., history_only: _Optional[bool] = ..., write_concern: _Optional[_Union[_replset_pb2.WriteConcern, _Mapping]] = ...) -> None: ...

class ShardUpdateResponse(_message.Message):
    __slots__ = ("matched_count", "modified_count", "upserted_id", "retried", "error", "write_concern_error")
    MATCHED_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_COUNT_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_ID_FIELD_NUMBER: _ClassVar[int]
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_ERROR_FIELD_NUMBER: _ClassVar[int]
    matched_count: int
    modified_count: int
    upserted_id: bytes
    retried: bool
    error: _error_pb2.Error
    write_concern_error: _replset_pb2.WriteConcernError
    def __init__(self, matched_count: _Optional[int] = ..., modified_count: _Optional[int] = ..., upserted_id: _Optional[bytes] = ..., retried: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., write_concern_error: _Optional[_Union[_replset_pb2.WriteConcernError, _Mapping]] = ...) -> None: ...

class ShardDeleteRequest(_message.Message):
    __slots__ = ("request_id", "database", "collection", "filter", "multi", "version", "retry_id", "stmt_id", "retry_fingerprint", "history_only", "write_concern")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MULTI_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RETRY_ID_FIELD_NUMBER: _ClassVar[int]
    STMT_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_ONLY_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    database: str
    collection: str
    filter: bytes
    multi: bool
    version: ShardVersion
    retry_id: str
    stmt_id: int
    retry_fingerprint: bytes
    history_only: bool
    write_concern: _replset_pb2.WriteConcern
    def __init__(self, request_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., filter: _Optional[bytes] = ..., multi: _Optional[bool] = ..., version: _Optional[_Union[ShardVersion, _Mapping]] = ..., retry_id: _Optional[str] = ..., stmt_id: _Optional[int] = ..., retry_fingerprint: _Optional[bytes] = ..., history_only: _Optional[bool] = ..., write_concern: _Optional[_Union[_replset_pb2.WriteConcern, _Mapping]] = ...) -> None: ...

class ShardDeleteResponse(_message.Message):
    __slots__ = ("deleted_count", "retried", "error", "write_concern_error")
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_ERROR_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    retried: bool
    error: _error_pb2.Error
    write_concern_error: _replset_pb2.WriteConcernError
    def __init__(self, deleted_count: _Optional[int] = ..., retried: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., write_concern_error: _Optional[_Union[_replset_pb2.WriteConcernError, _Mapping]] = ...) -> None: ...

class ShardCountRequest(_message.Message):
    __slots__ = ("request_id", "database", "collection", "filter", "version", "read_concern", "secondary_ok")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    READ_CONCERN_FIELD_NUMBER: _ClassVar[int]
    SECONDARY_OK_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    database: str
    collection: str
    filter: bytes
    version: ShardVersion
    read_concern: _replset_pb2.ReadConcern
    secondary_ok: bool
    def __init__(self, request_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., filter: _Optional[bytes] = ..., version: _Optional[_Union[ShardVersion, _Mapping]] = ..., read_concern: _Optional[_Union[_replset_pb2.ReadConcern, _Mapping]] = ..., secondary_ok: _Optional[bool] = ...) -> None: ...

class ShardCountResponse(_message.Message):
    __slots__ = ("count", "error")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    count: int
    error: _error_pb2.Error
    def __init__(self, count: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ShardAggregateRequest(_message.Message):
    __slots__ = ("request_id", "database", "collection", "pipeline", "batch_size", "version", "read_concern", "secondary_ok")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    READ_CONCERN_FIELD_NUMBER: _ClassVar[int]
    SECONDARY_OK_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    database: str
    collection: str
    pipeline: _containers.RepeatedScalarFieldContainer[bytes]
    batch_size: int
    version: ShardVersion
    read_concern: _replset_pb2.ReadConcern
    secondary_ok: bool
    def __init__(self, request_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., pipeline: _Optional[_Iterable[bytes]] = ..., batch_size: _Optional[int] = ..., version: _Optional[_Union[ShardVersion, _Mapping]] = ..., read_concern: _Optional[_Union[_replset_pb2.ReadConcern, _Mapping]] = ..., secondary_ok: _Optional[bool] = ...) -> None: ...

class RefreshMetadataRequest(_message.Message):
    __slots__ = ("database", "collection")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class RefreshMetadataResponse(_message.Message):
    __slots__ = ("epoch", "major", "minor", "error")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    major: int
    minor: int
    error: _error_pb2.Error
    def __init__(self, epoch: _Optional[str] = ..., major: _Optional[int] = ..., minor: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ShardCreateIndexRequest(_message.Message):
    __slots__ = ("database", "collection", "index")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    index: _router_ext_pb2.IndexSpec
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., index: _Optional[_Union[_router_ext_pb2.IndexSpec, _Mapping]] = ...) -> None: ...

class ShardCreateIndexResponse(_message.Message):
    __slots__ = ("created", "error")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    created: bool
    error: _error_pb2.Error
    def __init__(self, created: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ShardDropIndexRequest(_message.Message):
    __slots__ = ("database", "collection", "name")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    name: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ShardDropIndexResponse(_message.Message):
    __slots__ = ("dropped", "error")
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    error: _error_pb2.Error
    def __init__(self, dropped: _Optional[_Iterable[str]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ShardListIndexesRequest(_message.Message):
    __slots__ = ("database", "collection")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class ShardListIndexesResponse(_message.Message):
    __slots__ = ("indexes", "error")
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    indexes: _containers.RepeatedCompositeFieldContainer[_router_ext_pb2.IndexSpec]
    error: _error_pb2.Error
    def __init__(self, indexes: _Optional[_Iterable[_Union[_router_ext_pb2.IndexSpec, _Mapping]]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ShardListCollectionsRequest(_message.Message):
    __slots__ = ("database",)
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    database: str
    def __init__(self, database: _Optional[str] = ...) -> None: ...

class ShardListCollectionsResponse(_message.Message):
    __slots__ = ("collections", "error")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedScalarFieldContainer[str]
    error: _error_pb2.Error
    def __init__(self, collections: _Optional[_Iterable[str]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ShardDropCollectionRequest(_message.Message):
    __slots__ = ("database", "collection")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class ShardDropCollectionResponse(_message.Message):
    __slots__ = ("dropped", "error")
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    error: _error_pb2.Error
    def __init__(self, dropped: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ShardDropDatabaseRequest(_message.Message):
    __slots__ = ("database",)
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    database: str
    def __init__(self, database: _Optional[str] = ...) -> None: ...

class ShardDropDatabaseResponse(_message.Message):
    __slots__ = ("dropped", "error")
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    error: _error_pb2.Error
    def __init__(self, dropped: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ShardDistinctRequest(_message.Message):
    __slots__ = ("request_id", "database", "collection", "key", "filter", "version", "read_concern", "secondary_ok")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    READ_CONCERN_FIELD_NUMBER: _ClassVar[int]
    SECONDARY_OK_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    database: str
    collection: str
    key: str
    filter: bytes
    version: ShardVersion
    read_concern: _replset_pb2.ReadConcern
    secondary_ok: bool
    def __init__(self, request_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., key: _Optional[str] = ..., filter: _Optional[bytes] = ..., version: _Optional[_Union[ShardVersion, _Mapping]] = ..., read_concern: _Optional[_Union[_replset_pb2.ReadConcern, _Mapping]] = ..., secondary_ok: _Optional[bool] = ...) -> None: ...

class ShardDistinctResponse(_message.Message):
    __slots__ = ("values", "error")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    values: bytes
    error: _error_pb2.Error
    def __init__(self, values: _Optional[bytes] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ChunkStatsRequest(_message.Message):
    __slots__ = ("database", "collection")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class ChunkStat(_message.Message):
    __slots__ = ("chunk_id", "min_key", "max_key", "documents", "bytes")
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_KEY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    chunk_id: str
    min_key: bytes
    max_key: bytes
    documents: int
    bytes: int
    def __init__(self, chunk_id: _Optional[str] = ..., min_key: _Optional[bytes] = ..., max_key: _Optional[bytes] = ..., documents: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class ChunkStatsResponse(_message.Message):
    __slots__ = ("chunks", "error")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[ChunkStat]
    error: _error_pb2.Error
    def __init__(self, chunks: _Optional[_Iterable[_Union[ChunkStat, _Mapping]]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class SplitVectorRequest(_message.Message):
    __slots__ = ("database", "collection", "min_key", "max_key", "max_chunk_bytes")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MIN_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    min_key: bytes
    max_key: bytes
    max_chunk_bytes: int
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., min_key: _Optional[bytes] = ..., max_key: _Optional[bytes] = ..., max_chunk_bytes: _Optional[int] = ...) -> None: ...

class SplitVectorResponse(_message.Message):
    __slots__ = ("split_points", "jumbo", "documents", "bytes", "error")
    SPLIT_POINTS_FIELD_NUMBER: _ClassVar[int]
    JUMBO_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    split_points: _containers.RepeatedScalarFieldContainer[bytes]
    jumbo: bool
    documents: int
    bytes: int
    error: _error_pb2.Error
    def __init__(self, split_points: _Optional[_Iterable[bytes]] = ..., jumbo: _Optional[bool] = ..., documents: _Optional[int] = ..., bytes: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class MoveRangeRequest(_message.Message):
    __slots__ = ("migration_id", "database", "collection", "chunk_id", "min_key", "max_key", "epoch", "to_shard_id", "to_host", "to_port")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_KEY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TO_SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    TO_HOST_FIELD_NUMBER: _ClassVar[int]
    TO_PORT_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    database: str
    collection: str
    chunk_id: str
    min_key: bytes
    max_key: bytes
    epoch: str
    to_shard_id: str
    to_host: str
    to_port: int
    def __init__(self, migration_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., chunk_id: _Optional[str] = ..., min_key: _Optional[bytes] = ..., max_key: _Optional[bytes] = ..., epoch: _Optional[str] = ..., to_shard_id: _Optional[str] = ..., to_host: _Optional[str] = ..., to_port: _Optional[int] = ...) -> None: ...

class MoveRangeResponse(_message.Message):
    __slots__ = ("documents_migrated", "bytes_migrated", "critical_section_ms", "error")
    DOCUMENTS_MIGRATED_FIELD_NUMBER: _ClassVar[int]
    BYTES_MIGRATED_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_SECTION_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    documents_migrated: int
    bytes_migrated: int
    critical_section_ms: int
    error: _error_pb2.Error
    def __init__(self, documents_migrated: _Optional[int] = ..., bytes_migrated: _Optional[int] = ..., critical_section_ms: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class RecvChunkStartRequest(_message.Message):
    __slots__ = ("migration_id", "database", "collection", "min_key", "max_key", "epoch", "from_shard_id", "from_host", "from_port")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MIN_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_KEY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    FROM_SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_HOST_FIELD_NUMBER: _ClassVar[int]
    FROM_PORT_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    database: str
    collection: str
    min_key: bytes
    max_key: bytes
    epoch: str
    from_shard_id: str
    from_host: str
    from_port: int
    def __init__(self, migration_id: _Optional[str] = ..., database: _Optional[str] = ..., collection: _Optional[str] = ..., min_key: _Optional[bytes] = ..., max_key: _Optional[bytes] = ..., epoch: _Optional[str] = ..., from_shard_id: _Optional[str] = ..., from_host: _Optional[str] = ..., from_port: _Optional[int] = ...) -> None: ...

class RecvChunkControlRequest(_message.Message):
    __slots__ = ("migration_id",)
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    def __init__(self, migration_id: _Optional[str] = ...) -> None: ...

class RecvChunkStatusResponse(_message.Message):
    __slots__ = ("state", "documents_cloned", "bytes_cloned", "mods_applied", "failure", "error")
    STATE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_CLONED_FIELD_NUMBER: _ClassVar[int]
    BYTES_CLONED_FIELD_NUMBER: _ClassVar[int]
    MODS_APPLIED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    state: str
    documents_cloned: int
    bytes_cloned: int
    mods_applied: int
    failure: str
    error: _error_pb2.Error
    def __init__(self, state: _Optional[str] = ..., documents_cloned: _Optional[int] = ..., bytes_cloned: _Optional[int] = ..., mods_applied: _Optional[int] = ..., failure: _Optional[str] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class MigrateCloneRequest(_message.Message):
    __slots__ = ("migration_id", "after_id_key", "batch_size")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_KEY_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    after_id_key: bytes
    batch_size: int
    def __init__(self, migration_id: _Optional[str] = ..., after_id_key: _Optional[bytes] = ..., batch_size: _Optional[int] = ...) -> None: ...

class MigrateCloneResponse(_message.Message):
    __slots__ = ("documents", "last_id_key", "done", "error")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ID_KEY_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedScalarFieldContainer[bytes]
    last_id_key: bytes
    done: bool
    error: _error_pb2.Error
    def __init__(self, documents: _Optional[_Iterable[bytes]] = ..., last_id_key: _Optional[bytes] = ..., done: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class MigrateTransferModsRequest(_message.Message):
    __slots__ = ("migration_id", "max_mods")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_MODS_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    max_mods: int
    def __init__(self, migration_id: _Optional[str] = ..., max_mods: _Optional[int] = ...) -> None: ...

class MigrateTransferModsResponse(_message.Message):
    __slots__ = ("upserts", "deleted_ids", "more", "error")
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    DELETED_IDS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    upserts: _containers.RepeatedScalarFieldContainer[bytes]
    deleted_ids: _containers.RepeatedScalarFieldContainer[bytes]
    more: bool
    error: _error_pb2.Error
    def __init__(self, upserts: _Optional[_Iterable[bytes]] = ..., deleted_ids: _Optional[_Iterable[bytes]] = ..., more: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class RetryRecord(_message.Message):
    __slots__ = ("retry_id", "stmt_id", "kind", "fingerprint", "created_at", "id_key", "shard_key", "outcome")
    RETRY_ID_FIELD_NUMBER: _ClassVar[int]
    STMT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ID_KEY_FIELD_NUMBER: _ClassVar[int]
    SHARD_KEY_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    retry_id: str
    stmt_id: int
    kind: str
    fingerprint: bytes
    created_at: float
    id_key: bytes
    shard_key: bytes
    outcome: bytes
    def __init__(self, retry_id: _Optional[str] = ..., stmt_id: _Optional[int] = ..., kind: _Optional[str] = ..., fingerprint: _Optional[bytes] = ..., created_at: _Optional[float] = ..., id_key: _Optional[bytes] = ..., shard_key: _Optional[bytes] = ..., outcome: _Optional[bytes] = ...) -> None: ...

class MigrateRetryHistoryRequest(_message.Message):
    __slots__ = ("migration_id", "after_seq", "max_records")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    after_seq: int
    max_records: int
    def __init__(self, migration_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., max_records: _Optional[int] = ...) -> None: ...

class MigrateRetryHistoryResponse(_message.Message):
    __slots__ = ("records", "last_seq", "more", "error")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[RetryRecord]
    last_seq: int
    more: bool
    error: _error_pb2.Error
    def __init__(self, records: _Optional[_Iterable[_Union[RetryRecord, _Mapping]]] = ..., last_seq: _Optional[int] = ..., more: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class MigrationStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MigrationProgress(_message.Message):
    __slots__ = ("migration_id", "namespace", "chunk_id", "role", "phase", "documents_cloned", "bytes_cloned", "peer_shard")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_CLONED_FIELD_NUMBER: _ClassVar[int]
    BYTES_CLONED_FIELD_NUMBER: _ClassVar[int]
    PEER_SHARD_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    namespace: str
    chunk_id: str
    role: str
    phase: str
    documents_cloned: int
    bytes_cloned: int
    peer_shard: str
    def __init__(self, migration_id: _Optional[str] = ..., namespace: _Optional[str] = ..., chunk_id: _Optional[str] = ..., role: _Optional[str] = ..., phase: _Optional[str] = ..., documents_cloned: _Optional[int] = ..., bytes_cloned: _Optional[int] = ..., peer_shard: _Optional[str] = ...) -> None: ...

class MigrationStatusResponse(_message.Message):
    __slots__ = ("migrations", "pending_range_deletions", "error")
    MIGRATIONS_FIELD_NUMBER: _ClassVar[int]
    PENDING_RANGE_DELETIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    migrations: _containers.RepeatedCompositeFieldContainer[MigrationProgress]
    pending_range_deletions: _containers.RepeatedScalarFieldContainer[str]
    error: _error_pb2.Error
    def __init__(self, migrations: _Optional[_Iterable[_Union[MigrationProgress, _Mapping]]] = ..., pending_range_deletions: _Optional[_Iterable[str]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class MovePrimaryRequest(_message.Message):
    __slots__ = ("database", "to_shard_id", "to_host", "to_port", "operation_id")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    TO_SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    TO_HOST_FIELD_NUMBER: _ClassVar[int]
    TO_PORT_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    database: str
    to_shard_id: str
    to_host: str
    to_port: int
    operation_id: str
    def __init__(self, database: _Optional[str] = ..., to_shard_id: _Optional[str] = ..., to_host: _Optional[str] = ..., to_port: _Optional[int] = ..., operation_id: _Optional[str] = ...) -> None: ...

class MovePrimaryResponse(_message.Message):
    __slots__ = ("collections_moved", "documents_moved", "error")
    COLLECTIONS_MOVED_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_MOVED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    collections_moved: _containers.RepeatedScalarFieldContainer[str]
    documents_moved: int
    error: _error_pb2.Error
    def __init__(self, collections_moved: _Optional[_Iterable[str]] = ..., documents_moved: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ReceivePrimaryRequest(_message.Message):
    __slots__ = ("database", "collections", "from_shard_id", "from_host", "from_port", "operation_id")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    FROM_SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_HOST_FIELD_NUMBER: _ClassVar[int]
    FROM_PORT_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    database: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    from_shard_id: str
    from_host: str
    from_port: int
    operation_id: str
    def __init__(self, database: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ..., from_shard_id: _Optional[str] = ..., from_host: _Optional[str] = ..., from_port: _Optional[int] = ..., operation_id: _Optional[str] = ...) -> None: ...

class ReceivePrimaryResponse(_message.Message):
    __slots__ = ("documents_cloned", "error")
    DOCUMENTS_CLONED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    documents_cloned: int
    error: _error_pb2.Error
    def __init__(self, documents_cloned: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class CloneCollectionPageRequest(_message.Message):
    __slots__ = ("database", "collection", "after_id_key", "batch_size", "operation_id")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_KEY_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    after_id_key: bytes
    batch_size: int
    operation_id: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., after_id_key: _Optional[bytes] = ..., batch_size: _Optional[int] = ..., operation_id: _Optional[str] = ...) -> None: ...
