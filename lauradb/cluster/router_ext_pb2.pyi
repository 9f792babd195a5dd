from lauradb.cluster import cluster_pb2 as _cluster_pb2
from lauradb.cluster import error_pb2 as _error_pb2
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
    __slots__ = ("database", "collection", "query", "limit", "skip", "request_id")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SKIP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    query: bytes
    limit: int
    skip: int
    request_id: str
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., query: _Optional[bytes] = ..., limit: _Optional[int] = ..., skip: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

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
