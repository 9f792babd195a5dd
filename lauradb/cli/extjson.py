"""Extended JSON in and out: arguments parse with ``bson.json_util``, output is relaxed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson import json_util

from lauradb.errors import ErrorCode, LauraError


class UsageError(Exception):
    """A bad command-line argument (exit status 2)."""


def parse_document(text: str, what: str) -> dict[str, Any]:
    """A JSON object argument (extended JSON: ``{"$oid": ...}``, ``{"$date": ...}`` work)."""
    try:
        value = json_util.loads(text)
    except Exception as exc:  # json/bson raise assorted types
        raise UsageError(f"FAILED_TO_PARSE: {what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"FAILED_TO_PARSE: {what} must be a JSON object, got {text!r}")
    return value


def parse_line(text: str) -> dict[str, Any]:
    """One JSONL document; a LauraError (FAILED_TO_PARSE) when it is not an object."""
    try:
        value = json_util.loads(text)
    except Exception as exc:
        raise LauraError(ErrorCode.FAILED_TO_PARSE, f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise LauraError(ErrorCode.FAILED_TO_PARSE, "each line must be a JSON object")
    return value


def dumps(doc: Mapping[str, Any], indent: int | None = 2) -> str:
    """Relaxed extended JSON (pretty-printed unless ``indent`` is None)."""
    out: str = json_util.dumps(doc, json_options=json_util.RELAXED_JSON_OPTIONS, indent=indent)
    return out
