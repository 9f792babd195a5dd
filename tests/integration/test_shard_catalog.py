"""Indexes, distinct and drops over gRPC: a real config server and two real shards.

No router: the test plays the router's part (RecordIndex on the config server,
CreateIndex / DropIndex / ... on the shards) to pin down the shard-side semantics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from lauradb.cluster import router_ext_pb2, routing_pb2, shard_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.chunk_map import Chunk, ChunkMap
from lauradb.sharding.shard_key import ShardKeyPattern
from lauradb.sharding.targeting import target_key_for_insert
from tests.integration.harness import RPC_TIMEOUT, Cluster, dec, enc, laura_error

pytestmark = pytest.mark.integration

UNSHARDED = shard_pb2.ShardVersion(unsharded=True)


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Config server and two shards (shard0, shard1); no router."""
    c = Cluster(tmp_path / "cluster", shards=2)
    procs = [c.config, *c.shards]
    try:
        for proc in procs:
            proc.start()
        await asyncio.gather(*(proc.wait_healthy() for proc in procs))
        await c.add_shards()
        yield c
    finally:
        await c.stop()


def spec(name: str, keys: dict[str, int], *, unique: bool = False,
         sparse: bool = False) -> router_ext_pb2.IndexSpec:
    return router_ext_pb2.IndexSpec(name=name, keys=enc(keys), unique=unique, sparse=sparse)


async def failure(call: Any) -> LauraError:
    with pytest.raises(grpc.RpcError) as exc:
        await call
    return laura_error(exc.value)


async def insert(c: Cluster, shard: int, db: str, coll: str, docs: list[dict[str, Any]],
                 version: shard_pb2.ShardVersion = UNSHARDED) -> shard_pb2.ShardInsertResponse:
    return await c.shard_stub(shard).Insert(
        shard_pb2.ShardInsertRequest(
            database=db, collection=coll, documents=[enc(d) for d in docs], ordered=False,
            version=version,
        ),
        timeout=RPC_TIMEOUT,
    )


async def index_names(c: Cluster, shard: int, db: str, coll: str) -> list[str]:
    resp = await c.shard_stub(shard).ListIndexes(
        shard_pb2.ShardListIndexesRequest(database=db, collection=coll), timeout=RPC_TIMEOUT
    )
    return [ix.name for ix in resp.indexes]


async def distinct(c: Cluster, shard: int, db: str, coll: str, key: str,
                   flt: dict[str, Any] | None = None,
                   version: shard_pb2.ShardVersion = UNSHARDED) -> list[Any]:
    resp = await c.shard_stub(shard).Distinct(
        shard_pb2.ShardDistinctRequest(
            database=db, collection=coll, key=key, filter=enc(flt), version=version
        ),
        timeout=RPC_TIMEOUT,
    )
    values: list[Any] = dec(resp.values)["values"]
    return values


async def collections(c: Cluster, shard: int, db: str) -> list[str]:
    resp = await c.shard_stub(shard).ListCollections(
        shard_pb2.ShardListCollectionsRequest(database=db), timeout=RPC_TIMEOUT
    )
    return list(resp.collections)


async def test_index_lifecycle_distinct_and_drops_on_the_primary(cluster: Cluster) -> None:
    c = cluster
    cfg = c.config_server_stub()
    db = "catalogdb"
    ensured = await cfg.EnsureDatabase(
        router_ext_pb2.EnsureDatabaseRequest(database=db), timeout=RPC_TIMEOUT
    )
    primary = c.shard_index(ensured.primary_shard)
    shard = c.shard_stub(primary)
    docs = [{"_id": i, "a": i % 10, "u": i % 50, "tags": [f"t{i % 3}", "all"]} for i in range(100)]
    assert (await insert(c, primary, db, "c", docs)).inserted_count == 100

    # A unique index the data violates: DUPLICATE_KEY, and no index is left behind.
    err = await failure(shard.CreateIndex(
        shard_pb2.ShardCreateIndexRequest(
            database=db, collection="c", index=spec("u_1", {"u": 1}, unique=True)
        ),
        timeout=RPC_TIMEOUT,
    ))
    assert err.code == ErrorCode.DUPLICATE_KEY and int(err.code) == 11000
    assert await index_names(c, primary, db, "c") == ["_id_"]

    create = shard_pb2.ShardCreateIndexRequest(
        database=db, collection="c", index=spec("a_1", {"a": 1})
    )
    assert (await shard.CreateIndex(create, timeout=RPC_TIMEOUT)).created is True
    assert (await shard.CreateIndex(create, timeout=RPC_TIMEOUT)).created is False
    err = await failure(shard.CreateIndex(
        shard_pb2.ShardCreateIndexRequest(database=db, collection="c", index=spec("a_1", {"a": -1})),
        timeout=RPC_TIMEOUT,
    ))
    assert err.code == ErrorCode.INDEX_ALREADY_EXISTS
    err = await failure(shard.CreateIndex(
        shard_pb2.ShardCreateIndexRequest(database=db, collection="c", index=spec("b", {"a": 2})),
        timeout=RPC_TIMEOUT,
    ))
    assert err.code == ErrorCode.BAD_VALUE and "bad index key pattern" in err.message
    listed = await shard.ListIndexes(
        shard_pb2.ShardListIndexesRequest(database=db, collection="c"), timeout=RPC_TIMEOUT
    )
    assert [(ix.name, dec(ix.keys)) for ix in listed.indexes] == [
        ("_id_", {"_id": 1}), ("a_1", {"a": 1})
    ]

    # The index is used: only the matching documents are examined.
    found = await shard.Find(
        shard_pb2.ShardFindRequest(database=db, collection="c", filter=enc({"a": 3}),
                                   version=UNSHARDED),
        timeout=RPC_TIMEOUT,
    )
    assert len(found.documents) == 10 and found.documents_examined == 10

    assert await distinct(c, primary, db, "c", "a", {"a": {"$lt": 3}}) == [0, 1, 2]
    assert await distinct(c, primary, db, "c", "tags") == ["all", "t0", "t1", "t2"]

    dropped = await shard.DropIndex(
        shard_pb2.ShardDropIndexRequest(database=db, collection="c", name="a_1"),
        timeout=RPC_TIMEOUT,
    )
    assert list(dropped.dropped) == ["a_1"]
    err = await failure(shard.DropIndex(
        shard_pb2.ShardDropIndexRequest(database=db, collection="c", name="a_1"),
        timeout=RPC_TIMEOUT,
    ))
    assert err.code == ErrorCode.INDEX_NOT_FOUND
    err = await failure(shard.DropIndex(
        shard_pb2.ShardDropIndexRequest(database=db, collection="c", name="_id_"),
        timeout=RPC_TIMEOUT,
    ))
    assert err.code == ErrorCode.ILLEGAL_OPERATION

    # Indexes recorded on the config server are built when the collection first appears.
    recorded = await cfg.RecordIndex(
        router_ext_pb2.RecordIndexRequest(
            database=db, collection="fresh", index=spec("email_1", {"email": 1}, unique=True)
        ),
        timeout=RPC_TIMEOUT,
    )
    assert recorded.created
    res = await insert(c, primary, db, "fresh", [{"_id": 1, "email": "x"}, {"_id": 2, "email": "x"}])
    assert res.inserted_count == 1 and res.errors[0].code == 11000
    assert await index_names(c, primary, db, "fresh") == ["_id_", "email_1"]

    assert await collections(c, primary, db) == ["c", "fresh"]
    drop = await shard.DropCollection(
        shard_pb2.ShardDropCollectionRequest(database=db, collection="c"), timeout=RPC_TIMEOUT
    )
    assert drop.dropped
    again = await shard.DropCollection(
        shard_pb2.ShardDropCollectionRequest(database=db, collection="c"), timeout=RPC_TIMEOUT
    )
    assert not again.dropped
    assert await collections(c, primary, db) == ["fresh"]
    err = await failure(shard.ListIndexes(
        shard_pb2.ShardListIndexesRequest(database=db, collection="c"), timeout=RPC_TIMEOUT
    ))
    assert err.code == ErrorCode.NAMESPACE_NOT_FOUND

    dropdb = await shard.DropDatabase(
        shard_pb2.ShardDropDatabaseRequest(database=db), timeout=RPC_TIMEOUT
    )
    assert dropdb.dropped
    assert await collections(c, primary, db) == []
    meta = await cfg.DropDatabaseMetadata(
        router_ext_pb2.DropDatabaseMetadataRequest(database=db), timeout=RPC_TIMEOUT
    )
    assert meta.dropped
    listed_records = await cfg.GetCollectionIndexes(
        router_ext_pb2.GetCollectionIndexesRequest(database=db, collection="fresh"),
        timeout=RPC_TIMEOUT,
    )
    assert list(listed_records.indexes) == []
    err = await failure(cfg.GetShardMap(
        routing_pb2.GetShardMapRequest(database=db, collection="fresh"), timeout=RPC_TIMEOUT
    ))
    assert err.code == ErrorCode.NAMESPACE_NOT_FOUND


def chunk_map_of(resp: routing_pb2.GetShardMapResponse) -> ChunkMap:
    pattern = ShardKeyPattern(list(resp.shard_key_fields), "hashed")
    chunks = [
        Chunk(ch.chunk_id, dec(ch.min_key), dec(ch.max_key), s.shard_id, ch.version_major,
              ch.version_minor)
        for s in resp.shards for ch in s.chunks
    ]
    return ChunkMap(pattern, chunks)


async def test_sharded_collection_indexes_distinct_and_drop(cluster: Cluster) -> None:
    c = cluster
    cfg = c.config_server_stub()
    db, coll = "shdb", "events"
    await cfg.EnsureDatabase(router_ext_pb2.EnsureDatabaseRequest(database=db), timeout=RPC_TIMEOUT)
    await cfg.RecordIndex(
        router_ext_pb2.RecordIndexRequest(
            database=db, collection=coll, index=spec("k_1", {"k": 1}, unique=True)
        ),
        timeout=RPC_TIMEOUT,
    )
    err = await failure(cfg.ShardCollection(
        routing_pb2.ShardCollectionRequest(
            database=db, collection=coll, shard_key_fields=["other"], strategy=routing_pb2.HASH
        ),
        timeout=RPC_TIMEOUT,
    ))
    assert err.code == ErrorCode.INVALID_OPTIONS
    await cfg.ShardCollection(
        routing_pb2.ShardCollectionRequest(
            database=db, collection=coll, shard_key_fields=["k"], strategy=routing_pb2.HASH,
            initial_chunks=2,
        ),
        timeout=RPC_TIMEOUT,
    )
    err = await failure(cfg.RecordIndex(
        router_ext_pb2.RecordIndexRequest(
            database=db, collection=coll, index=spec("v_1", {"v": 1}, unique=True)
        ),
        timeout=RPC_TIMEOUT,
    ))
    assert err.code == ErrorCode.CANNOT_CREATE_INDEX and int(err.code) == 67

    smap = await cfg.GetShardMap(
        routing_pb2.GetShardMapRequest(database=db, collection=coll), timeout=RPC_TIMEOUT
    )
    cmap = chunk_map_of(smap)
    assert set(cmap.shards()) == {"shard0", "shard1"}
    pattern = cmap.pattern
    by_shard: dict[str, list[dict[str, Any]]] = {"shard0": [], "shard1": []}
    for k in range(40):
        doc = {"_id": k, "k": k, "v": k % 4}
        by_shard[target_key_for_insert(pattern, cmap, doc)].append(doc)

    def version(shard_id: str) -> shard_pb2.ShardVersion:
        major, minor = cmap.shard_version(shard_id)
        return shard_pb2.ShardVersion(epoch=smap.epoch, major=major, minor=minor)

    for shard_id, docs in by_shard.items():
        i = c.shard_index(shard_id)
        res = await insert(c, i, db, coll, docs, version(shard_id))
        assert res.inserted_count == len(docs)
        # The first insert created the collection here: the recorded index came first.
        assert await index_names(c, i, db, coll) == ["_id_", "k_1"]
        dup = await insert(c, i, db, coll, [{"_id": 1000, "k": docs[0]["k"]}], version(shard_id))
        assert dup.errors[0].code == 11000

    values: set[int] = set()
    for shard_id in by_shard:
        got = await distinct(c, c.shard_index(shard_id), db, coll, "k", {"v": 1},
                             version(shard_id))
        assert got == sorted(d["k"] for d in by_shard[shard_id] if d["v"] == 1)
        values.update(got)
    assert values == {k for k in range(40) if k % 4 == 1}

    # Dropping the metadata refreshes every shard: the old epoch is now stale.
    dropped = await cfg.DropCollectionMetadata(
        router_ext_pb2.DropCollectionMetadataRequest(database=db, collection=coll),
        timeout=RPC_TIMEOUT,
    )
    assert dropped.dropped
    err = await failure(c.shard_stub(1).Distinct(
        shard_pb2.ShardDistinctRequest(database=db, collection=coll, key="k",
                                       version=version("shard1")),
        timeout=RPC_TIMEOUT,
    ))
    assert err.code == ErrorCode.STALE_CONFIG
    indexes = await cfg.GetCollectionIndexes(
        router_ext_pb2.GetCollectionIndexesRequest(database=db, collection=coll),
        timeout=RPC_TIMEOUT,
    )
    assert list(indexes.indexes) == []
    for i in range(2):
        resp = await c.shard_stub(i).DropCollection(
            shard_pb2.ShardDropCollectionRequest(database=db, collection=coll),
            timeout=RPC_TIMEOUT,
        )
        assert resp.dropped
        assert await collections(c, i, db) == []
