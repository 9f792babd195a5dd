"""Metadata records -> wire messages (and Node messages -> records)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from config_server.catalog import ShardMapView, TopologyView
from config_server.model import ChunkRecord, NodeRecord, ShardRecord
from lauradb.cluster import cluster_pb2, common_pb2, routing_pb2


def chunk_range(chunk: ChunkRecord) -> common_pb2.ChunkRange:
    return common_pb2.ChunkRange(
        chunk_id=chunk.chunk_id,
        min_key=chunk.min_key,
        max_key=chunk.max_key,
        version_major=chunk.major,
        version_minor=chunk.minor,
        jumbo=chunk.jumbo,
    )


def _by_shard(chunks: Iterable[ChunkRecord]) -> dict[str, list[common_pb2.ChunkRange]]:
    out: dict[str, list[common_pb2.ChunkRange]] = {}
    for chunk in chunks:
        out.setdefault(chunk.shard_id, []).append(chunk_range(chunk))
    return out


def shard_info(
    shard: ShardRecord, chunks: Iterable[common_pb2.ChunkRange] = ()
) -> cluster_pb2.ShardInfo:
    return cluster_pb2.ShardInfo(
        shard_id=shard.shard_id,
        node_id=shard.node_id,
        host=shard.host,
        port=shard.port,
        draining=shard.draining,
        chunks=chunks,
        members=shard.members,
    )


def shard_map_response(view: ShardMapView) -> routing_pb2.GetShardMapResponse:
    coll = view.collection
    if view.not_modified:
        return routing_pb2.GetShardMapResponse(not_modified=True)
    if coll is None:
        return routing_pb2.GetShardMapResponse(
            sharded=False,
            primary_shard=view.primary_shard,
            version=0,
            shards=[
                routing_pb2.ShardRouteInfo(
                    shard_id=s.shard_id, node_id=s.node_id, host=s.host, port=s.port,
                    members=s.members,
                )
                for s in view.shards
            ],
        )
    chunks = _by_shard(view.chunks)
    return routing_pb2.GetShardMapResponse(
        version=view.version,
        sharded=True,
        epoch=coll.epoch,
        primary_shard=view.primary_shard,
        shard_key_field=coll.key_fields[0],
        shard_key_fields=coll.key_fields,
        strategy=coll.strategy,
        unique=coll.unique,
        incremental=view.incremental,
        shards=[
            routing_pb2.ShardRouteInfo(
                shard_id=s.shard_id,
                node_id=s.node_id,
                host=s.host,
                port=s.port,
                chunks=chunks.get(s.shard_id, []),
                members=s.members,
            )
            for s in view.shards
        ],
    )


def node_record(node: cluster_pb2.Node, *, now_ms: int) -> NodeRecord:
    tags = dict(node.tags)
    return NodeRecord(
        node_id=node.id,
        host=node.host,
        port=node.port,
        role=int(node.role),
        priority=node.priority,
        tags=tags,
        shard_id=node.shard_id or tags.get("shard_id", ""),
        up=True,
        last_heartbeat_ms=now_ms,
    )


def node_message(node: NodeRecord, last_heartbeat_ms: int | None = None) -> cluster_pb2.Node:
    return cluster_pb2.Node(
        id=node.node_id,
        host=node.host,
        port=node.port,
        role=node.role,  # type: ignore[arg-type]
        priority=node.priority,
        tags=node.tags,
        up=node.up,
        last_heartbeat_ms=last_heartbeat_ms or node.last_heartbeat_ms,
        shard_id=node.shard_id,
    )


def shard_infos(view: TopologyView) -> list[cluster_pb2.ShardInfo]:
    chunks = _by_shard(view.chunks)
    return [shard_info(s, chunks.get(s.shard_id, [])) for s in view.shards]


def topology_message(
    view: TopologyView,
    shards: list[cluster_pb2.ShardInfo],
    last_heartbeat_ms: Callable[[str], int | None],
) -> cluster_pb2.ClusterTopology:
    return cluster_pb2.ClusterTopology(
        version=view.version,
        shards=shards,
        nodes=[node_message(n, last_heartbeat_ms(n.node_id)) for n in view.nodes],
    )
