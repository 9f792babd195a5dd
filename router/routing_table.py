"""One collection's routing table as the router caches it (built from GetShardMap)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import bson

from lauradb.bsonkit.codec import encode_ordered
from lauradb.cluster import common_pb2, routing_pb2, shard_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.chunk_map import Chunk, ChunkMap, combined_version
from lauradb.sharding.shard_key import HASHED, RANGE, ShardKeyPattern
from lauradb.sharding.targeting import PointLocator, point_locator

__all__ = ["RoutingTable", "ShardAddress", "chunks_from_response", "table_from_response"]

_UNSHARDED_VERSION = shard_pb2.ShardVersion(unsharded=True)


@dataclasses.dataclass(frozen=True)
class ShardAddress:
    shard_id: str
    node_id: str
    host: str
    port: int
    members: tuple[str, ...] = ()  # replica-set members (host:port); () = standalone

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclasses.dataclass(eq=False)
class RoutingTable:
    """Where a collection's documents live, and the versions to send to each shard."""

    database: str
    collection: str
    sharded: bool
    primary_shard: str
    shards: dict[str, ShardAddress]
    epoch: str = ""
    version: int = 0
    strategy: int = routing_pb2.UNKNOWN_STRATEGY
    unique: bool = False
    pattern: ShardKeyPattern | None = None
    chunk_map: ChunkMap | None = None
    _versions: dict[str, shard_pb2.ShardVersion] = dataclasses.field(default_factory=dict)
    _owners: tuple[str, ...] = ()
    # The shard of a point filter on a one-field key (None: another kind of key).
    point_locate: PointLocator | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.sharded and self.chunk_map is not None:
            self._owners = tuple(sorted(self.chunk_map.shards()))
            if self.pattern is not None:
                self.point_locate = point_locator(self.pattern, self.chunk_map)
        else:
            self._owners = (self.primary_shard,) if self.primary_shard else ()

    @property
    def namespace(self) -> str:
        return f"{self.database}.{self.collection}"

    @property
    def owning_shards(self) -> tuple[str, ...]:
        """Shards owning at least one chunk (the primary when unsharded), sorted."""
        return self._owners

    def shard_version(self, shard_id: str) -> shard_pb2.ShardVersion:
        """The ShardVersion to attach to a request for ``shard_id`` (built once)."""
        if not self.sharded or self.chunk_map is None:
            return _UNSHARDED_VERSION
        v = self._versions.get(shard_id)
        if v is None:
            major, minor = self.chunk_map.shard_version(shard_id)
            v = shard_pb2.ShardVersion(epoch=self.epoch, major=major, minor=minor)
            self._versions[shard_id] = v
        return v

    def address(self, shard_id: str) -> str:
        info = self.shards.get(shard_id)
        return info.address if info is not None else ""

    def shard_for_key_doc(self, key_doc: Any) -> str:
        """The shard owning a document (or a shard key document)."""
        if not self.sharded or self.chunk_map is None or self.pattern is None:
            return self.primary_shard
        return self.chunk_map.shard_for_key(self.pattern.key_for_doc(key_doc))

    def to_response(
        self, *, since_version: int = 0, since_epoch: str = "", incremental: bool = False
    ) -> routing_pb2.GetShardMapResponse:
        """The GetShardMapResponse the config server would give for this table."""
        if since_version and since_version == self.version and (
            not since_epoch or since_epoch == self.epoch
        ):
            return routing_pb2.GetShardMapResponse(not_modified=True, version=self.version)
        only_newer = incremental and self.sharded and since_epoch == self.epoch
        resp = routing_pb2.GetShardMapResponse(
            version=self.version,
            sharded=self.sharded,
            primary_shard=self.primary_shard,
            epoch=self.epoch,
            strategy=self.strategy,  # type: ignore[arg-type]
            unique=self.unique,
            incremental=only_newer,
        )
        if self.pattern is not None:
            resp.shard_key_field = self.pattern.fields[0]
            resp.shard_key_fields.extend(self.pattern.fields)
        by_shard: dict[str, list[Chunk]] = {}
        if self.chunk_map is not None:
            for c in self.chunk_map.chunks:
                if only_newer and combined_version(c.major, c.minor) <= since_version:
                    continue
                by_shard.setdefault(c.shard, []).append(c)
        for sid in sorted(self.shards):
            info = self.shards[sid]
            route = resp.shards.add(
                shard_id=sid, node_id=info.node_id, host=info.host, port=info.port,
                members=info.members,
            )
            for c in by_shard.get(sid, ()):
                route.chunks.add(
                    chunk_id=c.chunk_id,
                    min_key=encode_ordered(c.min),
                    max_key=encode_ordered(c.max),
                    version_major=c.major,
                    version_minor=c.minor,
                )
        return resp


def _strategy_name(strategy: int) -> str:
    return HASHED if strategy == routing_pb2.HASH else RANGE


def _addresses(routes: Iterable[routing_pb2.ShardRouteInfo]) -> dict[str, ShardAddress]:
    return {
        r.shard_id: ShardAddress(r.shard_id, r.node_id, r.host, r.port, tuple(r.members))
        for r in routes
    }


def _chunk(route_shard: str, c: common_pb2.ChunkRange) -> Chunk:
    try:
        lo = bson.decode(c.min_key)
        hi = bson.decode(c.max_key)
    except Exception as exc:
        raise LauraError(
            ErrorCode.INTERNAL_ERROR, f"config server sent a malformed chunk bound: {exc}"
        ) from None
    return Chunk(c.chunk_id, lo, hi, route_shard, c.version_major, c.version_minor)


def chunks_from_response(resp: routing_pb2.GetShardMapResponse) -> list[Chunk]:
    return [_chunk(route.shard_id, c) for route in resp.shards for c in route.chunks]


def table_from_response(
    database: str, collection: str, resp: routing_pb2.GetShardMapResponse
) -> RoutingTable:
    """A full (non-incremental) GetShardMap response as a routing table."""
    shards = _addresses(resp.shards)
    if not resp.sharded:
        primary = resp.primary_shard or (resp.shards[0].shard_id if resp.shards else "")
        if not primary:
            raise LauraError(
                ErrorCode.INTERNAL_ERROR,
                f"config server gave no primary shard for {database}.{collection}",
            )
        return RoutingTable(database, collection, False, primary, shards, version=resp.version)
    fields = list(resp.shard_key_fields) or [resp.shard_key_field]
    pattern = ShardKeyPattern(fields, _strategy_name(resp.strategy))
    cmap = ChunkMap(pattern, chunks_from_response(resp))
    return RoutingTable(
        database,
        collection,
        True,
        resp.primary_shard,
        shards,
        epoch=resp.epoch,
        version=resp.version,
        strategy=resp.strategy,
        unique=resp.unique,
        pattern=pattern,
        chunk_map=cmap,
    )


def apply_incremental(
    table: RoutingTable, resp: routing_pb2.GetShardMapResponse
) -> RoutingTable:
    """``table`` with the changed chunks of an incremental response applied."""
    assert table.chunk_map is not None
    cmap = table.chunk_map.apply_changes(chunks_from_response(resp))
    shards = dict(table.shards)
    shards.update(_addresses(resp.shards))
    return RoutingTable(
        table.database,
        table.collection,
        True,
        resp.primary_shard or table.primary_shard,
        shards,
        epoch=table.epoch,
        version=resp.version,
        strategy=table.strategy,
        unique=table.unique,
        pattern=table.pattern,
        chunk_map=cmap,
    )
