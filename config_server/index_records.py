"""Index records on the config server: validating specs and MongoDB's unique-index rule.

For a sharded collection MongoDB only allows unique indexes that it can enforce
shard by shard: the shard key fields must be a prefix of the index fields (by
name, in order; a hashed shard key field counts by its name too), or the index
starts with ``_id``. ``ShardCollection`` refuses a key that an existing unique
index would contradict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64

from config_server.model import IndexRecord
from lauradb.errors import ErrorCode, LauraError

ID_INDEX_NAME = "_id_"
ID_INDEX_KEYS: tuple[tuple[str, int], ...] = (("_id", 1),)

IndexKeys = tuple[tuple[str, int], ...]


def _direction(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Int64, float)):
        return int(value) if value in (1, -1) else None
    if isinstance(value, Decimal128):
        d = value.to_decimal()
        return int(d) if d in (1, -1) else None
    return None


def parse_keys(keys: Mapping[str, Any]) -> IndexKeys:
    """``{field: 1 | -1, ...}`` -> pairs; BAD_VALUE "bad index key pattern" otherwise."""
    if not keys:
        raise LauraError(ErrorCode.BAD_VALUE, "bad index key pattern: no index keys given")
    out: list[tuple[str, int]] = []
    for name, value in keys.items():
        if not isinstance(name, str) or not name or name.startswith("$") or (
            "" in name.split(".")
        ):
            raise LauraError(
                ErrorCode.BAD_VALUE, f"bad index key pattern {dict(keys)!r}: invalid field {name!r}"
            )
        direction = _direction(value)
        if direction is None:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"bad index key pattern {dict(keys)!r}: values must be 1 or -1, not {value!r}",
            )
        out.append((name, direction))
    return tuple(out)


def validate_name(name: str) -> str:
    if not name:
        raise LauraError(ErrorCode.BAD_VALUE, "the index name is required")
    if "\x00" in name:
        raise LauraError(ErrorCode.BAD_VALUE, "index names cannot contain NUL bytes")
    return name


def keys_text(keys: Sequence[tuple[str, int]]) -> str:
    return "{ " + ", ".join(f"{f}: {d}" for f, d in keys) + " }"


def unique_compatible(shard_key_fields: Sequence[str], index_keys: IndexKeys) -> bool:
    """MongoDB's ``isUniqueIndexCompatible``: ``_id`` first, or shard key as a prefix."""
    if index_keys and index_keys[0][0] == "_id":
        return True
    fields = [f for f, _ in index_keys]
    return fields[: len(shard_key_fields)] == list(shard_key_fields)


def check_unique_for_shard_key(
    index: IndexRecord, shard_key_fields: Sequence[str], strategy: str
) -> None:
    """CANNOT_CREATE_INDEX when a unique index cannot be enforced under this shard key."""
    if index.unique and not unique_compatible(shard_key_fields, index.keys):
        raise LauraError(
            ErrorCode.CANNOT_CREATE_INDEX,
            f"cannot create unique index over {keys_text(index.keys)} with shard key pattern "
            f"{_shard_key_text(shard_key_fields, strategy)}",
        )


def check_shard_key_for_indexes(
    namespace: str,
    indexes: Sequence[IndexRecord],
    shard_key_fields: Sequence[str],
    strategy: str,
) -> None:
    """INVALID_OPTIONS when sharding would leave a unique index unenforceable."""
    for index in indexes:
        if index.unique and not unique_compatible(shard_key_fields, index.keys):
            raise LauraError(
                ErrorCode.INVALID_OPTIONS,
                f"can't shard collection '{namespace}' with unique index on "
                f"{keys_text(index.keys)} and proposed shard key "
                f"{_shard_key_text(shard_key_fields, strategy)}. Uniqueness can't be "
                f"maintained unless shard key is a prefix",
            )


def _shard_key_text(fields: Sequence[str], strategy: str) -> str:
    if strategy == "HASH" and fields:
        parts = [f'{fields[0]}: "hashed"', *(f"{f}: 1" for f in fields[1:])]
        return "{ " + ", ".join(parts) + " }"
    return "{ " + ", ".join(f"{f}: 1" for f in fields) + " }"
