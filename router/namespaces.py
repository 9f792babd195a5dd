"""Request validation at the router's door: namespaces and BSON byte fields."""

from __future__ import annotations

import functools
from typing import Any

from lauradb.bsonkit.codec import decode_document, decode_optional
from lauradb.errors import ErrorCode, LauraError

__all__ = ["check_namespace", "decode_field", "decode_required", "namespace"]

_BAD_DB_CHARS = frozenset('/\\. "$\0')
MAX_NAMESPACE_BYTES = 255


@functools.lru_cache(maxsize=4096)
def check_namespace(database: str, collection: str) -> str:
    """Validate ``database``/``collection`` names; return ``"db.coll"`` (valid ones cached)."""
    if not database:
        raise LauraError(ErrorCode.INVALID_NAMESPACE, "database name cannot be empty")
    if not collection:
        raise LauraError(ErrorCode.INVALID_NAMESPACE, "collection name cannot be empty")
    bad = _BAD_DB_CHARS.intersection(database)
    if bad:
        raise LauraError(
            ErrorCode.INVALID_NAMESPACE,
            f"database name {database!r} contains an invalid character {sorted(bad)[0]!r}",
        )
    if "$" in collection or "\0" in collection:
        raise LauraError(
            ErrorCode.INVALID_NAMESPACE,
            f"collection name {collection!r} may not contain '$' or a null character",
        )
    if collection.startswith("."):
        raise LauraError(
            ErrorCode.INVALID_NAMESPACE, f"collection name {collection!r} may not start with '.'"
        )
    ns = f"{database}.{collection}"
    if len(ns.encode()) > MAX_NAMESPACE_BYTES:
        raise LauraError(
            ErrorCode.INVALID_NAMESPACE, f"namespace {ns[:60]!r}... is longer than 255 bytes"
        )
    return ns


def namespace(database: str, collection: str) -> str:
    return f"{database}.{collection}"


def decode_field(data: bytes, what: str) -> dict[str, Any]:
    """An optional BSON document field (empty bytes -> ``{}``)."""
    return decode_optional(data, what)


def decode_required(data: bytes, what: str) -> dict[str, Any]:
    """A BSON document field that must be present."""
    if not data:
        raise LauraError(ErrorCode.FAILED_TO_PARSE, f"{what} is required")
    return decode_document(data, what)
