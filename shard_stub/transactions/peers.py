"""Shard-to-shard TransactionService calls (the coordinator shard's driver pushing a
decision to the participants; a participant asking the coordinator shard for one).

``call_txn(hosts, method, request, timeout_s, pool=...)`` calls
``TransactionService.<method>`` on the first of ``hosts`` (the members of the other
shard, a replica set or a single node) that answers as its primary: a member that
is not the primary (NOT_WRITABLE_PRIMARY, with a hint at the primary when it knows
one) or is unreachable (UNAVAILABLE) makes the call go to the next host; when a whole
round found no primary (an election in progress) it goes round again after a short
pause, all within ``timeout_s``. Every attempt carries the remaining deadline, so the
call never outlasts ``timeout_s``. Channels come from the shard's ``ChannelPool``, which
applies the process's ``--tls-*`` settings (mutual TLS included), like every other
cluster call of the shard.

Failures are ``CallFailed`` (``shard_stub.migration_clients``): ``uncertain`` when the
call may have taken effect (deadline, broken connection); every TransactionService
RPC is idempotent by txn_id, so resending is always safe. A response whose own error
field is set (``error``; ``error_info`` of an unsuccessful Commit/Abort) is raised
too. A Prepare's "no" vote is an answer, not a failure: it is returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc

from lauradb.cluster import transaction_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import ChannelPool
from lauradb.rpc.errors import from_proto, from_rpc_error
from shard_stub.migration_clients import UNCERTAIN_STATUSES, CallFailed

__all__ = ["METHODS", "CallFailed", "TxnPeers", "call_txn"]

METHODS = frozenset({
    "Prepare", "Commit", "Abort", "QueryTransactionState",
    "CoordinateTransaction", "DecideTransaction", "FinishTransaction",
})
# Answers meaning "not this member": try the next host.
_NOT_PRIMARY = frozenset({
    ErrorCode.NOT_WRITABLE_PRIMARY,
    ErrorCode.NOT_PRIMARY_OR_SECONDARY,
    ErrorCode.INTERRUPTED_DUE_TO_REPL_STATE_CHANGE,
})
_UNREACHABLE = frozenset({ErrorCode.HOST_UNREACHABLE, ErrorCode.SHARD_UNAVAILABLE})
ROUND_PAUSE_S = 0.05
MAX_ROUND_PAUSE_S = 0.5

# Last host that answered as primary, per set of hosts: tried first next time.
_known_primary: dict[frozenset[str], str] = {}


def _order(hosts: Sequence[str]) -> list[str]:
    out = list(dict.fromkeys(h for h in hosts if h))
    known = _known_primary.get(frozenset(out))
    if known in out:
        out.remove(known)
        out.insert(0, known)
    return out


def _response_error(resp: Any) -> LauraError | None:
    """The error a response carries in its own fields (None: a success)."""
    err = getattr(resp, "error", None)
    if err is not None and not isinstance(err, str) and err.code:
        return from_proto(err)
    success = getattr(resp, "success", None)
    if success is False:
        info = getattr(resp, "error_info", None)
        if info is not None and info.code:
            return from_proto(info)
        text = getattr(resp, "error", "") or "unsuccessful, no reason given"
        return LauraError(ErrorCode.OPERATION_FAILED, str(text))
    return None


async def call_txn(
    hosts: Sequence[str],
    method: str,
    request: Any,
    timeout_s: float,
    *,
    pool: ChannelPool,
) -> Any:
    """``TransactionService.<method>(request)`` on the primary among ``hosts``, within
    ``timeout_s`` overall; failures as ``CallFailed``."""
    if method not in METHODS:
        raise LauraError(ErrorCode.BAD_VALUE, f"unknown TransactionService method {method!r}")
    order = _order(hosts)
    if not order:
        raise CallFailed(
            LauraError(ErrorCode.HOST_UNREACHABLE, f"{method}: no host to send it to"), False
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout_s, 0.0)
    last: CallFailed | None = None
    pause = ROUND_PAUSE_S
    while True:
        queue = list(order)
        while queue:
            host = queue.pop(0)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            stub = transaction_pb2_grpc.TransactionServiceStub(pool.get(host))
            try:
                resp = await getattr(stub, method)(request, timeout=remaining)
            except grpc.RpcError as exc:
                status = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                err = from_rpc_error(exc, target=host)
                if status == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise CallFailed(err, True) from None
                if err.code in _NOT_PRIMARY or err.code in _UNREACHABLE or (
                    status == grpc.StatusCode.UNAVAILABLE
                ):
                    last = CallFailed(
                        err, status in UNCERTAIN_STATUSES and err.code not in _NOT_PRIMARY
                    )
                    hint = err.details.get("primary") if err.details else None
                    if isinstance(hint, str) and hint and hint != host:
                        if hint in queue:
                            queue.remove(hint)
                        queue.insert(0, hint)
                    continue
                raise CallFailed(err, status in UNCERTAIN_STATUSES) from None
            _known_primary[frozenset(order)] = host
            failure = _response_error(resp)
            if failure is not None:
                raise CallFailed(failure, False)
            return resp
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 2, MAX_ROUND_PAUSE_S)
    why = last.message if last is not None else "no time left"
    code = last.code if last is not None else ErrorCode.EXCEEDED_TIME_LIMIT
    if code in _NOT_PRIMARY:
        code = ErrorCode.SHARD_UNAVAILABLE
    raise CallFailed(
        LauraError(
            code,
            f"{method}: no primary answered among {', '.join(order)} within "
            f"{timeout_s:g}s (last: {why})",
        ),
        last.uncertain if last is not None else True,
    )


class TxnPeers:
    """``call_txn`` bound to the shard's channel pool (what the coordinator and the
    participant's recovery get)."""

    def __init__(self, pool: ChannelPool) -> None:
        self.pool = pool

    async def call(
        self, hosts: Sequence[str], method: str, request: Any, timeout_s: float
    ) -> Any:
        return await call_txn(hosts, method, request, timeout_s, pool=self.pool)
