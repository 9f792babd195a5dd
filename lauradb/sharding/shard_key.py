"""Shard key patterns: which fields route a document, and how they map to chunk space.

A pattern is an ordered list of dotted field paths and a strategy:

* ``"range"``: the chunk-space key is the field values themselves;
* ``"hashed"``: the FIRST field is replaced by ``Int64(hash_value(value))`` (like
  MongoDB's ``{a: "hashed"}`` or ``{a: "hashed", b: 1}``); other fields are ranged.

Chunk-space keys are ``keys.encode_key`` byte strings (all ascending), so chunk
bounds (BSON documents of the key fields, possibly with MinKey/MaxKey) and
document keys compare with plain ``bytes`` comparison.

Extraction follows MongoDB: a missing field (or a path through a non-document)
counts as null; an array anywhere on a shard key path is rejected, as is a regular
expression value (MongoDB cannot store those in a shard key).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.regex import Regex

from lauradb.bsonkit.keys import encode_key, encode_value
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.hashing import hash_value

__all__ = ["HASHED", "RANGE", "ShardKeyPattern"]

HASHED: Final = "hashed"
RANGE: Final = "range"

_ARRAYS = (list, tuple)


def _bad(message: str) -> LauraError:
    return LauraError(ErrorCode.BAD_VALUE, message)


_PLAIN = frozenset({int, str, float, bool, type(None)})  # never arrays or regexes


def _check_value(path: str, value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, _ARRAYS):
        raise _bad(f"shard key cannot contain an array (field {path!r})")
    if isinstance(value, Regex):
        raise _bad(f"shard key cannot contain a regular expression (field {path!r})")
    return value


class ShardKeyPattern:
    """An ordered shard key (dotted paths) with a ``"hashed"`` or ``"range"`` strategy."""

    __slots__ = ("_parts", "fields", "hashed", "strategy")

    def __init__(self, fields: Sequence[str], strategy: str = RANGE) -> None:
        if isinstance(fields, str) or not isinstance(fields, Sequence) or not fields:
            raise _bad("a shard key needs a non-empty list of field paths")
        if strategy not in (HASHED, RANGE):
            raise _bad(f"shard key strategy must be 'hashed' or 'range', not {strategy!r}")
        seen: list[str] = []
        for field in fields:
            if not isinstance(field, str) or not field:
                raise _bad("shard key field paths must be non-empty strings")
            parts = field.split(".")
            if any(not p for p in parts):
                raise _bad(f"shard key path {field!r} contains an empty field name")
            if any(p.startswith("$") for p in parts):
                raise _bad(f"shard key path {field!r} may not contain '$'-prefixed names")
            for other in seen:
                if other == field:
                    raise _bad(f"shard key field {field!r} appears twice")
                if other.startswith(field + ".") or field.startswith(other + "."):
                    raise _bad(f"shard key fields {other!r} and {field!r} overlap")
            seen.append(field)
        self.fields: tuple[str, ...] = tuple(fields)
        self.strategy: str = strategy
        self.hashed: bool = strategy == HASHED
        self._parts: tuple[tuple[str, ...], ...] = tuple(tuple(f.split(".")) for f in fields)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ShardKeyPattern:
        """From a MongoDB key document: ``{a: 1}``, ``{a: "hashed"}``, ``{a: "hashed", b: 1}``."""
        if not isinstance(spec, Mapping) or not spec:
            raise _bad("shard key specification must be a non-empty document")
        fields = list(spec)
        strategy = RANGE
        for i, (field, kind) in enumerate(spec.items()):
            if kind == HASHED:
                if i != 0:
                    raise _bad(f"only the first shard key field may be hashed ({field!r})")
                strategy = HASHED
            elif isinstance(kind, bool) or not isinstance(kind, (int, float)) or kind != 1:
                raise _bad(f"shard key values must be 1 or 'hashed', got {field!r}: {kind!r}")
        return cls(fields, strategy)

    def to_spec(self) -> dict[str, Any]:
        """The MongoDB-style key document (``{a: "hashed", b: 1}``)."""
        spec: dict[str, Any] = {f: 1 for f in self.fields}
        if self.hashed:
            spec[self.fields[0]] = HASHED
        return spec

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ShardKeyPattern):
            return NotImplemented
        return self.fields == other.fields and self.strategy == other.strategy

    def __hash__(self) -> int:
        return hash((self.fields, self.strategy))

    def __repr__(self) -> str:
        return f"ShardKeyPattern({list(self.fields)!r}, {self.strategy!r})"

    # ------------------------------------------------------------------ documents

    def _value_at(self, doc: Mapping[str, Any], index: int) -> Any:
        value: Any = doc
        for part in self._parts[index]:
            if type(value) is dict or isinstance(value, Mapping):  # dict: skip the ABC check
                value = value.get(part, None)
            elif isinstance(value, _ARRAYS):
                raise _bad(f"shard key cannot contain an array (field {self.fields[index]!r})")
            else:
                return None
        return _check_value(self.fields[index], value)

    def extract(self, doc: Mapping[str, Any]) -> list[Any]:
        """The shard key values of ``doc`` (missing -> None; arrays -> BAD_VALUE)."""
        if not isinstance(doc, Mapping):
            raise _bad("a document is required to extract a shard key")
        return [self._value_at(doc, i) for i in range(len(self._parts))]

    def to_chunk_space(self, values: Sequence[Any]) -> list[Any]:
        """Shard key values as chunk bounds see them (first one hashed if hashed)."""
        if len(values) != len(self.fields):
            raise _bad(f"expected {len(self.fields)} shard key values, got {len(values)}")
        out = list(values)
        if self.hashed:
            out[0] = Int64(hash_value(_check_value(self.fields[0], out[0])))
        return out

    def key_for_values(self, values: Sequence[Any]) -> bytes:
        """The encoded chunk-space key of already extracted shard key values."""
        return encode_key(self.to_chunk_space(values))

    def key_for_doc(self, doc: Mapping[str, Any]) -> bytes:
        """The encoded chunk-space key of ``doc`` (compare with chunk bounds as bytes)."""
        if type(doc) is not dict and not isinstance(doc, Mapping):
            raise _bad("a document is required to extract a shard key")
        if len(self._parts) == 1:
            value = self._value_at(doc, 0)
            if self.hashed:
                # An int encodes exactly like the Int64 chunk bounds hold (and is cheaper).
                return encode_value(hash_value(value))
            return encode_value(value)
        return self.key_for_values([self._value_at(doc, i) for i in range(len(self._parts))])

    # ------------------------------------------------------------------ bounds

    def bound_values(self, bound_doc: Mapping[str, Any]) -> list[Any]:
        """The values of a chunk bound document, in key order (fields must match)."""
        if not isinstance(bound_doc, Mapping):
            raise _bad("a chunk bound must be a document")
        if len(bound_doc) != len(self.fields) or any(f not in bound_doc for f in self.fields):
            raise _bad(
                f"chunk bound {dict(bound_doc)!r} does not match shard key {list(self.fields)!r}"
            )
        values = [bound_doc[f] for f in self.fields]
        for field, value in zip(self.fields, values, strict=True):
            _check_value(field, value)
        return values

    def encode_bound(self, bound_doc: Mapping[str, Any]) -> bytes:
        """The chunk-space encoding of a bound document (values are already in chunk space)."""
        return encode_key(self.bound_values(bound_doc))

    def global_min(self) -> dict[str, Any]:
        return {f: MinKey() for f in self.fields}

    def global_max(self) -> dict[str, Any]:
        return {f: MaxKey() for f in self.fields}
