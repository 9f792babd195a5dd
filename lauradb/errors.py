"""The one error model of LauraDB: a stable numeric code, its name, a message.

Codes follow MongoDB's numbering where MongoDB has the same error, so that users
recognise them. Every layer (engine, storage, router, config server) raises
``LauraError``; the RPC layer maps it to an ``Error`` message and a gRPC status.
"""

from __future__ import annotations

import enum
from typing import Any

import grpc


class ErrorCode(enum.IntEnum):
    OK = 0
    INTERNAL_ERROR = 1
    BAD_VALUE = 2
    NO_SUCH_KEY = 4
    GRAPH_CONTAINS_CYCLE = 5
    HOST_UNREACHABLE = 6
    FAILED_TO_PARSE = 9
    TYPE_MISMATCH = 14
    OVERFLOW = 15
    ILLEGAL_OPERATION = 20
    INVALID_BSON = 22
    NAMESPACE_NOT_FOUND = 26
    INDEX_NOT_FOUND = 27
    PATH_NOT_VIABLE = 28
    CONFLICTING_UPDATE_OPERATORS = 40
    CURSOR_NOT_FOUND = 43
    NAMESPACE_EXISTS = 48
    DOLLAR_PREFIXED_FIELD_NAME = 52
    EMPTY_FIELD_NAME = 56
    IMMUTABLE_FIELD = 66
    CANNOT_CREATE_INDEX = 67
    INDEX_ALREADY_EXISTS = 68
    SHARD_NOT_FOUND = 70
    INVALID_OPTIONS = 72
    INVALID_NAMESPACE = 73
    NODE_NOT_FOUND = 74
    EXCEEDED_TIME_LIMIT = 50
    BSON_OBJECT_TOO_LARGE = 10334
    NOT_IMPLEMENTED = 238
    MAX_TIME_MS_EXPIRED = 262
    SHARD_KEY_NOT_FOUND = 61
    OPERATION_FAILED = 96
    CONFLICTING_OPERATION_IN_PROGRESS = 117
    EXCEEDED_MEMORY_LIMIT = 146
    INVALID_REGEX = 51091
    STALE_CONFIG = 13388
    STALE_EPOCH = 150
    SHARD_KEY_IMMUTABLE = 31025
    DUPLICATE_KEY = 11000
    ALREADY_SHARDED = 20001
    SHARD_UNAVAILABLE = 20002
    JUMBO_CHUNK = 20003
    CHUNK_NOT_FOUND = 20004
    INVALID_SPLIT_POINT = 20005
    MESSAGE_TOO_LARGE = 20006
    NESTING_TOO_DEEP = 20007
    UNKNOWN_OPERATOR = 20008
    INVALID_PROJECTION = 20009
    INVALID_PIPELINE = 20010
    INVALID_EXPRESSION = 20011
    INVALID_SORT = 20012
    INVALID_UPDATE = 20013
    INVALID_FILTER = 20014
    # Replica sets (MongoDB's codes).
    WRITE_CONCERN_FAILED = 64
    NOT_WRITABLE_PRIMARY = 10107
    NOT_PRIMARY_OR_SECONDARY = 13436
    INTERRUPTED_DUE_TO_REPL_STATE_CHANGE = 11602
    # Transactions (MongoDB's codes where it has one; 2001x are ours).
    LOCK_TIMEOUT = 24
    WRITE_CONFLICT = 112
    NO_SUCH_TRANSACTION = 251
    TRANSACTION_TOO_LARGE = 257
    TRANSACTION_PRECONDITION_FAILED = 20015
    TRANSACTION_ID_REUSED = 20016


_GRPC_STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INTERNAL_ERROR: grpc.StatusCode.INTERNAL,
    ErrorCode.NAMESPACE_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.INDEX_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.SHARD_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.NODE_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.CHUNK_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.CURSOR_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.NAMESPACE_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.INDEX_ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.ALREADY_SHARDED: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.DUPLICATE_KEY: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.HOST_UNREACHABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.SHARD_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.NOT_WRITABLE_PRIMARY: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.NOT_PRIMARY_OR_SECONDARY: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.INTERRUPTED_DUE_TO_REPL_STATE_CHANGE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.STALE_CONFIG: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.STALE_EPOCH: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.ILLEGAL_OPERATION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.JUMBO_CHUNK: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.EXCEEDED_TIME_LIMIT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.MAX_TIME_MS_EXPIRED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.EXCEEDED_MEMORY_LIMIT: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.MESSAGE_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.BSON_OBJECT_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.NOT_IMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorCode.OPERATION_FAILED: grpc.StatusCode.ABORTED,
    ErrorCode.WRITE_CONFLICT: grpc.StatusCode.ABORTED,
    ErrorCode.LOCK_TIMEOUT: grpc.StatusCode.ABORTED,
    ErrorCode.NO_SUCH_TRANSACTION: grpc.StatusCode.ABORTED,
    ErrorCode.TRANSACTION_PRECONDITION_FAILED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.TRANSACTION_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.TRANSACTION_ID_REUSED: grpc.StatusCode.ALREADY_EXISTS,
}


class LauraError(Exception):
    """An error with a stable code. ``details`` is an optional JSON-able mapping."""

    def __init__(
        self, code: ErrorCode, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.details = details or {}

    @property
    def code_name(self) -> str:
        return self.code.name

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return _GRPC_STATUS.get(self.code, grpc.StatusCode.INVALID_ARGUMENT)

    def __str__(self) -> str:
        return f"{self.code_name}({int(self.code)}): {self.message}"

    def __repr__(self) -> str:
        return f"LauraError({self.code_name}, {self.message!r})"


def bad_value(message: str) -> LauraError:
    return LauraError(ErrorCode.BAD_VALUE, message)


def type_mismatch(message: str) -> LauraError:
    return LauraError(ErrorCode.TYPE_MISMATCH, message)


def failed_to_parse(message: str) -> LauraError:
    return LauraError(ErrorCode.FAILED_TO_PARSE, message)
