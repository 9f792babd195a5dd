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

    def stale_error(self, what: str) -> LauraError:
        """STALE_CONFIG for a write whose key is outside the owned ranges."""
        ns = self.stale_details.get("namespace", "")
        return LauraError(
            ErrorCode.STALE_CONFIG,
            f"{what}: the shard key is in a chunk this shard does not own for {ns}",
            dict(self.stale_details),
        )
