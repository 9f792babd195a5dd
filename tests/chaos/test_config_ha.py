"""Issue 11 chaos: three config servers on one etcd, two shards, a router.

One cluster, three phases (a CRUD workload runs through the router all along):

1. kill -9 a config server that does not lead: nothing changes for clients (the
   workload sees no error at all), the leader stays; it is restarted.
2. kill -9 the leader while it orchestrates a migration (MoveChunk through the router,
   caught "running"): another config server leads within the lease TTL (plus slack for
   a loaded machine), the migration is decided (committed or rolled back) and the
   chunk has exactly one owner, consistent with where the documents are.
3. end state: the workload saw no error outside the transient codes, and at most
   ``MAX_ERRORS`` of those (the bounded window: an in-flight call to the killed server
   is retried on the next one by the router's failover channel, so usually none); every
   document is there exactly once with its last value; routing agrees with the data;
   no metadata was lost (shards, databases, the collection and its chunk ranges).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from lauradb.cluster import router_ext_pb2, routing_pb2, routing_pb2_grpc
from lauradb.etcd_local import LocalEtcd
from tests.integration.harness import (
    Cluster,
    Proc,
    chunks_of,
    eventually,
    get_shard_map,
    shard_collection,
    split_chunk,
    unique_name,
)
from tests.integration.workload import CrudWorkload, list_migrations

pytestmark = [pytest.mark.chaos]

ClusterFactory = Callable[..., Awaitable[Cluster]]
DB = "ha"
COLL = "w"
LEASE_TTL = 3.0
# A new leader within the lease TTL; the slack covers the election poll, the take-over
# (mirror sync, migration recovery) and a slow shared test machine.
TAKEOVER_SLACK = 10.0
MAX_ERRORS = 5  # transient errors the workload may see around the leader's death
OPS_AFTER_EACH_KILL = 150


def config_stub(cluster: Cluster, proc: Proc) -> routing_pb2_grpc.ConfigServiceStub:
    return routing_pb2_grpc.ConfigServiceStub(cluster.channel(proc.address))


async def metadata(cluster: Cluster, proc: Proc) -> dict[str, Any]:
    """What must survive: shards, databases, the collection's chunk ranges."""
    stub = config_stub(cluster, proc)
    shards = await stub.ListShards(router_ext_pb2.ListShardsRequest(), timeout=10)
    dbs = await stub.ListDatabases(router_ext_pb2.ListDatabasesRequest(), timeout=10)
    shard_map = await get_shard_map(stub, DB, COLL)
    return {
        "shards": sorted((s.shard_id, s.host, s.port) for s in shards.shards),
        "databases": sorted((d.name, tuple(sorted(d.sharded_collections))) for d in dbs.databases),
        "ranges": sorted((repr(c.min), repr(c.max)) for c in chunks_of(shard_map)),
    }


async def ops_done(workload: CrudWorkload, more: int, timeout: float = 60.0) -> None:
    target = sum(workload.stats.ops.values()) + more

    async def enough() -> bool:
        return sum(workload.stats.ops.values()) >= target

    await eventually(enough, timeout=timeout, interval=0.05, what=f"{more} more workload ops")


async def test_config_servers_survive_kill_9(
    cluster: ClusterFactory, etcd_server: LocalEtcd
) -> None:
    c = await cluster(
        shards=2,
        config_replicas=3,
        store=f"{etcd_server.url}/{unique_name('ha')}",
        lease_ttl=LEASE_TTL,
        # a slow clone: the migration is still running when its leader dies
        extra_shard_args=["--migration-clone-batch", "5"],
    )
    router = c.router_stub()
    via_router = c.config_stub()
    await shard_collection(via_router, DB, COLL, ["k"], "range")
    shard_map = await get_shard_map(via_router, DB, COLL)
    await split_chunk(via_router, chunks_of(shard_map)[0].chunk_id, {"k": 2_000_000})
    shard_map = await get_shard_map(via_router, DB, COLL)
    low = next(ch for ch in chunks_of(shard_map) if ch.contains({"k": 0}))
    other = next(s for s in c.shard_ids if s != low.shard)

    workload = CrudWorkload([router], DB, COLL, tasks=4, pad=100, op_timeout=20.0)
    for _ in range(12):  # tasks 0 and 1 (600 documents) live in the low chunk
        await workload.preload(25)  # (ids drawn within one call may repeat: small calls)
    before = await metadata(c, c.config)
    leader = await c.config_leader()
    workload.start()
    try:
        # 1. a non-leader dies: nothing changes for clients
        follower = next(p for p in c.configs if p is not leader)
        await ops_done(workload, OPS_AFTER_EACH_KILL // 3)
        follower.kill()
        await ops_done(workload, OPS_AFTER_EACH_KILL)
        assert not workload.stats.errors, workload.stats.summary()
        assert await c.config_leader() is leader
        await c.restart(follower)

        # 2. the leader dies while it runs a migration
        move = asyncio.ensure_future(via_router.MigrateChunk(
            routing_pb2.MigrateChunkRequest(chunk_id=low.chunk_id, to_shard=other), timeout=120,
        ))  # fmt: skip
        watcher = config_stub(c, follower)

        async def running() -> bool:
            rows = await list_migrations(watcher, active_only=True)
            return any(m.chunk_id == low.chunk_id for m in rows)

        await eventually(running, timeout=30, interval=0.01, what="the migration running")
        killed_at = time.monotonic()
        leader.kill()
        new_leader = await c.config_leader(timeout=LEASE_TTL + TAKEOVER_SLACK + 10)
        took = time.monotonic() - killed_at
        assert new_leader is not leader
        assert took <= LEASE_TTL + TAKEOVER_SLACK, f"took {took:.1f}s to elect a new leader"

        async def decided() -> bool:
            rows = await list_migrations(config_stub(c, new_leader), active_only=True)
            return not rows

        await eventually(decided, timeout=60, interval=0.1, what="the migration decided")
        try:
            outcome: Any = await asyncio.wait_for(move, 120)
        except grpc.RpcError as exc:  # the orchestrating config server died
            outcome = exc.code()
        await ops_done(workload, OPS_AFTER_EACH_KILL)
    finally:
        stats = await workload.stop()

    # 3. clients, data and metadata
    assert not stats.unexpected and not stats.violations, stats.summary()
    assert sum(stats.errors.values()) <= MAX_ERRORS, stats.summary()
    await workload.check_invariants(c)
    rows = [m for m in await list_migrations(config_stub(c, new_leader))
            if m.chunk_id == low.chunk_id]  # fmt: skip
    assert len(rows) == 1 and rows[0].state in ("committed", "failed"), (rows, outcome)
    after_map = await get_shard_map(config_stub(c, new_leader), DB, COLL)
    (moved,) = [ch for ch in chunks_of(after_map) if ch.contains({"k": 0})]
    expected_owner = other if rows[0].state == "committed" else low.shard
    assert moved.shard == expected_owner, (rows[0], moved)
    # the data is where the map says: per-shard counts of the low chunk's range
    low_docs = {"k": {"$lt": 2_000_000}}
    counts = [await c.shard_count(c.shard_index(s), DB, COLL, low_docs) for s in c.shard_ids]
    expected = sum(1 for i in workload.expected_live() if i < 2_000_000)
    uncertain = sum(1 for i in workload.uncertain() if i < 2_000_000)
    owner_count = counts[c.shard_index(expected_owner)]
    assert expected <= owner_count <= expected + uncertain, (counts, expected, uncertain)
    assert sum(counts) == owner_count, f"orphans visible: {counts}"
    after = await metadata(c, new_leader)
    assert after == before, (before, after)
    # every config server (and the router) names the new leader
    status = await via_router.GetBalancerStatus(
        router_ext_pb2.GetBalancerStatusRequest(), timeout=10
    )
    assert status.leader == new_leader.address
