from lauradb.cluster import error_pb2 as _error_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReadPreferenceMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    READ_PRIMARY: _ClassVar[ReadPreferenceMode]
    READ_PRIMARY_PREFERRED: _ClassVar[ReadPreferenceMode]
    READ_SECONDARY: _ClassVar[ReadPreferenceMode]
    READ_SECONDARY_PREFERRED: _ClassVar[ReadPreferenceMode]
    READ_NEAREST: _ClassVar[ReadPreferenceMode]

class ReadConcernLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    READ_CONCERN_LOCAL: _ClassVar[ReadConcernLevel]
    READ_CONCERN_MAJORITY: _ClassVar[ReadConcernLevel]
READ_PRIMARY: ReadPreferenceMode
READ_PRIMARY_PREFERRED: ReadPreferenceMode
READ_SECONDARY: ReadPreferenceMode
READ_SECONDARY_PREFERRED: ReadPreferenceMode
READ_NEAREST: ReadPreferenceMode
READ_CONCERN_LOCAL: ReadConcernLevel
READ_CONCERN_MAJORITY: ReadConcernLevel

class WriteConcern(_message.Message):
    __slots__ = ("w", "wtimeout_ms")
    W_FIELD_NUMBER: _ClassVar[int]
    WTIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    w: str
    wtimeout_ms: int
    def __init__(self, w: _Optional[str] = ..., wtimeout_ms: _Optional[int] = ...) -> None: ...

class WriteConcernError(_message.Message):
    __slots__ = ("error", "acknowledged")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    error: _error_pb2.Error
    acknowledged: int
    def __init__(self, error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ..., acknowledged: _Optional[int] = ...) -> None: ...

class ReadPreference(_message.Message):
    __slots__ = ("mode", "max_staleness_ms")
    MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    mode: ReadPreferenceMode
    max_staleness_ms: int
    def __init__(self, mode: _Optional[_Union[ReadPreferenceMode, str]] = ..., max_staleness_ms: _Optional[int] = ...) -> None: ...

class ReadConcern(_message.Message):
    __slots__ = ("level",)
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    level: ReadConcernLevel
    def __init__(self, level: _Optional[_Union[ReadConcernLevel, str]] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HelloResponse(_message.Message):
    __slots__ = ("node_id", "replset", "role", "is_primary", "term", "primary_address", "members", "last_applied_op_id", "last_op_id", "commit_op_id", "caught_up", "last_write_ms", "address", "error")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REPLSET_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    IS_PRIMARY_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    LAST_APPLIED_OP_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_OP_ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_OP_ID_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    LAST_WRITE_MS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    replset: str
    role: str
    is_primary: bool
    term: int
    primary_address: str
    members: _containers.RepeatedScalarFieldContainer[str]
    last_applied_op_id: int
    last_op_id: int
    commit_op_id: int
    caught_up: bool
    last_write_ms: int
    address: str
    error: _error_pb2.Error
    def __init__(self, node_id: _Optional[str] = ..., replset: _Optional[str] = ..., role: _Optional[str] = ..., is_primary: _Optional[bool] = ..., term: _Optional[int] = ..., primary_address: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., last_applied_op_id: _Optional[int] = ..., last_op_id: _Optional[int] = ..., commit_op_id: _Optional[int] = ..., caught_up: _Optional[bool] = ..., last_write_ms: _Optional[int] = ..., address: _Optional[str] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...
