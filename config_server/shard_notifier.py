"""Config server -> shard calls: health on AddShard, Count before pre-splitting a
hashed collection, RefreshMetadata after placement changes.

All calls have deadlines and fail fast when a shard is down (no wait_for_ready);
Count and RefreshMetadata are best effort: a shard that does not answer is logged,
never allowed to hang the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence

import bson
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from config_server.model import ShardRecord
from lauradb.cluster import replset_pb2, shard_pb2, shard_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.replset import ReplicaSets, pool_hello
from lauradb.rpc.channels import ChannelPool
from lauradb.rpc.errors import from_rpc_error

log = logging.getLogger("lauradb.config.notifier")

HEALTH_TIMEOUT_S = 2.0
COUNT_TIMEOUT_S = 5.0
REFRESH_TIMEOUT_S = 5.0
_EMPTY_FILTER = bson.encode({})


class ShardNotifier:
    def __init__(
        self,
        pool: ChannelPool,
        *,
        health_timeout: float = HEALTH_TIMEOUT_S,
        count_timeout: float = COUNT_TIMEOUT_S,
        refresh_timeout: float = REFRESH_TIMEOUT_S,
        replsets: ReplicaSets | None = None,
    ) -> None:
        self._pool = pool
        self.replsets = replsets if replsets is not None else ReplicaSets(pool_hello(pool))
        self.health_timeout = health_timeout
        self.count_timeout = count_timeout
        self.refresh_timeout = refresh_timeout

    async def check_health(self, shard_id: str, host: str, port: int) -> None:
        """Raise HOST_UNREACHABLE unless ``host:port`` reports SERVING within the timeout."""
        address = f"{host}:{port}"
        stub = health_pb2_grpc.HealthStub(self._pool.get(address))
        deadline = time.monotonic() + self.health_timeout
        last = "no answer"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=remaining)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = f"health status {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"
            except grpc.RpcError as exc:
                last = from_rpc_error(exc, target=address).message
            await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        raise LauraError(
            ErrorCode.HOST_UNREACHABLE,
            f"shard '{shard_id}' at {address} is not serving within "
            f"{self.health_timeout:g}s: {last}",
        )

    async def check_members(self, shard_id: str, members: Sequence[str]) -> str:
        """AddShard of a replica set: every member must be reachable and answer Hello
        naming the same replica set; returns its name. BAD_VALUE / HOST_UNREACHABLE
        naming the member otherwise."""
        answers = await asyncio.gather(*(self._hello(shard_id, m) for m in members))
        names = {m: resp.replset for m, resp in zip(members, answers, strict=True)}
        standalone = [m for m, name in names.items() if not name]
        if standalone:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"shard '{shard_id}': member(s) {', '.join(standalone)} are not replica-set "
                f"members (started without --replset); a shard with several members needs "
                f"every member started with --replset",
            )
        distinct = sorted(set(names.values()))
        if len(distinct) > 1:
            listing = ", ".join(f"{m} is in '{n}'" for m, n in names.items())
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"shard '{shard_id}': members belong to different replica sets ({listing})",
            )
        return distinct[0]

    async def _hello(self, shard_id: str, address: str) -> replset_pb2.HelloResponse:
        """Hello on one member, retried until the health timeout (it may be starting)."""
        hello = pool_hello(self._pool)
        deadline = time.monotonic() + self.health_timeout
        last = "no answer"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                return await hello(address, remaining)
            except grpc.RpcError as exc:
                failure = from_rpc_error(exc, target=address)
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # type: ignore[attr-defined]
                    raise LauraError(
                        ErrorCode.BAD_VALUE,
                        f"shard '{shard_id}': member {address} does not answer Hello "
                        f"(not a replica-set capable shard)",
                    ) from None
                last = failure.message
            except LauraError as err:
                last = err.message
            await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        raise LauraError(
            ErrorCode.HOST_UNREACHABLE,
            f"shard '{shard_id}': member {address} is not reachable within "
            f"{self.health_timeout:g}s: {last}",
        )

    async def address_of(self, shard: ShardRecord) -> str:
        """The shard's primary (its address for a standalone shard)."""
        if not shard.members:
            return shard.address
        return await self.replsets.primary_address(shard.shard_id, shard.members, shard.address)

    async def count_documents(self, shard: ShardRecord, database: str, collection: str) -> int | None:
        """How many documents the shard holds for the namespace; None if unknown."""
        try:
            address = await self.address_of(shard)
        except LauraError as no_primary:
            log.warning(
                "cannot count %s.%s on shard %s: %s", database, collection, shard.shard_id, no_primary
            )
            return None
        stub = shard_pb2_grpc.ShardServiceStub(self._pool.get(address))
        request = shard_pb2.ShardCountRequest(
            database=database,
            collection=collection,
            filter=_EMPTY_FILTER,
            version=shard_pb2.ShardVersion(ignore=True),
        )
        try:
            resp = await stub.Count(request, timeout=self.count_timeout)
        except grpc.RpcError as exc:
            err = from_rpc_error(exc, target=address)
            if err.code == ErrorCode.NAMESPACE_NOT_FOUND:
                return 0
            self.replsets.invalidate(shard.shard_id, address)
            log.warning(
                "cannot count %s.%s on shard %s (%s): %s",
                database, collection, shard.shard_id, address, err,
            )
            return None
        return int(resp.count)

    async def _refresh_one(self, shard: ShardRecord, database: str, collection: str) -> bool:
        try:
            address = await self.address_of(shard)
        except LauraError as err:
            log.warning(
                "RefreshMetadata(%s.%s) on shard %s: %s", database, collection, shard.shard_id, err
            )
            return False
        stub = shard_pb2_grpc.ShardServiceStub(self._pool.get(address))
        request = shard_pb2.RefreshMetadataRequest(database=database, collection=collection)
        try:
            await stub.RefreshMetadata(request, timeout=self.refresh_timeout)
        except grpc.RpcError as exc:
            log.warning(
                "RefreshMetadata(%s.%s) on shard %s (%s) failed: %s",
                database, collection, shard.shard_id, address,
                from_rpc_error(exc, target=address),
            )
            self.replsets.invalidate(shard.shard_id, address)
            return False
        return True

    async def refresh(
        self, shards: Iterable[ShardRecord], database: str, collection: str
    ) -> list[str]:
        """Ask every shard (concurrently) to reload the namespace's placement;
        returns the ids of the shards that did not confirm."""
        targets = list(shards)
        results = await asyncio.gather(
            *(self._refresh_one(s, database, collection) for s in targets)
        )
        return [s.shard_id for s, ok in zip(targets, results, strict=True) if not ok]
