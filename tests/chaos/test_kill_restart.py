"""Issue 3 chaos: kill -9 one shard, and kill -9 the whole cluster, then restart.

- A dead shard: queries targeted at the other shards still succeed; queries that need
  it fail fast (a few seconds, never a hang) with UNAVAILABLE naming the shard; once
  restarted, everything is back and nothing is lost.
- The whole cluster killed and restarted on the same data dirs: same documents, same
  shard maps.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from lauradb.cluster import routing_pb2
from lauradb.errors import ErrorCode
from tests.integration.harness import (
    Cluster,
    chunks_of,
    count,
    eventually,
    get_shard_map,
    insert_many,
    laura_error,
    query,
    query_all,
    shard_collection,
    split_chunk,
)

pytestmark = [pytest.mark.chaos]

DB = "chaos"
N = 600
FAIL_FAST_SECONDS = 5.0
ClusterFactory = Callable[..., Awaitable[Cluster]]


async def owners_by_key(cluster: Cluster, coll: str, keys: range) -> dict[int, str]:
    """The shard that answers an equality query on each key (black-box targeting)."""
    router, owners = cluster.router_stub(), {}
    for key in keys:
        result = await query(router, DB, coll, {"k": key})
        assert [d["k"] for d in result.docs] == [key]
        (owners[key],) = result.shards_queried
    return owners


async def expect_unavailable(call: Awaitable[Any], shard_id: str) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        await call
    elapsed = time.monotonic() - started
    assert elapsed < FAIL_FAST_SECONDS, f"took {elapsed:.1f}s to fail"
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
    error = laura_error(info.value)
    assert error.code == ErrorCode.SHARD_UNAVAILABLE, error
    assert shard_id in error.message, error.message


async def test_kill_one_shard_then_restart(cluster: ClusterFactory) -> None:
    c = await cluster(shards=3)
    router = c.router_stub()
    await shard_collection(c.config_stub(), DB, "h", ["k"], "hashed")
    await insert_many(router, DB, "h", [{"_id": i, "k": i, "v": i * i} for i in range(N)])
    owners = await owners_by_key(c, "h", range(40))
    victim = owners[0]
    survivors = {k: s for k, s in owners.items() if s != victim}
    assert survivors, f"all sampled keys live on {victim}"

    c.kill_shard(c.shard_index(victim))

    for key, shard in survivors.items():
        result = await query(router, DB, "h", {"k": key})
        assert [d["v"] for d in result.docs] == [key * key]
        assert result.shards_queried == {shard}
    live_key = next(iter(survivors))
    await insert_many(router, DB, "h", [{"_id": N, "k": live_key, "v": -1}])
    await expect_unavailable(query_all(router, DB, "h", {}), victim)
    await expect_unavailable(count(router, DB, "h"), victim)
    await expect_unavailable(query_all(router, DB, "h", {"k": 0}), victim)

    await c.restart_shard(c.shard_index(victim))

    async def everything_back() -> bool:
        docs = await query_all(router, DB, "h", {}, batch_size=100)
        return sorted(d["_id"] for d in docs) == list(range(N + 1))

    await eventually(everything_back, timeout=15, what="all documents readable again")
    assert await count(router, DB, "h") == N + 1
    assert [d["v"] for d in await query_all(router, DB, "h", {"k": 0})] == [0]


async def snapshot(cluster: Cluster, colls: list[str]) -> dict[str, Any]:
    router, config = cluster.router_stub(), cluster.config_stub()
    state: dict[str, Any] = {}
    for coll in colls:
        state[f"docs:{coll}"] = await query_all(router, DB, coll, {}, sort={"_id": 1})
        shard_map = await get_shard_map(config, DB, coll)
        state[f"map:{coll}"] = shard_map.SerializeToString(deterministic=True)
    return state


async def test_kill_and_restart_whole_cluster(cluster: ClusterFactory) -> None:
    c = await cluster(shards=3)
    router, config = c.router_stub(), c.config_stub()
    await shard_collection(config, DB, "h", ["k"], "hashed")
    await shard_collection(config, DB, "r", ["k"], "range")
    (chunk,) = chunks_of(await get_shard_map(config, DB, "r"))
    assert (await split_chunk(config, chunk.chunk_id, {"k": N // 2})).success
    docs = [{"_id": i, "k": i, "s": f"doc {i}"} for i in range(N)]
    for coll in ("h", "r", "u"):
        assert await insert_many(router, DB, coll, docs) == N
    colls = ["h", "r", "u"]
    before = await snapshot(c, colls)

    c.kill_all()
    await c.restart_all()
    router = c.router_stub()

    async def readable() -> bool:
        return await count(router, DB, "h") == N

    await eventually(readable, timeout=15, what="cluster readable after restart")
    after = await snapshot(c, colls)
    for key in before:
        if key.startswith("map:"):
            assert_same_map(before[key], after[key], key)
        else:
            assert after[key] == before[key], key
    assert len(before["docs:h"]) == N


def assert_same_map(before: bytes, after: bytes, what: str) -> None:
    old = routing_pb2.GetShardMapResponse.FromString(before)
    new = routing_pb2.GetShardMapResponse.FromString(after)
    assert new == old, f"{what} changed:\nbefore {old}\nafter {new}"
