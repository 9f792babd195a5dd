"""Which shards an operation goes to, from the cached routing table."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.targeting import target
from router.routing_table import RoutingTable

__all__ = ["Targets", "key_values_from_doc", "target_filter", "target_shard_key"]


@dataclasses.dataclass(frozen=True)
class Targets:
    shards: list[str]  # sorted shard ids
    exact_single_key: bool  # the filter pins the full shard key to one value
    broadcast: bool = False


def target_filter(table: RoutingTable, filter_doc: Mapping[str, Any] | None) -> Targets:
    """Shards that may hold documents matching ``filter_doc`` (unsharded: the primary)."""
    if not table.sharded or table.pattern is None or table.chunk_map is None:
        return Targets([table.primary_shard], True)
    result = target(table.pattern, table.chunk_map, filter_doc or {})
    return Targets(sorted(result.shards), result.exact_single_key, result.broadcast)


def key_values_from_doc(table: RoutingTable, key_doc: Mapping[str, Any]) -> list[Any]:
    """Shard key values from ``{field: value}`` (dotted names literal or nested)."""
    assert table.pattern is not None
    values: list[Any] = []
    for field in table.pattern.fields:
        if field in key_doc:
            values.append(key_doc[field])
            continue
        value: Any = key_doc
        for part in field.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        values.append(value)
    return values


def target_shard_key(table: RoutingTable, key_doc: Mapping[str, Any]) -> Targets:
    """The one shard owning an explicit shard key (``QueryRequest.shard_key``)."""
    if not table.sharded or table.pattern is None or table.chunk_map is None:
        return Targets([table.primary_shard], True)
    if not isinstance(key_doc, Mapping) or not key_doc:
        raise LauraError(ErrorCode.BAD_VALUE, "shard_key must be a non-empty document")
    key = table.pattern.key_for_values(key_values_from_doc(table, key_doc))
    return Targets([table.chunk_map.shard_for_key(key)], True)
