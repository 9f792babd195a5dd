"""Sort specifications compiled to byte-string sort keys (MongoDB sort order).

``compile_sort(spec)`` returns a function ``doc -> bytes``; plain ``bytes`` order
is the sort order, so the router can ``heapq.merge(..., key=...)`` shard results.

MongoDB rules implemented here:

* a missing field sorts as null (missing and null tie);
* an array field sorts by its smallest element ascending and its largest element
  descending; an empty array sorts before null (and after MinKey) in both
  directions' "small" end, i.e. first ascending and last descending;
* a dotted path through arrays of subdocuments collects the values of every
  element (an element lacking the field contributes null); a numeric path
  component indexes into an array.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from bson.decimal128 import Decimal128

from lauradb.bsonkit.keys import UNDEFINED, encode_value, invert
from lauradb.errors import ErrorCode, LauraError

__all__ = ["SortKeyFn", "compile_sort", "sort_documents", "validate_sort"]

SortKeyFn = Callable[[Mapping[str, Any]], bytes]
DocT = TypeVar("DocT", bound=Mapping[str, Any])

_NULL = encode_value(None)
_ARRAYS = (list, tuple)
_EMPTY_ARRAY = encode_value(UNDEFINED)


def _bad(message: str) -> LauraError:
    return LauraError(ErrorCode.BAD_VALUE, message)


def _direction(field: str, value: Any) -> int:
    if isinstance(value, bool):
        raise _bad(f"$sort key ordering must be 1 (for ascending) or -1 (for descending): {field}")
    if isinstance(value, (int, float)):
        if value == 1:
            return 1
        if value == -1:
            return -1
    elif isinstance(value, Decimal128):
        d = value.to_decimal()
        if d == 1:
            return 1
        if d == -1:
            return -1
    elif isinstance(value, Mapping):
        if "$meta" in value:
            raise LauraError(
                ErrorCode.NOT_IMPLEMENTED, f"$meta sort is not supported (field {field!r})"
            )
        raise _bad(f"Illegal key in $sort specification: {field}: {dict(value)!r}")
    raise _bad(f"$sort key ordering must be 1 (for ascending) or -1 (for descending): {field}")


def validate_sort(spec: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``[(path, 1 | -1), ...]`` for a sort document; an empty spec means no sort."""
    if not isinstance(spec, Mapping):
        raise _bad(f"sort specification must be a document, not {type(spec).__name__}")
    out: list[tuple[str, int]] = []
    for field, value in spec.items():
        if not isinstance(field, str) or not field:
            raise _bad("sort field names must be non-empty strings")
        if field.startswith("$"):
            raise _bad(f"FieldPath field names may not start with '$': {field!r}")
        if "" in field.split("."):
            raise _bad(f"FieldPath must not contain an empty component: {field!r}")
        out.append((field, _direction(field, value)))
    return out


def _collect(value: Any, parts: tuple[str, ...], i: int, out: list[bytes]) -> None:
    """Append the encodings of the sort-key candidates reached by ``parts[i:]``."""
    if i == len(parts):
        if isinstance(value, _ARRAYS):
            if value:
                out.extend([encode_value(x) for x in value])
            else:
                out.append(_EMPTY_ARRAY)
        else:
            out.append(encode_value(value))
        return
    name = parts[i]
    if isinstance(value, Mapping):
        if name in value:
            _collect(value[name], parts, i + 1, out)
        else:
            out.append(_NULL)
        return
    if isinstance(value, _ARRAYS):
        if name.isdigit() and name.isascii() and (name == "0" or name[0] != "0"):
            index = int(name)
            if index < len(value):
                _collect(value[index], parts, i + 1, out)
            else:
                out.append(_NULL)
            return
        before = len(out)
        for element in value:
            if isinstance(element, Mapping):
                _collect(element, parts, i, out)
        if len(out) == before:
            out.append(_NULL)
        return
    out.append(_NULL)


def _field_key(path: str, direction: int) -> Callable[[Mapping[str, Any]], bytes]:
    parts = tuple(path.split("."))
    descending = direction < 0

    if len(parts) == 1:
        name = parts[0]

        def top_level(doc: Mapping[str, Any]) -> bytes:
            value = doc.get(name, None)
            if isinstance(value, _ARRAYS):
                if not value:
                    enc = _EMPTY_ARRAY
                else:
                    encs = [encode_value(x) for x in value]
                    enc = max(encs) if descending else min(encs)
            else:
                enc = encode_value(value)
            return invert(enc) if descending else enc

        return top_level

    def dotted(doc: Mapping[str, Any]) -> bytes:
        out: list[bytes] = []
        _collect(doc, parts, 0, out)
        if descending:
            return invert(max(out))
        return min(out)

    return dotted


def compile_sort(spec: Mapping[str, Any]) -> SortKeyFn:
    """A function mapping a document to its sort key (compare keys as plain bytes)."""
    fields = validate_sort(spec)
    if not fields:
        return lambda doc: b""
    fns = [_field_key(path, direction) for path, direction in fields]
    if len(fns) == 1:
        return fns[0]

    def compound(doc: Mapping[str, Any]) -> bytes:
        return b"".join([fn(doc) for fn in fns])

    return compound


def sort_documents(docs: Iterable[DocT], spec: Mapping[str, Any]) -> list[DocT]:
    """``docs`` sorted by ``spec`` (stable: ties keep their input order)."""
    key = compile_sort(spec)
    return sorted(docs, key=key)
