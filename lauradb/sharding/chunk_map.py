"""The routing table of one sharded collection: contiguous chunks over the key space.

A ``Chunk`` owns the half-open range ``[min, max)`` of chunk-space keys (see
``shard_key``); the chunks of a ``ChunkMap`` are sorted, non-overlapping, contiguous
and cover ``[global min, global max]`` (the last chunk also owns a key equal to
the global max, e.g. a MaxKey shard key value). Lookups bisect over the encoded
chunk minimums: O(log n) per key and O(log n + k) per range.

Point lookups run on every routed request, so the map keeps the lookup data
compact: the minimums are re-allocated side by side in key order (a bisect over
100,000 of them then touches a few MB of adjacent objects, not bytes scattered
among the chunk documents), and each chunk's owner is one byte in a ``bytes``
(an index into the sorted shard ids), so ``shard_for_key`` and ``locate`` never
load the ``Chunk`` object itself. (Measured in issue 7: a sorted ``array('q')``
of hash values is no faster to bisect than this list, because every probe of an
array boxes a Python int.)

Versions are ``(major, minor)`` pairs; the collection version is the maximum over
all chunks, a shard's version the maximum over its chunks (``(0, 0)`` when it owns
none). ``combined_version`` packs a pair into the int64 placement version sent on
the wire.
"""

from __future__ import annotations

import dataclasses
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from lauradb.bsonkit.keys import encode_key
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.shard_key import ShardKeyPattern

__all__ = ["Chunk", "ChunkMap", "combined_version", "split_version"]

_UINT32 = 0xFFFFFFFF


def combined_version(major: int, minor: int) -> int:
    """``major << 32 | minor``: the int64 placement version of ``(major, minor)``."""
    if not (0 <= major < 2**31 and 0 <= minor <= _UINT32):
        raise LauraError(ErrorCode.BAD_VALUE, f"chunk version out of range: ({major}, {minor})")
    return (major << 32) | minor


def split_version(combined: int) -> tuple[int, int]:
    """The ``(major, minor)`` of a combined placement version."""
    return combined >> 32, combined & _UINT32


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk:
    """A range ``[min, max)`` of the shard key space owned by ``shard``.

    ``min_key``/``max_key`` cache the encoded bounds (computed from the bound
    documents' values in their order; ``ChunkMap`` normalises that order).
    """

    chunk_id: str
    min: dict[str, Any]
    max: dict[str, Any]
    shard: str
    major: int
    minor: int
    min_key: bytes = dataclasses.field(default=b"", compare=False, repr=False)
    max_key: bytes = dataclasses.field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.min_key:
            object.__setattr__(self, "min_key", encode_key(list(self.min.values())))
        if not self.max_key:
            object.__setattr__(self, "max_key", encode_key(list(self.max.values())))

    def __hash__(self) -> int:
        return hash((self.chunk_id, self.shard, self.major, self.minor, self.min_key))

    @property
    def version(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def contains(self, encoded: bytes) -> bool:
        """True when the encoded key lies in ``[min, max)``."""
        return self.min_key <= encoded < self.max_key


def _compact(keys: list[bytes]) -> list[bytes]:
    """Equal copies of ``keys`` allocated one after another (adjacent in memory)."""
    blob = b"".join(keys)
    out: list[bytes] = []
    pos = 0
    for k in keys:
        end = pos + len(k)
        out.append(blob[pos:end])
        pos = end
    return out


def _bad(message: str) -> LauraError:
    return LauraError(ErrorCode.BAD_VALUE, message)


class ChunkMap:
    """Validated, sorted chunks of one collection with logarithmic lookups."""

    __slots__ = (
        "_by_shard", "_chunks", "_mins", "_owner_ix", "_owner_names", "_version", "pattern",
    )

    def __init__(self, pattern: ShardKeyPattern, chunks: Iterable[Chunk]) -> None:
        self.pattern = pattern
        normalised = [self._normalise(c) for c in chunks]
        if not normalised:
            raise _bad("a chunk map needs at least one chunk")
        normalised.sort(key=lambda c: c.min_key)
        lo = pattern.encode_bound(pattern.global_min())
        hi = pattern.encode_bound(pattern.global_max())
        if normalised[0].min_key != lo:
            raise _bad(f"chunks do not start at the global minimum {pattern.global_min()!r}")
        if normalised[-1].max_key != hi:
            raise _bad(f"chunks do not end at the global maximum {pattern.global_max()!r}")
        previous: Chunk | None = None
        for c in normalised:
            if c.min_key >= c.max_key:
                raise _bad(f"chunk {c.chunk_id!r} has min >= max: {c.min!r} .. {c.max!r}")
            if previous is not None and previous.max_key != c.min_key:
                kind = "overlap" if previous.max_key > c.min_key else "leave a gap"
                raise _bad(
                    f"chunks {previous.chunk_id!r} and {c.chunk_id!r} {kind}: "
                    f"{previous.max!r} vs {c.min!r}"
                )
            previous = c
        self._chunks: tuple[Chunk, ...] = tuple(normalised)
        self._mins: list[bytes] = _compact([c.min_key for c in normalised])
        by_shard: dict[str, tuple[int, int]] = {}
        for c in normalised:
            v = c.version
            if by_shard.get(c.shard, (-1, -1)) < v:
                by_shard[c.shard] = v
        self._by_shard = by_shard
        self._version = max(by_shard.values())
        names = sorted(by_shard)
        ix = {s: i for i, s in enumerate(names)}
        codes = [ix[c.shard] for c in normalised]
        self._owner_names: tuple[str, ...] = tuple(names)
        self._owner_ix: bytes | array[int] = (
            bytes(codes) if len(names) <= 256 else array("I", codes)
        )

    def _normalise(self, chunk: Chunk) -> Chunk:
        if not isinstance(chunk, Chunk):
            raise _bad(f"not a chunk: {chunk!r}")
        fields = list(self.pattern.fields)
        if list(chunk.min) == fields and list(chunk.max) == fields:
            return chunk
        # Validates the field names (BAD_VALUE) and re-orders the bound documents.
        mins = self.pattern.bound_values(chunk.min)
        maxs = self.pattern.bound_values(chunk.max)
        return dataclasses.replace(
            chunk,
            min=dict(zip(fields, mins, strict=True)),
            max=dict(zip(fields, maxs, strict=True)),
            min_key=b"",
            max_key=b"",
        )

    # ------------------------------------------------------------------ accessors

    @property
    def chunks(self) -> tuple[Chunk, ...]:
        """All chunks, sorted by their minimum."""
        return self._chunks

    def __len__(self) -> int:
        return len(self._chunks)

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self._chunks)

    def __repr__(self) -> str:
        return f"ChunkMap({self.pattern!r}, {len(self._chunks)} chunks, version={self._version})"

    @property
    def version(self) -> tuple[int, int]:
        """The collection version: the maximum ``(major, minor)`` over all chunks."""
        return self._version

    def shard_version(self, shard_id: str) -> tuple[int, int]:
        """The maximum version over the chunks of ``shard_id`` ((0, 0) if it owns none)."""
        return self._by_shard.get(shard_id, (0, 0))

    def shards(self) -> set[str]:
        """The shards owning at least one chunk."""
        return set(self._by_shard)

    @staticmethod
    def shards_for_chunks(chunks: Iterable[Chunk]) -> set[str]:
        return {c.shard for c in chunks}

    combined_version = staticmethod(combined_version)

    # ------------------------------------------------------------------ lookups

    def chunk_for_key(self, encoded: bytes) -> Chunk:
        """The chunk owning an encoded chunk-space key (O(log n))."""
        i = bisect_right(self._mins, encoded) - 1
        return self._chunks[i if i > 0 else 0]

    def shard_for_key(self, encoded: bytes) -> str:
        """``chunk_for_key(encoded).shard`` without loading the chunk."""
        i = bisect_right(self._mins, encoded) - 1
        return self._owner_names[self._owner_ix[i if i > 0 else 0]]

    def lookup_arrays(self) -> tuple[list[bytes], Any, tuple[str, ...]]:
        """``(chunk minimums, owner index per chunk, owner names)``: what ``shard_for_key``
        reads, for callers that inline the lookup on a per-request path."""
        return self._mins, self._owner_ix, self._owner_names

    def locate(self, encoded: bytes) -> tuple[int, str]:
        """``(index in chunks, shard)`` of the chunk owning ``encoded``, not loading it."""
        i = bisect_right(self._mins, encoded) - 1
        if i < 0:
            i = 0
        return i, self._owner_names[self._owner_ix[i]]

    def chunk_for_doc(self, doc: Mapping[str, Any]) -> Chunk:
        return self.chunk_for_key(self.pattern.key_for_doc(doc))

    def chunks_for_range(self, lo: bytes, hi: bytes, hi_inclusive: bool) -> list[Chunk]:
        """Chunks intersecting ``[lo, hi]`` (or ``[lo, hi)``), in key order (O(log n + k))."""
        if lo > hi or (lo == hi and not hi_inclusive):
            return []
        start = max(bisect_right(self._mins, lo) - 1, 0)
        if hi_inclusive:
            end = bisect_right(self._mins, hi)
        else:
            end = bisect_left(self._mins, hi)
        return list(self._chunks[start:end])

    def chunk_by_id(self, chunk_id: str) -> Chunk | None:
        for c in self._chunks:
            if c.chunk_id == chunk_id:
                return c
        return None

    # ------------------------------------------------------------------ refresh

    def apply_changes(self, changed_chunks: Sequence[Chunk]) -> ChunkMap:
        """A new map where ``changed_chunks`` replace the chunks they overlap (validated)."""
        if not changed_chunks:
            return self
        latest: dict[str, Chunk] = {}
        for c in changed_chunks:
            seen = latest.get(c.chunk_id)
            if seen is None or seen.version <= c.version:
                latest[c.chunk_id] = c
        changed = [self._normalise(c) for c in latest.values()]
        drop: set[int] = set()
        for c in changed:
            if c.min_key >= c.max_key:
                raise _bad(f"chunk {c.chunk_id!r} has min >= max: {c.min!r} .. {c.max!r}")
            start = max(bisect_right(self._mins, c.min_key) - 1, 0)
            end = bisect_left(self._mins, c.max_key)
            drop.update(range(start, end))
        ids = {c.chunk_id for c in changed}
        kept = [
            c
            for i, c in enumerate(self._chunks)
            if i not in drop and c.chunk_id not in ids
        ]
        return ChunkMap(self.pattern, kept + changed)
