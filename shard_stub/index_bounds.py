"""Index bounds: which encoded index keys can hold the documents a filter matches.

Bounds are unions of half-open byte intervals ``[lo, hi)`` over key encodings
(``lauradb.bsonkit.keys``: memcmp order == BSON order, one leading type byte per
canonical type bracket, prefix-free). Every interval is built so that no valid
encoding is a proper prefix of ``lo`` or ``hi``; then, for a compound key
``P + component + rest``, the component lies in ``[lo, hi)`` exactly when the key
lies in ``[P + lo, P + hi)``, and a descending component (bytes inverted) lies in
``[succ(inv(hi)), succ(inv(lo)))``.

Predicates (MongoDB's matcher semantics):

* equality / ``$in``: the points themselves (null also stands for missing fields,
  which the index stores as null; arrays are found through the auxiliary
  whole-array entries, see ``index_keys``);
* ``$gt $gte $lt $lte``: one side bounded by the operand, the other by the edge of
  the operand's type bracket (comparisons never cross brackets);
* anything else (regular expressions, ``MinKey``/``MaxKey`` operands, ``$ne``,
  ``$exists`` ...) gives no bounds: the field is unconstrained.

Bounds are only a superset: the full filter still runs on every fetched document.
On a multikey index, predicates on one field are not intersected (different array
elements may satisfy different predicates); one of them is used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.regex import Regex

from lauradb.bsonkit.keys import encode_value, invert
from lauradb.errors import LauraError
from shard_stub.index_keys import IndexDef

MAX_POINTS = 10_000
NULL_KEY = encode_value(None)

Span = tuple[bytes, bytes]


def succ(data: bytes) -> bytes:
    """The smallest byte string greater than every string starting with ``data``."""
    stripped = data.rstrip(b"\xff")
    if not stripped:
        raise ValueError("no successor of an all-0xFF string")
    return stripped[:-1] + bytes([stripped[-1] + 1])


@dataclass(frozen=True)
class Intervals:
    """Sorted, disjoint spans of ascending value encodings; ``points`` when exact values."""

    spans: tuple[Span, ...]
    points: tuple[bytes, ...] | None = None

    def contains(self, key: bytes) -> bool:
        return any(lo <= key < hi for lo, hi in self.spans)


def points(encoded: Iterable[bytes]) -> Intervals:
    keys = tuple(sorted(set(encoded)))
    return Intervals(tuple((k, succ(k)) for k in keys), keys)


def _merge(spans: Iterable[Span]) -> tuple[Span, ...]:
    out: list[Span] = []
    for lo, hi in sorted(spans):
        if lo >= hi:
            continue
        if out and lo <= out[-1][1]:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def intersect(a: Intervals, b: Intervals) -> Intervals:
    if a.points is not None or b.points is not None:
        pts = a.points if a.points is not None else b.points
        other = b if a.points is not None else a
        assert pts is not None
        return points(k for k in pts if other.contains(k))
    spans: list[Span] = []
    for alo, ahi in a.spans:
        for blo, bhi in b.spans:
            lo, hi = max(alo, blo), min(ahi, bhi)
            if lo < hi:
                spans.append((lo, hi))
    return Intervals(_merge(spans))


def _is_operator_doc(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and k.startswith("$") for k in value
    )


def _has_dollar_key(value: Any) -> bool:
    return isinstance(value, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in value)


def _encode_plain(value: Any) -> bytes | None:
    if isinstance(value, (Regex, re.Pattern)) or _has_dollar_key(value):
        return None
    try:
        return encode_value(value)
    except LauraError:
        return None


def equality(value: Any) -> Intervals | None:
    enc = _encode_plain(value)
    return None if enc is None else points([enc])


def membership(values: Any) -> Intervals | None:
    if not isinstance(values, (list, tuple)):
        return None
    out: list[bytes] = []
    for v in values:
        enc = _encode_plain(v)
        if enc is None:
            return None
        out.append(enc)
    return points(out)


def comparison(op: str, value: Any) -> Intervals | None:
    """``$gt $gte $lt $lte`` within the operand's type bracket."""
    if isinstance(value, (MinKey, MaxKey)):
        return None  # comparisons with MinKey/MaxKey cross every bracket
    enc = _encode_plain(value)
    if enc is None:
        return None
    bracket_lo = enc[:1]
    bracket_hi = bytes([enc[0] + 1])
    if op == "$gt":
        span = (succ(enc), bracket_hi)
    elif op == "$gte":
        span = (enc, bracket_hi)
    elif op == "$lt":
        span = (bracket_lo, enc)
    elif op == "$lte":
        span = (bracket_lo, succ(enc))
    else:
        return None
    return Intervals(_merge([span]))


_COMPARISONS = ("$gt", "$gte", "$lt", "$lte")


def predicates(spec: Mapping[str, Any]) -> dict[str, list[Intervals]]:
    """Per path, the intervals of every indexable predicate ANDed in ``spec``."""
    out: dict[str, list[Intervals]] = {}
    _collect(spec, out)
    return out


def _collect(spec: Mapping[str, Any], out: dict[str, list[Intervals]]) -> None:
    for name, value in spec.items():
        if not isinstance(name, str):
            continue
        if name == "$and":
            if isinstance(value, list):
                for clause in value:
                    if isinstance(clause, Mapping):
                        _collect(clause, out)
            continue
        if name.startswith("$"):
            continue
        if _is_operator_doc(value):
            for op, arg in value.items():
                iv: Intervals | None = None
                if op == "$eq":
                    iv = equality(arg)
                elif op == "$in":
                    iv = membership(arg)
                elif op in _COMPARISONS:
                    iv = comparison(op, arg)
                if iv is not None:
                    out.setdefault(name, []).append(iv)
        elif not _has_dollar_key(value):
            iv = equality(value)
            if iv is not None:
                out.setdefault(name, []).append(iv)


def _narrowness(iv: Intervals) -> tuple[int, int]:
    if iv.points is not None:
        return (0, len(iv.points))
    return (1, len(iv.spans))


def combine(ivs: Sequence[Intervals] | None, multikey: bool) -> Intervals | None:
    """The bounds of one field: intersected, or (multikey) the narrowest predicate's."""
    if not ivs:
        return None
    if multikey:
        return min(ivs, key=_narrowness)
    result = ivs[0]
    for iv in ivs[1:]:
        result = intersect(result, iv)
    return result


def component_spans(iv: Intervals, direction: int) -> list[Span]:
    if direction > 0:
        return list(iv.spans)
    return [(succ(invert(hi)), succ(invert(lo))) for lo, hi in reversed(iv.spans)]


@dataclass(frozen=True)
class IndexBounds:
    """Key ranges of one index for a filter, and how selective they look."""

    ranges: tuple[Span, ...]
    eq_fields: int  # leading fields pinned by equality / $in
    single_fields: int  # leading fields pinned to exactly one value
    range_field: bool  # a range on the field after the equality prefix

    @property
    def score(self) -> tuple[int, int]:
        return (self.eq_fields, int(self.range_field))


def index_bounds(index: IndexDef, preds: Mapping[str, list[Intervals]]) -> IndexBounds | None:
    """The key ranges of ``index`` covering every document ``preds`` can match.

    None when the index does not help (its first field is unconstrained, or it is
    sparse and a matching document may lack every indexed field).
    """
    prefixes = [b""]
    eq_fields = 0
    single = 0
    ranges: list[Span] | None = None
    excludes_null = False
    for i, (path, direction) in enumerate(index.fields):
        iv = combine(preds.get(path), index.multikey)
        if iv is None:
            break
        if not iv.contains(NULL_KEY):
            excludes_null = True
        if iv.points is not None and len(prefixes) * max(len(iv.points), 1) <= MAX_POINTS:
            comps = [k if direction > 0 else invert(k) for k in iv.points]
            prefixes = [p + c for p in prefixes for c in comps]
            eq_fields += 1
            if single == i and len(iv.points) == 1:
                single += 1
            continue
        spans = component_spans(iv, direction)
        ranges = [(p + lo, p + hi) for p in prefixes for lo, hi in spans]
        break
    range_field = ranges is not None
    if ranges is None:
        if eq_fields == 0:
            return None
        ranges = [(p, succ(p)) for p in prefixes]
    if index.sparse and not excludes_null:
        return None
    return IndexBounds(_merge(ranges), eq_fields, single, range_field)


def sort_direction(
    index: IndexDef, sort_fields: Sequence[tuple[str, int]], pinned: int
) -> bool | None:
    """Whether scanning ``index`` yields ``sort_fields`` order: False forward, True
    reverse, None when it does not. ``pinned`` leading index fields hold one value.

    A trailing ``_id`` sort field is honoured when the other sort fields cover every
    remaining index field (index entries tie-break on ``_id``).
    """
    if index.multikey:
        return None
    fixed = {p for p, _ in index.fields[:pinned]}
    wanted = [(p, d) for p, d in sort_fields if p not in fixed]
    rest = list(index.fields[pinned:])
    trailing_id: int | None = None
    if wanted and wanted[-1][0] == "_id" and all(p != "_id" for p, _ in rest):
        trailing_id = wanted[-1][1]
        wanted = wanted[:-1]
        if len(wanted) != len(rest):
            return None
    if not wanted and trailing_id is None:
        return False
    if len(wanted) > len(rest):
        return None
    flips = set()
    for (p, d), (ip, idir) in zip(wanted, rest, strict=False):
        if p != ip:
            return None
        flips.add(d != idir)
    if trailing_id is not None:
        flips.add(trailing_id < 0)
    if len(flips) > 1:
        return None
    return flips.pop() if flips else False
