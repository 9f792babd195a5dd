from lauradb.cluster import common_pb2 as _common_pb2
from lauradb.cluster import error_pb2 as _error_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OplogEntry(_message.Message):
    __slots__ = ("op_id", "timestamp", "namespace", "op_type", "document", "query", "update", "txn_id")
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    OP_TYPE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    op_id: int
    timestamp: int
    namespace: str
    op_type: _common_pb2.OperationType
    document: bytes
    query: bytes
    update: bytes
    txn_id: int
    def __init__(self, op_id: _Optional[int] = ..., timestamp: _Optional[int] = ..., namespace: _Optional[str] = ..., op_type: _Optional[_Union[_common_pb2.OperationType, str]] = ..., document: _Optional[bytes] = ..., query: _Optional[bytes] = ..., update: _Optional[bytes] = ..., txn_id: _Optional[int] = ...) -> None: ...

class ReplicationStreamRequest(_message.Message):
    __slots__ = ("replica_id", "start_oplog_id", "initial_sync")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    START_OPLOG_ID_FIELD_NUMBER: _ClassVar[int]
    INITIAL_SYNC_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    start_oplog_id: int
    initial_sync: bool
    def __init__(self, replica_id: _Optional[str] = ..., start_oplog_id: _Optional[int] = ..., initial_sync: _Optional[bool] = ...) -> None: ...

class ReplicationStreamResponse(_message.Message):
    __slots__ = ("entries", "latest_oplog_id", "more_available", "error")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LATEST_OPLOG_ID_FIELD_NUMBER: _ClassVar[int]
    MORE_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[OplogEntry]
    latest_oplog_id: int
    more_available: bool
    error: _error_pb2.Error
    def __init__(self, entries: _Optional[_Iterable[_Union[OplogEntry, _Mapping]]] = ..., latest_oplog_id: _Optional[int] = ..., more_available: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class InitialSyncRequest(_message.Message):
    __slots__ = ("replica_id", "collections")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, replica_id: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ...) -> None: ...

class InitialSyncResponse(_message.Message):
    __slots__ = ("data_chunk", "complete", "sync_point_oplog_id", "error")
    DATA_CHUNK_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    SYNC_POINT_OPLOG_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    data_chunk: bytes
    complete: bool
    sync_point_oplog_id: int
    error: _error_pb2.Error
    def __init__(self, data_chunk: _Optional[bytes] = ..., complete: _Optional[bool] = ..., sync_point_oplog_id: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class VoteRequest(_message.Message):
    __slots__ = ("candidate_id", "term", "last_oplog_id", "priority")
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_OPLOG_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    candidate_id: str
    term: int
    last_oplog_id: int
    priority: int
    def __init__(self, candidate_id: _Optional[str] = ..., term: _Optional[int] = ..., last_oplog_id: _Optional[int] = ..., priority: _Optional[int] = ...) -> None: ...

class VoteResponse(_message.Message):
    __slots__ = ("vote_granted", "term", "voter_id", "error")
    VOTE_GRANTED_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    vote_granted: bool
    term: int
    voter_id: str
    error: _error_pb2.Error
    def __init__(self, vote_granted: _Optional[bool] = ..., term: _Optional[int] = ..., voter_id: _Optional[str] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class WriteAcknowledgment(_message.Message):
    __slots__ = ("node_id", "oplog_id", "success", "error")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    OPLOG_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    oplog_id: int
    success: bool
    error: str
    def __init__(self, node_id: _Optional[str] = ..., oplog_id: _Optional[int] = ..., success: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class WriteAcknowledgmentRequest(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[WriteAcknowledgment]
    def __init__(self, acks: _Optional[_Iterable[_Union[WriteAcknowledgment, _Mapping]]] = ...) -> None: ...

class WriteAcknowledgmentResponse(_message.Message):
    __slots__ = ("all_acknowledged", "ack_count", "error")
    ALL_ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    ACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    all_acknowledged: bool
    ack_count: int
    error: _error_pb2.Error
    def __init__(self, all_acknowledged: _Optional[bool] = ..., ack_count: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class AppendOplogResponse(_message.Message):
    __slots__ = ("success", "oplog_id", "error", "error_info")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    OPLOG_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_INFO_FIELD_NUMBER: _ClassVar[int]
    success: bool
    oplog_id: int
    error: str
    error_info: _error_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., oplog_id: _Optional[int] = ..., error: _Optional[str] = ..., error_info: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...
