"""Query targeting: which shards can hold documents matching a filter.

The filter is over-approximated by a union of "boxes" (one set of allowed values
per shard key field); each box becomes point keys or half-open byte ranges in chunk
space, and every point or range is looked up in the chunk map by bisection
(O(log chunks) each, plus the chunks a range covers) — never a scan over chunks.

Understood: equality (``{a: v}``, ``$eq``), ``$in``, ``$gt/$gte/$lt/$lte`` with
MongoDB type bracketing (several on one field intersect), ``$and`` (intersection),
``$or`` (union of its branches), equality on an ancestor of a nested key path
(``{a: {b: 1}}`` for key ``a.b``), compound keys (an equality prefix, then a range
on the next field) and hashed keys (equality / ``$in`` on the hashed field only).
``{a: null}`` targets the null key (missing shard key fields route as null).

Everything else (regexes, ``$ne``, ``$nin``, ``$not``, ``$exists``, ``$elemMatch``,
array equality values, ``$expr``, ``$nor``, unknown operators ...) adds no
restriction; when nothing restricts the key the result is every shard owning
chunks (``broadcast``). Ignoring a conjunct only widens the target, so the result
is always sound. A filter that provably matches nothing targets the shard of the
first chunk (as MongoDB does, so callers always get at least one shard).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex

from lauradb.bsonkit.keys import encode_int, encode_value
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.chunk_map import Chunk, ChunkMap
from lauradb.sharding.hashing import hash_value, md5
from lauradb.sharding.shard_key import ShardKeyPattern

__all__ = [
    "PointLocator",
    "TargetResult",
    "point_key",
    "point_locator",
    "target",
    "target_key_for_insert",
    "value_shard",
]

# Limits that keep targeting cheap on pathological filters (beyond them the
# target is widened, never narrowed).
_MAX_BOXES = 256
_MAX_PREFIXES = 1024

_TOP = b"\xff"  # above every type byte: p + _TOP bounds all keys extending p
_MINKEY = encode_value(MinKey())  # the smallest component encoding
_ARRAYS = (list, tuple)
_REGEXES = (Regex, re.Pattern)
_RANGE_OPS = frozenset(("$gt", "$gte", "$lt", "$lte"))


class TargetResult:
    """The shards (and, unless broadcasting, the chunks) a filter must be sent to.

    ``key`` is the encoded chunk-space key when ``exact_single_key``; ``broadcast``
    is True when the filter does not restrict the shard key (``chunks`` is then
    None). A point target from the fast path of ``target`` holds the map and the
    chunk's index and builds ``chunks`` on first use: routing needs only ``shards``,
    and loading the ``Chunk`` of a 100,000-chunk map is a cache miss (issue 7).
    """

    __slots__ = (
        "_chunk_index", "_chunk_map", "_chunks", "broadcast", "exact_single_key", "key", "shards",
    )

    def __init__(
        self,
        shards: set[str],
        chunks: list[Chunk] | None,
        exact_single_key: bool,
        key: bytes | None = None,
        broadcast: bool = False,
        chunk_map: ChunkMap | None = None,
        chunk_index: int = 0,
    ) -> None:
        self.shards = shards
        self._chunks = chunks
        self.exact_single_key = exact_single_key
        self.key = key
        self.broadcast = broadcast
        self._chunk_map = chunk_map  # set: chunks is [chunk_map.chunks[chunk_index]]
        self._chunk_index = chunk_index

    @property
    def chunks(self) -> list[Chunk] | None:
        if self._chunk_map is not None:
            self._chunks = [self._chunk_map.chunks[self._chunk_index]]
            self._chunk_map = None
        return self._chunks

    def _fields(self) -> tuple[Any, ...]:
        return (self.shards, self.chunks, self.exact_single_key, self.key, self.broadcast)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TargetResult):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        return (
            f"TargetResult(shards={self.shards!r}, chunks={self.chunks!r}, "
            f"exact_single_key={self.exact_single_key!r}, key={self.key!r}, "
            f"broadcast={self.broadcast!r})"
        )


# ----------------------------------------------------------------------------- value sets


class _Values:
    """A set of values of one key field, in single-component encoding space.

    ``intervals``: sorted, disjoint half-open byte ranges ``[lo, hi)`` covering the
    set. ``points``: ``(encoding, value)`` pairs sorted by encoding when the set is
    exactly a finite set of values (needed for hashing and exact keys), else None.
    """

    __slots__ = ("intervals", "points")

    def __init__(
        self, intervals: list[tuple[bytes, bytes]], points: list[tuple[bytes, Any]] | None
    ) -> None:
        self.intervals = intervals
        self.points = points

    @property
    def empty(self) -> bool:
        return not self.intervals

    def contains(self, encoded: bytes) -> bool:
        i = bisect_right(self.intervals, encoded, key=_lower) - 1
        return i >= 0 and self.intervals[i][0] <= encoded < self.intervals[i][1]


def _lower(interval: tuple[bytes, bytes]) -> bytes:
    return interval[0]


def _from_points(pairs: list[tuple[bytes, Any]]) -> _Values:
    unique: dict[bytes, Any] = {}
    for enc, value in pairs:
        unique.setdefault(enc, value)
    points = sorted(unique.items(), key=lambda p: p[0])
    return _Values([(e, e + _TOP) for e, _ in points], points)


def _point(value: Any) -> _Values:
    e = encode_value(value)
    return _Values([(e, e + _TOP)], [(e, value)])


def _range(lo: bytes, hi: bytes) -> _Values:
    return _Values([(lo, hi)] if lo < hi else [], None)


def _merge_intervals(intervals: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _union(a: _Values | None, b: _Values | None) -> _Values | None:
    if a is None or b is None:
        return None
    if a.points is not None and b.points is not None:
        return _from_points(a.points + b.points)
    return _Values(_merge_intervals(a.intervals + b.intervals), None)


def _intersect(a: _Values | None, b: _Values | None) -> _Values | None:
    if a is None:
        return b
    if b is None:
        return a
    if a.points is not None:
        return _from_points([p for p in a.points if b.contains(p[0])])
    if b.points is not None:
        return _from_points([p for p in b.points if a.contains(p[0])])
    out: list[tuple[bytes, bytes]] = []
    i = j = 0
    ai, bi = a.intervals, b.intervals
    while i < len(ai) and j < len(bi):
        lo = max(ai[i][0], bi[j][0])
        hi = min(ai[i][1], bi[j][1])
        if lo < hi:
            out.append((lo, hi))
        if ai[i][1] < bi[j][1]:
            i += 1
        else:
            j += 1
    return _Values(out, None)


# ----------------------------------------------------------------------------- filter -> boxes

Box = dict[int, _Values]  # field index -> allowed values (absent: unrestricted)


def _is_operator_doc(cond: Any) -> bool:
    if not isinstance(cond, Mapping) or not cond:
        return False
    first = next(iter(cond))
    return isinstance(first, str) and first.startswith("$")


def _equality(value: Any) -> _Values | None:
    if isinstance(value, _ARRAYS) or isinstance(value, _REGEXES):
        return None
    return _point(value)


def _operator(op: str, arg: Any) -> _Values | None:
    if op == "$eq":
        if isinstance(arg, _ARRAYS):
            return None
        return _point(arg)
    if op == "$in":
        if not isinstance(arg, _ARRAYS):
            return None
        pairs: list[tuple[bytes, Any]] = []
        for v in arg:
            if isinstance(v, _ARRAYS) or isinstance(v, _REGEXES):
                return None
            pairs.append((encode_value(v), v))
        return _from_points(pairs)
    if op in _RANGE_OPS:
        if isinstance(arg, (*_ARRAYS, MinKey, MaxKey)):
            return None
        e = encode_value(arg)
        bracket_lo = e[:1]
        bracket_hi = bytes([e[0] + 1])
        if op == "$gt":
            return _range(e + _TOP, bracket_hi)
        if op == "$gte":
            return _range(e, bracket_hi)
        if op == "$lt":
            return _range(bracket_lo, e)
        return _range(bracket_lo, e + _TOP)
    return None


def _condition(cond: Any) -> _Values | None:
    """The values of a field allowed by the condition ``cond`` on exactly that field."""
    if not _is_operator_doc(cond):
        return _equality(cond)
    result: _Values | None = None
    for op, arg in cond.items():
        result = _intersect(result, _operator(op, arg))
    return result


def _ancestor_equality(cond: Any, rest: list[str]) -> _Values | None:
    """``{a: {b: 1}}`` pins key path ``a.b`` to 1 (the whole of ``a`` is fixed)."""
    if _is_operator_doc(cond):
        if len(cond) != 1 or "$eq" not in cond:
            return None
        cond = cond["$eq"]
    value = cond
    for part in rest:
        if isinstance(value, Mapping):
            value = value.get(part, None)
        elif isinstance(value, (*_ARRAYS, *_REGEXES)):
            return None
        else:
            value = None
            break
    return _equality(value)


def _box_and(a: Box, b: Box) -> Box:
    if not a:
        return dict(b)
    out = dict(a)
    for idx, vals in b.items():
        merged = _intersect(out.get(idx), vals)
        if merged is not None:
            out[idx] = merged
    return out


def _hull(boxes: list[Box]) -> Box:
    out: dict[int, _Values | None] = dict(boxes[0])
    for box in boxes[1:]:
        for idx in list(out):
            out[idx] = _union(out[idx], box.get(idx))
    return {idx: vals for idx, vals in out.items() if vals is not None}


def _is_empty(box: Box) -> bool:
    return any(vals.empty for vals in box.values())


def _and(left: list[Box], right: list[Box]) -> list[Box]:
    if len(left) * len(right) > _MAX_BOXES:
        left = [_hull(left)] if len(left) > 1 else left
        if len(left) * len(right) > _MAX_BOXES:
            right = [_hull(right)]
    out = []
    for a in left:
        for b in right:
            box = _box_and(a, b)
            if not _is_empty(box):
                out.append(box)
    return out


def _or(branches: list[Box]) -> list[Box]:
    if any(not box for box in branches):
        return [{}]
    if len(branches) > _MAX_BOXES:
        return [_hull(branches)]
    return branches


class _Extractor:
    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = list(fields)

    def boxes(self, spec: Mapping[str, Any]) -> list[Box]:
        boxes: list[Box] = [{}]
        for key, cond in spec.items():
            if not isinstance(key, str):
                continue
            if key == "$and" or key == "$or":
                subs = self._sub_filters(cond)
                if subs is None:
                    continue  # malformed: the shard will reject it; no restriction here
                if key == "$and":
                    for sub in subs:
                        boxes = _and(boxes, self.boxes(sub))
                else:
                    branches: list[Box] = []
                    for sub in subs:
                        branches.extend(self.boxes(sub))
                    boxes = _and(boxes, _or(branches))
            elif key.startswith("$"):
                continue  # $nor, $expr, $comment, $text, $where ...: no restriction
            else:
                restriction: Box = {}
                for idx, field in enumerate(self.fields):
                    vals = self._field(key, cond, field)
                    if vals is not None:
                        restriction[idx] = vals
                if restriction:
                    boxes = _and(boxes, [restriction])
            if not boxes:
                return []
        return boxes

    @staticmethod
    def _sub_filters(cond: Any) -> list[Mapping[str, Any]] | None:
        if not isinstance(cond, _ARRAYS) or not cond:
            return None
        if not all(isinstance(sub, Mapping) for sub in cond):
            return None
        return list(cond)

    @staticmethod
    def _field(key: str, cond: Any, field: str) -> _Values | None:
        if key == field:
            return _condition(cond)
        if field.startswith(key + "."):
            return _ancestor_equality(cond, field[len(key) + 1 :].split("."))
        return None


# ----------------------------------------------------------------------------- boxes -> keys


def _box_keys(
    pattern: ShardKeyPattern, box: Box, points: set[bytes], ranges: list[tuple[bytes, bytes]]
) -> bool:
    """Add the full keys / key ranges of ``box``; False when it covers everything.

    A lower bound ending on a whole component is padded with MinKey components up to
    the key length: no real key lies between ``p`` and ``p + MinKey...``, and the
    padding keeps a chunk that ends exactly there out of the target. (One-byte
    components may be a bare type-bracket start, which is not padded.)
    """
    n = len(pattern.fields)
    prefixes = [b""]
    for idx in range(n):
        vals = box.get(idx)
        if idx == 0 and pattern.hashed:
            if vals is None or vals.points is None:
                return False
            prefixes = sorted({encode_value(Int64(hash_value(v))) for _, v in vals.points})
            if not prefixes:
                return True
            continue
        if vals is None:
            if prefixes == [b""]:
                return False
            pad = _MINKEY * (n - idx)
            ranges.extend((p + pad, p + _TOP) for p in prefixes)
            return True
        if vals.empty:
            return True
        single = len(prefixes) == 1
        points_fit = single or len(prefixes) * len(vals.points or ()) <= _MAX_PREFIXES
        if vals.points is not None and points_fit:
            prefixes = [p + e for p in prefixes for e, _ in vals.points]
            continue
        pad = _MINKEY * (n - idx - 1)
        if single or len(prefixes) * len(vals.intervals) <= _MAX_PREFIXES:
            intervals = vals.intervals
        else:
            intervals = [(vals.intervals[0][0], vals.intervals[-1][1])]
        for lo, hi in intervals:
            lo_pad = pad if len(lo) > 1 else b""
            ranges.extend((p + lo + lo_pad, p + hi) for p in prefixes)
        return True
    points.update(prefixes)
    return True


_MISSING = object()
_POINT_TYPES = frozenset({int, Int64, str, ObjectId})


def _broadcast(chunk_map: ChunkMap) -> TargetResult:
    return TargetResult(chunk_map.shards(), None, False, None, True)


def point_key(pattern: ShardKeyPattern, filter_spec: Mapping[str, Any]) -> bytes | None:
    """The fast path of ``target``, for the commonest targeted query: the chunk-space
    key of ``{key: <int|str|ObjectId>}`` on a one-field top-level shard key (the
    general analysis gives the same point), else None."""
    if len(filter_spec) == 1 and len(pattern.fields) == 1 and "." not in pattern.fields[0]:
        value = filter_spec.get(pattern.fields[0], _MISSING)
        if type(value) in _POINT_TYPES:
            return pattern.key_for_doc(filter_spec)
    return None


PointLocator = Callable[[Mapping[str, Any]], "str | None"]
ValueShard = Callable[[Any], "str | None"]


def value_shard(
    pattern: ShardKeyPattern, chunk_map: ChunkMap, types: frozenset[type]
) -> ValueShard | None:
    """For a one-field top-level shard key: a function from a key value to the shard
    owning it — ``chunk_map.shard_for_key(pattern.key_for_doc({field: value}))`` — for
    values of ``types`` (and ``int``), None for any other value; every step inline.
    Per-request paths run it once per request or document, where each extra Python
    call costs far more than in a loop (issue 7). None for other keys."""
    if len(pattern.fields) != 1 or "." in pattern.fields[0]:
        return None
    hashed = pattern.hashed
    mins, owner_ix, names = chunk_map.lookup_arrays()
    from_bytes = int.from_bytes

    def shard_of(value: Any) -> str | None:
        kind = type(value)
        if kind is int:
            encoded = encode_int(value)
        elif kind in types:
            encoded = encode_value(value)
        else:
            return None
        if hashed:  # hash_value: the first 8 bytes of the MD5, little-endian, signed
            encoded = encode_int(from_bytes(md5(encoded).digest()[:8], "little", signed=True))
        i = bisect_right(mins, encoded) - 1
        return names[owner_ix[i if i > 0 else 0]]

    return shard_of


def point_locator(pattern: ShardKeyPattern, chunk_map: ChunkMap) -> PointLocator | None:
    """For a one-field top-level shard key: a function answering the shard of a point
    filter — ``chunk_map.locate(point_key(pattern, f))[1]``, None where ``point_key``
    is None — in two calls (``value_shard``). None for other keys."""
    shard_of = value_shard(pattern, chunk_map, _POINT_TYPES)
    if shard_of is None:
        return None
    field = pattern.fields[0]

    def locate(filter_spec: Mapping[str, Any]) -> str | None:
        if len(filter_spec) != 1:
            return None
        return shard_of(filter_spec.get(field, _MISSING))

    return locate


def target(
    pattern: ShardKeyPattern, chunk_map: ChunkMap, filter_spec: Mapping[str, Any]
) -> TargetResult:
    """The shards whose chunks may hold documents matching ``filter_spec``."""
    if not isinstance(filter_spec, Mapping):
        raise LauraError(ErrorCode.BAD_VALUE, "the query filter must be a document")
    key = point_key(pattern, filter_spec)
    if key is not None:
        index, shard = chunk_map.locate(key)
        return TargetResult({shard}, None, True, key, False, chunk_map, index)
    boxes = _Extractor(pattern.fields).boxes(filter_spec)
    points: set[bytes] = set()
    ranges: list[tuple[bytes, bytes]] = []
    for box in boxes:
        if not _box_keys(pattern, box, points, ranges):
            return _broadcast(chunk_map)
    chunks: dict[str, Chunk] = {}
    for key in points:
        c = chunk_map.chunk_for_key(key)
        chunks.setdefault(c.chunk_id, c)
    for lo, hi in _merge_intervals(ranges):
        for c in chunk_map.chunks_for_range(lo, hi, False):
            chunks.setdefault(c.chunk_id, c)
    if not chunks:
        first = chunk_map.chunks[0]
        return TargetResult({first.shard}, [], False)
    ordered = sorted(chunks.values(), key=lambda c: c.min_key)
    shards = {c.shard for c in ordered}
    if len(points) == 1 and not ranges:
        return TargetResult(shards, ordered, True, next(iter(points)))
    return TargetResult(shards, ordered, False)


def target_key_for_insert(
    pattern: ShardKeyPattern, chunk_map: ChunkMap, doc: Mapping[str, Any]
) -> str:
    """The shard that owns ``doc``'s shard key (BAD_VALUE for arrays in the key)."""
    return chunk_map.shard_for_key(pattern.key_for_doc(doc))
