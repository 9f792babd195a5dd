"""Chunk migrations between two real shard processes with a real config server.

The test plays the router itself (ShardService calls with the shard versions of the
config server's map, refreshing it and retrying on STALE_CONFIG), so that it checks
the shards' side: the donor's clone + transfer log + critical section, the
recipient's catch-up, the commit, cursors and the range deleter.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import bson
import grpc
import pytest
from bson.max_key import MaxKey
from bson.min_key import MinKey

from lauradb.cluster import router_ext_pb2, routing_pb2, shard_pb2, shard_pb2_grpc
from lauradb.errors import ErrorCode
from lauradb.rpc.errors import from_rpc_error
from tests.integration.harness import (
    Cluster,
    chunks_of,
    enc,
    eventually,
    get_shard_map,
    shard_collection,
    split_chunk,
)

pytestmark = pytest.mark.integration

DB = "mig"
COLL = "c"
DOCS = 5000
SPLIT = 2500  # chunks [MinKey, 2500) and [2500, MaxKey)
RPC = 30.0


@pytest.fixture
async def two_shards(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path / "cluster", shards=2, extra_config_args=["--no-balancer"])
    for proc in c.shards:
        proc.args += ["--migration-peer-timeout", "2", "--migration-clone-batch", "100"]
    try:
        await c.start()
        yield c
    finally:
        await c.stop(check=True)


class TestRouter:
    """Just enough of a router: versions from the config map, refresh on STALE_CONFIG."""

    __test__ = False

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.map: routing_pb2.GetShardMapResponse | None = None
        self.stale_retries = 0

    async def refresh(self) -> None:
        self.map = await get_shard_map(self.c.config_server_stub(), DB, COLL)

    def _map(self) -> routing_pb2.GetShardMapResponse:
        assert self.map is not None
        return self.map

    def version(self, shard_id: str) -> shard_pb2.ShardVersion:
        m = self._map()
        best = (0, 0)
        for s in m.shards:
            if s.shard_id == shard_id:
                for ch in s.chunks:
                    best = max(best, (ch.version_major, ch.version_minor))
        return shard_pb2.ShardVersion(epoch=m.epoch, major=best[0], minor=best[1])

    def owner(self, k: int) -> str:
        for chunk in chunks_of(self._map()):
            if chunk.contains({"k": k}):
                return chunk.shard
        raise AssertionError(f"no chunk for k={k}")

    def stub(self, shard_id: str) -> shard_pb2_grpc.ShardServiceStub:
        return self.c.shard_stub(self.c.shard_index(shard_id))

    async def _retry(self, op: Callable[[], Awaitable[Any]]) -> Any:
        for _ in range(40):
            if self.map is None:
                await self.refresh()
            try:
                return await op()
            except grpc.RpcError as exc:
                err = from_rpc_error(exc)
                if err.code != ErrorCode.STALE_CONFIG:
                    raise err from None
            self.stale_retries += 1
            await self.refresh()
            await asyncio.sleep(0.02)
        raise AssertionError("STALE_CONFIG retries exhausted")

    async def insert(self, doc: dict[str, Any]) -> None:
        async def op() -> None:
            shard = self.owner(doc["k"])
            resp = await self.stub(shard).Insert(shard_pb2.ShardInsertRequest(
                database=DB, collection=COLL, documents=[enc(doc)], ordered=True,
                version=self.version(shard)), timeout=RPC)
            assert resp.inserted_count == 1, resp

        await self._retry(op)

    async def insert_many(self, docs: list[dict[str, Any]], shard: str) -> None:
        async def op() -> None:
            resp = await self.stub(shard).Insert(shard_pb2.ShardInsertRequest(
                database=DB, collection=COLL, documents=[enc(d) for d in docs],
                ordered=True, version=self.version(shard)), timeout=RPC)
            assert resp.inserted_count == len(docs), resp

        await self._retry(op)

    async def update(self, _id: int, k: int, v: int) -> int:
        async def op() -> int:
            shard = self.owner(k)
            resp = await self.stub(shard).Update(shard_pb2.ShardUpdateRequest(
                database=DB, collection=COLL, filter=enc({"k": k, "_id": _id}),
                update=enc({"$set": {"v": v}}), version=self.version(shard)), timeout=RPC)
            return int(resp.matched_count)

        return int(await self._retry(op))

    async def delete(self, _id: int, k: int) -> int:
        async def op() -> int:
            shard = self.owner(k)
            resp = await self.stub(shard).Delete(shard_pb2.ShardDeleteRequest(
                database=DB, collection=COLL, filter=enc({"k": k, "_id": _id}),
                version=self.version(shard)), timeout=RPC)
            return int(resp.deleted_count)

        return int(await self._retry(op))

    async def find_all(self, batch_size: int = 500) -> list[dict[str, Any]]:
        """Every document, read from every shard with the same map (retried as a whole)."""

        async def op() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for s in self._map().shards:
                if s.chunks:  # as a router does: only shards owning chunks
                    out += await self.find_on(s.shard_id, batch_size)
            return out

        result: list[dict[str, Any]] = await self._retry(op)
        return result

    async def find_on(self, shard: str, batch_size: int) -> list[dict[str, Any]]:
        stub = self.stub(shard)
        resp = await stub.Find(shard_pb2.ShardFindRequest(
            database=DB, collection=COLL, batch_size=batch_size,
            version=self.version(shard)), timeout=RPC)
        docs = [bson.decode(d) for d in resp.documents]
        while resp.cursor_id:
            resp = await stub.GetMore(shard_pb2.ShardGetMoreRequest(
                cursor_id=resp.cursor_id, batch_size=batch_size), timeout=RPC)
            docs += [bson.decode(d) for d in resp.documents]
        return docs


async def setup_collection(c: Cluster, docs: int = DOCS, pad: int = 0) -> tuple[TestRouter, str]:
    """db ``mig`` (primary shard0), ``c`` sharded on k, split at SPLIT, ``docs`` documents
    on shard0; the id of the chunk [SPLIT, MaxKey)."""
    config = c.config_server_stub()
    await shard_collection(config, DB, COLL, ["k"], "range")
    (whole,) = chunks_of(await get_shard_map(config, DB, COLL))
    assert whole.shard == "shard0"
    await split_chunk(config, whole.chunk_id, {"k": SPLIT})
    router = TestRouter(c)
    await router.refresh()
    high = next(ch for ch in chunks_of(router._map()) if ch.min == {"k": SPLIT})
    payload = "x" * pad
    for start in range(0, docs, 1000):
        batch = [{"_id": i, "k": i, "v": 0, "pad": payload}
                 for i in range(start, min(start + 1000, docs))]
        await router.insert_many(batch, "shard0")
    return router, high.chunk_id


async def migrate(c: Cluster, chunk_id: str, to: str = "shard1") -> routing_pb2.MigrateChunkResponse:
    resp: routing_pb2.MigrateChunkResponse = await c.config_server_stub().MigrateChunk(
        routing_pb2.MigrateChunkRequest(chunk_id=chunk_id, from_shard="shard0", to_shard=to),
        timeout=120,
    )
    return resp


async def ignore_count(c: Cluster, index: int, flt: dict[str, Any]) -> int:
    return await c.shard_count(index, DB, COLL, flt)


async def status(c: Cluster, index: int) -> shard_pb2.MigrationStatusResponse:
    resp: shard_pb2.MigrationStatusResponse = await c.shard_stub(index).MigrationStatus(
        shard_pb2.MigrationStatusRequest(), timeout=RPC
    )
    return resp


# ------------------------------------------------------------------------ tests


async def test_migration_under_writes_keeps_every_document_exactly_once(
    two_shards: Cluster,
) -> None:
    c = two_shards
    router, chunk_id = await setup_collection(c)
    expected: dict[int, int] = {i: 0 for i in range(DOCS)}  # _id -> v (k == _id % 10000)
    key_of: dict[int, int] = {i: i for i in range(DOCS)}
    stop = asyncio.Event()
    stats: dict[str, Any] = {
        "writes": 0, "max_write_s": 0.0, "reads": 0, "slow_writes": 0, "stale": 0
    }
    rnd = random.Random(5)

    async def writer(w: int) -> None:
        """Inserts, updates and deletes, mostly in the migrating range; each writer owns
        the documents with ``_id % 2 == w`` so that the last value written is known."""
        r = TestRouter(c)
        n = w
        mine = [i for i in range(SPLIT, DOCS) if i % 2 == w]
        while not stop.is_set():
            n += 2
            op = rnd.random()
            start = time.monotonic()
            if op < 0.4:  # insert into the migrating range (and sometimes outside)
                _id = 100_000 + n
                k = rnd.randrange(SPLIT, DOCS) if op < 0.35 else rnd.randrange(0, SPLIT)
                await r.insert({"_id": _id, "k": k, "v": n})
                expected[_id] = n
                key_of[_id] = k
                if k >= SPLIT:
                    mine.append(_id)
            elif mine:
                _id = mine[rnd.randrange(len(mine))]
                if op < 0.8:
                    assert await r.update(_id, key_of[_id], n) == 1
                    expected[_id] = n
                else:
                    assert await r.delete(_id, key_of[_id]) == 1
                    del expected[_id]
                    mine.remove(_id)
            took = time.monotonic() - start
            stats["writes"] += 1
            stats["max_write_s"] = max(stats["max_write_s"], took)
            stats["slow_writes"] += took > 0.02
            stats["stale"] += r.stale_retries
            r.stale_retries = 0
            await asyncio.sleep(0)

    async def reader() -> None:
        r = TestRouter(c)
        while not stop.is_set():
            docs = await r.find_all()
            ids = [d["_id"] for d in docs]
            assert len(ids) == len(set(ids)), "a document was visible twice"
            stats["reads"] += 1

    tasks = [asyncio.create_task(t) for t in (writer(0), writer(1), reader())]
    try:
        async def traffic_flowing() -> bool:
            return stats["writes"] >= 20 and stats["reads"] >= 1

        await eventually(traffic_flowing, what="writers and reader running")
        donor_log_offset = c.shards[0].log_size()
        started = time.monotonic()
        resp = await migrate(c, chunk_id)
        elapsed = time.monotonic() - started
        assert resp.success, resp
        await asyncio.sleep(0.3)  # writes and reads against the new placement
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    assert stats["writes"] > 50 and stats["reads"] > 2

    # The config's map: the chunk is on shard1.
    await router.refresh()
    moved = next(ch for ch in chunks_of(router._map()) if ch.chunk_id == chunk_id)
    assert moved.shard == "shard1"

    # Every document exactly once, with its last written value, through both shards.
    docs = await router.find_all()
    ids = [d["_id"] for d in docs]
    assert len(ids) == len(set(ids))
    assert {d["_id"]: d["v"] for d in docs} == expected
    on_recipient = await router.find_on("shard1", 1000)
    assert on_recipient and all(d["k"] >= SPLIT for d in on_recipient)

    # The donor deletes the range eventually; nothing is pending afterwards.
    async def range_deleted() -> bool:
        return await ignore_count(c, 0, {"k": {"$gte": SPLIT}}) == 0

    await eventually(range_deleted, timeout=30, what="donor range deletion")
    assert not (await status(c, 0)).pending_range_deletions
    assert await ignore_count(c, 0, {}) == sum(1 for i in expected if key_of[i] < SPLIT)

    log = c.shards[0].log_text(donor_log_offset)
    section = re.search(r"critical section lasted ([0-9.]+)s", log)
    assert section is not None, log[-3000:]
    assert "range deleted" in log
    print(
        f"\nmigration of {resp.documents_migrated} documents under {stats['writes']} writes: "
        f"{elapsed:.2f}s ({resp.documents_migrated / elapsed:.0f} docs/s), critical section "
        f"{float(section.group(1)) * 1000:.0f} ms, slowest write {stats['max_write_s']:.3f}s, "
        f"{stats['slow_writes']} writes over 20 ms, {stats['stale']} STALE_CONFIG retries, "
        f"{stats['reads']} full reads"
    )


async def test_cursor_opened_before_the_commit_returns_moved_documents(
    two_shards: Cluster,
) -> None:
    c = two_shards
    router, chunk_id = await setup_collection(c, docs=3000)
    donor = c.shard_stub(0)
    first = await donor.Find(shard_pb2.ShardFindRequest(
        database=DB, collection=COLL, batch_size=10, filter=enc({"k": {"$gte": SPLIT}}),
        version=router.version("shard0")), timeout=RPC)
    assert first.cursor_id
    resp = await migrate(c, chunk_id)
    assert resp.success, resp
    await asyncio.sleep(0.5)
    # The range deleter waits for the cursor; the cursor returns the moved documents.
    assert await ignore_count(c, 0, {"k": {"$gte": SPLIT}}) == 500
    assert (await status(c, 0)).pending_range_deletions
    rest = await donor.GetMore(shard_pb2.ShardGetMoreRequest(
        cursor_id=first.cursor_id, batch_size=1000), timeout=RPC)
    ids = [bson.decode(d)["_id"] for d in [*first.documents, *rest.documents]]
    assert ids == list(range(SPLIT, 3000)) and not rest.cursor_id

    async def range_deleted() -> bool:
        return await ignore_count(c, 0, {"k": {"$gte": SPLIT}}) == 0

    await eventually(range_deleted, timeout=30, what="range deletion after the cursor")


async def test_move_range_without_config_record_aborts_and_donor_keeps_everything(
    two_shards: Cluster,
) -> None:
    """MoveRange driven directly: the config server has no migration record, refuses
    the commit from the critical section; the donor aborts cleanly."""
    c = two_shards
    router, chunk_id = await setup_collection(c, docs=2000)
    shard1 = c.shards[1]
    host, port = shard1.address.rsplit(":", 1)
    m = router._map()
    request = shard_pb2.MoveRangeRequest(
        migration_id="direct-1", database=DB, collection=COLL, chunk_id=chunk_id,
        min_key=enc({"k": SPLIT}), max_key=enc({"k": MaxKey()}), epoch=m.epoch,
        to_shard_id="shard1", to_host=host, to_port=int(port),
    )
    with pytest.raises(grpc.RpcError) as info:
        await c.shard_stub(0).MoveRange(request, timeout=60)
    err = from_rpc_error(info.value)
    assert err.code == ErrorCode.OPERATION_FAILED and "refused" in err.message
    await router.refresh()
    assert all(ch.shard == "shard0" for ch in chunks_of(router._map()))
    docs = await router.find_all()
    assert sorted(d["_id"] for d in docs) == list(range(2000))
    await router.insert({"_id": "after", "k": SPLIT + 1, "v": 1})  # writes go on
    assert not (await status(c, 0)).migrations

    async def recipient_clean() -> bool:
        return await ignore_count(c, 1, {}) == 0

    await eventually(recipient_clean, timeout=15, what="recipient cleanup")
    recv = await c.shard_stub(1).RecvChunkStatus(
        shard_pb2.RecvChunkControlRequest(migration_id="direct-1"), timeout=RPC)
    assert recv.state == "aborted"
    # Bad requests are refused up front.
    with pytest.raises(grpc.RpcError) as info:
        await c.shard_stub(0).MoveRange(
            shard_pb2.MoveRangeRequest(
                migration_id="direct-2", database=DB, collection=COLL, chunk_id="nope",
                min_key=enc({"k": MinKey()}), max_key=enc({"k": SPLIT}), epoch=m.epoch,
                to_shard_id="shard1", to_host=host, to_port=int(port)),
            timeout=RPC)
    assert from_rpc_error(info.value).code == ErrorCode.CHUNK_NOT_FOUND


async def test_recipient_killed_mid_migration_donor_aborts_and_keeps_everything(
    two_shards: Cluster,
) -> None:
    c = two_shards
    router, chunk_id = await setup_collection(c, docs=DOCS, pad=400)
    task = asyncio.create_task(migrate(c, chunk_id))

    async def cloning() -> bool:
        st = await status(c, 0)
        return any(m.role == "donor" and m.documents_cloned > 0 for m in st.migrations)

    await eventually(cloning, timeout=30, interval=0.005, what="clone progress")
    c.kill_shard(1)
    resp = await asyncio.wait_for(task, 60)
    assert not resp.success and resp.error, resp

    await router.refresh()
    assert all(ch.shard == "shard0" for ch in chunks_of(router._map()))
    assert not (await status(c, 0)).migrations
    docs = await router.find_all()
    assert sorted(d["_id"] for d in docs) == list(range(DOCS))
    await router.update(SPLIT + 7, SPLIT + 7, 42)  # the range is writable on the donor

    # The restarted recipient deletes what it had received; a new attempt succeeds.
    await c.restart_shard(1)

    async def recipient_clean() -> bool:
        return await ignore_count(c, 1, {}) == 0

    await eventually(recipient_clean, timeout=15, what="recipient cleanup after restart")
    # The donor's channel to the restarted recipient may still be in reconnect backoff:
    # a migration to an unreachable peer fails fast (the balancer retries), so retry.
    async def migrated() -> bool:
        return bool((await migrate(c, chunk_id)).success)

    await eventually(migrated, timeout=30, interval=0.5, what="migration after restart")
    await router.refresh()
    docs = await router.find_all()
    assert sorted(d["_id"] for d in docs) == list(range(DOCS))
    assert next(d for d in docs if d["_id"] == SPLIT + 7)["v"] == 42


async def test_chunk_stats_and_split_vector_over_the_wire(two_shards: Cluster) -> None:
    c = two_shards
    _, high = await setup_collection(c, docs=1000)
    stats = await c.shard_stub(0).ChunkStats(
        shard_pb2.ChunkStatsRequest(database=DB, collection=COLL), timeout=RPC)
    by_id = {s.chunk_id: s for s in stats.chunks}
    assert by_id[high].documents == 0 and bson.decode(by_id[high].min_key) == {"k": SPLIT}
    (low,) = (s for s in stats.chunks if s.chunk_id != high)
    assert low.documents == 1000 and low.bytes > 1000 * 20
    sv = await c.shard_stub(0).SplitVector(shard_pb2.SplitVectorRequest(
        database=DB, collection=COLL, min_key=enc({"k": MinKey()}),
        max_key=enc({"k": SPLIT}), max_chunk_bytes=0), timeout=RPC)
    assert [bson.decode(p) for p in sv.split_points] == [{"k": 500}] and not sv.jumbo
    assert sv.documents == 1000 and sv.bytes == low.bytes


async def test_hashed_chunk_of_a_collection_sharded_with_data_moves(two_shards: Cluster) -> None:
    """Documents inserted while unsharded; sharding hashed puts every initial chunk on
    the primary (it holds data); moving one of them moves exactly its documents."""
    c = two_shards
    config = c.config_server_stub()
    await config.EnsureDatabase(router_ext_pb2.EnsureDatabaseRequest(database=DB), timeout=RPC)
    docs = [enc({"_id": i, "k": i, "v": i}) for i in range(2000)]
    resp = await c.shard_stub(0).Insert(shard_pb2.ShardInsertRequest(
        database=DB, collection=COLL, documents=docs,
        version=shard_pb2.ShardVersion(unsharded=True)), timeout=RPC)
    assert resp.inserted_count == 2000
    await shard_collection(config, DB, COLL, ["k"], "hashed", initial_chunks=4)
    router = TestRouter(c)
    await router.refresh()
    chunks = chunks_of(router._map())
    assert len(chunks) == 4 and {ch.shard for ch in chunks} == {"shard0"}
    stats = await c.shard_stub(0).ChunkStats(
        shard_pb2.ChunkStatsRequest(database=DB, collection=COLL), timeout=RPC)
    per_chunk = {s.chunk_id: s.documents for s in stats.chunks}
    assert sum(per_chunk.values()) == 2000
    target = chunks[1]
    resp = await migrate(c, target.chunk_id)
    assert resp.success and resp.documents_migrated == per_chunk[target.chunk_id], resp
    await router.refresh()
    found = await router.find_all()
    assert sorted(d["_id"] for d in found) == list(range(2000))
    assert len(await router.find_on("shard1", 1000)) == per_chunk[target.chunk_id]
    # Split points of a hashed chunk are hash-space bound documents inside it.
    sv = await c.shard_stub(0).SplitVector(shard_pb2.SplitVectorRequest(
        database=DB, collection=COLL, min_key=enc(chunks[0].min), max_key=enc(chunks[0].max),
        max_chunk_bytes=0), timeout=RPC)
    (point,) = [bson.decode(p) for p in sv.split_points]
    assert isinstance(point["k"], int) and chunks[0].contains(point)
