"""Which shard-key ranges this shard owns for one sharded collection (orphan filtering).

``OwnedRanges`` is built from a ``ChunkMap`` and this shard's id: the chunks it owns,
merged where adjacent, as sorted encoded key ranges ``[lo, hi)`` (the range ending at
the global maximum also owns the maximum key itself, as ``ChunkMap`` does). Calling
it with an encoded shard key answers "is this document mine?" in O(log n).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.chunk_map import ChunkMap


@dataclass(frozen=True)
class KeyRange:
    """An encoded shard-key range ``[lo, hi)`` (``[lo, hi]`` when ``hi_inclusive``)."""

    lo: bytes
    hi: bytes
    hi_inclusive: bool = False

    def contains(self, key: bytes) -> bool:
        if key < self.lo:
            return False
        return key <= self.hi if self.hi_inclusive else key < self.hi

    def sql(self, column: str = "shard_key") -> tuple[str, tuple[bytes, bytes]]:
        """A WHERE condition selecting ``column`` values in this range, and its arguments."""
        op = "<=" if self.hi_inclusive else "<"
        return f"{column} >= ? AND {column} {op} ?", (self.lo, self.hi)

    def overlaps(self, other: KeyRange) -> bool:
        below = other.hi < self.lo or (other.hi == self.lo and not other.hi_inclusive)
        above = self.hi < other.lo or (self.hi == other.lo and not self.hi_inclusive)
        return not (below or above)


@dataclass(frozen=True)
class OwnedRanges:
    """The sorted, merged key ranges of the chunks this shard owns.

    ``stale_details`` are the STALE_CONFIG details (namespace, epoch, version) to
    report when a write targets a key this shard does not own.
    """

    ranges: tuple[KeyRange, ...]
    stale_details: dict[str, Any] = field(default_factory=dict, compare=False)
    _los: tuple[bytes, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_los", tuple(r.lo for r in self.ranges))

    @classmethod
    def from_chunk_map(
        cls, chunk_map: ChunkMap, shard_id: str, stale_details: dict[str, Any] | None = None
    ) -> OwnedRanges:
        chunks = chunk_map.chunks
        last = len(chunks) - 1
        merged: list[KeyRange] = []
        for i, c in enumerate(chunks):
            if c.shard != shard_id:
                continue
            inclusive = i == last
            if merged and merged[-1].hi == c.min_key:
                merged[-1] = KeyRange(merged[-1].lo, c.max_key, inclusive)
            else:
                merged.append(KeyRange(c.min_key, c.max_key, inclusive))
        return cls(tuple(merged), dict(stale_details or {}))

    def __call__(self, key: bytes | None) -> bool:
        """True when the encoded shard key lies in a range this shard owns."""
        if key is None:
            return False
        i = bisect_right(self._los, key) - 1
        if i < 0:
            return False
        r = self.ranges[i]
        return key <= r.hi if r.hi_inclusive else key < r.hi

    @property
    def empty(self) -> bool:
        return not self.ranges

    @property
    def epoch(self) -> str:
        """The collection epoch these ranges were computed for."""
        return str(self.stale_details.get("shard_epoch", ""))

    @property
    def version(self) -> tuple[int, int]:
        """This shard's version when these ranges were computed."""
        d = self.stale_details
        return int(d.get("shard_major", 0)), int(d.get("shard_minor", 0))

    def covers(self, r: KeyRange) -> bool:
        """True when the whole range ``r`` lies inside one owned range."""
        i = bisect_right(self._los, r.lo) - 1
        if i < 0:
            return False
        mine = self.ranges[i]
        if r.hi < mine.hi:
            return True
        return r.hi == mine.hi and (mine.hi_inclusive or not r.hi_inclusive)

    def overlaps(self, r: KeyRange) -> bool:
        """True when some key of ``r`` is owned."""
        for mine in self.ranges:
            if mine.lo > r.hi or (mine.lo == r.hi and not r.hi_inclusive):
                break
            if r.lo < mine.hi or (r.lo == mine.hi and mine.hi_inclusive):
                return True
        return False

    def stale_error(self, what: str) -> LauraError:
        """STALE_CONFIG for a write whose key is outside the owned ranges."""
        ns = self.stale_details.get("namespace", "")
        return LauraError(
            ErrorCode.STALE_CONFIG,
            f"{what}: the shard key is in a chunk this shard does not own for {ns}",
            dict(self.stale_details),
        )
