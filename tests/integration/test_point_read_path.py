"""The router's point-read fast path (``query_exec._point_read``) and one-shard point
write path (``writes._targeted_write``), against real processes: two shards, a config
server, a router.

- ``{_id: k}`` on a hashed ``_id`` collection reads from the owning shard only, with
  and without limit / batch size;
- a point read whose result needs a cursor (a non-unique ranged key, 150 equal keys):
  101 documents first, the rest through the router's cursor;
- after a chunk moved (through the config server itself, so the router's cached map
  is stale), a point read, a point update and a point delete through the same router
  each act on the document once;
- a point read on a database that does not exist: no documents, no error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from bson.int64 import Int64

from lauradb.cluster import router_ext_pb2, routing_pb2
from lauradb.sharding.hashing import hash_value
from tests.integration.harness import (
    ChunkInfo,
    Cluster,
    chunks_of,
    count,
    dec,
    enc,
    eventually,
    get_shard_map,
    insert_many,
    query,
    shard_collection,
    split_chunk,
    unique_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

RPC = 30.0
DOCS = 60
SAME_K = 150
FIRST_BATCH = 101  # router/cursors.py DEFAULT_FIRST_BATCH


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def c(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    cluster = Cluster(
        Path(tmp_path_factory.mktemp("point-read")), shards=2, extra_config_args=["--no-balancer"]
    )
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def db(c: Cluster) -> str:
    return unique_name("pointread")


async def make_hashed(c: Cluster, db: str, coll: str) -> None:
    """``coll`` sharded on hashed ``_id`` (two chunks per shard), DOCS documents."""
    resp = await shard_collection(c.config_stub(), db, coll, ["_id"], "hashed")
    assert resp.success, resp
    docs = [{"_id": i, "v": i, "s": f"doc{i}"} for i in range(DOCS)]
    assert await insert_many(c.router_stub(), db, coll, docs) == DOCS


def chunk_of(shard_map: routing_pb2.GetShardMapResponse, _id: Any) -> ChunkInfo:
    """The chunk of a hashed-``_id`` map that holds ``_id``."""
    key = {"_id": Int64(hash_value(_id))}
    (chunk,) = [ch for ch in chunks_of(shard_map) if ch.contains(key)]
    return chunk


async def config_map(c: Cluster, db: str, coll: str) -> routing_pb2.GetShardMapResponse:
    """The config server's own (current) map."""
    return await get_shard_map(c.config_server_stub(), db, coll)


async def router_map(c: Cluster, db: str, coll: str) -> routing_pb2.GetShardMapResponse:
    """The router's cached map (RouterService.GetShardMap answers from its cache)."""
    return await get_shard_map(c.router_stub(), db, coll)


async def move_chunk(c: Cluster, chunk: ChunkInfo, to_shard: str) -> None:
    """MigrateChunk on the config server itself (the router is not told: its map goes
    stale). Retried while a previous migration's cleanup blocks it."""

    async def attempt() -> bool:
        resp = await c.config_server_stub().MigrateChunk(
            routing_pb2.MigrateChunkRequest(
                chunk_id=chunk.chunk_id, from_shard=chunk.shard, to_shard=to_shard
            ),
            timeout=RPC,
        )
        assert resp.success, resp
        return True

    await eventually(attempt, timeout=30, interval=0.1, what=f"migrating {chunk.chunk_id}")


async def held_by(c: Cluster, db: str, coll: str, _id: Any) -> list[str]:
    """The shards holding (owning) the document ``_id``, asked of each shard directly."""
    return [
        sid
        for i, sid in enumerate(c.shard_ids)
        if await c.shard_count(i, db, coll, {"_id": _id})
    ]


# ----------------------------------------------------------------------------- point reads


async def test_point_reads_go_to_the_owning_shard(c: Cluster, db: str) -> None:
    coll = "h_reads"
    await make_hashed(c, db, coll)
    router = c.router_stub()
    shard_map = await config_map(c, db, coll)
    owners: set[str] = set()
    for rounds in range(2):  # the first read may load the map; then it is cached
        for k in range(0, DOCS, 3):
            owner = chunk_of(shard_map, k).shard
            owners.add(owner)
            result = await query(router, db, coll, {"_id": k})
            assert result.docs == [{"_id": k, "v": k, "s": f"doc{k}"}], (rounds, k)
            assert result.first is not None
            assert list(result.first.stats.shards_queried) == [owner], (rounds, k)
            assert result.first.stats.documents_returned == 1
            assert not result.first.more_available and not result.first.cursor_id
            assert result.batches == 1
    assert owners == set(c.shard_ids), "the keys read should live on both shards"

    # a key that is not there: the owner of its chunk answers, nothing found
    missing = 10_000
    result = await query(router, db, coll, {"_id": missing})
    assert result.docs == []
    assert result.first is not None
    assert list(result.first.stats.shards_queried) == [chunk_of(shard_map, missing).shard]

    # other point types: a string _id and an Int64 one
    await insert_many(router, db, coll, [{"_id": "str-key", "v": -1}, {"_id": Int64(2**40)}])
    assert (await query(router, db, coll, {"_id": "str-key"})).docs == [{"_id": "str-key", "v": -1}]
    big = await query(router, db, coll, {"_id": Int64(2**40)})
    assert big.docs == [{"_id": 2**40}]
    assert big.first is not None
    assert list(big.first.stats.shards_queried) == [chunk_of(shard_map, 2**40).shard]
    assert (await query(router, db, coll, {"_id": 2**40})).docs == [{"_id": 2**40}]


@pytest.mark.parametrize(
    ("limit", "batch_size"), [(1, 0), (0, 1), (1, 1), (5, 2), (0, 1000), (3, 0)]
)
async def test_point_read_with_limit_and_batch_size(
    c: Cluster, db: str, limit: int, batch_size: int
) -> None:
    coll = "h_limits"
    if (await count(c.router_stub(), db, coll)) == 0:
        await make_hashed(c, db, coll)
    router = c.router_stub()
    shard_map = await config_map(c, db, coll)
    for k in (1, 2, 17, 42):
        result = await query(router, db, coll, {"_id": k}, limit=limit, batch_size=batch_size)
        assert result.docs == [{"_id": k, "v": k, "s": f"doc{k}"}], (k, limit, batch_size)
        assert result.first is not None
        assert list(result.first.stats.shards_queried) == [chunk_of(shard_map, k).shard]
        assert result.shards_queried == {chunk_of(shard_map, k).shard}


async def test_point_read_with_a_cursor(c: Cluster, db: str) -> None:
    """A ranged, non-unique key with 150 equal values: the first batch holds 101
    documents, GetMore (the router's cursor) the other 49."""
    coll = "r_same_k"
    config, router = c.config_stub(), c.router_stub()
    resp = await shard_collection(config, db, coll, ["k"], "range")
    assert resp.success, resp
    (whole,) = chunks_of(await config_map(c, db, coll))
    await split_chunk(config, whole.chunk_id, {"k": 100})
    docs = [{"_id": i, "k": 7, "i": i} for i in range(SAME_K)]
    docs += [{"_id": 1000 + i, "k": 8 + i} for i in range(10)]  # others, one chunk
    docs += [{"_id": 2000 + i, "k": 100 + i} for i in range(10)]  # the upper chunk
    assert await insert_many(router, db, coll, docs) == len(docs)
    # put the upper chunk on the other shard: the key really targets one of two shards
    shard_map = await config_map(c, db, coll)
    lower = next(ch for ch in chunks_of(shard_map) if ch.contains({"k": 7}))
    upper = next(ch for ch in chunks_of(shard_map) if ch.contains({"k": 100}))
    if upper.shard == lower.shard:
        other = next(s for s in c.shard_ids if s != lower.shard)
        await move_chunk(c, upper, other)
    owner = lower.shard
    await query(router, db, coll, {"k": 8})  # the router has the (current) map cached

    first = await router.Query(
        routing_pb2.QueryRequest(database=db, collection=coll, query=enc({"k": 7})),
        timeout=RPC,
    )
    assert len(first.documents) == FIRST_BATCH
    assert first.more_available and first.cursor_id
    assert list(first.stats.shards_queried) == [owner]
    more = await router.GetMore(
        router_ext_pb2.GetMoreRequest(cursor_id=first.cursor_id), timeout=RPC
    )
    assert len(more.documents) == SAME_K - FIRST_BATCH
    assert not more.more_available
    ids = [dec(d)["_id"] for d in [*first.documents, *more.documents]]
    assert sorted(ids) == list(range(SAME_K))

    # the harness's query (follows GetMore), with a batch size and with a limit
    small = await query(router, db, coll, {"k": 7}, batch_size=40)
    assert small.batches == 4 and len(small.docs) == SAME_K
    assert len({d["_id"] for d in small.docs}) == SAME_K
    assert small.shards_queried == {owner}
    limited = await query(router, db, coll, {"k": 7}, limit=120)
    assert len(limited.docs) == 120 and limited.batches == 2
    assert len({d["_id"] for d in limited.docs}) == 120
    tiny = await query(router, db, coll, {"k": 7}, limit=5, batch_size=2)
    assert len(tiny.docs) == 5
    one_batch = await query(router, db, coll, {"k": 7}, limit=-10)  # a single batch
    assert len(one_batch.docs) == 10 and one_batch.batches == 1
    upper_read = await query(router, db, coll, {"k": 105})
    assert upper_read.docs == [{"_id": 2005, "k": 105}]
    assert upper_read.shards_queried == {next(s for s in c.shard_ids if s != owner)}


# ----------------------------------------------------------------------------- a stale map


async def test_point_ops_through_a_stale_router(c: Cluster, db: str) -> None:
    coll = "h_stale"
    await make_hashed(c, db, coll)
    router = c.router_stub()
    for k in range(DOCS):  # every key read once: the router's map is cached
        assert len((await query(router, db, coll, {"_id": k})).docs) == 1

    async def move_chunk_of(k: int) -> str:
        """Move ``k``'s chunk to the other shard; assert the router did not notice."""
        before = await config_map(c, db, coll)
        chunk = chunk_of(before, k)
        target = next(s for s in c.shard_ids if s != chunk.shard)
        await move_chunk(c, chunk, target)
        after = await config_map(c, db, coll)
        assert chunk_of(after, k).shard == target
        cached = await router_map(c, db, coll)
        assert cached.version < after.version, "the router's map should be stale"
        assert chunk_of(cached, k).shard == chunk.shard
        return target

    # a point read
    read_key = 5
    owner = await move_chunk_of(read_key)
    assert await held_by(c, db, coll, read_key) == [owner]
    result = await query(router, db, coll, {"_id": read_key})
    assert result.docs == [{"_id": read_key, "v": read_key, "s": f"doc{read_key}"}]
    assert result.shards_queried == {owner}
    assert (await router_map(c, db, coll)).version == (await config_map(c, db, coll)).version

    # a point update (its chunk moves again: stale again)
    owner = await move_chunk_of(read_key)
    updated = await router.Update(
        routing_pb2.UpdateRequest(
            database=db, collection=coll, query=enc({"_id": read_key}),
            update=enc({"$set": {"s": "updated"}, "$inc": {"v": 100}}),
        ),
        timeout=RPC,
    )
    assert not updated.error.code, updated.error
    assert (updated.matched_count, updated.modified_count) == (1, 1)
    assert (await query(router, db, coll, {"_id": read_key})).docs == [
        {"_id": read_key, "v": read_key + 100, "s": "updated"}
    ]
    assert await held_by(c, db, coll, read_key) == [owner]

    # a point delete (stale once more)
    owner = await move_chunk_of(read_key)
    deleted = await router.Delete(
        routing_pb2.DeleteRequest(database=db, collection=coll, query=enc({"_id": read_key})),
        timeout=RPC,
    )
    assert not deleted.error.code, deleted.error
    assert deleted.deleted_count == 1
    assert (await query(router, db, coll, {"_id": read_key})).docs == []
    assert await held_by(c, db, coll, read_key) == []
    assert await count(router, db, coll) == DOCS - 1

    # the other documents of the collection are all still there, once each
    everything = await query(router, db, coll, {}, batch_size=1000)
    ids = sorted(d["_id"] for d in everything.docs)
    assert ids == [k for k in range(DOCS) if k != read_key]


async def test_point_write_then_read_on_fresh_router_map(c: Cluster, db: str) -> None:
    """Point update / delete with a current map: one shard, applied once."""
    coll = "h_writes"
    await make_hashed(c, db, coll)
    router = c.router_stub()
    for k in (3, 4):
        await query(router, db, coll, {"_id": k})  # cached map
        updated = await router.Update(
            routing_pb2.UpdateRequest(
                database=db, collection=coll, query=enc({"_id": k}),
                update=enc({"$set": {"s": "x"}}),
            ),
            timeout=RPC,
        )
        assert updated.matched_count == 1
    deleted = await router.Delete(
        routing_pb2.DeleteRequest(database=db, collection=coll, query=enc({"_id": 4})),
        timeout=RPC,
    )
    assert deleted.deleted_count == 1
    again = await router.Delete(
        routing_pb2.DeleteRequest(database=db, collection=coll, query=enc({"_id": 4})),
        timeout=RPC,
    )
    assert again.deleted_count == 0
    assert (await query(router, db, coll, {"_id": 3})).docs == [{"_id": 3, "v": 3, "s": "x"}]
    assert (await query(router, db, coll, {"_id": 4})).docs == []


# ----------------------------------------------------------------------------- missing database


async def test_point_read_on_a_missing_database(c: Cluster) -> None:
    router = c.router_stub()
    missing = unique_name("nodb")
    for _ in range(2):  # nothing gets cached for it either
        result = await query(router, missing, "c", {"_id": 1})
        assert result.docs == []
        assert result.first is not None
        assert not result.first.error.code
        assert not result.first.cursor_id
        result = await query(router, missing, "c", {"_id": "x"}, limit=1, batch_size=1)
        assert result.docs == []
    updated = await router.Update(
        routing_pb2.UpdateRequest(
            database=missing, collection="c", query=enc({"_id": 1}),
            update=enc({"$set": {"a": 1}}),
        ),
        timeout=RPC,
    )
    assert updated.matched_count == 0
    deleted = await router.Delete(
        routing_pb2.DeleteRequest(database=missing, collection="c", query=enc({"_id": 1})),
        timeout=RPC,
    )
    assert deleted.deleted_count == 0
    # and the reads did not create it
    listed = await c.config_server_stub().ListDatabases(
        router_ext_pb2.ListDatabasesRequest(), timeout=RPC
    )
    assert missing not in {d.name for d in listed.databases}
