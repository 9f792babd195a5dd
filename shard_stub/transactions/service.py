"""TransactionService on a shard: the participant RPCs (Prepare, Commit, Abort) and
the coordinator record RPCs (QueryTransactionState, CoordinateTransaction,
DecideTransaction, FinishTransaction), delegated to ``Participant`` and ``Coordinator``.

Only a replica set's primary serves them (NOT_WRITABLE_PRIMARY otherwise, so a peer's
``call_txn`` moves on to the next member); a standalone shard always does.
"""

from __future__ import annotations

from typing import Any

from grpc import aio

from lauradb.cluster import transaction_pb2, transaction_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.server import rpc_method
from shard_stub.replica.node import ReplicaNode
from shard_stub.transactions.coordinator import Coordinator
from shard_stub.transactions.participant import Participant

__all__ = ["SERVICE_NAME", "TransactionServicer"]

SERVICE_NAME = "lauradb.cluster.TransactionService"

Ctx = aio.ServicerContext[Any, Any]


def _remaining(context: Ctx | None) -> float | None:
    if context is None:
        return None
    try:
        return context.time_remaining()
    except Exception:  # a context without a deadline API (tests)
        return None


class TransactionServicer(transaction_pb2_grpc.TransactionServiceServicer):
    """The TransactionService of one shard node."""

    def __init__(
        self,
        participant: Participant,
        coordinator: Coordinator | None,
        replica: ReplicaNode | None = None,
    ) -> None:
        self.participant = participant
        self.coordinator = coordinator
        self.replica = replica

    def _require_primary(self) -> None:
        if self.replica is not None and not self.replica.is_primary:
            self.replica.require_primary("transactions")

    def _coordinator(self) -> Coordinator:
        self._require_primary()
        if self.coordinator is None:
            raise LauraError(
                ErrorCode.NOT_IMPLEMENTED, "this shard keeps no transaction coordinator records"
            )
        return self.coordinator

    # ------------------------------------------------------------------ participant

    @rpc_method
    async def Prepare(self, request: transaction_pb2.PrepareRequest, context: Ctx) -> Any:
        self._require_primary()
        return await self.participant.prepare(request, _remaining(context))

    @rpc_method
    async def Commit(self, request: transaction_pb2.CommitRequest, context: Ctx) -> Any:
        self._require_primary()
        return await self.participant.commit(request, _remaining(context))

    @rpc_method
    async def Abort(self, request: transaction_pb2.AbortRequest, context: Ctx) -> Any:
        self._require_primary()
        return await self.participant.abort(request, _remaining(context))

    # ------------------------------------------------------------------ coordinator

    @rpc_method
    async def QueryTransactionState(
        self, request: transaction_pb2.RecoveryRequest, context: Ctx
    ) -> Any:
        return await self._coordinator().query(request)

    @rpc_method
    async def CoordinateTransaction(
        self, request: transaction_pb2.CoordinateRequest, context: Ctx
    ) -> Any:
        return await self._coordinator().coordinate(request)

    @rpc_method
    async def DecideTransaction(
        self, request: transaction_pb2.DecideRequest, context: Ctx
    ) -> Any:
        return await self._coordinator().decide(request)

    @rpc_method
    async def FinishTransaction(
        self, request: transaction_pb2.FinishTransactionRequest, context: Ctx
    ) -> Any:
        return await self._coordinator().finish(request)
