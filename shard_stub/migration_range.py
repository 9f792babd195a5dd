"""The key range a chunk migration moves: bound documents plus their encoded form.

A migration moves the documents of ``[min, max)`` in chunk space (the shard key
values, the first one hashed for a hashed key). The bounds travel as BSON bound
documents (``{k: 0}``, ``{k: MinKey()}``); storage compares encoded keys, so the
range keeps both. The range ending at the global maximum also holds a key equal to
it (as ``ChunkMap`` does), hence ``hi_inclusive``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lauradb.bsonkit.codec import decode_document, encode_ordered
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub.ownership import KeyRange


@dataclass(frozen=True)
class MigrationRange:
    """The documents of namespace ``ns`` whose shard key lies in ``keys``."""

    ns: str
    min_bound: dict[str, Any]
    max_bound: dict[str, Any]
    keys: KeyRange

    @classmethod
    def from_bounds(
        cls,
        ns: str,
        pattern: ShardKeyPattern,
        min_bound: Mapping[str, Any] | bytes,
        max_bound: Mapping[str, Any] | bytes,
    ) -> MigrationRange:
        """The range of two bound documents (BSON or decoded); BAD_VALUE when malformed."""
        lo_doc = _bound(min_bound, "min bound")
        hi_doc = _bound(max_bound, "max bound")
        lo = pattern.encode_bound(lo_doc)
        hi = pattern.encode_bound(hi_doc)
        if lo >= hi:
            raise LauraError(
                ErrorCode.BAD_VALUE, f"empty key range: min {lo_doc!r} is not below max {hi_doc!r}"
            )
        inclusive = hi == pattern.encode_bound(pattern.global_max())
        return cls(ns, lo_doc, hi_doc, KeyRange(lo, hi, inclusive))

    @classmethod
    def from_stored(
        cls, ns: str, min_raw: bytes, max_raw: bytes, lo: bytes, hi: bytes, hi_inclusive: bool
    ) -> MigrationRange:
        return cls(
            ns,
            decode_document(min_raw, "stored min bound"),
            decode_document(max_raw, "stored max bound"),
            KeyRange(lo, hi, hi_inclusive),
        )

    @property
    def database(self) -> str:
        return self.ns.split(".", 1)[0]

    @property
    def collection(self) -> str:
        return self.ns.split(".", 1)[1]

    def encoded_bounds(self) -> tuple[bytes, bytes]:
        """The bound documents as BSON (as they travel on the wire)."""
        return encode_ordered(self.min_bound), encode_ordered(self.max_bound)

    def describe(self) -> str:
        close = "]" if self.keys.hi_inclusive else ")"
        return f"{self.ns} [{self.min_bound!r}, {self.max_bound!r}{close}"


def _bound(value: Mapping[str, Any] | bytes, what: str) -> dict[str, Any]:
    if isinstance(value, (bytes, bytearray)):
        if not value:
            raise LauraError(ErrorCode.BAD_VALUE, f"the {what} is missing")
        return decode_document(bytes(value), what)
    return dict(value)
