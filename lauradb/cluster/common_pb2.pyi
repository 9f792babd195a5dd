from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class OperationType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN_OP: _ClassVar[OperationType]
    INSERT: _ClassVar[OperationType]
    UPDATE: _ClassVar[OperationType]
    DELETE: _ClassVar[OperationType]
    CREATE_COLLECTION: _ClassVar[OperationType]
    DROP_COLLECTION: _ClassVar[OperationType]
    CREATE_INDEX: _ClassVar[OperationType]
    DROP_INDEX: _ClassVar[OperationType]
    READ: _ClassVar[OperationType]
UNKNOWN_OP: OperationType
INSERT: OperationType
UPDATE: OperationType
DELETE: OperationType
CREATE_COLLECTION: OperationType
DROP_COLLECTION: OperationType
CREATE_INDEX: OperationType
DROP_INDEX: OperationType
READ: OperationType

class ChunkRange(_message.Message):
    __slots__ = ("chunk_id", "min_key", "max_key", "version_major", "version_minor", "jumbo")
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_MAJOR_FIELD_NUMBER: _ClassVar[int]
    VERSION_MINOR_FIELD_NUMBER: _ClassVar[int]
    JUMBO_FIELD_NUMBER: _ClassVar[int]
    chunk_id: str
    min_key: bytes
    max_key: bytes
    version_major: int
    version_minor: int
    jumbo: bool
    def __init__(self, chunk_id: _Optional[str] = ..., min_key: _Optional[bytes] = ..., max_key: _Optional[bytes] = ..., version_major: _Optional[int] = ..., version_minor: _Optional[int] = ..., jumbo: _Optional[bool] = ...) -> None: ...
