"""Validation of database and collection names (MongoDB's rules)."""

from __future__ import annotations

from lauradb.errors import ErrorCode, LauraError

MAX_DATABASE_NAME = 63
MAX_NAMESPACE_BYTES = 255
_BAD_DB_CHARS = frozenset('/\\. "$\x00*<>:|?')


def validate_database_name(name: str) -> str:
    if not name:
        raise LauraError(ErrorCode.INVALID_NAMESPACE, "database name cannot be empty")
    if len(name) > MAX_DATABASE_NAME:
        raise LauraError(
            ErrorCode.INVALID_NAMESPACE,
            f"database name '{name}' is longer than {MAX_DATABASE_NAME} characters",
        )
    bad = sorted(set(name) & _BAD_DB_CHARS)
    if bad:
        raise LauraError(
            ErrorCode.INVALID_NAMESPACE,
            f"database name '{name}' contains an invalid character {bad[0]!r}",
        )
    return name


def validate_collection_name(database: str, name: str) -> str:
    if not name:
        raise LauraError(ErrorCode.INVALID_NAMESPACE, "collection name cannot be empty")
    if "\x00" in name or "$" in name:
        raise LauraError(
            ErrorCode.INVALID_NAMESPACE, f"collection name '{name}' contains '$' or a NUL"
        )
    if len(f"{database}.{name}".encode()) > MAX_NAMESPACE_BYTES:
        raise LauraError(
            ErrorCode.INVALID_NAMESPACE,
            f"namespace '{database}.{name}' is longer than {MAX_NAMESPACE_BYTES} bytes",
        )
    return name


def split_namespace(namespace: str) -> tuple[str, str]:
    database, _, collection = namespace.partition(".")
    return database, collection
