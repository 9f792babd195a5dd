"""Router -> shard TransactionService calls, through the router's channel pool.

Every call has a deadline (the smaller of ``--shard-timeout`` and what is left of the
caller's budget). Transaction RPCs are idempotent by txn_id, so after a failover
error from a replica-set shard (not primary, unreachable) the call is sent again to
the new primary while the budget lasts; a standalone shard's failure is final.
Transport failures become SHARD_UNAVAILABLE naming the shard, as ShardClient does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from lauradb.cluster import transaction_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.replset import is_failover_error
from lauradb.rpc.errors import from_proto
from router.routing_table import RoutingTable
from router.shard_client import ShardClient, translate_shard_error

__all__ = ["MIN_CALL_S", "TxnCaller", "call_error"]

MIN_CALL_S = 0.05  # a call is never sent with less than this (it would only time out)


def call_error(resp: Any) -> LauraError | None:
    """The ``lauradb.cluster.Error`` a TransactionService response carries (``error``
    or ``error_info``), as a LauraError; None when unset."""
    fields = resp.DESCRIPTOR.fields_by_name
    for name in ("error_info", "error"):
        field = fields.get(name)
        if field is None or field.message_type is None:
            continue
        if resp.HasField(name):
            err = getattr(resp, name)
            if err.code:
                return from_proto(err)
    return None


class TxnCaller:
    """Calls ``TransactionService`` on the shards the router knows."""

    def __init__(self, shards: ShardClient) -> None:
        self.shards = shards
        self._stubs: dict[str, transaction_pb2_grpc.TransactionServiceStub] = {}

    def stub(self, address: str) -> transaction_pb2_grpc.TransactionServiceStub:
        s = self._stubs.get(address)
        if s is None:
            s = transaction_pb2_grpc.TransactionServiceStub(self.shards.pool.get(address))
            self._stubs[address] = s
        return s

    def hosts(self, table: RoutingTable | None, shard_id: str) -> list[str]:
        """Every member of ``shard_id`` (one address for a standalone shard)."""
        mon = self.shards.replset(shard_id)
        if mon is not None:
            return list(mon.members)
        info = table.shards.get(shard_id) if table is not None else None
        if info is not None and info.members:
            return list(info.members)
        return [self.shards.address_of(table, shard_id)]

    async def call(
        self,
        table: RoutingTable | None,
        shard_id: str,
        method: str,
        request: Any,
        deadline: float,
    ) -> Any:
        """Call ``method`` on ``shard_id``'s primary before ``deadline`` (monotonic).
        Returns the response; a response whose error is a failover error (and every
        transport failure) is retried on a replica set, else raised."""
        attempt = 0
        while True:
            address = self.shards.address_of(table, shard_id)
            try:
                resp = await self._once(shard_id, address, method, request, deadline)
                err = call_error(resp)
                if err is not None and is_failover_error(err):
                    raise err
                return resp
            except LauraError as err:
                mon = self.shards.replset(shard_id)
                left = deadline - time.monotonic()
                if mon is None or not is_failover_error(err) or left < MIN_CALL_S:
                    raise
                if err.code == ErrorCode.SHARD_UNAVAILABLE:
                    mon.mark_failed(address, err.message)
                else:
                    mon.invalidate(address)
                attempt += 1
                try:
                    await asyncio.wait_for(mon.primary(), timeout=max(left, MIN_CALL_S))
                except (TimeoutError, LauraError):
                    raise err from None
                if attempt > 1:
                    await asyncio.sleep(min(mon.poll_interval, max(0.0, left / 4)))

    async def _once(
        self, shard_id: str, address: str, method: str, request: Any, deadline: float
    ) -> Any:
        timeout = min(self.shards.timeout, deadline - time.monotonic())
        if timeout < MIN_CALL_S:
            raise LauraError(
                ErrorCode.EXCEEDED_TIME_LIMIT,
                f"no time left to call {method} on shard {shard_id}",
                {"shard": shard_id},
            )
        fn: Callable[..., Awaitable[Any]] = getattr(self.stub(address), method)
        try:
            return await fn(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise translate_shard_error(exc, shard_id, address, timeout) from None

    async def each(
        self,
        calls: Sequence[tuple[RoutingTable | None, str, str, Any]],
        deadline: float,
        on_answer: Callable[[Any], None] | None = None,
    ) -> list[Any]:
        """Several calls in parallel: each answer or its exception, in order.
        ``on_answer`` sees each answer as it arrives (the testing crash points)."""

        async def one(t: RoutingTable | None, s: str, m: str, r: Any) -> Any:
            resp = await self.call(t, s, m, r, deadline)
            if on_answer is not None:
                on_answer(resp)
            return resp

        return list(
            await asyncio.gather(*(one(t, s, m, r) for t, s, m, r in calls), return_exceptions=True)
        )
