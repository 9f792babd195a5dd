"""Decoding and encoding BSON at process boundaries, with clean errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bson
from bson.errors import BSONError

from lauradb.errors import ErrorCode, LauraError

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
MAX_NESTING = 100


def _depth(value: Any, level: int) -> int:
    if level > MAX_NESTING:
        return level
    if isinstance(value, Mapping):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def decode_document(data: bytes, what: str = "document", *, check_depth: bool = False) -> dict[str, Any]:
    """Decode one BSON document; malformed or oversized input -> INVALID_BSON etc."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise LauraError(
            ErrorCode.BSON_OBJECT_TOO_LARGE, f"{what} is {len(data)} bytes, over the 16 MiB limit"
        )
    try:
        doc: dict[str, Any] = bson.decode(data)
    except (BSONError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise LauraError(ErrorCode.INVALID_BSON, f"{what} is not valid BSON: {exc}") from None
    if check_depth and _depth(doc, 1) > MAX_NESTING:
        raise LauraError(
            ErrorCode.NESTING_TOO_DEEP, f"{what} nests deeper than {MAX_NESTING} levels"
        )
    return doc


def decode_optional(data: bytes, what: str = "document") -> dict[str, Any]:
    """Empty bytes mean an empty document (e.g. no filter, no projection)."""
    if not data:
        return {}
    return decode_document(data, what)


def encode_document(doc: Mapping[str, Any]) -> bytes:
    """A stored/returned document: a top-level ``_id`` goes first (as ``bson.encode``,
    and MongoDB, do). Use ``encode_ordered`` for key patterns, sorts and bounds."""
    try:
        return bson.encode(doc)
    except (BSONError, TypeError, ValueError, OverflowError) as exc:
        raise LauraError(ErrorCode.BAD_VALUE, f"cannot encode document: {exc}") from None


def encode_ordered(doc: Mapping[str, Any]) -> bytes:
    """BSON bytes with the keys in the order given. For index key patterns, sort
    specifications and chunk bounds, where ``{"n": -1, "_id": 1}`` must not become
    ``{"_id": 1, "n": -1}`` (``bson.encode`` moves a top-level ``_id`` first): the
    document is encoded nested, then cut out of its parent."""
    try:
        outer = bson.encode({"k": doc})
    except (BSONError, TypeError, ValueError, OverflowError) as exc:
        raise LauraError(ErrorCode.BAD_VALUE, f"cannot encode document: {exc}") from None
    # int32 length, type byte 0x03, "k\0", the embedded document, the parent's 0x00
    return outer[7:-1]
