"""RoutingCache: a plain dict bounded by ``maxsize`` (the table loaded longest ago is
evicted), and ``cached()``, a lookup that never loads."""

from __future__ import annotations

from typing import cast

import pytest

from lauradb.cluster import routing_pb2
from lauradb.errors import ErrorCode, LauraError
from router.config_client import ConfigClient
from router.routing_cache import DEFAULT_MAX_NAMESPACES, RoutingCache

DB = "db"


class FakeConfig:
    """``get_shard_map`` of an unsharded collection on shard0; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, str, bool]] = []
        self.missing: set[str] = set()

    async def get_shard_map(
        self,
        database: str,
        collection: str,
        version: int = 0,
        epoch: str = "",
        incremental: bool = False,
    ) -> routing_pb2.GetShardMapResponse:
        self.calls.append((database, collection, version, epoch, incremental))
        resp = routing_pb2.GetShardMapResponse(
            sharded=False, primary_shard="shard0", version=len(self.calls)
        )
        if database in self.missing:
            resp.error.code = int(ErrorCode.NAMESPACE_NOT_FOUND)
            resp.error.message = f"database {database} not found"
            return resp
        resp.shards.add(shard_id="shard0", node_id="n0", host="127.0.0.1", port=1)
        return resp


def make_cache(maxsize: int) -> tuple[RoutingCache, FakeConfig]:
    fake = FakeConfig()
    return RoutingCache(cast(ConfigClient, fake), maxsize=maxsize), fake


def test_default_bound() -> None:
    cache, _ = make_cache(DEFAULT_MAX_NAMESPACES)
    assert cache.maxsize == DEFAULT_MAX_NAMESPACES > 0


async def test_loaded_table() -> None:
    cache, fake = make_cache(4)
    table = await cache.get(DB, "c")
    assert not table.sharded
    assert table.primary_shard == "shard0"
    assert table.owning_shards == ("shard0",)
    assert table.namespace == f"{DB}.c"
    assert fake.calls == [(DB, "c", 0, "", False)]
    assert cache.loads == 1
    assert await cache.get(DB, "c") is table  # a hit: no second load
    assert len(fake.calls) == 1


async def test_maxsize_bound_evicts_the_oldest() -> None:
    maxsize = 8
    cache, fake = make_cache(maxsize)
    names = [f"c{i}" for i in range(maxsize + 5)]
    tables = {name: await cache.get(DB, name) for name in names}
    assert len(fake.calls) == len(names)
    assert len(cache._tables) <= maxsize
    assert len(cache._tables) == maxsize
    evicted, kept = names[:5], names[5:]
    for name in evicted:
        assert cache.cached(DB, name) is None, name
        assert cache.peek(f"{DB}.{name}") is None
    for name in kept:
        assert cache.cached(DB, name) is tables[name], name
    assert list(cache._tables) == [f"{DB}.{n}" for n in kept]  # oldest first
    # cached() never loaded anything
    assert len(fake.calls) == len(names)

    # an evicted namespace loads again (and evicts the now-oldest one)
    again = await cache.get(DB, evicted[0])
    assert again is not tables[evicted[0]]
    assert len(fake.calls) == len(names) + 1
    assert len(cache._tables) == maxsize
    assert cache.cached(DB, kept[0]) is None
    assert cache.cached(DB, evicted[0]) is again


async def test_reload_moves_a_table_to_the_end() -> None:
    cache, _ = make_cache(3)
    a = await cache.get(DB, "a")
    await cache.get(DB, "b")
    await cache.get(DB, "c")
    # refresh "a" (as after STALE_CONFIG): a new table, now the most recently loaded
    a2 = await cache.refresh(DB, "a", a)
    assert a2 is not a
    assert list(cache._tables) == [f"{DB}.b", f"{DB}.c", f"{DB}.a"]
    await cache.get(DB, "d")
    assert cache.cached(DB, "b") is None  # the oldest load, not "a"
    assert cache.cached(DB, "a") is a2
    assert len(cache._tables) == 3


async def test_lookups_do_not_change_eviction_order() -> None:
    """Eviction is by load time, not by use (a hit does not renew a table)."""
    cache, _ = make_cache(2)
    await cache.get(DB, "a")
    await cache.get(DB, "b")
    assert cache.cached(DB, "a") is not None
    await cache.get(DB, "a")  # a hit
    await cache.get(DB, "c")
    assert cache.cached(DB, "a") is None
    assert cache.cached(DB, "b") is not None


@pytest.mark.parametrize("maxsize", [1, 2])
async def test_tiny_bounds(maxsize: int) -> None:
    cache, _ = make_cache(maxsize)
    for i in range(5):
        table = await cache.get(DB, f"c{i}")
        assert len(cache._tables) <= maxsize
        assert cache.cached(DB, f"c{i}") is table


async def test_cached_never_calls_the_config_client() -> None:
    cache, fake = make_cache(4)
    assert cache.cached(DB, "c") is None
    assert cache.cached("other", "c") is None
    assert fake.calls == []
    assert cache.loads == 0
    table = await cache.get(DB, "c")
    calls = list(fake.calls)
    for _ in range(3):
        assert cache.cached(DB, "c") is table
    assert cache.cached(DB, "d") is None
    assert fake.calls == calls
    cache.invalidate(f"{DB}.c")
    assert cache.cached(DB, "c") is None
    assert fake.calls == calls


def test_cached_is_synchronous() -> None:
    cache, fake = make_cache(4)
    result = cache.cached(DB, "c")  # no event loop needed, nothing awaited
    assert result is None
    assert fake.calls == []


async def test_invalidate_database_and_all() -> None:
    cache, _ = make_cache(10)
    for coll in ("a", "b"):
        await cache.get(DB, coll)
        await cache.get("other", coll)
    cache.invalidate_database(DB)
    assert cache.cached(DB, "a") is None and cache.cached(DB, "b") is None
    assert cache.cached("other", "a") is not None
    cache.invalidate_all()
    assert cache.cached("other", "a") is None
    assert len(cache._tables) == 0


async def test_failed_load_caches_nothing() -> None:
    cache, fake = make_cache(4)
    fake.missing.add("gone")
    with pytest.raises(LauraError) as info:
        await cache.get("gone", "c")
    assert info.value.code == ErrorCode.NAMESPACE_NOT_FOUND
    assert cache.cached("gone", "c") is None
    assert len(cache._tables) == 0
