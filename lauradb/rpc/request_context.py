"""The id of the request being handled, for log lines.

``rpc_method`` binds it for the duration of each RPC: the request's ``request_id``
field when it has a non-empty one, else a generated short id. ``RequestIdFilter``
(installed by ``setup_logging``) copies it onto every log record emitted meanwhile:
``record.request_id`` (the JSON formatter's field) and ``record.rid_tag`` (the text
formatter's `` [rid=...]``, empty outside a request).
"""

from __future__ import annotations

import contextvars
import logging
import random
import secrets
from typing import Any

__all__ = [
    "RequestIdFilter",
    "bind_request_id",
    "current_request_id",
    "new_request_id",
    "request_id_of",
    "reset_request_id",
]

_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar(
    "lauradb_request_id", default=""
)

MAX_REQUEST_ID_CHARS = 64


_ids = random.Random(secrets.randbits(64))  # ids only correlate log lines: no need
# for the OS's randomness (``secrets`` costs a system call per request)


def new_request_id() -> str:
    """A short random id (12 hex digits)."""
    return f"{_ids.getrandbits(48):012x}"


def request_id_of(request: Any) -> str:
    """The request's own ``request_id`` (a protobuf string field), or a new id."""
    rid = getattr(request, "request_id", "")
    if isinstance(rid, str) and rid:
        return rid[:MAX_REQUEST_ID_CHARS]
    return new_request_id()


def current_request_id() -> str:
    """The id of the request handled by this task ("" outside a request)."""
    return _REQUEST_ID.get()


def bind_request_id(request_id: str) -> contextvars.Token[str]:
    """Make ``request_id`` current; pass the token to ``reset_request_id`` after."""
    return _REQUEST_ID.set(request_id)


def reset_request_id(token: contextvars.Token[str]) -> None:
    _REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (when inside a request) and ``rid_tag`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = getattr(record, "request_id", None) or _REQUEST_ID.get()
        if rid:
            record.request_id = rid
            record.rid_tag = f" [rid={rid}]"
        else:
            record.rid_tag = ""
        return True
