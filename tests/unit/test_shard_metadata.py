"""The shard's placement cache and version check against a fake config server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import bson
import pytest
from bson.max_key import MaxKey
from bson.min_key import MinKey

from lauradb.cluster import routing_pb2, shard_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.sharding.chunk_map import combined_version
from lauradb.sharding.shard_key import ShardKeyPattern
from shard_stub.metadata import ShardMetadata

ME = "s0"
OTHER = "s1"


@dataclass
class FakeChunk:
    chunk_id: str
    lo: object
    hi: object
    shard: str
    major: int
    minor: int


@dataclass
class FakeConfig:
    """GetShardMap semantics of the config server for one collection ``db.c``."""

    databases: dict[str, str] = field(default_factory=lambda: {"db": ME})
    epoch: str = ""
    chunks: list[FakeChunk] = field(default_factory=list)
    strategy: str = "RANGE"
    reachable: bool = True
    calls: int = 0
    delay: float = 0.0

    def shard(self, epoch: str, chunks: list[FakeChunk]) -> None:
        self.epoch = epoch
        self.chunks = chunks

    def version(self) -> int:
        return max(combined_version(c.major, c.minor) for c in self.chunks)

    async def fetch(self, req: routing_pb2.GetShardMapRequest) -> routing_pb2.GetShardMapResponse:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.reachable:
            raise LauraError(ErrorCode.HOST_UNREACHABLE, "config server down")
        primary = self.databases.get(req.database)
        if primary is None:
            raise LauraError(ErrorCode.NAMESPACE_NOT_FOUND, f"database {req.database} not found")
        if not self.epoch or req.collection != "c":
            return routing_pb2.GetShardMapResponse(sharded=False, primary_shard=primary)
        current = self.version()
        same_epoch = not req.epoch or req.epoch == self.epoch
        if req.version and same_epoch and req.version == current:
            return routing_pb2.GetShardMapResponse(not_modified=True)
        delta = req.incremental and req.epoch == self.epoch and 0 < req.version < current
        chunks = [
            c for c in self.chunks
            if not delta or combined_version(c.major, c.minor) > req.version
        ]
        resp = routing_pb2.GetShardMapResponse(
            version=current, sharded=True, epoch=self.epoch, primary_shard=primary,
            shard_key_field="k", shard_key_fields=["k"], strategy=self.strategy,
            incremental=delta,
        )
        for sid in (ME, OTHER):
            info = resp.shards.add(shard_id=sid, host="h", port=1)
            for c in chunks:
                if c.shard == sid:
                    info.chunks.add(
                        chunk_id=c.chunk_id,
                        min_key=bson.encode({"k": c.lo}),
                        max_key=bson.encode({"k": c.hi}),
                        version_major=c.major,
                        version_minor=c.minor,
                    )
        return resp


def two_chunks() -> list[FakeChunk]:
    return [
        FakeChunk("a", MinKey(), 0, ME, 1, 0),
        FakeChunk("b", 0, MaxKey(), OTHER, 1, 1),
    ]


def version(epoch: str = "", major: int = 0, minor: int = 0, *, unsharded: bool = False,
            ignore: bool = False) -> shard_pb2.ShardVersion:
    return shard_pb2.ShardVersion(
        epoch=epoch, major=major, minor=minor, unsharded=unsharded, ignore=ignore
    )


@pytest.fixture
def config() -> FakeConfig:
    return FakeConfig()


@pytest.fixture
def meta(config: FakeConfig) -> ShardMetadata:
    return ShardMetadata(ME, config.fetch)


async def stale(meta: ShardMetadata, v: shard_pb2.ShardVersion, coll: str = "c") -> LauraError:
    with pytest.raises(LauraError) as info:
        await meta.check("db", coll, v)
    assert info.value.code == ErrorCode.STALE_CONFIG
    return info.value


# ---------------------------------------------------------------------- unsharded


async def test_unsharded_on_primary_is_accepted_and_cached(
    meta: ShardMetadata, config: FakeConfig
) -> None:
    entry = await meta.check("db", "c", version(unsharded=True))
    assert entry is not None and not entry.sharded and entry.is_primary and entry.owned is None
    await meta.check("db", "c", version(unsharded=True))
    assert config.calls == 1


async def test_unsharded_on_other_primary_is_stale(meta: ShardMetadata, config: FakeConfig) -> None:
    config.databases["db"] = OTHER
    err = await stale(meta, version(unsharded=True))
    assert err.details["namespace"] == "db.c"
    assert err.details["shard_epoch"] == ""


async def test_unknown_database_is_unsharded_on_me_and_not_cached(
    meta: ShardMetadata, config: FakeConfig
) -> None:
    entry = await meta.check("nodb", "c", version(unsharded=True))
    assert entry is not None and not entry.sharded
    assert meta.cached("nodb", "c") is None
    config.databases["nodb"] = ME
    assert (await meta.check("nodb", "c", version(unsharded=True))) is not None


async def test_ignore_skips_everything(meta: ShardMetadata, config: FakeConfig) -> None:
    config.reachable = False
    assert await meta.check("db", "c", version("whatever", 9, 9, ignore=True)) is None
    assert config.calls == 0


async def test_unreachable_config_without_cache_fails_unavailable(
    meta: ShardMetadata, config: FakeConfig
) -> None:
    config.reachable = False
    with pytest.raises(LauraError) as info:
        await meta.check("db", "c", version(unsharded=True))
    assert info.value.code == ErrorCode.HOST_UNREACHABLE
    config.reachable = True
    assert await meta.check("db", "c", version(unsharded=True)) is not None


# ---------------------------------------------------------------------- sharded


async def test_sharded_correct_version_steady_state(
    meta: ShardMetadata, config: FakeConfig
) -> None:
    config.shard("e1", two_chunks())
    entry = await meta.check("db", "c", version("e1", 1, 0))
    assert entry is not None and entry.sharded
    assert entry.shard_version == (1, 0) and entry.collection_version == (1, 1)
    assert entry.pattern == ShardKeyPattern(["k"], "range")
    assert entry.owned is not None
    assert entry.owned(entry.pattern.key_for_doc({"k": -5}))
    assert not entry.owned(entry.pattern.key_for_doc({"k": 5}))
    for _ in range(5):
        await meta.check("db", "c", version("e1", 1, 0))
    assert config.calls == 1


async def test_shard_owning_nothing_has_version_zero(config: FakeConfig) -> None:
    config.shard("e1", [FakeChunk("a", MinKey(), MaxKey(), OTHER, 1, 0)])
    meta = ShardMetadata(ME, config.fetch)
    entry = await meta.check("db", "c", version("e1", 0, 0))
    assert entry is not None and entry.shard_version == (0, 0)
    assert entry.owned is not None and entry.owned.empty


async def test_stale_older_request_fails_without_reload(
    meta: ShardMetadata, config: FakeConfig
) -> None:
    config.shard("e1", two_chunks())
    config.chunks[0] = FakeChunk("a", MinKey(), 0, ME, 1, 2)  # this shard is at (1, 2)
    await meta.check("db", "c", version("e1", 1, 2))
    err = await stale(meta, version("e1", 1, 0))
    assert err.details == {
        "namespace": "db.c", "shard_epoch": "e1", "shard_major": 1, "shard_minor": 2,
        "sharded": True, "primary_shard": ME,
    }
    assert config.calls == 1


async def test_newer_request_reloads_then_passes(meta: ShardMetadata, config: FakeConfig) -> None:
    config.shard("e1", two_chunks())
    await meta.check("db", "c", version("e1", 1, 0))
    # the config server splits this shard's chunk: versions (1, 2) and (1, 3)
    config.chunks = [
        FakeChunk("a1", MinKey(), -10, ME, 1, 2),
        FakeChunk("a2", -10, 0, ME, 1, 3),
        FakeChunk("b", 0, MaxKey(), OTHER, 1, 1),
    ]
    entry = await meta.check("db", "c", version("e1", 1, 3))
    assert entry is not None and entry.shard_version == (1, 3)
    assert entry.chunk_map is not None and len(entry.chunk_map) == 3
    assert config.calls == 2
    await stale(meta, version("e1", 1, 0))
    assert config.calls == 2


async def test_request_newer_than_config_is_stale_after_reload(
    meta: ShardMetadata, config: FakeConfig
) -> None:
    config.shard("e1", two_chunks())
    await meta.check("db", "c", version("e1", 1, 0))
    err = await stale(meta, version("e1", 7, 0))
    assert (err.details["shard_major"], err.details["shard_minor"]) == (1, 0)
    assert config.calls == 2


async def test_epoch_change(meta: ShardMetadata, config: FakeConfig) -> None:
    config.shard("e1", two_chunks())
    await meta.check("db", "c", version("e1", 1, 0))
    config.shard("e2", [FakeChunk("x", MinKey(), MaxKey(), ME, 1, 0)])
    entry = await meta.check("db", "c", version("e2", 1, 0))
    assert entry is not None and entry.epoch == "e2"
    assert entry.owned is not None and len(entry.owned.ranges) == 1
    err = await stale(meta, version("e1", 1, 0))
    assert err.details["shard_epoch"] == "e2"


async def test_unsharded_request_for_sharded_collection_is_stale(
    meta: ShardMetadata, config: FakeConfig
) -> None:
    await meta.check("db", "c", version(unsharded=True))
    config.shard("e1", two_chunks())  # ShardCollection, then RefreshMetadata on every shard
    await meta.refresh("db", "c")
    err = await stale(meta, version(unsharded=True))
    assert err.details["sharded"] is True and err.details["shard_epoch"] == "e1"
    assert config.calls == 3  # the request's epoch differs: one more reload, still sharded
    entry = await meta.check("db", "c", version("e1", 1, 0))
    assert entry is not None and entry.sharded


async def test_sharded_request_for_unsharded_collection_is_stale(
    meta: ShardMetadata, config: FakeConfig
) -> None:
    err = await stale(meta, version("e1", 1, 0))
    assert err.details["shard_epoch"] == "" and err.details["sharded"] is False


async def test_refresh_uses_not_modified_and_incremental(
    meta: ShardMetadata, config: FakeConfig
) -> None:
    config.shard("e1", two_chunks())
    first = await meta.refresh("db", "c")
    same = await meta.refresh("db", "c")
    assert same is first  # not_modified
    config.chunks = [
        FakeChunk("a", MinKey(), 0, ME, 1, 0),
        FakeChunk("b1", 0, 50, OTHER, 1, 2),
        FakeChunk("b2", 50, MaxKey(), OTHER, 1, 3),
    ]
    entry = await meta.refresh("db", "c")
    assert entry.collection_version == (1, 3) and entry.shard_version == (1, 0)
    assert entry.chunk_map is not None
    assert sorted(c.chunk_id for c in entry.chunk_map.chunks) == ["a", "b1", "b2"]
    assert config.calls == 3


async def test_hashed_strategy_gives_hashed_pattern(
    meta: ShardMetadata, config: FakeConfig
) -> None:
    config.strategy = "HASH"
    config.shard("e1", [FakeChunk("a", MinKey(), MaxKey(), ME, 1, 0)])
    entry = await meta.check("db", "c", version("e1", 1, 0))
    assert entry is not None and entry.pattern == ShardKeyPattern(["k"], "hashed")


async def test_concurrent_checks_share_one_load(meta: ShardMetadata, config: FakeConfig) -> None:
    config.shard("e1", two_chunks())
    config.delay = 0.05
    results = await asyncio.gather(*(meta.check("db", "c", version("e1", 1, 0)) for _ in range(20)))
    assert all(r is not None for r in results)
    assert config.calls == 1


async def test_refresh_many_reloads_cached_and_extra(
    meta: ShardMetadata, config: FakeConfig
) -> None:
    await meta.check("db", "c", version(unsharded=True))
    config.shard("e1", two_chunks())
    out = await meta.refresh_many(extra=["db.d"])
    assert {e.namespace for e in out} == {"db.c", "db.d"}
    cached = meta.cached("db", "c")
    assert cached is not None and cached.sharded


async def test_refresh_does_not_spin_on_a_finished_load_still_listed(
    meta: ShardMetadata, config: FakeConfig
) -> None:
    """Regression: a load that finished but whose done-callback has not run yet is
    still in the in-flight table; a refresh at that moment used to spin forever
    (awaiting a finished task never yields to the loop that runs the callback)."""
    await meta.check("db", "c", version(unsharded=True))
    finished: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    finished.set_result(None)
    meta._inflight["db.c"] = finished  # type: ignore[assignment]
    entry = await asyncio.wait_for(meta.refresh("db", "c"), timeout=5)
    assert not entry.sharded and config.calls == 2
