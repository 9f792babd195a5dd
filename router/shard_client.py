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
* Replica-set shards (2+ members, from ListShards / the routing tables): writes and
  primary reads go to the primary (``lauradb.replset`` monitor; ``address_of`` answers
  the cached one without an RPC). After NOT_WRITABLE_PRIMARY /
  INTERRUPTED_DUE_TO_REPL_STATE_CHANGE / UNAVAILABLE from a member the monitor
  forgets it as primary and the call waits for the new primary (buffer window, 5 s)
  and is sent again, when that is safe: a write only if it carries a retry identity
  (``retry_id``) or the error proves it was not applied (NOT_WRITABLE_PRIMARY); reads
  are retried by ``with_stale_retry`` (which re-selects their member). Standalone
  shards take none of these paths: one dict test, no extra await.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from lauradb.cluster import shard_pb2, shard_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.replset import (
    DEFAULT_BUFFER_WINDOW_S,
    ReplicaSetMonitor,
    ReplicaSets,
    is_failover_error,
    pool_hello,
)
from lauradb.rpc.channels import ChannelPool
from lauradb.rpc.errors import from_proto, from_rpc_error
from lauradb.rpc.request_context import current_request_id
from router import metrics
from router.config_client import has_error_trailer
from router.routing_cache import RoutingCache
from router.routing_table import RoutingTable

__all__ = [
    "MAX_STALE_RETRIES",
    "ShardClient",
    "is_stale",
    "read_preference",
    "set_read_options",
    "stale_backoff",
    "translate_shard_error",
]

T = TypeVar("T")

DEFAULT_SHARD_TIMEOUT = 10.0
MAX_STALE_RETRIES = 25
MAX_STALE_BACKOFF_S = 0.5
MAX_FAILOVER_RETRIES = 20

# Replica-set shards: what may be sent again to a new primary after a failover error.
_CURSOR_METHODS = frozenset({"Find", "Aggregate", "GetMore", "KillCursors"})  # caller retries
_READ_ONLY_METHODS = frozenset({"ListIndexes", "ListCollections", "ChunkStats", "SplitVector"})
_NOT_APPLIED = frozenset({ErrorCode.NOT_WRITABLE_PRIMARY, ErrorCode.NOT_PRIMARY_OR_SECONDARY})


def is_stale(err: LauraError) -> bool:
    return err.code in (ErrorCode.STALE_CONFIG, ErrorCode.STALE_EPOCH)


def read_preference(req: Any) -> Any:
    """The client request's ReadPreference, or None for the default (primary)."""
    if req.HasField("read_preference") and req.read_preference.mode:
        return req.read_preference
    return None


def set_read_options(sreq: Any, req: Any, preference: Any) -> Any:
    """Copy the client's read concern and read preference (as ``secondary_ok``) onto
    a shard read request; returns ``sreq``."""
    if preference is not None:
        sreq.secondary_ok = True
    if req.HasField("read_concern"):
        sreq.read_concern.CopyFrom(req.read_concern)
    return sreq


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
        buffer_window: float = DEFAULT_BUFFER_WINDOW_S,
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.timeout = timeout
        self._stubs: dict[str, shard_pb2_grpc.ShardServiceStub] = {}
        # Last known address of each shard (tables, ListShards): used by cursors.
        self.addresses: dict[str, str] = {}
        # Replica-set shards only (standalone shards never appear here).
        self.replsets = ReplicaSets(pool_hello(pool), buffer_window)
        self._rs: dict[str, ReplicaSetMonitor] = self.replsets.monitors

    def stub(self, address: str) -> shard_pb2_grpc.ShardServiceStub:
        s = self._stubs.get(address)
        if s is None:
            s = shard_pb2_grpc.ShardServiceStub(self.pool.get(address))
            self._stubs[address] = s
        return s

    def set_addresses(
        self, addresses: dict[str, str], members: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """The authoritative shard list (ListShards, refreshed by the health loop);
        ``members``: every shard's replica-set members (one or none: standalone)."""
        self.addresses = dict(addresses)
        if members is not None:
            for shard_id, shard_members in members.items():
                self.replsets.update(shard_id, shard_members)
            self.replsets.retain(members)

    def standalone(self, shard_id: str) -> bool:
        """Whether ``shard_id`` is a standalone shard (not a replica set)."""
        return not (self._rs and shard_id in self._rs)

    def replset(self, shard_id: str) -> ReplicaSetMonitor | None:
        """The monitor of a replica-set shard (None: a standalone shard)."""
        return self._rs.get(shard_id) if self._rs else None

    def address_of(self, table: RoutingTable | None, shard_id: str) -> str:
        """Where writes and primary reads for ``shard_id`` go (sync, no RPC): the
        address of a standalone shard, a replica set's cached primary (or best guess
        while it is unknown: a failover error then makes the caller wait for it)."""
        if self._rs:
            mon = self._rs.get(shard_id)
            if mon is not None:
                return mon.current()
        address = self.addresses.get(shard_id, "")
        if address:
            return address
        info = table.shards.get(shard_id) if table is not None else None
        if info is not None and len(info.members) > 1:
            mon = self.replsets.update(shard_id, info.members)
            if mon is not None:
                return mon.current()
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
            failure = self._translate(exc, shard_id, address)
            if self._rs and shard_id in self._rs:
                return await self._failover(shard_id, address, method, request, timeout, failure)
            raise failure from None
        err = getattr(resp, "error", None)
        if err is not None and err.code and not getattr(resp, "errors", None):
            failure = from_proto(err)
            if self._rs and shard_id in self._rs:
                return await self._failover(shard_id, address, method, request, timeout, failure)
            raise failure
        if self._rs and shard_id in self._rs:
            interrupted = _interrupted_write(resp, request)
            if interrupted is not None:  # applied, then the primary stepped down: resend
                return await self._failover(
                    shard_id, address, method, request, timeout, interrupted
                )
        return resp

    # ------------------------------------------------------------------ replica sets

    async def read_address(
        self, table: RoutingTable | None, shard_id: str, preference: Any
    ) -> str:
        """The member a read with ``preference`` (a ReadPreference) goes to: the
        primary for mode primary or a standalone shard, else chosen by the monitor
        (waits up to the buffer window for a suitable member)."""
        mon = self._rs.get(shard_id) if self._rs else None
        if mon is None or not preference.mode:
            return self.address_of(table, shard_id)
        return await mon.select(preference.mode, preference.max_staleness_ms)

    async def read_addresses(
        self, table: RoutingTable | None, shards: Sequence[str], preference: Any
    ) -> list[str]:
        """``read_address`` of each shard (no await for the default preference)."""
        if preference is None or not self._rs:
            return [self.address_of(table, s) for s in shards]
        return [await self.read_address(table, s, preference) for s in shards]

    async def _failover(
        self,
        shard_id: str,
        address: str,
        method: str,
        request: Any,
        timeout: float | None,
        err: LauraError,
    ) -> Any:
        """A replica-set member failed ``method``: forget it as primary; send again to
        the new primary when that is safe, else raise ``err``."""
        mon = self._rs[shard_id]
        if not err.details.get("shard"):
            err.details = {**err.details, "shard": shard_id}
        if not is_failover_error(err) or err.details.get("replset_wait"):
            raise err
        if err.code == ErrorCode.SHARD_UNAVAILABLE:
            mon.mark_failed(address, err.message)
        else:
            mon.invalidate(address)
        metrics.FAILOVER_ERRORS.labels(method).inc()
        if not _may_resend(method, request, err):
            mon.rediscover()  # the caller's next call goes to the new primary
            raise err
        deadline = time.monotonic() + mon.buffer_window
        attempt = 0
        while True:
            target = await mon.primary()  # waits out the election (buffering)
            metrics.FAILOVER_RETRIES.labels(method).inc()
            try:
                return await self._call_once(shard_id, target, method, request, timeout)
            except LauraError as again:
                if (
                    not is_failover_error(again)
                    or attempt >= MAX_FAILOVER_RETRIES
                    or time.monotonic() >= deadline
                    or not _may_resend(method, request, again)
                ):
                    raise
                if again.code == ErrorCode.SHARD_UNAVAILABLE:
                    mon.mark_failed(target, again.message)
                else:
                    mon.invalidate(target)
                attempt += 1
                await asyncio.sleep(mon.poll_interval)

    async def _call_once(
        self, shard_id: str, address: str, method: str, request: Any, timeout: float | None
    ) -> Any:
        fn: Callable[..., Awaitable[Any]] = getattr(self.stub(address), method)
        try:
            resp = await fn(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise self._translate(exc, shard_id, address) from None
        err = getattr(resp, "error", None)
        if err is not None and err.code and not getattr(resp, "errors", None):
            failure = from_proto(err)
            failure.details = {**failure.details, "shard": shard_id}
            raise failure
        interrupted = _interrupted_write(resp, request)
        if interrupted is not None:
            interrupted.details = {**interrupted.details, "shard": shard_id}
            raise interrupted
        return resp

    async def await_failover(self, err: LauraError, started: float) -> bool:
        """``with_stale_retry``'s part for reads: after a failover error from a
        replica-set shard, refresh its members' states (so the retry re-selects its
        member) and say whether to retry (within the buffer window)."""
        shard_id = err.details.get("shard")
        mon = self._rs.get(shard_id) if self._rs and isinstance(shard_id, str) else None
        if mon is None or err.details.get("replset_wait") or not is_failover_error(err):
            return False
        if time.monotonic() - started >= mon.buffer_window:
            return False
        await mon.refresh()
        if mon.cached_primary() is None:
            await asyncio.sleep(mon.poll_interval)
        metrics.FAILOVER_RETRIES.labels("read").inc()
        return True

    async def close(self) -> None:
        await self.replsets.close()

    def _translate(self, exc: grpc.RpcError, shard_id: str, address: str) -> LauraError:
        return translate_shard_error(exc, shard_id, address, self.timeout)

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
        failed: LauraError | None = None,
    ) -> T:
        """Run ``op(table)``; on STALE_CONFIG refresh the namespace and retry.
        ``failed``: the error of a first attempt the caller made itself (its hot path
        runs ``op`` once without this loop, and comes here only when it failed with a
        ``retryable`` error)."""
        if table is None:
            table = await self.cache.get(database, collection)
        attempt = 0
        failover_since = 0.0
        while True:
            if failed is None:
                try:
                    return await op(table)
                except LauraError as exc:
                    failed = exc
            error, failed = failed, None
            if not is_stale(error):
                if self._rs and is_failover_error(error):
                    failover_since = failover_since or time.monotonic()
                    if await self.await_failover(error, failover_since):
                        continue
                raise error
            if attempt >= MAX_STALE_RETRIES:
                raise error
            table = await self.cache.refresh(database, collection, table)
            await asyncio.sleep(stale_backoff(attempt))
            attempt += 1

    def retryable(self, err: LauraError) -> bool:
        """Whether ``with_stale_retry`` would retry after ``err`` (a stale version, or
        a replica-set failover)."""
        return is_stale(err) or bool(self._rs and is_failover_error(err))


def _interrupted_write(resp: Any, request: Any) -> LauraError | None:
    """A retryable write applied by a primary that stepped down before its write
    concern was met (``write_concern_error`` with a failover code, e.g.
    INTERRUPTED_DUE_TO_REPL_STATE_CHANGE): as the error to fail over on, so the write is
    sent again to the new primary, which answers it from its retry record (or applies
    it, if the old primary's copy never reached a majority). MongoDB's drivers retry
    such write concern errors the same way. None otherwise."""
    if not getattr(request, "retry_id", ""):
        return None
    try:
        if not resp.HasField("write_concern_error"):
            return None
    except ValueError:  # a response without write concern (the Find of a retryable write)
        return None
    err = from_proto(resp.write_concern_error.error)
    return err if is_failover_error(err) else None


def _may_resend(method: str, request: Any, err: LauraError) -> bool:
    """Whether ``request`` may be sent again to another member after ``err``."""
    if method in _CURSOR_METHODS:
        return False  # the caller re-runs the read (its cursor lives on one member)
    if err.code in _NOT_APPLIED:
        return True  # answered before touching data
    if method in _READ_ONLY_METHODS:
        return True
    return bool(getattr(request, "retry_id", ""))  # a retryable write: recorded outcome


def translate_shard_error(
    exc: grpc.RpcError, shard_id: str, address: str, timeout: float
) -> LauraError:
    """A failed shard call as a LauraError: a transport failure (no Error trailer)
    becomes SHARD_UNAVAILABLE naming the shard and address; otherwise the shard's own
    error, with the shard in its details."""
    status = exc.code() if hasattr(exc, "code") else None  # type: ignore[attr-defined]
    if not has_error_trailer(exc) and status in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    ):
        what = (
            f"did not answer within {timeout:.3g}s"
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
