"""The error model on the wire: LauraError <-> Error message <-> gRPC status.

A failed call carries a gRPC status (mapped from the error code), the message as the
status details, and the serialized ``Error`` in the trailing metadata key
``lauradb-error-bin`` so that clients get the stable numeric code back.
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
from grpc import aio

from lauradb.cluster import error_pb2
from lauradb.errors import ErrorCode, LauraError

ERROR_TRAILER = "lauradb-error-bin"

_STATUS_FALLBACK: dict[grpc.StatusCode, ErrorCode] = {
    grpc.StatusCode.UNAVAILABLE: ErrorCode.HOST_UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorCode.EXCEEDED_TIME_LIMIT,
    grpc.StatusCode.NOT_FOUND: ErrorCode.NAMESPACE_NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.BAD_VALUE,
    grpc.StatusCode.UNIMPLEMENTED: ErrorCode.NOT_IMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorCode.MESSAGE_TOO_LARGE,
    grpc.StatusCode.CANCELLED: ErrorCode.OPERATION_FAILED,
}


def to_proto(err: LauraError) -> error_pb2.Error:
    details = b""
    if err.details:
        import bson

        try:
            details = bson.encode(err.details)
        except Exception:  # details are best effort, never fatal
            details = b""
    return error_pb2.Error(
        code=int(err.code), code_name=err.code_name, message=err.message, details=details
    )


def from_proto(msg: error_pb2.Error) -> LauraError:
    details: dict[str, Any] = {}
    if msg.details:
        import bson

        try:
            details = dict(bson.decode(msg.details))
        except Exception:
            details = {}
    try:
        code = ErrorCode(msg.code)
    except ValueError:
        code = ErrorCode.INTERNAL_ERROR
    return LauraError(code, msg.message, details)


async def abort(context: aio.ServicerContext[Any, Any], err: LauraError) -> NoReturn:
    """End the call with ``err``: gRPC status + Error in the trailers."""
    context.set_trailing_metadata(((ERROR_TRAILER, to_proto(err).SerializeToString()),))
    await context.abort(err.grpc_status, str(err))
    raise AssertionError("unreachable")  # abort raises


def from_rpc_error(exc: grpc.RpcError, *, target: str = "") -> LauraError:
    """The LauraError a failed call carried, or one derived from its status."""
    trailers: Any = None
    try:
        trailers = exc.trailing_metadata()  # type: ignore[attr-defined]
    except Exception:
        trailers = None
    for key, value in trailers or ():
        if key == ERROR_TRAILER and isinstance(value, bytes):
            try:
                return from_proto(error_pb2.Error.FromString(value))
            except Exception:
                break
    status = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
    details = exc.details() if hasattr(exc, "details") else ""  # type: ignore[attr-defined]
    code = _STATUS_FALLBACK.get(status, ErrorCode.INTERNAL_ERROR)
    where = f"{target}: " if target else ""
    return LauraError(code, f"{where}{status.name}: {details}")
