"""Shared pieces of the chaos tests that kill processes during chunk migrations:
catching a migration in a phase, and a background mover of random chunks."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc

from lauradb.cluster import routing_pb2
from tests.integration.harness import Cluster, chunks_of, get_shard_map
from tests.integration.workload import list_migrations, wait_until

PHASES = {
    "cloning": frozenset({"cloning"}),
    "critical": frozenset({"critical", "committing"}),
}


@dataclass(frozen=True)
class Moment:
    """A migration caught in some phase."""

    migration_id: str
    donor: str
    recipient: str
    phase: str


DonorInPhase = Callable[[Cluster, frozenset[str]], Awaitable[Moment | None]]


async def listed_migration(c: Cluster) -> Moment | None:
    """A migration the config server lists as running."""
    for m in await list_migrations(c.config_server_stub(), active_only=True):
        if m.state == "running":
            return Moment(m.migration_id, m.from_shard, m.to_shard, "listed running")
    return None


async def find_moment(
    c: Cluster,
    when: str,
    donor_in_phase: DonorInPhase,
    catch_timeout: float,
    find_timeout: float,
) -> Moment:
    """A running migration: with its donor in phase ``when`` (``PHASES``) as
    ``donor_in_phase`` reports it, else (that phase not caught within ``catch_timeout``)
    any migration the config server lists as running."""
    if when in PHASES:
        with contextlib.suppress(AssertionError):
            found: Moment = await wait_until(
                lambda: donor_in_phase(c, PHASES[when]), catch_timeout,
                f"a donor in phase {when}", interval=0.005,
            )  # fmt: skip
            return found
    listed: Moment = await wait_until(
        lambda: listed_migration(c), find_timeout, "a migration in progress", 0.01
    )
    return listed


@contextlib.asynccontextmanager
async def mover(
    c: Cluster, db: str, coll: str, seed: int, migrate_timeout: float
) -> AsyncIterator[list[str]]:
    """Background task: migrate random chunks to random other shards until exit.

    Yields the list of outcomes ("committed", or the error code of a refused/failed
    migration); failures are expected (conflicts with the balancer, processes down).
    """
    rng = random.Random(seed)
    outcomes: list[str] = []
    stop = asyncio.Event()

    async def run() -> None:
        while not stop.is_set():
            try:
                config = c.config_server_stub()
                chunk = rng.choice(chunks_of(await get_shard_map(config, db, coll)))
                target = rng.choice([s for s in c.shard_ids if s != chunk.shard])
                request = routing_pb2.MigrateChunkRequest(
                    chunk_id=chunk.chunk_id, from_shard=chunk.shard, to_shard=target
                )
                response = await config.MigrateChunk(request, timeout=migrate_timeout)
                if response.success:
                    outcomes.append("committed")
                    continue
                outcomes.append(response.error_info.code_name or "failed")
            except grpc.RpcError as exc:
                outcomes.append(exc.code().name)
            await asyncio.sleep(0.1)  # refused, or a process is down: back off

    task = asyncio.create_task(run())
    try:
        yield outcomes
    finally:
        stop.set()
        with contextlib.suppress(grpc.RpcError):
            await asyncio.wait_for(task, timeout=migrate_timeout + 5)
