"""ChunkStats and SplitVector: what the balancer asks a shard about its chunks.

* ``chunk_stats``: documents and BSON bytes per chunk this shard owns, one range
  scan of the shard key index per chunk (``bytes`` = the sum of the stored BSON
  lengths).
* ``split_vector``: split points of a key range, in shard key order. With
  ``max_chunk_bytes == 0`` one point at the median shard key; otherwise (when the
  range holds more than ``max_chunk_bytes``) a point every ~``max_chunk_bytes / 2``
  bytes. Documents with the same shard key never end up on both sides of a point,
  and every point lies strictly inside ``(min, max)``. A range holding a single key
  value cannot be split: ``jumbo`` (when it holds documents), no points.

Split points are bound documents in chunk space, like the config server's chunk
bounds (``config_server/key_bounds.py``): the shard key fields in key order with the
document's values, the first one replaced by its ``Int64`` hash for a hashed key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lauradb.bsonkit.keys import decode_key
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub.metadata import NamespaceMetadata
from shard_stub.migration_range import MigrationRange
from shard_stub.ownership import KeyRange
from shard_stub.storage import ShardStorage


@dataclass(frozen=True)
class ChunkStat:
    chunk_id: str
    min_bound: dict[str, Any]
    max_bound: dict[str, Any]
    documents: int
    bytes: int


@dataclass
class SplitVector:
    split_points: list[dict[str, Any]] = field(default_factory=list)
    jumbo: bool = False
    documents: int = 0
    bytes: int = 0


def chunk_stats(
    storage: ShardStorage, meta: NamespaceMetadata, shard_id: str
) -> list[ChunkStat]:
    """Documents and bytes of every chunk ``shard_id`` owns (none when unsharded)."""
    if not meta.sharded or meta.chunk_map is None:
        return []
    chunks = meta.chunk_map.chunks
    last = len(chunks) - 1
    out: list[ChunkStat] = []
    for i, c in enumerate(chunks):
        if c.shard != shard_id:
            continue
        docs, size = storage.range_stats(meta.namespace, KeyRange(c.min_key, c.max_key, i == last))
        out.append(ChunkStat(c.chunk_id, dict(c.min), dict(c.max), docs, size))
    return out


def split_vector(
    storage: ShardStorage, pattern: ShardKeyPattern, r: MigrationRange, max_chunk_bytes: int
) -> SplitVector:
    """Split points of the range ``r`` (see the module docstring)."""
    if max_chunk_bytes < 0:
        raise LauraError(
            ErrorCode.BAD_VALUE, f"max_chunk_bytes must be >= 0, not {max_chunk_bytes}"
        )
    docs, size = storage.range_stats(r.ns, r.keys)
    result = SplitVector(documents=docs, bytes=size)
    if docs == 0:
        return result
    if max_chunk_bytes and size <= max_chunk_bytes:
        return result  # small enough: nothing to split
    keys: list[bytes] = []
    if max_chunk_bytes:
        keys = _every(storage.range_key_sizes(r.ns, r.keys), max(max_chunk_bytes // 2, 1), r)
    if not keys:
        median = _median(storage.range_key_sizes(r.ns, r.keys), docs, r)
        keys = [median] if median is not None else []
    if not keys:
        result.jumbo = True  # a single shard key value
        return result
    result.split_points = [_bound_document(storage, pattern, r.ns, k) for k in keys]
    return result


def _inside(key: bytes, r: MigrationRange) -> bool:
    return r.keys.lo < key < r.keys.hi


def _median(rows: Iterator[tuple[bytes, int]], count: int, r: MigrationRange) -> bytes | None:
    """The shard key at the middle document, or the next larger key when the middle
    one equals the smallest (so the left side is never empty); None: a single value."""
    middle = count // 2
    first: bytes | None = None
    for i, (key, _) in enumerate(rows):
        if first is None:
            first = key
        if i >= middle and key != first and _inside(key, r):
            return key
    return None


def _every(rows: Iterator[tuple[bytes, int]], target: int, r: MigrationRange) -> list[bytes]:
    """A point each time ``target`` bytes were accumulated (at the next new key)."""
    points: list[bytes] = []
    acc = 0
    prev: bytes | None = None
    for key, size in rows:
        if acc >= target and prev is not None and key != prev and _inside(key, r):
            points.append(key)
            acc = 0
        acc += size
        prev = key
    return points


def _bound_document(
    storage: ShardStorage, pattern: ShardKeyPattern, ns: str, key: bytes
) -> dict[str, Any]:
    """The chunk-space bound document of an encoded shard key."""
    doc = storage.document_with_key(ns, key)
    if doc is not None:
        try:
            bound = dict(zip(pattern.fields, pattern.to_chunk_space(pattern.extract(doc)),
                             strict=True))
            if pattern.encode_bound(bound) == key:
                return bound
        except LauraError:
            pass
    # The document changed meanwhile: decode the key itself (same order, maybe other types).
    return dict(zip(pattern.fields, decode_key(key), strict=True))
