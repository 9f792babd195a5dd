"""Issue 9 chaos: kill -9 replica-set primaries during chunk migrations and during an
initial sync.

``test_kill_primaries_during_migrations``: two shards, 3 members each. The model-based
CRUD workload (``tests/integration/workload.py``, default write concern: majority)
writes through the router (its reads and read-backs with read concern majority: see
``MajorityWorkload``) while a mover task keeps migrating random chunks
(MigrateChunk). Four times, a migration is caught (the donor primary's MigrationStatus,
polled every 5 ms) cloning or in its critical section/commit, and the primary of its
donor, then of its recipient, is killed -9 and restarted on its data dir (it rejoins as
a secondary); the test waits until a migration commits again. At the end: no
unexpected error, no model violation, every document exactly once with its last value
(router scans and counts), every key routed to one shard, each chunk one owner, the
per-shard counts (orphans filtered, on each primary) add up, and eventually every
document is stored on exactly one shard (orphans deleted) and all members of a shard
hold the same documents.

``test_kill_primary_during_initial_sync``: one shard of 3 members under the same
workload; a secondary's data dir is wiped and it is restarted; as soon as it reports
its initial sync (role RECOVERING), the primary is killed -9. A new primary is elected,
the syncing member completes its sync against it, the killed member rejoins; no
acknowledged write lost, all members converge.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc
import pytest

from lauradb.cluster import replset_pb2, routing_pb2, shard_pb2
from tests.chaos.migration_chaos import Moment, find_moment, mover
from tests.integration.harness import (
    RPC_TIMEOUT,
    Cluster,
    Proc,
    chunks_of,
    dec,
    enc,
    get_shard_map,
    shard_collection,
    split_chunk,
)
from tests.integration.workload import (
    ID_SPACE,
    CrudWorkload,
    Doc,
    Router,
    _CallFailed,
    _Task,
    committed_migrations,
    list_migrations,
    wait_until,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

ClusterFactory = Callable[..., Awaitable[Cluster]]

REPLICAS = 3
COLL = "w"
TASKS = 4
SHARD_ARGS = [
    "--migration-clone-batch", "20",  # many clone pages: the cloning phase lasts a while
    "--migration-peer-timeout", "2",  # a dead recipient primary aborts the donor quickly
]  # fmt: skip
# (whose primary to kill, moment)
KILLS = (
    ("donor", "cloning"),
    ("recipient", "cloning"),
    ("donor", "critical"),
    ("recipient", "critical"),
)
CATCH_PHASE_TIMEOUT = 8.0
FIND_MIGRATION_TIMEOUT = 30.0
PROGRESS_TIMEOUT = 45.0
MIGRATE_TIMEOUT = 30.0
CONVERGE_TIMEOUT = 45.0


class ConcernCheckingRouter:
    """A router stub whose writes fail (transiently, as the workload understands it)
    when the reply carries a ``write_concern_error``: such a write is NOT acknowledged
    with w:majority (MongoDB's writeConcernError) and may be rolled back; the workload
    then reads it back (majority) and follows what actually happened."""

    def __init__(self, stub: Router) -> None:
        self._stub = stub

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    async def _checked(self, method: str, request: Any, **kw: Any) -> Any:
        response = await getattr(self._stub, method)(request, **kw)
        if response.HasField("write_concern_error"):
            err = response.write_concern_error.error
            raise _CallFailed("WRITE_CONCERN_FAILED", True, f"{err.code}: {err.message}")
        return response

    async def Insert(self, request: Any, **kw: Any) -> Any:
        return await self._checked("Insert", request, **kw)

    async def Update(self, request: Any, **kw: Any) -> Any:
        return await self._checked("Update", request, **kw)

    async def Delete(self, request: Any, **kw: Any) -> Any:
        return await self._checked("Delete", request, **kw)


def concern_checking(c: Cluster) -> Router:
    return cast(Router, ConcernCheckingRouter(c.router_stub()))


class MajorityWorkload(CrudWorkload):
    """The CRUD workload reading with read concern majority. A deposed primary (or
    one that has not yet noticed a newer term) still shows its own writes that were
    never majority-committed and will be rolled back: a local read-back of a failed
    write could wrongly find it "applied" (MongoDB's local read concern has the same
    property). Majority reads only see what no failover can undo."""

    async def _find(
        self, router: Router, doc_id: int, *, check_routing: bool = False,
        task: _Task | None = None,
    ) -> Doc | None:  # fmt: skip
        request = routing_pb2.QueryRequest(
            database=self.db, collection=self.coll, query=enc({"_id": doc_id, "k": doc_id}),
            read_concern=replset_pb2.ReadConcern(level=replset_pb2.READ_CONCERN_MAJORITY),
        )  # fmt: skip
        response = await router.Query(request, timeout=self.op_timeout)
        docs = [dec(d) for d in response.documents]
        assert not response.more_available, "one document at most"
        if len(docs) > 1 and task is not None:
            self._violate(task, doc_id, f"{len(docs)} documents for one _id")
        shards = set(response.stats.shards_queried)
        if check_routing and task is not None and len(shards) != 1:
            self._violate(task, doc_id, f"equality read queried {sorted(shards)}")
        return docs[0] if docs else None


async def primary_or_none(c: Cluster, shard_id: str) -> Proc | None:
    """The member of ``shard_id`` answering Hello as primary (highest term), if any."""
    best: tuple[int, Proc] | None = None
    for proc in c.members(shard_id):
        if not proc.alive:
            continue
        with contextlib.suppress(grpc.RpcError, asyncio.TimeoutError):
            resp = await c.hello(proc, timeout=1.0)
            if resp.is_primary and (best is None or resp.term > best[0]):
                best = (resp.term, proc)
    return best[1] if best is not None else None


async def donor_in_phase(c: Cluster, phases: frozenset[str]) -> Moment | None:
    """A migration whose donor primary reports one of ``phases``."""

    async def ask(shard_id: str) -> list[tuple[str, shard_pb2.MigrationProgress]]:
        proc = await primary_or_none(c, shard_id)
        if proc is None:
            return []
        with contextlib.suppress(grpc.RpcError):
            status = await c.shard_stub_at(proc).MigrationStatus(
                shard_pb2.MigrationStatusRequest(), timeout=2
            )
            return [(shard_id, m) for m in status.migrations if m.role == "donor"]
        return []

    for found in await asyncio.gather(*map(ask, c.shard_ids)):
        for shard_id, m in found:
            if m.phase in phases and m.peer_shard:
                return Moment(m.migration_id, shard_id, m.peer_shard, m.phase)
    return None


async def kill_during_migration(c: Cluster, role: str, when: str) -> str:
    moment = await find_moment(c, when, donor_in_phase, CATCH_PHASE_TIMEOUT, FIND_MIGRATION_TIMEOUT)
    shard_id = moment.donor if role == "donor" else moment.recipient
    victim = await c.primary_of(shard_id)
    victim.kill()
    what = (
        f"killed the {role} primary {victim.name} during {moment.migration_id} "
        f"({moment.donor}->{moment.recipient}, wanted {when}, caught {moment.phase})"
    )
    print(what)
    await c.restart(victim)  # rejoins as a secondary (or rolls back / resyncs)
    return what


async def shard_counts(c: Cluster, db: str) -> dict[str, int]:
    """Documents each shard's primary counts (version check skipped, orphans filtered)."""
    out: dict[str, int] = {}
    for shard_id in c.shard_ids:
        proc = await c.primary_of(shard_id)
        request = shard_pb2.ShardCountRequest(
            database=db, collection=COLL, filter=enc({}),
            version=shard_pb2.ShardVersion(ignore=True),
        )  # fmt: skip
        resp = await c.shard_stub_at(proc).Count(request, timeout=RPC_TIMEOUT)
        out[shard_id] = int(resp.count)
    return out


async def member_ids(c: Cluster, proc: Proc, db: str) -> set[int]:
    """The ``_id``s one member stores (read on it directly: version check skipped,
    secondaries allowed, orphans included)."""
    request = shard_pb2.ShardFindRequest(
        database=db, collection=COLL, filter=enc({}), projection=enc({"_id": 1}),
        version=shard_pb2.ShardVersion(ignore=True), secondary_ok=True, batch_size=100_000,
    )  # fmt: skip
    resp = await c.shard_stub_at(proc).Find(request, timeout=RPC_TIMEOUT)
    assert not resp.error.code, f"{proc.name}: {resp.error.message}"
    assert not resp.cursor_id, f"{proc.name}: more than one batch"
    return {dec(d)["_id"] for d in resp.documents}


async def wait_converged(c: Cluster, db: str, expected: set[int], uncertain: set[int]) -> None:
    """Eventually every member of every shard holds what its primary holds, and the
    shards together hold each live document exactly once (no orphan left)."""
    last: list[str] = []

    async def converged() -> bool:
        last.clear()
        held: list[int] = []
        for shard_id in c.shard_ids:
            members = c.members(shard_id)
            try:
                sets = [await member_ids(c, p, db) for p in members]
            except (grpc.RpcError, AssertionError) as exc:
                last.append(f"{shard_id}: {exc!r}"[:200])
                return False
            for p, ids in zip(members, sets, strict=True):
                if ids != sets[0]:
                    last.append(f"{p.name}: {len(ids ^ sets[0])} ids differ from {members[0].name}")
            held += list(sets[0])
        live = set(held)
        if len(held) != len(live):
            last.append(f"{len(held) - len(live)} documents on more than one shard (orphans)")
        missing = expected - live
        extra = live - expected - uncertain
        if missing or extra:
            last.append(f"missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}")
        return not last

    try:
        await wait_until(converged, CONVERGE_TIMEOUT, "members and shards converged", 0.5)
    except AssertionError as exc:
        states = []
        for proc in c.shard_procs:
            try:
                h = await c.hello(proc, timeout=1.0)
                states.append(f"{proc.name}: {h.role} term {h.term} applied "
                              f"{h.last_applied_op_id} last {h.last_op_id} commit "
                              f"{h.commit_op_id} caught_up {h.caught_up}")
            except grpc.RpcError as err:
                states.append(f"{proc.name}: {err.code().name}")
        raise AssertionError(f"{exc}: {last}; members: {states}") from None


async def started_replset_cluster(cluster: ClusterFactory, shards: int) -> Cluster:
    c = await cluster(shards, replicas=REPLICAS, extra_shard_args=SHARD_ARGS)
    for shard_id in c.shard_ids:
        await c.primary_of(shard_id)
    return c


async def test_kill_primaries_during_migrations(cluster: ClusterFactory, db_name: str) -> None:
    started = time.monotonic()
    c = await started_replset_cluster(cluster, 2)
    config = c.config_server_stub()
    await shard_collection(c.config_stub(), db_name, COLL, ["k"], "range")
    # 8 chunks: each task's (random) ids [t * ID_SPACE, (t + 1) * ID_SPACE) in two halves
    half = ID_SPACE // 2
    points = sorted([t * ID_SPACE for t in range(1, TASKS)] + [t * ID_SPACE + half for t in range(TASKS)])
    for point in points:
        chunk = next(ch for ch in chunks_of(await get_shard_map(config, db_name, COLL))
                     if ch.contains({"k": point}))  # fmt: skip
        await split_chunk(config, chunk.chunk_id, {"k": point})
    workload = MajorityWorkload(
        [concern_checking(c)], db_name, COLL, tasks=TASKS, seed=11, read_back_timeout=60
    )
    await workload.preload(120)
    events: list[str] = []
    workload.start()
    try:
        async with mover(c, db_name, COLL, 5, MIGRATE_TIMEOUT) as outcomes:
            for role, when in KILLS:
                events.append(await kill_during_migration(c, role, when))
                base = await committed_migrations(config)

                async def progressed(base: int = base) -> bool:
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

    async def no_running_migration() -> bool:
        return not await list_migrations(config, active_only=True)

    await wait_until(no_running_migration, 60, "no migration running")
    scanned = await workload.check_invariants(c, per_shard=False)
    # each chunk has exactly one owner, and the chunks tile the key space
    shard_map = await get_shard_map(config, db_name, COLL)
    owners = [(ch.chunk_id, ch.shard) for ch in chunks_of(shard_map)]
    assert len({cid for cid, _ in owners}) == len(owners), owners
    assert all(shard in c.shard_ids for _, shard in owners), owners
    counts = await shard_counts(c, db_name)
    assert sum(counts.values()) == len(scanned), (counts, len(scanned))
    await wait_converged(
        c, db_name, set(workload.expected_live()), set(workload.uncertain())
    )
    print(f"replset migration chaos took {time.monotonic() - started:.1f}s: {summary}")


async def test_kill_primary_during_initial_sync(cluster: ClusterFactory, db_name: str) -> None:
    c = await started_replset_cluster(cluster, 1)
    shard_id = c.shard_ids[0]
    workload = MajorityWorkload(
        [concern_checking(c)], db_name, COLL, tasks=TASKS, pad=16000, seed=3, read_back_timeout=60
    )
    for _ in range(10):  # ~16 MB (the initial sync takes a moment); small calls: the
        await workload.preload(25)  # workload draws the ids of one call independently
    workload.start()
    events: list[str] = []
    try:
        primary = await c.primary_of(shard_id)
        caught = False
        for attempt in range(3):
            syncer = next(p for p in c.members(shard_id) if p is not primary)
            syncer.kill()
            assert syncer.data_dir is not None
            shutil.rmtree(syncer.data_dir)
            offset = syncer.log_size()
            syncer.start()

            async def syncing(p: Proc = syncer, offset: int = offset) -> bool:
                # its log, not Hello: a channel to a restarted process may be backing off
                return "initial sync from" in p.log_text(offset)

            await wait_until(syncing, 30, f"{syncer.name} in its initial sync", interval=0.005)
            primary.kill()

            async def sync_ended(p: Proc = syncer, offset: int = offset) -> str | None:
                for line in p.log_text(offset).splitlines():
                    if "initial sync from" in line and (" done in " in line or "failed" in line
                                                        or "ended" in line or "UNAVAILABLE" in line):
                        return line
                with contextlib.suppress(grpc.RpcError, asyncio.TimeoutError):
                    if (await c.hello(p, timeout=0.5)).role != "RECOVERING":
                        return "no longer RECOVERING"
                return None

            ended = await wait_until(sync_ended, 30, "the first sync attempt to end")
            # The snapshot may have been received in full before the kill: then the sync
            # completed against the killed primary; try again (the point is a sync that
            # must be completed against the new primary).
            caught = f"initial sync from {primary.address} done" not in syncer.log_text(offset)
            events.append(
                f"attempt {attempt}: killed primary {primary.name} while {syncer.name} "
                f"was syncing; interrupted: {caught} ({ended[-120:]})"
            )
            print(events[-1])
            if caught:
                break
            await c.restart(primary)
            primary = await c.primary_of(shard_id)
        assert caught, f"never killed the primary during an initial sync: {events}"
        new_primary = await c.primary_of(shard_id)
        assert new_primary is not primary

        async def synced() -> bool:
            with contextlib.suppress(grpc.RpcError, asyncio.TimeoutError):
                hello = await c.hello(syncer, timeout=1.0)
                return hello.role == "SECONDARY" and hello.caught_up
            return False

        await wait_until(synced, 60, f"{syncer.name} finished its initial sync")
        done = [
            line for line in syncer.log_text(offset).splitlines()
            if "initial sync from" in line and " done in " in line
        ]  # fmt: skip
        assert done and new_primary.address in done[-1], (new_primary.address, done)
        await c.restart(primary)  # the killed primary rejoins
    finally:
        stats = await workload.stop()

    summary = f"{stats.summary()}\nevents: {events}"
    assert not stats.unexpected, summary
    assert not stats.violations, summary
    assert stats.ops["insert"] + stats.ops["update"] > 0, summary
    await workload.check_invariants(c, per_shard=False)
    await wait_converged(
        c, db_name, set(workload.expected_live()), set(workload.uncertain())
    )
