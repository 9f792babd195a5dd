from lauradb.cluster import common_pb2 as _common_pb2
from lauradb.cluster import error_pb2 as _error_pb2
from lauradb.cluster import replset_pb2 as _replset_pb2
from lauradb.cluster import shard_pb2 as _shard_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TransactionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN_STATE: _ClassVar[TransactionState]
    ACTIVE: _ClassVar[TransactionState]
    PREPARING: _ClassVar[TransactionState]
    PREPARED: _ClassVar[TransactionState]
    COMMITTING: _ClassVar[TransactionState]
    COMMITTED: _ClassVar[TransactionState]
    ABORTING: _ClassVar[TransactionState]
    ABORTED: _ClassVar[TransactionState]
UNKNOWN_STATE: TransactionState
ACTIVE: TransactionState
PREPARING: TransactionState
PREPARED: TransactionState
COMMITTING: TransactionState
COMMITTED: TransactionState
ABORTING: TransactionState
ABORTED: TransactionState

class Transaction(_message.Message):
    __slots__ = ("txn_id", "timestamp", "participants", "state")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    timestamp: int
    participants: _containers.RepeatedScalarFieldContainer[str]
    state: TransactionState
    def __init__(self, txn_id: _Optional[str] = ..., timestamp: _Optional[int] = ..., participants: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[TransactionState, str]] = ...) -> None: ...

class PrepareRequest(_message.Message):
    __slots__ = ("txn_id", "coordinator_id", "operations", "timeout_ms", "one_phase", "coordinator_hosts", "write_concern", "request_id", "fingerprint", "participants")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    ONE_PHASE_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_HOSTS_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    coordinator_id: str
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    timeout_ms: int
    one_phase: bool
    coordinator_hosts: _containers.RepeatedScalarFieldContainer[str]
    write_concern: _replset_pb2.WriteConcern
    request_id: str
    fingerprint: bytes
    participants: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, txn_id: _Optional[str] = ..., coordinator_id: _Optional[str] = ..., operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ..., timeout_ms: _Optional[int] = ..., one_phase: _Optional[bool] = ..., coordinator_hosts: _Optional[_Iterable[str]] = ..., write_concern: _Optional[_Union[_replset_pb2.WriteConcern, _Mapping]] = ..., request_id: _Optional[str] = ..., fingerprint: _Optional[bytes] = ..., participants: _Optional[_Iterable[str]] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("database", "collection", "op_type", "data", "version", "has_expected", "expected_matched")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    OP_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HAS_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_MATCHED_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    op_type: _common_pb2.OperationType
    data: bytes
    version: _shard_pb2.ShardVersion
    has_expected: bool
    expected_matched: int
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., op_type: _Optional[_Union[_common_pb2.OperationType, str]] = ..., data: _Optional[bytes] = ..., version: _Optional[_Union[_shard_pb2.ShardVersion, _Mapping]] = ..., has_expected: _Optional[bool] = ..., expected_matched: _Optional[int] = ...) -> None: ...

class PrepareResponse(_message.Message):
    __slots__ = ("txn_id", "participant_id", "vote", "error", "error_info", "results", "state", "failed_operation")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_INFO_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FAILED_OPERATION_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    participant_id: str
    vote: bool
    error: str
    error_info: _error_pb2.Error
    results: _containers.RepeatedCompositeFieldContainer[TransactionOperationResult]
    state: TransactionState
    failed_operation: int
    def __init__(self, txn_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., vote: _Optional[bool] = ..., error: _Optional[str] = ..., error_info: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., results: _Optional[_Iterable[_Union[TransactionOperationResult, _Mapping]]] = ..., state: _Optional[_Union[TransactionState, str]] = ..., failed_operation: _Optional[int] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("txn_id", "coordinator_id")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    coordinator_id: str
    def __init__(self, txn_id: _Optional[str] = ..., coordinator_id: _Optional[str] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("txn_id", "participant_id", "success", "error", "error_info")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_INFO_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    participant_id: str
    success: bool
    error: str
    error_info: _error_pb2.Error
    def __init__(self, txn_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., success: _Optional[bool] = ..., error: _Optional[str] = ..., error_info: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("txn_id", "coordinator_id", "reason")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    coordinator_id: str
    reason: str
    def __init__(self, txn_id: _Optional[str] = ..., coordinator_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AbortResponse(_message.Message):
    __slots__ = ("txn_id", "participant_id", "success", "error", "error_info")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_INFO_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    participant_id: str
    success: bool
    error: str
    error_info: _error_pb2.Error
    def __init__(self, txn_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., success: _Optional[bool] = ..., error: _Optional[str] = ..., error_info: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class RecoveryRequest(_message.Message):
    __slots__ = ("txn_id", "requesting_node_id", "abort_if_undecided")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTING_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ABORT_IF_UNDECIDED_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    requesting_node_id: str
    abort_if_undecided: bool
    def __init__(self, txn_id: _Optional[str] = ..., requesting_node_id: _Optional[str] = ..., abort_if_undecided: _Optional[bool] = ...) -> None: ...

class RecoveryResponse(_message.Message):
    __slots__ = ("txn_id", "state", "participants", "coordinator_id", "error")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    state: TransactionState
    participants: _containers.RepeatedScalarFieldContainer[str]
    coordinator_id: str
    error: _error_pb2.Error
    def __init__(self, txn_id: _Optional[str] = ..., state: _Optional[_Union[TransactionState, str]] = ..., participants: _Optional[_Iterable[str]] = ..., coordinator_id: _Optional[str] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class TransactionOperationResult(_message.Message):
    __slots__ = ("matched", "modified", "upserted_id", "inserted", "deleted", "documents")
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_ID_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    matched: int
    modified: int
    upserted_id: bytes
    inserted: int
    deleted: int
    documents: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, matched: _Optional[int] = ..., modified: _Optional[int] = ..., upserted_id: _Optional[bytes] = ..., inserted: _Optional[int] = ..., deleted: _Optional[int] = ..., documents: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ParticipantInfo(_message.Message):
    __slots__ = ("shard_id", "hosts")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, shard_id: _Optional[str] = ..., hosts: _Optional[_Iterable[str]] = ...) -> None: ...

class CoordinateRequest(_message.Message):
    __slots__ = ("txn_id", "participants", "fingerprint", "timeout_ms", "write_concern", "request_id")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    participants: _containers.RepeatedCompositeFieldContainer[ParticipantInfo]
    fingerprint: bytes
    timeout_ms: int
    write_concern: _replset_pb2.WriteConcern
    request_id: str
    def __init__(self, txn_id: _Optional[str] = ..., participants: _Optional[_Iterable[_Union[ParticipantInfo, _Mapping]]] = ..., fingerprint: _Optional[bytes] = ..., timeout_ms: _Optional[int] = ..., write_concern: _Optional[_Union[_replset_pb2.WriteConcern, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CoordinateResponse(_message.Message):
    __slots__ = ("txn_id", "state", "results", "reason", "error")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    state: TransactionState
    results: bytes
    reason: str
    error: _error_pb2.Error
    def __init__(self, txn_id: _Optional[str] = ..., state: _Optional[_Union[TransactionState, str]] = ..., results: _Optional[bytes] = ..., reason: _Optional[str] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("txn_id", "decision", "reason", "results", "write_concern")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    decision: TransactionState
    reason: str
    results: bytes
    write_concern: _replset_pb2.WriteConcern
    def __init__(self, txn_id: _Optional[str] = ..., decision: _Optional[_Union[TransactionState, str]] = ..., reason: _Optional[str] = ..., results: _Optional[bytes] = ..., write_concern: _Optional[_Union[_replset_pb2.WriteConcern, _Mapping]] = ...) -> None: ...

class FinishTransactionRequest(_message.Message):
    __slots__ = ("txn_id",)
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    def __init__(self, txn_id: _Optional[str] = ...) -> None: ...

class TransactionOperation(_message.Message):
    __slots__ = ("database", "collection", "op_type", "document", "filter", "update", "multi", "upsert", "array_filters", "expect_matched")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    OP_TYPE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    MULTI_FIELD_NUMBER: _ClassVar[int]
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FILTERS_FIELD_NUMBER: _ClassVar[int]
    EXPECT_MATCHED_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    op_type: _common_pb2.OperationType
    document: bytes
    filter: bytes
    update: bytes
    multi: bool
    upsert: bool
    array_filters: _containers.RepeatedScalarFieldContainer[bytes]
    expect_matched: int
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., op_type: _Optional[_Union[_common_pb2.OperationType, str]] = ..., document: _Optional[bytes] = ..., filter: _Optional[bytes] = ..., update: _Optional[bytes] = ..., multi: _Optional[bool] = ..., upsert: _Optional[bool] = ..., array_filters: _Optional[_Iterable[bytes]] = ..., expect_matched: _Optional[int] = ...) -> None: ...

class ExecuteTransactionRequest(_message.Message):
    __slots__ = ("txn_id", "operations", "timeout_ms", "write_concern", "request_id")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONCERN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    operations: _containers.RepeatedCompositeFieldContainer[TransactionOperation]
    timeout_ms: int
    write_concern: _replset_pb2.WriteConcern
    request_id: str
    def __init__(self, txn_id: _Optional[str] = ..., operations: _Optional[_Iterable[_Union[TransactionOperation, _Mapping]]] = ..., timeout_ms: _Optional[int] = ..., write_concern: _Optional[_Union[_replset_pb2.WriteConcern, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ExecuteTransactionResponse(_message.Message):
    __slots__ = ("txn_id", "state", "results", "participants", "error")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    state: TransactionState
    results: _containers.RepeatedCompositeFieldContainer[TransactionOperationResult]
    participants: int
    error: _error_pb2.Error
    def __init__(self, txn_id: _Optional[str] = ..., state: _Optional[_Union[TransactionState, str]] = ..., results: _Optional[_Iterable[_Union[TransactionOperationResult, _Mapping]]] = ..., participants: _Optional[int] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...
