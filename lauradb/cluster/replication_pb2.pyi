from lauradb.cluster import common_pb2 as _common_pb2
from lauradb.cluster import error_pb2 as _error_pb2
from lauradb.cluster import shard_pb2 as _shard_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OplogEntry(_message.Message):
    __slots__ = ("op_id", "timestamp", "namespace", "op_type", "document", "query", "update", "txn_id", "term", "kind", "retry_records")
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    OP_TYPE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RETRY_RECORDS_FIELD_NUMBER: _ClassVar[int]
    op_id: int
    timestamp: int
    namespace: str
    op_type: _common_pb2.OperationType
    document: bytes
    query: bytes
    update: bytes
    txn_id: int
    term: int
    kind: str
    retry_records: _containers.RepeatedCompositeFieldContainer[_shard_pb2.RetryRecord]
    def __init__(self, op_id: _Optional[int] = ..., timestamp: _Optional[int] = ..., namespace: _Optional[str] = ..., op_type: _Optional[_Union[_common_pb2.OperationType, str]] = ..., document: _Optional[bytes] = ..., query: _Optional[bytes] = ..., update: _Optional[bytes] = ..., txn_id: _Optional[int] = ..., term: _Optional[int] = ..., kind: _Optional[str] = ..., retry_records: _Optional[_Iterable[_Union[_shard_pb2.RetryRecord, _Mapping]]] = ...) -> None: ...

class ReplicationStreamRequest(_message.Message):
    __slots__ = ("replica_id", "start_oplog_id", "initial_sync", "last_term", "term")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    START_OPLOG_ID_FIELD_NUMBER: _ClassVar[int]
    INITIAL_SYNC_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    start_oplog_id: int
    initial_sync: bool
    last_term: int
    term: int
    def __init__(self, replica_id: _Optional[str] = ..., start_oplog_id: _Optional[int] = ..., initial_sync: _Optional[bool] = ..., last_term: _Optional[int] = ..., term: _Optional[int] = ...) -> None: ...

class ReplicationStreamResponse(_message.Message):
    __slots__ = ("entries", "latest_oplog_id", "more_available", "error", "term", "commit_oplog_id", "primary_id", "diverged", "source_term_at")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LATEST_OPLOG_ID_FIELD_NUMBER: _ClassVar[int]
    MORE_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_OPLOG_ID_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_ID_FIELD_NUMBER: _ClassVar[int]
    DIVERGED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TERM_AT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[OplogEntry]
    latest_oplog_id: int
    more_available: bool
    error: _error_pb2.Error
    term: int
    commit_oplog_id: int
    primary_id: str
    diverged: bool
    source_term_at: int
    def __init__(self, entries: _Optional[_Iterable[_Union[OplogEntry, _Mapping]]] = ..., latest_oplog_id: _Optional[int] = ..., more_available: _Optional[bool] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., term: _Optional[int] = ..., commit_oplog_id: _Optional[int] = ..., primary_id: _Optional[str] = ..., diverged: _Optional[bool] = ..., source_term_at: _Optional[int] = ...) -> None: ...

class InitialSyncRequest(_message.Message):
    __slots__ = ("replica_id", "collections")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, replica_id: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ...) -> None: ...

class InitialSyncResponse(_message.Message):
    __slots__ = ("data_chunk", "complete", "sync_point_oplog_id", "error", "documents", "total_documents")
    DATA_CHUNK_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    SYNC_POINT_OPLOG_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    data_chunk: bytes
    complete: bool
    sync_point_oplog_id: int
    error: _error_pb2.Error
    documents: int
    total_documents: int
    def __init__(self, data_chunk: _Optional[bytes] = ..., complete: _Optional[bool] = ..., sync_point_oplog_id: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., documents: _Optional[int] = ..., total_documents: _Optional[int] = ...) -> None: ...

class VoteRequest(_message.Message):
    __slots__ = ("candidate_id", "term", "last_oplog_id", "priority", "last_oplog_term", "pre_vote")
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_OPLOG_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    LAST_OPLOG_TERM_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    candidate_id: str
    term: int
    last_oplog_id: int
    priority: int
    last_oplog_term: int
    pre_vote: bool
    def __init__(self, candidate_id: _Optional[str] = ..., term: _Optional[int] = ..., last_oplog_id: _Optional[int] = ..., priority: _Optional[int] = ..., last_oplog_term: _Optional[int] = ..., pre_vote: _Optional[bool] = ...) -> None: ...

class VoteResponse(_message.Message):
    __slots__ = ("vote_granted", "term", "voter_id", "error", "reason")
    VOTE_GRANTED_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    vote_granted: bool
    term: int
    voter_id: str
    error: _error_pb2.Error
    reason: str
    def __init__(self, vote_granted: _Optional[bool] = ..., term: _Optional[int] = ..., voter_id: _Optional[str] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("acks", "term")
    ACKS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[WriteAcknowledgment]
    term: int
    def __init__(self, acks: _Optional[_Iterable[_Union[WriteAcknowledgment, _Mapping]]] = ..., term: _Optional[int] = ...) -> None: ...

class WriteAcknowledgmentResponse(_message.Message):
    __slots__ = ("all_acknowledged", "ack_count", "error", "term")
    ALL_ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    ACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    all_acknowledged: bool
    ack_count: int
    error: _error_pb2.Error
    term: int
    def __init__(self, all_acknowledged: _Optional[bool] = ..., ack_count: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., term: _Optional[int] = ...) -> None: ...

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
