"""Issue 5 chaos: kill -9 a donor, a recipient and the config server mid-migration.

The model-based CRUD workload (``tests/integration/workload.py``) runs through two
routers while the balancer (tiny chunk size, short interval) and a "mover" task (random
MigrateChunk calls, as MongoDB's moveChunk FSM workloads do) keep migrations going.
Once the balancer has split the collection, the test kills six times: the donor, the
recipient and the config server of a running migration, each once while the donor
reports it cloning and once in its critical section/commit (the donors' MigrationStatus
is polled every 5 ms; if that phase is not caught, any migration the config server
lists as running will do). Each victim is killed -9, restarted on the same data dir,
and the test waits until migrations commit again. A normal run takes ~15 s.

Clients may see transient errors (UNAVAILABLE while a process is down, a stale routing
retry budget exhausted); every failed write is read back and the model follows what
actually happened. At the end: no unexpected error, no model violation, every document
exactly once with its last written value, counts match, one shard per key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from lauradb.cluster import routing_pb2_grpc, shard_pb2
from tests.chaos.migration_chaos import Moment, find_moment, mover
from tests.integration.harness import (
    Cluster,
    Proc,
    chunks_of,
    get_shard_map,
    shard_collection,
)
from tests.integration.workload import (
    CrudWorkload,
    committed_migrations,
    extra_router,
    quiesce_balancer,
    router_stub,
    wait_until,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150)]

ClusterFactory = Callable[..., Awaitable[Cluster]]
ConfigStub = routing_pb2_grpc.ConfigServiceStub

BALANCER_ARGS = [
    "--balancer-interval", "0.2",
    "--chunk-size-bytes", str(24 * 1024),
    "--balance-threshold", "2",
]  # fmt: skip
COLL = "w"
# (process to kill, moment): each role once while cloning, once in the critical section
KILLS = (
    ("donor", "cloning"),
    ("recipient", "cloning"),
    ("config", "critical"),
    ("donor", "critical"),
    ("recipient", "critical"),
    ("config", "cloning"),
)
MIN_CHUNKS = 6  # the balancer has split the collection before the first kill
CATCH_PHASE_TIMEOUT = 5.0
FIND_MIGRATION_TIMEOUT = 15.0
PROGRESS_TIMEOUT = 20.0
MIGRATE_TIMEOUT = 30.0


async def donor_in_phase(c: Cluster, phases: frozenset[str]) -> Moment | None:
    """A migration whose donor reports one of ``phases`` (every shard asked at once)."""

    async def ask(proc: Proc) -> list[shard_pb2.MigrationProgress]:
        if not proc.alive:
            return []
        stub = c.shard_stub(c.shard_index(proc.name))
        status = await stub.MigrationStatus(shard_pb2.MigrationStatusRequest(), timeout=2)
        return [m for m in status.migrations if m.role == "donor"]

    for proc, progress in zip(c.shards, await asyncio.gather(*map(ask, c.shards)), strict=True):
        for m in progress:
            if m.phase in phases and m.peer_shard:
                return Moment(m.migration_id, proc.name, m.peer_shard, m.phase)
    return None


async def kill_during_migration(c: Cluster, role: str, when: str) -> str:
    """Kill -9 the ``role`` process of a running migration, restart it; a description."""
    moment = await find_moment(c, when, donor_in_phase, CATCH_PHASE_TIMEOUT, FIND_MIGRATION_TIMEOUT)
    victim: Proc = {
        "donor": c.shards[c.shard_index(moment.donor)],
        "recipient": c.shards[c.shard_index(moment.recipient)],
        "config": c.config,
    }[role]
    victim.kill()
    what = (
        f"killed {role} {victim.name} during {moment.migration_id} "
        f"({moment.donor}->{moment.recipient}, wanted {when}, caught {moment.phase})"
    )
    print(what)
    await c.restart(victim)
    return what


async def test_kill_donor_recipient_and_config_during_migrations(
    cluster: ClusterFactory, db_name: str
) -> None:
    started = time.monotonic()
    c = await cluster(3, extra_config_args=BALANCER_ARGS)
    async with extra_router(c) as second:
        routers = [c.router_stub(), router_stub(c, second)]
        await shard_collection(c.config_stub(), db_name, COLL, ["k"], "range")
        workload = CrudWorkload(routers, db_name, COLL, tasks=4, seed=3, read_back_timeout=40)
        await workload.preload(150)
        events: list[str] = []
        workload.start()
        try:

            async def split_enough() -> bool:
                shard_map = await get_shard_map(c.config_server_stub(), db_name, COLL)
                return len(chunks_of(shard_map)) >= MIN_CHUNKS

            await wait_until(split_enough, 30, f"the balancer split into {MIN_CHUNKS} chunks")
            async with mover(c, db_name, COLL, 9, MIGRATE_TIMEOUT) as outcomes:
                for role, when in KILLS:
                    events.append(await kill_during_migration(c, role, when))
                    config = c.config_server_stub()
                    base = await committed_migrations(config)

                    async def progressed(
                        base: int = base, config: ConfigStub = config
                    ) -> bool:
                        return await committed_migrations(config) > base

                    await wait_until(
                        progressed, PROGRESS_TIMEOUT, f"a migration committed after: {events[-1]}"
                    )
        finally:
            stats = await workload.stop()

        summary = f"{stats.summary()}\nevents: {events}\nmover: {outcomes[-20:]}"
        assert not stats.unexpected, summary
        assert not stats.violations, summary
        assert outcomes.count("committed") > 0, summary
        await quiesce_balancer(c.config_server_stub())
        await workload.check_invariants(c)
    print(f"chaos run took {time.monotonic() - started:.1f}s: {summary}")
