from lauradb.cluster import common_pb2 as _common_pb2
from lauradb.cluster import error_pb2 as _error_pb2
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
    __slots__ = ("txn_id", "coordinator_id", "operations", "timeout_ms")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    coordinator_id: str
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    timeout_ms: int
    def __init__(self, txn_id: _Optional[str] = ..., coordinator_id: _Optional[str] = ..., operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("database", "collection", "op_type", "data")
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    OP_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    database: str
    collection: str
    op_type: _common_pb2.OperationType
    data: bytes
    def __init__(self, database: _Optional[str] = ..., collection: _Optional[str] = ..., op_type: _Optional[_Union[_common_pb2.OperationType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class PrepareResponse(_message.Message):
    __slots__ = ("txn_id", "participant_id", "vote", "error", "error_info")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_INFO_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    participant_id: str
    vote: bool
    error: str
    error_info: _error_pb2.Error
    def __init__(self, txn_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., vote: _Optional[bool] = ..., error: _Optional[str] = ..., error_info: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("txn_id", "requesting_node_id")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTING_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    requesting_node_id: str
    def __init__(self, txn_id: _Optional[str] = ..., requesting_node_id: _Optional[str] = ...) -> None: ...

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
