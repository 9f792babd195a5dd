"""Router -> shard calls: deadlines, error translation, and the STALE_CONFIG retry loop.

* Every call has a deadline (``--shard-timeout``, default 10 s) and fails fast when
  the shard cannot be reached (no wait_for_ready).
* A shard that is down (UNAVAILABLE, or no answer within the deadline) becomes
  SHARD_UNAVAILABLE naming the shard id and address; any other failure keeps the
  code the shard sent.
* Requests that carry a ``request_id`` and leave it empty get the router's current
  one (the client's, or the id generated for this request's log lines), so router and
  shard log lines of one request show the same id. It is only for log correlation:
  retryable writes carry the client's id separately (``retry_id``).
* ``with_stale_retry`` runs an operation against the cached routing table; on
  STALE_CONFIG it refreshes that namespace (single-flight) and retries, at most
  ``MAX_STALE_RETRIES`` times with a 10 -> 500 ms backoff: about 10 s of waiting in
  all, so a write held by a donor's migration critical section (up to ~5 s, then
  STALE_CONFIG while the commit is still pending) is retried transparently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from lauradb.cluster import shard_pb2, shard_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import ChannelPool
from lauradb.rpc.errors import from_proto, from_rpc_error
from lauradb.rpc.request_context import current_request_id
from router import metrics
from router.config_client import has_error_trailer
from router.routing_cache import RoutingCache
from router.routing_table import RoutingTable

__all__ = ["MAX_STALE_RETRIES", "ShardClient", "is_stale", "stale_backoff"]

T = TypeVar("T")

DEFAULT_SHARD_TIMEOUT = 10.0
MAX_STALE_RETRIES = 25
MAX_STALE_BACKOFF_S = 0.5


def is_stale(err: LauraError) -> bool:
    return err.code in (ErrorCode.STALE_CONFIG, ErrorCode.STALE_EPOCH)


def stale_backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): 10, 20, 40, 80, 160, 320,
    then 500 ms (25 retries: ~10 s in all). Every retry asks for its backoff, so the
    retries are counted here (``lauradb_router_stale_retries_total``)."""
    metrics.STALE_RETRIES.inc()
    return min(0.01 * (2 ** min(attempt, 16)), MAX_STALE_BACKOFF_S)


class ShardClient:
    """Calls ShardService on shard nodes through a shared channel pool."""

    def __init__(
        self,
        pool: ChannelPool,
        cache: RoutingCache,
        timeout: float = DEFAULT_SHARD_TIMEOUT,
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.timeout = timeout
        self._stubs: dict[str, shard_pb2_grpc.ShardServiceStub] = {}
        # Last known address of each shard (tables, ListShards): used by cursors.
        self.addresses: dict[str, str] = {}

    def stub(self, address: str) -> shard_pb2_grpc.ShardServiceStub:
        s = self._stubs.get(address)
        if s is None:
            s = shard_pb2_grpc.ShardServiceStub(self.pool.get(address))
            self._stubs[address] = s
        return s

    def set_addresses(self, addresses: dict[str, str]) -> None:
        """The authoritative shard list (ListShards, refreshed by the health loop)."""
        self.addresses = dict(addresses)

    def address_of(self, table: RoutingTable | None, shard_id: str) -> str:
        address = self.addresses.get(shard_id, "")
        if address:
            return address
        address = table.address(shard_id) if table is not None else ""
        if not address:
            raise LauraError(
                ErrorCode.SHARD_NOT_FOUND, f"no address known for shard {shard_id!r}",
                {"shard": shard_id},
            )
        return address

    # ------------------------------------------------------------------ calls

    async def call(
        self,
        shard_id: str,
        address: str,
        method: str,
        request: Any,
        timeout: float | None = None,
    ) -> Any:
        """Call ShardService ``method`` on ``address``; failures -> LauraError."""
        fn: Callable[..., Awaitable[Any]] = getattr(self.stub(address), method)
        if getattr(request, "request_id", None) == "":
            request.request_id = current_request_id()
        try:
            resp = await fn(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise self._translate(exc, shard_id, address) from None
        err = getattr(resp, "error", None)
        if err is not None and err.code and not getattr(resp, "errors", None):
            raise from_proto(err)
        return resp

    def _translate(self, exc: grpc.RpcError, shard_id: str, address: str) -> LauraError:
        status = exc.code() if hasattr(exc, "code") else None  # type: ignore[attr-defined]
        if not has_error_trailer(exc) and status in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
        ):
            what = (
                f"did not answer within {self.timeout:g}s"
                if status == grpc.StatusCode.DEADLINE_EXCEEDED
                else "is unreachable"
            )
            return LauraError(
                ErrorCode.SHARD_UNAVAILABLE,
                f"shard {shard_id} at {address} {what}",
                {"shard": shard_id, "address": address},
            )
        err = from_rpc_error(exc, target=f"shard {shard_id}")
        if not err.details.get("shard"):
            err.details = {**err.details, "shard": shard_id}
        return err

    # ------------------------------------------------------------------ shard cursors

    async def get_more(
        self, shard_id: str, address: str, cursor_id: str, batch_size: int
    ) -> shard_pb2.ShardCursorBatch:
        req = shard_pb2.ShardGetMoreRequest(cursor_id=cursor_id, batch_size=batch_size)
        resp: shard_pb2.ShardCursorBatch = await self.call(shard_id, address, "GetMore", req)
        return resp

    async def kill_cursors(self, cursors: list[tuple[str, str, str]]) -> None:
        """Best-effort kill of ``(shard_id, address, cursor_id)`` shard cursors."""
        by_address: dict[tuple[str, str], list[str]] = {}
        for shard_id, address, cursor_id in cursors:
            if cursor_id:
                by_address.setdefault((shard_id, address), []).append(cursor_id)
        if not by_address:
            return
        await asyncio.gather(
            *(
                self.call(
                    sid, addr, "KillCursors",
                    shard_pb2.ShardKillCursorsRequest(cursor_ids=ids), timeout=2.0,
                )
                for (sid, addr), ids in by_address.items()
            ),
            return_exceptions=True,
        )

    # ------------------------------------------------------------------ retries

    async def with_stale_retry(
        self,
        database: str,
        collection: str,
        op: Callable[[RoutingTable], Awaitable[T]],
        table: RoutingTable | None = None,
    ) -> T:
        """Run ``op(table)``; on STALE_CONFIG refresh the namespace and retry."""
        if table is None:
            table = await self.cache.get(database, collection)
        attempt = 0
        while True:
            try:
                return await op(table)
            except LauraError as err:
                if not is_stale(err) or attempt >= MAX_STALE_RETRIES:
                    raise
                table = await self.cache.refresh(database, collection, table)
                await asyncio.sleep(stale_backoff(attempt))
                attempt += 1
