"""Issue 5: CRUD through two routers while the balancer splits and migrates chunks.

A 3-shard cluster whose config server runs the balancer with a tiny chunk size and a
short interval, so auto-splits and migrations run continuously while the model-based
workload (``tests/integration/workload.py``) inserts, updates, deletes and reads its
own documents through two routers. No process is killed, so the application must
never see an error (routers absorb STALE_CONFIG and critical sections), and at the end
every document is present exactly once with its last written value, counts match, and
every router targets exactly one shard per key.

Also: a fourth shard added to a loaded cluster receives chunks until the cluster is
balanced again, with no errors at the clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.integration.harness import Cluster, shard_collection
from tests.integration.workload import (
    CrudWorkload,
    add_shard,
    balancer_status,
    chunk_counts,
    committed_migrations,
    extra_router,
    quiesce_balancer,
    router_stub,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ClusterFactory = Callable[..., Awaitable[Cluster]]

CHUNK_BYTES = 24 * 1024
BALANCE_THRESHOLD = 2  # chunks
BALANCER_ARGS = [
    "--balancer-interval", "0.2",
    "--chunk-size-bytes", str(CHUNK_BYTES),
    "--balance-threshold", str(BALANCE_THRESHOLD),
]  # fmt: skip
RUN_SECONDS = 30.0  # at most
MIN_RUN_SECONDS = 8.0  # at least (migrations keep overlapping the writes)
TARGET_MIGRATIONS = 8
MIN_MIGRATIONS = 3
COLL = "w"


async def balancing_cluster(factory: ClusterFactory, shards: int = 3) -> Cluster:
    """A started cluster whose config server balances aggressively."""
    return await factory(shards, extra_config_args=BALANCER_ARGS)


async def run_until_migrations(
    workload: CrudWorkload, c: Cluster, target: int, seconds: float
) -> int:
    """Let the workload run until ``target`` migrations committed and ``MIN_RUN_SECONDS``
    passed (or ``seconds`` passed, or the workload saw a problem); the number committed."""
    config = c.config_server_stub()
    base = await committed_migrations(config)
    started = time.monotonic()
    done = 0
    while time.monotonic() < started + seconds:
        done = await committed_migrations(config) - base
        stats = workload.stats
        if stats.violations or stats.errors:
            break
        if done >= target and time.monotonic() >= started + MIN_RUN_SECONDS:
            break
        await asyncio.sleep(0.25)
    return done


@pytest.mark.parametrize("strategy", ["range", "hashed"])
async def test_crud_while_balancer_splits_and_migrates(
    cluster: ClusterFactory, db_name: str, strategy: str
) -> None:
    c = await balancing_cluster(cluster)
    async with extra_router(c) as second:
        routers = [c.router_stub(), router_stub(c, second)]
        # one initial chunk (hashed too): the balancer has to split and spread it
        await shard_collection(c.config_stub(), db_name, COLL, ["k"], strategy, initial_chunks=1)
        workload = CrudWorkload(routers, db_name, COLL, tasks=4, seed=5)
        await workload.preload(150)
        workload.start()
        try:
            migrated = await run_until_migrations(workload, c, TARGET_MIGRATIONS, RUN_SECONDS)
        finally:
            stats = await workload.stop()

        assert not stats.errors, f"the application saw errors: {stats.summary()}"
        assert not stats.violations, stats.summary()
        assert stats.ops["update"] and stats.ops["delete"] and stats.ops["read"], stats.summary()
        status = await balancer_status(c.config_server_stub())
        assert migrated >= MIN_MIGRATIONS, (
            f"only {migrated} migrations committed in {RUN_SECONDS:g}s; balancer: {status}"
        )
        assert status.splits > 0, status
        print(f"{migrated} migrations, {status.splits} splits; {stats.summary()}")

        # Invariants hold while the balancer keeps going ...
        await workload.check_invariants(c, per_shard=False, per_key=False)
        # ... and, checked shard by shard, once it is quiet.
        await quiesce_balancer(c.config_server_stub())
        await workload.check_invariants(c)


def spread(counts: dict[str, int]) -> int:
    return max(counts.values()) - min(counts.values())


async def test_added_shard_gets_chunks_until_balanced(
    cluster: ClusterFactory, db_name: str
) -> None:
    c = await balancing_cluster(cluster)
    async with extra_router(c) as second:
        routers = [c.router_stub(), router_stub(c, second)]
        config = c.config_server_stub()
        await shard_collection(c.config_stub(), db_name, COLL, ["k"], "range")
        workload = CrudWorkload(routers, db_name, COLL, tasks=4, seed=11)
        await workload.preload(250)

        async def balanced(shards: int) -> dict[str, int] | None:
            counts = await chunk_counts(config, db_name, COLL)
            ok = len(counts) == shards and min(counts.values()) > 0
            return counts if ok and spread(counts) <= BALANCE_THRESHOLD else None

        workload.start()
        try:
            before = await wait_until(
                lambda: balanced(3), timeout=60, what="3 shards balanced"
            )
            new = await add_shard(c)
            after = await wait_until(
                lambda: balanced(4), timeout=60, what=f"{new.name} received chunks, balanced"
            )
        finally:
            stats = await workload.stop()

        assert not stats.errors, f"the application saw errors: {stats.summary()}"
        assert not stats.violations, stats.summary()
        assert after[new.name] > 0, (before, after)
        # with the writes stopped, the balancer settles (late splits included)
        await wait_until(lambda: balanced(4), timeout=60, what="4 shards balanced at rest")
        await quiesce_balancer(config)
        await workload.check_invariants(c)
        assert await c.shard_count(c.shard_index(new.name), db_name, COLL, {}) > 0
