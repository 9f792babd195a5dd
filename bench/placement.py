"""Placement helpers of the performance scenarios: shard a collection, split it and
put each chunk on a chosen shard (balancer off, so nothing moves afterwards), read
back its chunk map and the ShardVersion a direct request to one shard must carry,
and load documents through the router."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson.max_key import MaxKey
from bson.min_key import MinKey

from bench.common import RPC
from lauradb.cluster import router_ext_pb2, routing_pb2, routing_pb2_grpc, shard_pb2
from lauradb.sharding.chunk_map import Chunk, ChunkMap
from lauradb.sharding.shard_key import HASHED, RANGE, ShardKeyPattern

LOAD_BATCH = 1000
LOAD_IN_FLIGHT = 4


@dataclass
class Placement:
    """A sharded collection's chunk map as the config server has it."""

    database: str
    collection: str
    epoch: str
    chunk_map: ChunkMap
    addresses: dict[str, str]  # shard id -> host:port

    def version(self, shard: str) -> shard_pb2.ShardVersion:
        """The ShardVersion a router would attach to a request for ``shard``."""
        major, minor = self.chunk_map.shard_version(shard)
        return shard_pb2.ShardVersion(epoch=self.epoch, major=major, minor=minor)

    def shard_of(self, key_doc: dict[str, Any]) -> str:
        return self.chunk_map.chunk_for_doc(key_doc).shard


async def shard_collection(
    config: routing_pb2_grpc.ConfigServiceStub,
    database: str,
    collection: str,
    field: str,
    strategy: routing_pb2.ShardingStrategy,
) -> None:
    response = await config.ShardCollection(
        routing_pb2.ShardCollectionRequest(
            database=database, collection=collection, shard_key_fields=[field], strategy=strategy
        ),
        timeout=RPC,
    )
    if response.HasField("error") and response.error.code:
        raise RuntimeError(f"ShardCollection {database}.{collection}: {response.error.message}")


async def placement(
    config: routing_pb2_grpc.ConfigServiceStub, database: str, collection: str
) -> Placement:
    response = await config.GetShardMap(
        routing_pb2.GetShardMapRequest(database=database, collection=collection), timeout=RPC
    )
    if not response.sharded:
        raise RuntimeError(f"{database}.{collection} is not sharded")
    fields = list(response.shard_key_fields) or [response.shard_key_field]
    strategy = HASHED if response.strategy == routing_pb2.HASH else RANGE
    pattern = ShardKeyPattern(fields, strategy)
    chunks = [
        Chunk(c.chunk_id, bson.decode(c.min_key), bson.decode(c.max_key), route.shard_id,
              c.version_major, c.version_minor)
        for route in response.shards
        for c in route.chunks
    ]  # fmt: skip
    addresses = {route.shard_id: f"{route.host}:{route.port}" for route in response.shards}
    return Placement(database, collection, response.epoch, ChunkMap(pattern, chunks), addresses)


async def place_ranges(
    config: routing_pb2_grpc.ConfigServiceStub,
    database: str,
    collection: str,
    field: str,
    split_points: Sequence[int],
    owners: Sequence[str],
) -> Placement:
    """Range-shard on ``field``, split at ``split_points`` and move chunk ``i`` (in key
    order) to ``owners[i]``. Done before loading, so the migrations move no data."""
    await shard_collection(config, database, collection, field, routing_pb2.RANGE)
    for point in split_points:
        current = await placement(config, database, collection)
        chunk = current.chunk_map.chunk_for_doc({field: point})
        response = await config.SplitChunk(
            routing_pb2.SplitChunkRequest(chunk_id=chunk.chunk_id, split_point=bson.encode({field: point})),
            timeout=RPC,
        )  # fmt: skip
        if not response.success:
            raise RuntimeError(f"SplitChunk {collection} at {point} failed")
    current = await placement(config, database, collection)
    for chunk, owner in zip(current.chunk_map.chunks, owners, strict=True):
        if chunk.shard == owner:
            continue
        moved = await config.MigrateChunk(
            routing_pb2.MigrateChunkRequest(chunk_id=chunk.chunk_id, from_shard=chunk.shard, to_shard=owner),
            timeout=RPC,
        )  # fmt: skip
        if not moved.success:
            raise RuntimeError(f"MigrateChunk {chunk.chunk_id} -> {owner}: {moved.error}")
    return await placement(config, database, collection)


def bounds_ok(chunk: Chunk, lo: int, hi: int, field: str) -> bool:
    """Whether ``[lo, hi)`` lies inside ``chunk`` (int keys, MinKey/MaxKey ends)."""
    cmin, cmax = chunk.min[field], chunk.max[field]
    above = isinstance(cmin, MinKey) or cmin <= lo
    below = isinstance(cmax, MaxKey) or hi <= cmax
    return bool(above and below)


async def load(
    router: routing_pb2_grpc.RouterServiceStub,
    database: str,
    collection: str,
    docs: Sequence[bytes],
) -> float:
    """Insert pre-encoded documents (unordered batches of 1,000, a few in flight); docs/s."""
    start = time.perf_counter()
    semaphore = asyncio.Semaphore(LOAD_IN_FLIGHT)

    async def one(lo: int) -> None:
        async with semaphore:
            request = routing_pb2.InsertRequest(
                database=database, collection=collection,
                documents=docs[lo : lo + LOAD_BATCH], ordered=False,
            )  # fmt: skip
            response = await router.Insert(request, timeout=RPC)
            if response.errors:
                raise RuntimeError(f"loading {collection}: {response.errors[0].error}")

    await asyncio.gather(*(one(lo) for lo in range(0, len(docs), LOAD_BATCH)))
    seconds = time.perf_counter() - start
    counted = await router.Count(
        router_ext_pb2.CountRequest(database=database, collection=collection), timeout=RPC
    )
    if counted.count < len(docs):
        raise RuntimeError(f"{collection}: {counted.count} documents after loading {len(docs)}")
    return len(docs) / seconds if seconds else float("inf")


async def drop_collection(
    router: routing_pb2_grpc.RouterServiceStub, database: str, collection: str
) -> None:
    await router.DropCollection(
        router_ext_pb2.DropCollectionRequest(database=database, collection=collection), timeout=RPC
    )
