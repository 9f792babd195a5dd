"""Migrations, auto-split, the balancer and shard removal against real processes.

Every test runs a cluster of its own (the balancer moves chunks of every
collection). Balancer flags reach the config server through the harness's
``extra_config_args``; admin calls go through the router's ConfigService (which
forwards them), so its forwarding of the migration/balancer RPCs is covered too.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from lauradb.cluster import router_ext_pb2, routing_pb2
from lauradb.errors import ErrorCode, LauraError
from tests.integration.harness import (
    HOST,
    LOG_LEVEL,
    Cluster,
    chunks_of,
    count,
    enc,
    eventually,
    free_port,
    get_shard_map,
    insert_many,
    laura_error,
    query_all,
    shard_collection,
    split_chunk,
    unique_name,
)

pytestmark = pytest.mark.integration

RPC = 30.0
FAST = ["--balancer-interval", "0.2"]

MakeCluster = Callable[..., Awaitable[Cluster]]


@pytest_asyncio.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[MakeCluster]:
    made: list[Cluster] = []

    async def make(shards: int, *config_args: str) -> Cluster:
        c = Cluster(tmp_path / f"c{len(made)}", shards=shards, extra_config_args=config_args)
        made.append(c)
        await c.start()
        return c

    yield make
    errors = []
    for c in made:
        try:
            await c.stop()
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "\n".join(errors)


async def expect_error(call: Awaitable[Any], code: ErrorCode) -> LauraError:
    with pytest.raises(grpc.RpcError) as exc:
        await call
    err = laura_error(exc.value)
    assert err.code == code, err
    return err


def owners(shard_map: routing_pb2.GetShardMapResponse) -> dict[str, int]:
    out: dict[str, int] = {}
    for route in shard_map.shards:
        out[route.shard_id] = len(route.chunks)
    return out


async def balancer_status(c: Cluster) -> router_ext_pb2.GetBalancerStatusResponse:
    status: router_ext_pb2.GetBalancerStatusResponse = await c.config_stub().GetBalancerStatus(
        router_ext_pb2.GetBalancerStatusRequest(), timeout=RPC
    )
    return status


async def remove_shard(c: Cluster, shard_id: str) -> routing_pb2.RemoveShardResponse:
    resp: routing_pb2.RemoveShardResponse = await c.config_stub().RemoveShard(
        routing_pb2.RemoveShardRequest(shard_id=shard_id), timeout=RPC
    )
    return resp


async def all_ids(c: Cluster, db: str, coll: str) -> list[Any]:
    docs = await query_all(c.router_stub(), db, coll, {}, batch_size=1000)
    return [d["_id"] for d in docs]


# ------------------------------------------------------------------ MigrateChunk


async def test_migrate_chunk_under_live_inserts(make_cluster: MakeCluster) -> None:
    c = await make_cluster(2, "--no-balancer")
    router, config = c.router_stub(), c.config_stub()
    db = unique_name("mig")
    await shard_collection(config, db, "c", ["k"], "range")
    (whole,) = chunks_of(await get_shard_map(config, db, "c"))
    await split_chunk(config, whole.chunk_id, {"k": 1000})
    await insert_many(router, db, "c", [{"_id": i, "k": i, "pad": "x" * 40} for i in range(2000)])
    before = await get_shard_map(config, db, "c")
    upper = next(ch for ch in chunks_of(before) if ch.min == {"k": 1000})
    donor = upper.shard
    recipient = next(s for s in c.shard_ids if s != donor)

    inserted: set[int] = set(range(2000))
    errors: list[str] = []
    next_id = 2000
    stop = asyncio.Event()

    async def writer() -> None:
        nonlocal next_id
        while not stop.is_set():
            ids = list(range(next_id, next_id + 10))
            next_id += 10
            docs = [{"_id": i, "k": (i * 7919) % 3000, "pad": "w"} for i in ids]
            try:
                resp = await router.Insert(
                    routing_pb2.InsertRequest(
                        database=db, collection="c", documents=[enc(d) for d in docs]
                    ),
                    timeout=RPC,
                )
            except grpc.RpcError as exc:
                errors.append(f"insert: {laura_error(exc)}")
                continue
            if resp.errors:
                errors.append(f"insert: {resp.errors[0].code_name} {resp.errors[0].error}")
            inserted.update(ids)

    async def reader() -> None:
        while not stop.is_set():
            try:
                await count(router, db, "c", {"k": {"$gte": 500}})
            except grpc.RpcError as exc:
                errors.append(f"count: {laura_error(exc)}")

    tasks = [asyncio.create_task(writer()) for _ in range(2)] + [asyncio.create_task(reader())]
    try:
        await eventually(lambda: _true(next_id > 2100), what="writes before the migration")
        resp = await config.MigrateChunk(
            routing_pb2.MigrateChunkRequest(
                chunk_id=upper.chunk_id, from_shard=donor, to_shard=recipient
            ),
            timeout=300,
        )
        mark = next_id
        await eventually(lambda: _true(next_id > mark + 200), what="writes after the commit")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert resp.success, resp.error
    assert resp.documents_migrated >= 1000
    assert not errors, errors[:5]

    ids = await all_ids(c, db, "c")
    assert len(ids) == len(set(ids)), "a document is returned twice"
    assert set(ids) == inserted
    assert await count(router, db, "c") == len(inserted)

    after = await get_shard_map(config, db, "c")
    moved = next(
        (route.shard_id, ch)
        for route in after.shards
        for ch in route.chunks
        if ch.chunk_id == upper.chunk_id
    )
    assert moved[0] == recipient
    old_major = before.version >> 32
    assert (moved[1].version_major, moved[1].version_minor) == (old_major + 1, 0)
    assert after.version > before.version
    # each shard holds (orphans filtered) exactly what it owns
    in_upper = sum(1 for d in await query_all(router, db, "c", {"k": {"$gte": 1000}}))
    assert await c.shard_count(c.shard_index(recipient), db, "c", {}) == in_upper
    assert await c.shard_count(c.shard_index(donor), db, "c", {}) == len(inserted) - in_upper

    listed = await config.ListMigrations(router_ext_pb2.ListMigrationsRequest(), timeout=RPC)
    (row,) = listed.migrations
    assert (row.state, row.chunk_id, row.from_shard, row.to_shard) == (
        "committed", upper.chunk_id, donor, recipient
    )
    assert row.documents_migrated == resp.documents_migrated and row.finished_ms > 0
    state = await config.GetMigrationState(
        router_ext_pb2.GetMigrationStateRequest(migration_id=row.migration_id), timeout=RPC
    )
    assert state.migration.state == "committed"

    # errors: nothing changes
    await expect_error(
        config.MigrateChunk(
            routing_pb2.MigrateChunkRequest(chunk_id=upper.chunk_id, to_shard="ghost"),
            timeout=RPC,
        ),
        ErrorCode.SHARD_NOT_FOUND,
    )
    await expect_error(
        config.MigrateChunk(
            routing_pb2.MigrateChunkRequest(chunk_id=upper.chunk_id, to_shard=recipient),
            timeout=RPC,
        ),
        ErrorCode.ILLEGAL_OPERATION,
    )
    await expect_error(
        config.MigrateChunk(
            routing_pb2.MigrateChunkRequest(chunk_id="nope", to_shard=donor), timeout=RPC
        ),
        ErrorCode.CHUNK_NOT_FOUND,
    )
    for point in ({"k": 1000}, {"k": 5}):  # at the lower bound, outside
        await expect_error(split_chunk(config, upper.chunk_id, point), ErrorCode.INVALID_SPLIT_POINT)
    await expect_error(
        config.GetMigrationState(
            router_ext_pb2.GetMigrationStateRequest(migration_id="0" * 24), timeout=RPC
        ),
        ErrorCode.NO_SUCH_KEY,
    )
    assert (await get_shard_map(config, db, "c")).version == after.version

    # a second migration of the same chunk while the first runs: CONFLICTING (best effort:
    # only checked when the first one is still running when the second arrives)
    async def move_back() -> routing_pb2.MigrateChunkResponse:
        resp: routing_pb2.MigrateChunkResponse = await config.MigrateChunk(
            routing_pb2.MigrateChunkRequest(chunk_id=upper.chunk_id, to_shard=donor), timeout=300
        )
        return resp

    back = asyncio.create_task(move_back())
    await _wait_active(c)
    try:
        await config.MigrateChunk(
            routing_pb2.MigrateChunkRequest(chunk_id=upper.chunk_id, to_shard=donor),
            timeout=RPC,
        )
    except grpc.RpcError as exc:
        assert laura_error(exc).code in (
            ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS,
            ErrorCode.ILLEGAL_OPERATION,  # the first one had committed already
        )
    else:
        pytest.fail("a second migration of the same chunk was accepted")
    assert (await back).success
    assert set(await all_ids(c, db, "c")) == inserted


async def _true(value: bool) -> bool:
    return value


async def _wait_active(c: Cluster) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        listed = await c.config_stub().ListMigrations(
            router_ext_pb2.ListMigrationsRequest(active_only=True), timeout=RPC
        )
        if listed.migrations:
            return
        await asyncio.sleep(0.005)


# ------------------------------------------------------------- auto-split, jumbo


async def test_auto_split_and_jumbo(make_cluster: MakeCluster) -> None:
    c = await make_cluster(
        2, *FAST, "--chunk-size-bytes", "4096", "--balance-threshold", "1"
    )
    router, config = c.router_stub(), c.config_stub()
    db = unique_name("split")
    await shard_collection(config, db, "c", ["k"], "range")
    await shard_collection(config, db, "same", ["k"], "range")
    docs = [{"_id": i, "k": i, "pad": "p" * 100} for i in range(400)]  # ~50 KB
    await insert_many(router, db, "c", docs)
    same = [{"_id": i, "k": 7, "pad": "q" * 100} for i in range(100)]  # one key value
    await insert_many(router, db, "same", same)

    async def split_enough() -> bool:
        m = await get_shard_map(config, db, "c")
        return sum(owners(m).values()) >= 8

    await eventually(split_enough, timeout=60, what="auto-splits of db.c")
    status = await balancer_status(c)
    assert status.enabled and status.splits >= 7 and status.rounds > 0

    async def jumbo_chunk() -> str:
        m = await get_shard_map(config, db, "same")
        found = [ch.chunk_id for route in m.shards for ch in route.chunks if ch.jumbo]
        return found[0] if found else ""

    jumbo_id = await eventually(jumbo_chunk, timeout=60, what="a jumbo chunk of db.same")
    status = await balancer_status(c)
    assert jumbo_id in status.jumbo_chunks
    # not retried: more rounds, still one report in the log, the chunk unchanged
    rounds = status.rounds

    async def more_rounds() -> bool:
        return (await balancer_status(c)).rounds >= rounds + 5

    await eventually(more_rounds, timeout=30, what="more balancer rounds")
    if LOG_LEVEL in ("info", "debug"):
        assert c.config.log_text().count(f"chunk {jumbo_id} of {db}.same") == 1
    assert await jumbo_chunk() == jumbo_id

    # the balancer spreads the split chunks (threshold 1), never the jumbo one
    async def spread() -> bool:
        counts = owners(await get_shard_map(config, db, "c"))
        return len(counts) == 2 and max(counts.values()) - min(counts.values()) <= 1

    await eventually(spread, timeout=90, what="db.c balanced")
    assert sorted(await all_ids(c, db, "c")) == list(range(400))
    assert sorted(await all_ids(c, db, "same")) == list(range(100))
    if LOG_LEVEL in ("info", "debug"):
        text = c.config.log_text()
        assert re.search(r"auto-split chunk \S+ of " + re.escape(f"{db}.c"), text)
        assert "balancer round" in text

    # paused, the state survives a config server restart (counters too)
    resp = await config.SetBalancerState(
        router_ext_pb2.SetBalancerStateRequest(enabled=False), timeout=RPC
    )
    assert not resp.enabled
    before = await balancer_status(c)
    await c.close_channels()
    await asyncio.to_thread(c.config.terminate)
    await c.restart(c.config)
    status = await c.config_server_stub().GetBalancerStatus(
        router_ext_pb2.GetBalancerStatusRequest(), timeout=RPC
    )
    assert not status.enabled and status.rounds == 0
    assert status.splits == before.splits
    assert status.migrations_committed == before.migrations_committed
    assert jumbo_id in status.jumbo_chunks


# ------------------------------------------------------------- a new shard


async def test_new_shard_receives_chunks(make_cluster: MakeCluster) -> None:
    metrics_port = free_port()
    c = await make_cluster(
        1, *FAST, "--balance-threshold", "1", "--metrics-port", str(metrics_port)
    )
    router, config = c.router_stub(), c.config_stub()
    db = unique_name("grow")
    await shard_collection(config, db, "h", ["k"], "hashed", initial_chunks=8)
    await insert_many(router, db, "h", [{"_id": i, "k": i} for i in range(600)])
    assert owners(await get_shard_map(config, db, "h")) == {"shard0": 8}

    # a second shard joins the cluster
    new = c._proc(
        "shard1", "shard_stub", f"{HOST}:{free_port()}", "shard1", LOG_LEVEL,
        ["--shard-id", "shard1", "--config", c.config_address],
    )
    c.shards.append(new)
    new.start()
    await new.wait_healthy()
    host, port = new.address.rsplit(":", 1)
    await config.AddShard(
        routing_pb2.AddShardRequest(shard_id="shard1", host=host, port=int(port)), timeout=RPC
    )

    async def balanced() -> bool:
        counts = owners(await get_shard_map(config, db, "h"))
        return counts.get("shard1", 0) >= 4 - 1 and abs(counts["shard0"] - counts["shard1"]) <= 1

    await eventually(balanced, timeout=90, what="chunks spread onto the new shard")
    ids = await all_ids(c, db, "h")
    assert sorted(ids) == list(range(600))
    assert await c.shard_count(1, db, "h", {}) > 0
    status = await balancer_status(c)
    assert status.migrations_committed >= 3 and status.migrations_failed == 0

    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://{HOST}:{metrics_port}/metrics", timeout=10)
        .read()
        .decode()
    )
    assert re.search(r"^lauradb_config_balancer_rounds_total [1-9]", body, re.M)
    assert re.search(r'^lauradb_config_migrations_total\{result="committed"\} [1-9]', body, re.M)
    assert re.search(r"^lauradb_config_topology_version [1-9]", body, re.M)


# ------------------------------------------------ pause/resume and shard removal


async def test_pause_resume_and_remove_shard(make_cluster: MakeCluster) -> None:
    c = await make_cluster(3, *FAST, "--no-balancer", "--balance-threshold", "1")
    router, config = c.router_stub(), c.config_stub()
    status = await balancer_status(c)
    assert not status.enabled and status.rounds == 0

    db = unique_name("drain")
    await shard_collection(config, db, "h", ["k"], "hashed", initial_chunks=6)
    await insert_many(router, db, "h", [{"_id": i, "k": i} for i in range(300)])
    plain = unique_name("plain")
    ensured = await config.EnsureDatabase(
        router_ext_pb2.EnsureDatabaseRequest(database=plain), timeout=RPC
    )
    victim = ensured.primary_shard  # primary of `plain`, owns hashed chunks too
    await insert_many(router, plain, "u", [{"_id": i} for i in range(20)])
    assert owners(await get_shard_map(config, db, "h"))[victim] == 2

    first = await remove_shard(c, victim)
    assert first.success and first.state == "started"
    assert (first.remaining_chunks, first.remaining_databases) == (2, 1)
    listed = await config.ListShards(router_ext_pb2.ListShardsRequest(), timeout=RPC)
    assert [s.draining for s in listed.shards if s.shard_id == victim] == [True]
    other = next(s for s in c.shard_ids if s != victim)
    some_chunk = next(
        ch for ch in chunks_of(await get_shard_map(config, db, "h")) if ch.shard == other
    )
    await expect_error(
        config.MigrateChunk(
            routing_pb2.MigrateChunkRequest(chunk_id=some_chunk.chunk_id, to_shard=victim),
            timeout=RPC,
        ),
        ErrorCode.ILLEGAL_OPERATION,
    )
    # paused: nothing is drained (give it a few would-be rounds)
    await asyncio.sleep(1.0)
    assert (await remove_shard(c, victim)).remaining_chunks == 2
    assert (await balancer_status(c)).rounds == 0

    resp = await config.SetBalancerState(
        router_ext_pb2.SetBalancerStateRequest(enabled=True), timeout=RPC
    )
    assert resp.enabled

    async def chunks_drained() -> routing_pb2.RemoveShardResponse | None:
        r = await remove_shard(c, victim)
        return r if r.remaining_chunks == 0 else None

    blocked = await eventually(chunks_drained, timeout=90, interval=0.2, what="chunks drained")
    assert blocked is not None
    # the unsharded collection keeps its database on the victim: movePrimary unsupported
    assert blocked.state == "ongoing" and blocked.remaining_databases == 1
    blocked = await eventually(
        lambda: _message_has(c, victim, "movePrimary"), timeout=30, what="movePrimary note"
    )
    await router.DropCollection(
        router_ext_pb2.DropCollectionRequest(database=plain, collection="u"), timeout=RPC
    )

    async def completed() -> bool:
        return (await remove_shard(c, victim)).state == "completed"

    await eventually(completed, timeout=60, interval=0.2, what="removal completed")
    listed = await config.ListShards(router_ext_pb2.ListShardsRequest(), timeout=RPC)
    assert victim not in [s.shard_id for s in listed.shards]
    final = await get_shard_map(config, db, "h")
    assert victim not in owners(final)
    counts = owners(final)
    assert sum(counts.values()) == 6 and max(counts.values()) - min(counts.values()) <= 1
    assert sorted(await all_ids(c, db, "h")) == list(range(300))
    assert await count(router, db, "h", {"k": {"$lt": 100}}) == 100

    # removing down to the last shard: the last one is refused
    rest = [s for s in c.shard_ids if s != victim]
    await remove_shard(c, rest[0])

    async def second_done() -> bool:
        return (await remove_shard(c, rest[0])).state == "completed"

    await eventually(second_done, timeout=90, interval=0.2, what="second removal completed")
    await expect_error(remove_shard(c, rest[1]), ErrorCode.ILLEGAL_OPERATION)
    assert sorted(await all_ids(c, db, "h")) == list(range(300))
    status = await balancer_status(c)
    assert status.migrations_committed >= 4 and status.migrations_failed == 0


async def _message_has(
    c: Cluster, shard_id: str, text: str
) -> routing_pb2.RemoveShardResponse | None:
    r = await remove_shard(c, shard_id)
    return r if text in r.message else None

