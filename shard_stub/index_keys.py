"""Secondary index definitions and the index keys of a document.

An index is a list of ``(path, 1 | -1)``; its key for one combination of field
values is ``keys.encode_key(values, directions)`` (memcmp order == index order).

Which values a document contributes for one path mirrors the query matcher
(``lauradb.query.paths.iter_path_candidates``), so that index bounds derived from a
predicate always cover every document the predicate can match:

* a missing field (or a scalar met before the end of the path) is indexed as null;
* an array at the end of the path contributes each element (multikey); an empty
  array contributes ``UNDEFINED`` (MongoDB indexes ``undefined``); the array
  itself is also stored as an *auxiliary* entry, because the matcher compares
  ``{a: [1, 2]}`` against the whole array too;
* arrays of subdocuments along the path are traversed (each element that is a
  document), a numeric component also takes the element at that position.

Auxiliary entries are only for lookups: unique indexes ignore them (MongoDB's
unique keys are the elements, not the arrays). A document whose traversal met an
array makes the index *multikey*; a compound index accepts at most one array field
per document ("cannot index parallel arrays"). A sparse index skips documents that
have none of its fields.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64

from lauradb.bsonkit.keys import UNDEFINED, decode_key, encode_key
from lauradb.errors import ErrorCode, LauraError
from lauradb.query.common import MISSING
from lauradb.query.paths import Parts, array_index, is_array, is_document

ID_INDEX_NAME = "_id_"
MAX_ENTRIES_PER_DOCUMENT = 100_000

IndexFields = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class IndexDef:
    """One secondary index of a collection as the shard stores it."""

    name: str
    fields: IndexFields
    unique: bool = False
    sparse: bool = False
    table: str = ""
    multikey: bool = False
    parts: tuple[Parts, ...] = field(init=False, repr=False, compare=False)
    directions: tuple[int, ...] = field(init=False, repr=False, compare=False)
    top_level: bool = field(init=False, repr=False, compare=False)  # no dotted path

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(tuple(p.split(".")) for p, _ in self.fields))
        object.__setattr__(self, "directions", tuple(d for _, d in self.fields))
        object.__setattr__(self, "top_level", all(len(p) == 1 for p in self.parts))

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self.fields)

    def keys_document(self) -> dict[str, int]:
        return dict(self.fields)

    def same_spec(self, other: IndexDef) -> bool:
        """Same keys (in order) and options."""
        return (self.fields, self.unique, self.sparse) == (
            other.fields,
            other.unique,
            other.sparse,
        )

    def fields_json(self) -> str:
        return json.dumps([[p, d] for p, d in self.fields])


def fields_from_json(text: str) -> IndexFields:
    return tuple((str(p), int(d)) for p, d in json.loads(text))


def _direction(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Int64, float)):
        if value == 1:
            return 1
        if value == -1:
            return -1
        return None
    if isinstance(value, Decimal128):
        d = value.to_decimal()
        if d == 1:
            return 1
        if d == -1:
            return -1
    return None


def parse_index_keys(keys: Mapping[str, Any]) -> IndexFields:
    """``{field: 1 | -1, ...}`` -> fields; BAD_VALUE "bad index key pattern" otherwise."""
    if not isinstance(keys, Mapping) or not keys:
        raise LauraError(
            ErrorCode.BAD_VALUE, "bad index key pattern: the index keys must be a non-empty document"
        )
    out: list[tuple[str, int]] = []
    for name, value in keys.items():
        if not isinstance(name, str) or not name:
            raise LauraError(ErrorCode.BAD_VALUE, "bad index key pattern: empty field name")
        if name.startswith("$") or "" in name.split("."):
            raise LauraError(
                ErrorCode.BAD_VALUE, f"bad index key pattern {dict(keys)!r}: invalid field {name!r}"
            )
        direction = _direction(value)
        if direction is None:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"bad index key pattern {dict(keys)!r}: values must be 1 or -1, "
                f"not {value!r} for {name!r}",
            )
        out.append((name, direction))
    return tuple(out)


def default_index_name(fields: Sequence[tuple[str, int]]) -> str:
    """MongoDB's derived name: ``{a: 1, b: -1}`` -> ``"a_1_b_-1"``."""
    return "_".join(f"{p}_{d}" for p, d in fields)


def is_id_index(fields: IndexFields) -> bool:
    return fields == (("_id", 1),)


# --------------------------------------------------------------------------- values


class _FieldValues:
    """What one document contributes for one path."""

    __slots__ = ("aux", "multikey", "present", "real")

    def __init__(self) -> None:
        self.real: list[Any] = []
        self.aux: list[Any] = []
        self.multikey = False
        self.present = False


def _walk(doc: Any, parts: Parts, start: int) -> tuple[Any, int]:
    """Follow subdocuments from ``parts[start]`` (``paths._walk``): (value, index)."""
    n = len(parts)
    cur = doc
    i = start
    while True:
        if not is_document(cur):
            return MISSING, i
        value = cur.get(parts[i], MISSING)
        if is_document(value):
            if i + 1 == n:
                return value, i
            cur = value
            i += 1
            continue
        if i + 1 < n and not is_array(value):
            return MISSING, i
        return value, i


def _collect(doc: Any, parts: Parts, start: int, out: _FieldValues) -> None:
    value, i = _walk(doc, parts, start)
    if not is_array(value):
        out.real.append(value)
        return
    out.multikey = True
    _collect_array(value, parts, i + 1, out)


def _collect_array(arr: Any, parts: Parts, rest: int, out: _FieldValues) -> None:
    n = len(parts)
    if rest == n:
        if arr:
            out.real.extend(arr)
        else:
            out.real.append(UNDEFINED)
        out.aux.append(arr)
        return
    idx = array_index(parts[rest])
    last = rest + 1 == n
    for i, elt in enumerate(arr):
        if is_document(elt):
            _collect(elt, parts, rest, out)
            if i == idx:
                if last:
                    out.real.append(elt)
                else:
                    _collect(elt, parts, rest + 1, out)
        elif i == idx:
            if last:
                out.real.append(elt)
            elif is_array(elt):
                _collect_array(elt, parts, rest + 1, out)


def field_values(doc: Mapping[str, Any], parts: Parts) -> _FieldValues:
    """The values ``doc`` contributes for ``parts`` (MISSING stays MISSING here)."""
    out = _FieldValues()
    _collect(doc, parts, 0, out)
    out.present = any(v is not MISSING for v in out.real) or bool(out.aux)
    if not out.real and not out.aux:
        out.real.append(MISSING)  # e.g. {a: [5]} for "a.b": indexed as null
    return out


def distinct_values(doc: Mapping[str, Any], parts: Parts) -> list[Any]:
    """The values ``distinct`` collects from ``doc`` (array elements, no missing)."""
    out = _FieldValues()
    _collect(doc, parts, 0, out)
    return [v for v in out.real if v is not MISSING and v is not UNDEFINED]


@dataclass
class IndexEntries:
    """A document's entries in one index: encoded key -> auxiliary?"""

    keys: dict[bytes, bool]
    multikey: bool


def _null(v: Any) -> Any:
    return None if v is MISSING else v


def index_entries(doc: Mapping[str, Any], index: IndexDef) -> IndexEntries | None:
    """The document's entries in ``index``; None when a sparse index skips it.

    BAD_VALUE "cannot index parallel arrays" when two fields of a compound index
    are arrays in this document.
    """
    if index.top_level:  # the common case: top-level fields without arrays
        values = [doc.get(name, MISSING) for name, _ in index.fields]
        if not any(type(v) is list or isinstance(v, tuple) for v in values):
            if index.sparse and all(v is MISSING for v in values):
                return None
            key = encode_key([_null(v) for v in values], index.directions)
            return IndexEntries({key: False}, False)
    per_field = [field_values(doc, parts) for parts in index.parts]
    if index.sparse and not any(fv.present for fv in per_field):
        return None
    arrays = [p for p, fv in zip(index.paths, per_field, strict=True) if fv.multikey]
    if len(arrays) > 1:
        raise LauraError(
            ErrorCode.BAD_VALUE,
            f"cannot index parallel arrays [{arrays[1]}] [{arrays[0]}] "
            f"(index {index.name!r})",
        )
    directions = index.directions
    keys: dict[bytes, bool] = {}
    if len(per_field) == 1:
        fv = per_field[0]
        for v in fv.real:
            keys[encode_key([_null(v)], directions)] = False
        for v in fv.aux:
            keys.setdefault(encode_key([v], directions), True)
        return IndexEntries(keys, fv.multikey)
    options = [
        [(_null(v), False) for v in fv.real] + [(v, True) for v in fv.aux] for fv in per_field
    ]
    total = 1
    for o in options:
        total *= len(o)
    if total > MAX_ENTRIES_PER_DOCUMENT:
        raise LauraError(
            ErrorCode.BAD_VALUE, f"document has too many keys ({total}) for index {index.name!r}"
        )
    for combo in itertools.product(*options):
        key = encode_key([v for v, _ in combo], directions)
        aux = any(a for _, a in combo)
        if not aux:
            keys[key] = False
        else:
            keys.setdefault(key, True)
    return IndexEntries(keys, bool(arrays))


def key_value_document(index: IndexDef, key: bytes) -> dict[str, Any]:
    """``{field: value, ...}`` of an encoded key (for duplicate key messages)."""
    try:
        values = decode_key(key, index.directions)
    except LauraError:
        return {}
    return dict(zip(index.paths, values, strict=False))
