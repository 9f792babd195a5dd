"""Update paths: parsing, the order updates are applied in, and error-message helpers.

An update path such as ``"a.$[i].b.0"`` is split into components. Three kinds of
component are special: the positional ``$`` (the array index the query matched),
``$[]`` (every element of an array) and ``$[<id>]`` (the elements an array filter
selects). Every other component is a field name, or an array index when it meets an
array.

MongoDB (5.0+) applies the fields of an update in lexicographic order, numeric
components in numeric order (``child_order_key``), so ``{$set: {z: 1, a: 1}}`` on
``{}`` gives ``{a: 1, z: 1}`` and ``{$set: {"a.10": 1, "a.9": 1}}`` pads correctly.
"""

from __future__ import annotations

import datetime
import functools
import re
from typing import Any, Final

from bson.binary import Binary
from bson.code import Code
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from lauradb.errors import ErrorCode, LauraError

POSITIONAL: Final = "$"
ALL_ELEMENTS: Final = ""  # the identifier of ``$[]``

# Padding an array to reach a far index is capped, like MongoDB (kMaxPaddingAllowed).
MAX_PADDING: Final = 1_500_000

_IDENTIFIER = re.compile(r"[a-z][a-zA-Z0-9]*\Z")
_CANONICAL_INDEX = re.compile(r"(?:0|[1-9][0-9]*)\Z")


def is_positional(part: str) -> bool:
    return part == POSITIONAL


def is_array_filter_part(part: str) -> bool:
    """``$[]`` or ``$[<identifier>]``."""
    return len(part) >= 3 and part.startswith("$[") and part.endswith("]")


def array_filter_identifier(part: str) -> str:
    """``"$[i]"`` -> ``"i"``; ``"$[]"`` -> ``""``."""
    return part[2:-1]


def is_valid_identifier(name: str) -> bool:
    """Array filter identifiers: a lowercase letter, then letters and digits."""
    return _IDENTIFIER.match(name) is not None


def array_index(part: str) -> int | None:
    """The array index a component names (``"3"`` -> 3), or None (``"b"``, ``"03"``)."""
    if _CANONICAL_INDEX.match(part) is None:
        return None
    return int(part)


def split_update_path(path: Any, operator: str) -> tuple[str, ...]:
    """Split and validate one update path (the field name under an operator).

    Checks MongoDB's rules: no empty path, no empty component, at most one positional
    ``$`` and never first, no ``$[...]`` first, no other ``$``-prefixed component.
    """
    if not isinstance(path, str):
        raise LauraError(ErrorCode.FAILED_TO_PARSE, f"update paths must be strings, not {path!r}")
    if path == "":
        raise LauraError(ErrorCode.EMPTY_FIELD_NAME, "An empty update path is not valid.")
    parts = tuple(path.split("."))
    positional_count = 0
    for i, part in enumerate(parts):
        if part == "":
            raise LauraError(
                ErrorCode.EMPTY_FIELD_NAME,
                f"The update path '{path}' contains an empty field name, which is not allowed.",
            )
        if part == POSITIONAL:
            positional_count += 1
            if i == 0:
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    "Cannot have positional (i.e. '$') element in the first position in "
                    f"path '{path}'",
                )
        elif is_array_filter_part(part):
            if i == 0:
                raise LauraError(
                    ErrorCode.BAD_VALUE,
                    "Cannot have array filter identifier (i.e. '$[<id>]') element in the "
                    f"first position in path '{path}'",
                )
        elif part.startswith("$"):
            raise LauraError(
                ErrorCode.DOLLAR_PREFIXED_FIELD_NAME,
                f"The dollar ($) prefixed field '{part}' in '{path}' is not valid for storage "
                f"(in {operator}).",
            )
    if positional_count > 1:
        raise LauraError(
            ErrorCode.BAD_VALUE,
            f"Too many positional (i.e. '$') elements found in path '{path}'",
        )
    return parts


def _is_numberish(name: str) -> bool:
    return bool(name) and name[0].isdigit() and not (name[0] == "0" and len(name) > 1)


def _compare_child_names(a: str, b: str) -> int:
    """MongoDB's ``cmpPathsAndArrayIndexes``: numbers by value, the rest as strings."""
    if _is_numberish(a) and _is_numberish(b):
        if len(a) != len(b):
            return -1 if len(a) < len(b) else 1
        # Same length: digit-by-digit order equals string order for plain numbers and is
        # a consistent order for anything else (e.g. "1a").
    # Code point order is UTF-8 byte order (std::string's order in MongoDB).
    if a < b:
        return -1
    return 1 if a > b else 0


child_order_key = functools.cmp_to_key(_compare_child_names)


def sort_child_names(names: list[str]) -> list[str]:
    return sorted(names, key=child_order_key)


class Blocked:
    """Passed down the update tree in place of a value where a path cannot exist.

    ``{$set: {"a.b": 1}}`` on ``{a: 5}``: ``a`` cannot hold a field ``b``. Leaves that
    create paths raise PATH_NOT_VIABLE; ``$unset`` ignores it. ``field``/``value`` are
    the blocking element and ``depth`` the number of path components leading to it.
    """

    __slots__ = ("depth", "field", "value")

    def __init__(self, field: str, value: Any, depth: int) -> None:
        self.field = field
        self.value = value
        self.depth = depth

    def cannot_create(self, path: tuple[str, ...]) -> LauraError:
        part = path[self.depth] if self.depth < len(path) else path[-1]
        return LauraError(
            ErrorCode.PATH_NOT_VIABLE,
            f"Cannot create field '{part}' in element {{{self.field}: {describe(self.value)}}}",
        )

    def cannot_traverse(self, path: tuple[str, ...]) -> LauraError:
        part = path[self.depth] if self.depth < len(path) else path[-1]
        return LauraError(
            ErrorCode.PATH_NOT_VIABLE,
            f"Cannot use the part ({part}) of ({'.'.join(path)}) to traverse the element "
            f"({{{self.field}: {describe(self.value)}}})",
        )


# ----------------------------------------------------------------------------------
# Error-message helpers: MongoDB-like renderings of values and type names.


def type_name(value: Any) -> str:
    """MongoDB's name for the BSON type of ``value`` (as in its error messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Int64):
        return "long"
    if isinstance(value, int):
        return "int" if -(2**31) <= value < 2**31 else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, Decimal128):
        return "decimal"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, (bytes, Binary)):
        return "binData"
    if isinstance(value, ObjectId):
        return "objectId"
    if isinstance(value, datetime.datetime):
        return "date"
    if isinstance(value, Timestamp):
        return "timestamp"
    if isinstance(value, (Regex, re.Pattern)):
        return "regex"
    if isinstance(value, Code):
        return "javascript"
    if isinstance(value, MinKey):
        return "minKey"
    if isinstance(value, MaxKey):
        return "maxKey"
    return type(value).__name__


def describe(value: Any, depth: int = 0) -> str:
    """A short shell-like rendering of a value for error messages."""
    if depth > 3:
        return "..."
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(int(value))
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{k}: {describe(v, depth + 1)}" for k, v in list(value.items())[:20]]
        return "{ " + ", ".join(items) + " }"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        return "[ " + ", ".join(describe(v, depth + 1) for v in list(value)[:20]) + " ]"
    if isinstance(value, ObjectId):
        return f"ObjectId('{value}')"
    if isinstance(value, Decimal128):
        return f'NumberDecimal("{value}")'
    if isinstance(value, datetime.datetime):
        return f"new Date({value.isoformat()})"
    return repr(value)


def describe_id(doc: Any) -> str:
    """``_id: 1`` as MongoDB prints it in write errors, or ``no id``."""
    if isinstance(doc, dict) and "_id" in doc:
        return f"_id: {describe(doc['_id'])}"
    return "no id"
