"""The client's exceptions: a small pymongo-like hierarchy keyed on the protocol's codes.

::

    LauraDBError (a lauradb.errors.LauraError: .code, .code_name, .message, .details)
     ├── ConnectionFailure            the router could not be reached / the call was cut
     │    ├── ServerUnavailable       gRPC UNAVAILABLE, HOST_UNREACHABLE, SHARD_UNAVAILABLE
     │    └── NetworkTimeout          the call's deadline (the client's ``timeout``) passed
     ├── OperationFailure             the server refused the operation (bad filter, ...)
     │    ├── WriteError              a single write failed (details: index, code, errmsg)
     │    │    └── DuplicateKeyError  code 11000
     │    ├── BulkWriteError          insert_many / bulk_write: details["writeErrors"]
     │    ├── CursorNotFound          code 43 (the router forgot the cursor)
     │    ├── ExecutionTimeout        codes 50 / 262 (a server-side time limit)
     │    └── TransactionAborted      a transaction was not applied (code, failed_operation)
     ├── InvalidOperation             misuse of the client (a cursor modified after use...)
     └── ConfigurationError           bad client options

Bad arguments are ``TypeError`` / ``ValueError`` as in pymongo (e.g. ``update_one`` with
a document that has no ``$`` operator).

A failed call carries the structured ``lauradb.cluster.Error`` in the trailing metadata
key ``lauradb-error-bin`` (and responses in their field 100); ``from_rpc_error`` and
``from_error_proto`` turn it into the right class. Errors from write operations are
``WriteError`` (or ``DuplicateKeyError``) rather than plain ``OperationFailure``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bson
import grpc

from lauradb.cluster import error_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import ERROR_TRAILER

__all__ = [
    "BulkWriteError",
    "ConfigurationError",
    "ConnectionFailure",
    "CursorNotFound",
    "DuplicateKeyError",
    "ExecutionTimeout",
    "InvalidOperation",
    "LauraDBError",
    "NetworkTimeout",
    "OperationFailure",
    "ServerUnavailable",
    "TransactionAborted",
    "WriteConcernError",
    "WriteError",
    "error_class",
    "from_error_proto",
    "from_rpc_error",
    "is_retryable",
    "never_sent",
]

BULK_WRITE_ERROR_CODE = 65  # MongoDB's MultipleErrorsOccurred


def _coerce(code: int) -> ErrorCode:
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.INTERNAL_ERROR


class LauraDBError(LauraError):
    """Base of every error the client raises (pymongo's ``PyMongoError``).

    ``code`` is the protocol's stable numeric code (an ``ErrorCode``; a code this
    client does not know becomes INTERNAL_ERROR and is kept as ``details["code"]``),
    ``details`` a dict in pymongo's style (``code``, ``codeName``, ``errmsg`` and what
    the server sent), ``address`` the router that answered (or failed).
    """

    default_code = ErrorCode.INTERNAL_ERROR

    def __init__(
        self,
        message: str,
        code: int | None = None,
        details: Mapping[str, Any] | None = None,
        *,
        address: str = "",
    ) -> None:
        raw = int(self.default_code if code is None else code)
        merged = dict(details or {})
        super().__init__(_coerce(raw), message, merged)
        merged.setdefault("code", raw)
        merged.setdefault("codeName", self.code_name)
        merged.setdefault("errmsg", message)
        self.details = merged
        self.address = address

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.message, int(self.code), self.details))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={int(self.code)})"


class ConnectionFailure(LauraDBError):
    """The router could not be reached, or the connection broke during the call."""

    default_code = ErrorCode.HOST_UNREACHABLE


class ServerUnavailable(ConnectionFailure):
    """gRPC UNAVAILABLE (router down, connection reset) or a shard the router cannot
    reach (SHARD_UNAVAILABLE). Writes that are safe to retry are retried once."""


class NetworkTimeout(ConnectionFailure):
    """The call's deadline passed: its outcome is unknown (not retried: the deadline is
    the caller's budget for the whole operation)."""

    default_code = ErrorCode.EXCEEDED_TIME_LIMIT


class OperationFailure(LauraDBError):
    """The server refused the operation."""


class WriteError(OperationFailure):
    """A write failed; ``details``: ``index``, ``code``, ``codeName``, ``errmsg``."""


class DuplicateKeyError(WriteError):
    default_code = ErrorCode.DUPLICATE_KEY


class BulkWriteError(OperationFailure):
    """Some writes of ``insert_many`` / ``bulk_write`` failed. ``details``:
    ``writeErrors`` (each ``index``, ``code``, ``codeName``, ``errmsg``, ``op``),
    ``nInserted``, ``nMatched``, ``nModified``, ``nRemoved``, ``nUpserted``, ``upserted``."""

    def __init__(self, details: Mapping[str, Any], *, address: str = "") -> None:
        errors = list(details.get("writeErrors", ()))
        if errors:
            first = errors[0]
            message = (
                f"batch op errors occurred: {len(errors)} write error(s), first at index "
                f"{first.get('index')}: {first.get('errmsg')}"
            )
        else:
            message = "batch op errors occurred"
        super().__init__(message, BULK_WRITE_ERROR_CODE, details, address=address)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.details,))


class WriteConcernError(OperationFailure):
    """The write WAS applied, but its write concern was not satisfied (e.g. wtimeout).
    ``details["writeConcernError"]``: ``code``, ``codeName``, ``errmsg``,
    ``acknowledged`` (members that had it); ``result``: the write's result object."""

    default_code = ErrorCode.WRITE_CONCERN_FAILED

    @classmethod
    def of(cls, wce: Any, result: Any) -> WriteConcernError:
        code = int(wce.error.code) or int(ErrorCode.WRITE_CONCERN_FAILED)
        message = wce.error.message or "write concern not satisfied"
        err = cls(
            message,
            code,
            {
                "writeConcernError": {
                    "code": code,
                    "codeName": wce.error.code_name or _coerce(code).name,
                    "errmsg": message,
                    "acknowledged": int(wce.acknowledged),
                },
            },
        )
        err.result = result
        err.details["result"] = result
        return err

    result: Any = None


class CursorNotFound(OperationFailure):
    default_code = ErrorCode.CURSOR_NOT_FOUND


class ExecutionTimeout(OperationFailure):
    default_code = ErrorCode.EXCEEDED_TIME_LIMIT


class TransactionAborted(OperationFailure):
    """A transaction was aborted: nothing of it was applied. ``code`` says why
    (WRITE_CONFLICT, DUPLICATE_KEY, TRANSACTION_PRECONDITION_FAILED, BAD_VALUE...),
    ``failed_operation`` is the index of the operation that caused it (-1: none in
    particular), ``txn_id`` the transaction id of the last attempt."""

    default_code = ErrorCode.NO_SUCH_TRANSACTION

    @classmethod
    def of(cls, err: LauraDBError, txn_id: str) -> TransactionAborted:
        details = dict(err.details)
        details.setdefault("txn_id", txn_id)
        details.setdefault("failed_operation", -1)
        return cls(err.message, int(details.get("code", int(err.code))), details,
                   address=err.address)  # fmt: skip

    @property
    def failed_operation(self) -> int:
        value = self.details.get("failed_operation", -1)
        return value if isinstance(value, int) else -1

    @property
    def txn_id(self) -> str:
        return str(self.details.get("txn_id", ""))


class InvalidOperation(LauraDBError):
    default_code = ErrorCode.ILLEGAL_OPERATION


class ConfigurationError(LauraDBError):
    default_code = ErrorCode.BAD_VALUE


_UNAVAILABLE_CODES = {
    int(ErrorCode.HOST_UNREACHABLE),
    int(ErrorCode.SHARD_UNAVAILABLE),
}
_TIME_LIMIT_CODES = {int(ErrorCode.EXCEEDED_TIME_LIMIT), int(ErrorCode.MAX_TIME_MS_EXPIRED)}


def error_class(code: int, *, write: bool = False) -> type[LauraDBError]:
    """The exception class for a server error code (``write``: raised by a write)."""
    if code == ErrorCode.DUPLICATE_KEY:
        return DuplicateKeyError
    if code in _UNAVAILABLE_CODES:
        return ServerUnavailable
    if code == ErrorCode.CURSOR_NOT_FOUND:
        return CursorNotFound
    if code in _TIME_LIMIT_CODES:
        return ExecutionTimeout
    return WriteError if write else OperationFailure


def _decode_details(data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    try:
        return dict(bson.decode(data))
    except Exception:  # details are best effort
        return {}


def from_error_proto(
    err: error_pb2.Error, *, write: bool = False, address: str = "", index: int | None = None
) -> LauraDBError:
    """The exception for an ``Error`` message (a response's field 100 or the trailer)."""
    details = _decode_details(err.details)
    details["code"] = err.code
    if err.code_name:
        details["codeName"] = err.code_name
    details["errmsg"] = err.message
    if index is not None:
        details["index"] = index
    cls = error_class(err.code, write=write)
    return cls(err.message, err.code, details, address=address)


def _trailer_error(exc: grpc.RpcError) -> error_pb2.Error | None:
    trailers: Any = None
    try:
        trailers = exc.trailing_metadata()  # type: ignore[attr-defined]
    except Exception:
        return None
    for key, value in trailers or ():
        if key == ERROR_TRAILER and isinstance(value, bytes):
            try:
                return error_pb2.Error.FromString(value)
            except Exception:
                return None
    return None


def _status_of(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    try:
        status = exc.code()  # type: ignore[attr-defined]
    except Exception:
        status = grpc.StatusCode.UNKNOWN
    try:
        text = exc.details() or ""  # type: ignore[attr-defined]
    except Exception:
        text = ""
    return status, str(text)


_RESET_MARKERS = ("connection reset", "socket closed", "broken pipe", "rst_stream", "goaway")
_NOT_SENT_MARKERS = (
    "failed to connect",
    "connection refused",
    "dns resolution failed",
    "name resolution",
    "no route to host",
)


def from_rpc_error(exc: grpc.RpcError, *, write: bool = False, address: str = "") -> LauraDBError:
    """The exception for a failed gRPC call: the trailer's ``Error`` when the router sent
    one, else derived from the status (UNAVAILABLE and resets -> ServerUnavailable,
    DEADLINE_EXCEEDED -> NetworkTimeout)."""
    status, text = _status_of(exc)
    proto = _trailer_error(exc)
    if proto is not None and proto.code:
        return from_error_proto(proto, write=write, address=address)
    where = f"{address}: " if address else ""
    details = {"grpcStatus": status.name}
    lowered = text.lower()
    if status == grpc.StatusCode.UNAVAILABLE or any(m in lowered for m in _RESET_MARKERS):
        return ServerUnavailable(
            f"{where}router unavailable: {text or status.name}", details=details, address=address
        )
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return NetworkTimeout(
            f"{where}deadline exceeded: {text or status.name}", details=details, address=address
        )
    fallback = {
        grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.BAD_VALUE,
        grpc.StatusCode.NOT_FOUND: ErrorCode.NAMESPACE_NOT_FOUND,
        grpc.StatusCode.UNIMPLEMENTED: ErrorCode.NOT_IMPLEMENTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorCode.MESSAGE_TOO_LARGE,
        grpc.StatusCode.CANCELLED: ErrorCode.OPERATION_FAILED,
    }.get(status, ErrorCode.INTERNAL_ERROR)
    cls = error_class(int(fallback), write=write)
    return cls(f"{where}{status.name}: {text}", int(fallback), details, address=address)


def is_retryable(err: BaseException) -> bool:
    """A retryable-write / retryable-read error: the router was unavailable or the
    connection was reset. Deadlines are not retried (the caller's budget is spent)."""
    return isinstance(err, ServerUnavailable)


def never_sent(err: BaseException) -> bool:
    """The request certainly never reached a router (connection refused, no such host):
    any operation, even a non-retryable write, may go to the next router."""
    if not isinstance(err, ServerUnavailable) or err.details.get("grpcStatus") is None:
        return False
    text = err.message.lower()
    return any(m in text for m in _NOT_SENT_MARKERS)
