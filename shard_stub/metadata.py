"""The shard's placement cache per namespace and the version check of every request.

The config server owns placement. The shard caches, per namespace, what
``ConfigService.GetShardMap`` said: sharded or not, the epoch, the chunk map and
thus this shard's version (the maximum version over its chunks, ``(0, 0)`` when it
owns none) and the key ranges it owns. The cache is loaded on first use, on
``RefreshMetadata``, and when a request carries another epoch or a version newer
than the cached one (the router knows something this shard does not yet).

The check (cluster contract): after that optional reload, a request whose
``(epoch, major, minor)`` differs from the shard's ``(epoch, shard version)`` fails
with STALE_CONFIG (details: namespace, shard_epoch, shard_major, shard_minor) and
touches nothing. ``unsharded=true`` is accepted only when the collection is
unsharded and this shard is its database's primary (or the config server does not
know the database). ``ignore=true`` skips the check altogether.

The steady state is one dict lookup and one tuple comparison. Concurrent loads of a
namespace share one in-flight call; a forced refresh waits for a running load and
then starts its own, so it always reflects the config server's state after the
refresh was asked for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lauradb.bsonkit.codec import decode_document
from lauradb.cluster import routing_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import from_proto
from lauradb.sharding.chunk_map import Chunk, ChunkMap, combined_version
from lauradb.sharding.shard_key import HASHED, RANGE, ShardKeyPattern
from shard_stub.ownership import OwnedRanges

log = logging.getLogger("lauradb.shard.metadata")

FetchShardMap = Callable[
    [routing_pb2.GetShardMapRequest], Awaitable[routing_pb2.GetShardMapResponse]
]


class VersionLike(Protocol):
    """What a request says about placement (``shard_pb2.ShardVersion``)."""

    epoch: str
    major: int
    minor: int
    unsharded: bool
    ignore: bool


@dataclass(frozen=True)
class NamespaceMetadata:
    """This shard's authoritative view of one namespace."""

    namespace: str
    sharded: bool
    epoch: str = ""
    collection_version: tuple[int, int] = (0, 0)
    shard_version: tuple[int, int] = (0, 0)
    primary_shard: str = ""
    is_primary: bool = False
    known_database: bool = True
    pattern: ShardKeyPattern | None = None
    chunk_map: ChunkMap | None = None
    owned: OwnedRanges | None = None  # None: every document (unsharded)
    unique: bool = False

    # Precomputed for the steady-state check.
    accepts_unsharded: bool = field(init=False, repr=False, compare=False)
    version_key: tuple[str, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accepts_unsharded", not self.sharded and self.is_primary)
        object.__setattr__(
            self, "version_key", (self.epoch, self.shard_version[0], self.shard_version[1])
        )

    def stale_details(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "shard_epoch": self.epoch,
            "shard_major": self.shard_version[0],
            "shard_minor": self.shard_version[1],
            "sharded": self.sharded,
            "primary_shard": self.primary_shard,
        }


def namespace_of(database: str, collection: str) -> str:
    return f"{database}.{collection}"


def _requests_unsharded(v: VersionLike) -> bool:
    return v.unsharded or (not v.epoch and v.major == 0 and v.minor == 0)


def matches(entry: NamespaceMetadata, v: VersionLike) -> bool:
    """Whether a request's version agrees with the shard's metadata."""
    if _requests_unsharded(v):
        return entry.accepts_unsharded
    return entry.sharded and entry.version_key == (v.epoch, v.major, v.minor)


def needs_reload(entry: NamespaceMetadata, v: VersionLike) -> bool:
    """Whether the request may know more than the cache (other epoch or newer version)."""
    if _requests_unsharded(v):
        return entry.sharded or not entry.is_primary
    if entry.epoch != v.epoch:
        return True
    return (v.major, v.minor) > entry.shard_version


def stale_error(entry: NamespaceMetadata, v: VersionLike) -> LauraError:
    if _requests_unsharded(v):
        wanted = "unsharded"
        if entry.sharded:
            mine = f"sharded (epoch {entry.epoch}, version {entry.shard_version})"
        else:
            mine = f"unsharded with primary shard {entry.primary_shard!r}, not this shard"
    else:
        wanted = f"epoch {v.epoch or '-'} version ({v.major}, {v.minor})"
        if entry.sharded:
            mine = f"epoch {entry.epoch} version {entry.shard_version}"
        else:
            mine = "unsharded"
    return LauraError(
        ErrorCode.STALE_CONFIG,
        f"stale routing for {entry.namespace}: the request has {wanted}, this shard has {mine}",
        entry.stale_details(),
    )


def _strategy(resp: routing_pb2.GetShardMapResponse) -> str:
    return HASHED if resp.strategy == routing_pb2.HASH else RANGE


class ShardMetadata:
    """Placement cache of one shard, loaded through ``fetch`` (ConfigService.GetShardMap)."""

    def __init__(self, shard_id: str, fetch: FetchShardMap) -> None:
        self.shard_id = shard_id
        self._fetch = fetch
        self._cache: dict[str, NamespaceMetadata] = {}
        self._inflight: dict[str, asyncio.Task[NamespaceMetadata]] = {}
        self.loads = 0  # config server round trips (for tests and metrics)

    # ------------------------------------------------------------------ queries

    def cached(self, database: str, collection: str) -> NamespaceMetadata | None:
        return self._cache.get(namespace_of(database, collection))

    def cached_namespaces(self) -> list[str]:
        return sorted(self._cache)

    async def get(self, database: str, collection: str) -> NamespaceMetadata:
        """The cached metadata, loaded on first use."""
        entry = self._cache.get(namespace_of(database, collection))
        if entry is not None:
            return entry
        entry, _ = await self._load_or_join(database, collection)
        return entry

    async def check(
        self, database: str, collection: str, version: VersionLike
    ) -> NamespaceMetadata | None:
        """The metadata a request may run under, or STALE_CONFIG; None when ignored."""
        if version.ignore:
            return None
        entry = self._cache.get(namespace_of(database, collection))
        if entry is not None and matches(entry, version):
            return entry  # the steady state
        if entry is None or needs_reload(entry, version):
            entry, joined = await self._load_or_join(database, collection)
            if joined and needs_reload(entry, version):
                # The load we joined may have asked before the change the router saw.
                entry, _ = await self._load_or_join(database, collection)
        if not matches(entry, version):
            raise stale_error(entry, version)
        return entry

    async def refresh(self, database: str, collection: str) -> NamespaceMetadata:
        """Reload one namespace from the config server (RefreshMetadata)."""
        return await self._load(database, collection, fresh=True)

    async def refresh_many(
        self, database: str = "", extra: Iterable[str] = ()
    ) -> list[NamespaceMetadata]:
        """Reload every cached namespace and those in ``extra`` (of ``database`` if given)."""
        names = sorted(set(self._cache) | set(extra))
        targets = [
            ns.split(".", 1)
            for ns in names
            if "." in ns and (not database or ns.split(".", 1)[0] == database)
        ]
        results = await asyncio.gather(
            *(self._load(db, coll, fresh=True) for db, coll in targets), return_exceptions=True
        )
        out: list[NamespaceMetadata] = []
        for r in results:
            if isinstance(r, BaseException):
                raise r
            out.append(r)
        return out

    def forget(self, database: str, collection: str) -> None:
        self._cache.pop(namespace_of(database, collection), None)

    # ------------------------------------------------------------------ loading

    async def _load_or_join(
        self, database: str, collection: str
    ) -> tuple[NamespaceMetadata, bool]:
        """Join the running load of the namespace, or start one; (entry, joined)."""
        running = self._inflight.get(namespace_of(database, collection))
        if running is not None:
            return await asyncio.shield(running), True
        return await self._start_load(database, collection), False

    async def _load(self, database: str, collection: str, *, fresh: bool) -> NamespaceMetadata:
        """A load that began after this call (``fresh``) or any running one."""
        ns = namespace_of(database, collection)
        running = self._inflight.get(ns)
        if running is not None:
            if not fresh:
                return await asyncio.shield(running)
            try:
                await asyncio.shield(running)
            except Exception:
                pass
        return await self._start_load(database, collection)

    async def _start_load(self, database: str, collection: str) -> NamespaceMetadata:
        ns = namespace_of(database, collection)
        running = self._inflight.get(ns)
        # Loads of one namespace never overlap. A finished task may still be listed
        # (its done-callback has not run yet): awaiting it would not yield to the loop,
        # so this would spin forever; it is simply replaced below.
        while running is not None and not running.done():
            try:
                await asyncio.shield(running)
            except Exception:
                pass
            running = self._inflight.get(ns)
        task = asyncio.ensure_future(self._fetch_entry(database, collection))
        self._inflight[ns] = task

        def done(t: asyncio.Task[NamespaceMetadata]) -> None:
            if self._inflight.get(ns) is t:
                del self._inflight[ns]
            if not t.cancelled():
                t.exception()  # mark retrieved

        task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _fetch_entry(self, database: str, collection: str) -> NamespaceMetadata:
        ns = namespace_of(database, collection)
        previous = self._cache.get(ns)
        req = routing_pb2.GetShardMapRequest(database=database, collection=collection)
        if previous is not None and previous.sharded and previous.chunk_map is not None:
            req.epoch = previous.epoch
            req.version = combined_version(*previous.collection_version)
            req.incremental = True
        entry = await self._fetch_and_build(ns, req, previous)
        if entry.known_database:
            self._cache[ns] = entry
        else:
            self._cache.pop(ns, None)
        if previous is None or previous.version_key != entry.version_key or (
            previous.sharded != entry.sharded
        ):
            log.info(
                "%s: placement %s epoch=%s shard version=%s", ns,
                "sharded" if entry.sharded else "unsharded", entry.epoch or "-",
                entry.shard_version,
            )
        return entry

    async def _fetch_and_build(
        self,
        ns: str,
        req: routing_pb2.GetShardMapRequest,
        previous: NamespaceMetadata | None,
    ) -> NamespaceMetadata:
        self.loads += 1
        try:
            resp = await self._fetch(req)
        except LauraError as err:
            if err.code == ErrorCode.NAMESPACE_NOT_FOUND:
                # The config server does not know the database: a router only sends
                # unsharded requests for it to the primary it was told about.
                return NamespaceMetadata(
                    ns, sharded=False, is_primary=True, known_database=False
                )
            raise
        if resp.HasField("error") and resp.error.code:
            failure = from_proto(resp.error)
            if failure.code == ErrorCode.NAMESPACE_NOT_FOUND:
                return NamespaceMetadata(ns, sharded=False, is_primary=True, known_database=False)
            raise failure
        if resp.not_modified:
            if previous is None:
                raise LauraError(
                    ErrorCode.INTERNAL_ERROR, f"{ns}: config server answered not_modified"
                )
            return previous
        if not resp.sharded:
            return NamespaceMetadata(
                ns,
                sharded=False,
                primary_shard=resp.primary_shard,
                is_primary=resp.primary_shard == self.shard_id,
            )
        if resp.incremental:
            if previous is not None and previous.chunk_map is not None and (
                previous.epoch == resp.epoch
            ):
                try:
                    chunk_map = previous.chunk_map.apply_changes(_chunks(resp))
                    return self._sharded_entry(ns, resp, chunk_map)
                except LauraError as err:
                    log.warning("%s: incremental refresh failed (%s); full reload", ns, err)
            full = routing_pb2.GetShardMapRequest(
                database=req.database, collection=req.collection
            )
            return await self._fetch_and_build(ns, full, None)
        fields = list(resp.shard_key_fields) or ([resp.shard_key_field] if resp.shard_key_field else [])
        pattern = ShardKeyPattern(fields, _strategy(resp))
        chunk_map = ChunkMap(pattern, _chunks(resp))
        return self._sharded_entry(ns, resp, chunk_map)

    def _sharded_entry(
        self, ns: str, resp: routing_pb2.GetShardMapResponse, chunk_map: ChunkMap
    ) -> NamespaceMetadata:
        shard_version = chunk_map.shard_version(self.shard_id)
        details = {
            "namespace": ns,
            "shard_epoch": resp.epoch,
            "shard_major": shard_version[0],
            "shard_minor": shard_version[1],
        }
        return NamespaceMetadata(
            ns,
            sharded=True,
            epoch=resp.epoch,
            collection_version=chunk_map.version,
            shard_version=shard_version,
            primary_shard=resp.primary_shard,
            is_primary=resp.primary_shard == self.shard_id,
            pattern=chunk_map.pattern,
            chunk_map=chunk_map,
            owned=OwnedRanges.from_chunk_map(chunk_map, self.shard_id, details),
            unique=resp.unique,
        )


def _chunks(resp: routing_pb2.GetShardMapResponse) -> list[Chunk]:
    out: list[Chunk] = []
    for shard in resp.shards:
        for c in shard.chunks:
            out.append(
                Chunk(
                    c.chunk_id,
                    decode_document(c.min_key, "chunk min bound"),
                    decode_document(c.max_key, "chunk max bound"),
                    shard.shard_id,
                    c.version_major,
                    c.version_minor,
                )
            )
    return out
