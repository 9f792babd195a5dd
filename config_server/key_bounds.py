"""Shard keys and chunk bounds on the config server (over ``lauradb.sharding``).

Chunk bounds are BSON documents of the shard key fields in key order:
``{a: MinKey(), b: MinKey()}`` .. ``{a: MaxKey(), b: MaxKey()}``. A hashed key
(strategy HASH: the first field hashed, like MongoDB's ``{a: "hashed", b: 1}``) has
its first field in the signed 64-bit hash space, ``{a: Int64(h), b: MinKey()}``.
``ShardKeyPattern.encode_bound`` orders bounds like the key space (memcmp order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.regex import Regex

from config_server.model import COMPOUND, HASH, RANGE, STRATEGIES
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding import shard_key
from lauradb.sharding.shard_key import ShardKeyPattern

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT64_SPAN = 2**64
MAX_INITIAL_CHUNKS = 8192


def resolve_strategy(strategy: str, field_count: int) -> str:
    """The stored strategy: UNKNOWN/RANGE/COMPOUND follow the number of fields
    (RANGE for one, COMPOUND for several); HASH hashes the first field."""
    if strategy in ("", "UNKNOWN_STRATEGY", RANGE, COMPOUND):
        return RANGE if field_count <= 1 else COMPOUND
    if strategy == HASH:
        return HASH
    raise LauraError(
        ErrorCode.BAD_VALUE, f"unknown sharding strategy {strategy!r}; use one of {STRATEGIES}"
    )


def pattern_for(fields: Sequence[str], strategy: str) -> ShardKeyPattern:
    """The shard key pattern (validates the fields: BAD_VALUE when malformed)."""
    if not fields:
        raise LauraError(ErrorCode.BAD_VALUE, "a shard key is required: no shard_key_fields given")
    return ShardKeyPattern(list(fields), shard_key.HASHED if strategy == HASH else shard_key.RANGE)


def sort_bytes(pattern: ShardKeyPattern, bound: Mapping[str, Any]) -> bytes:
    """Order-preserving bytes of a bound document (memcmp order == key order)."""
    return pattern.encode_bound(bound)


def hashed_boundaries(count: int) -> list[int]:
    """The ``count - 1`` interior boundaries splitting [-2**63, 2**63) evenly."""
    return [INT64_MIN + (i * INT64_SPAN) // count for i in range(1, count)]


def initial_ranges(
    pattern: ShardKeyPattern, count: int
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The initial chunks' [min, max) bounds: one chunk, or ``count`` hashed chunks."""
    if not pattern.hashed or count <= 1:
        return [(pattern.global_min(), pattern.global_max())]
    first, rest = pattern.fields[0], pattern.fields[1:]
    points = [pattern.global_min()]
    for boundary in hashed_boundaries(count):
        point: dict[str, Any] = {first: Int64(boundary)}
        point.update((f, MinKey()) for f in rest)
        points.append(point)
    points.append(pattern.global_max())
    return [(points[i], points[i + 1]) for i in range(count)]


def check_initial_chunks(requested: int, shard_count: int, strategy: str) -> int:
    """How many initial chunks to create (0 means two per shard for hashed keys)."""
    if requested < 0:
        raise LauraError(ErrorCode.BAD_VALUE, f"initial_chunks must be >= 0, got {requested}")
    if strategy != HASH:
        if requested > 1:
            raise LauraError(
                ErrorCode.BAD_VALUE, "initial_chunks can only be set for a hashed shard key"
            )
        return 1
    count = requested or 2 * max(shard_count, 1)
    if count > MAX_INITIAL_CHUNKS:
        raise LauraError(
            ErrorCode.BAD_VALUE, f"initial_chunks must be at most {MAX_INITIAL_CHUNKS}, got {count}"
        )
    return count


def _bad_split(message: str) -> LauraError:
    return LauraError(ErrorCode.INVALID_SPLIT_POINT, message)


def normalize_split_point(point: Mapping[str, Any], pattern: ShardKeyPattern) -> dict[str, Any]:
    """The split point as a bound document in shard key field order.

    It must name exactly the shard key fields; a hashed first field splits in the
    hash space (a 64-bit integer); arrays and regexes are never shard key values.
    """
    fields = pattern.fields
    if len(point) != len(fields) or any(f not in point for f in fields):
        raise _bad_split(
            f"split point {dict(point)!r} must have exactly the shard key fields {list(fields)}"
        )
    out: dict[str, Any] = {}
    for i, f in enumerate(fields):
        value = point[f]
        if i == 0 and pattern.hashed and not isinstance(value, (MinKey, MaxKey)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise _bad_split(
                    f"a hashed shard key splits in the hash space: split point for '{f}' "
                    f"must be a 64-bit integer, got {type(value).__name__}"
                )
            if not INT64_MIN <= int(value) <= INT64_MAX:
                raise _bad_split(f"split point {value} for '{f}' is outside the 64-bit range")
            value = Int64(value)
        elif isinstance(value, (list, tuple)):
            raise _bad_split(f"split point for '{f}' cannot be an array")
        elif isinstance(value, Regex):
            raise _bad_split(f"split point for '{f}' cannot be a regular expression")
        out[f] = value
    return out
