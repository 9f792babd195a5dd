"""ReplicationService of a replica-set member (proto/lauradb/cluster/replication.proto).

* ``StreamOplog`` (long-lived server stream, primary only): checks log matching at
  ``start_oplog_id - 1`` against ``last_term`` (mismatch: one response with ``diverged``
  and the source's term there), then sends batches as entries are committed and an empty
  heartbeat batch every ~100 ms, each with the term, commit point and primary id. A
  non-primary answers NOT_WRITABLE_PRIMARY (in the response's ``error``); entries no
  longer retained: OPERATION_FAILED with details ``oplog_trimmed`` (the member resyncs).
* ``InitialSync`` (server stream, primary only): a consistent snapshot
  (``shard_stub.initial_sync``) in chunks with the sync point and progress.
* ``RequestVote``: the Raft vote (or pre-vote) of this member.
* ``AcknowledgeWrite``: a member's last durable op id (and liveness) for the primary.
* ``AppendOplog``: not supported (replication is pulled with StreamOplog).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from lauradb.cluster import replication_pb2, replication_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import to_proto
from lauradb.rpc.server import rpc_method
from shard_stub import initial_sync
from shard_stub.replica.node import HEARTBEAT_S, ReplicaNode

log = logging.getLogger("lauradb.shard.replset.service")

Ctx = aio.ServicerContext[Any, Any]

SERVICE_NAME = "lauradb.cluster.ReplicationService"
STREAM_BATCH = 1000
SNAPSHOT_QUEUE = 4
SNAPSHOT_IDLE_S = 60.0


class ReplicationServicer(replication_pb2_grpc.ReplicationServiceServicer):
    def __init__(self, node: ReplicaNode) -> None:
        self.node = node

    def _not_primary(self) -> LauraError:
        node = self.node
        hint = f"; the primary is {node.primary_address}" if node.primary_address else ""
        return LauraError(
            ErrorCode.NOT_WRITABLE_PRIMARY,
            f"member {node.node_id} is {node.role.value}, not the primary{hint}",
            {"primary": node.primary_address} if node.primary_address else None,
        )

    def _stream_response(self, **kwargs: Any) -> replication_pb2.ReplicationStreamResponse:
        node = self.node
        return replication_pb2.ReplicationStreamResponse(
            term=node.term,
            commit_oplog_id=node.commit_op_id,
            primary_id=node.primary_id,
            latest_oplog_id=node.own_last,
            **kwargs,
        )

    async def StreamOplog(  # type: ignore[override]
        self, request: replication_pb2.ReplicationStreamRequest, context: Ctx
    ) -> AsyncIterator[replication_pb2.ReplicationStreamResponse]:
        node = self.node
        try:
            if request.term > node.term:
                await node.observe_term(request.term, f"stream request of {request.replica_id}")
            if not node.is_primary:
                raise self._not_primary()
            term = node.term
            oplog = node.oplog
            start = max(request.start_oplog_id, 1)
            prev = start - 1
            mine = oplog.term_at(prev)
            if mine is None and prev < oplog.base().op_id:
                raise LauraError(
                    ErrorCode.OPERATION_FAILED,
                    f"oplog entry {prev} is no longer retained here (the oldest kept is "
                    f"{oplog.first_op_id()}): a full resync is needed",
                    {"oplog_trimmed": True, "base_op_id": oplog.base().op_id},
                )
            if mine is None or mine != request.last_term:
                yield self._stream_response(diverged=True, source_term_at=mine or 0)
                return
            node.record_contact(request.replica_id)
            next_id = start
            while node.is_primary and node.term == term:
                entries: list[replication_pb2.OplogEntry] = []
                if next_id <= oplog.last().op_id:
                    entries = await asyncio.to_thread(oplog.read, next_id, STREAM_BATCH)
                more = bool(entries) and entries[-1].op_id < oplog.last().op_id
                yield self._stream_response(entries=entries, more_available=more)
                if entries:
                    next_id = entries[-1].op_id + 1
                    if more:
                        continue
                await node.notifier.wait(HEARTBEAT_S)
        except LauraError as err:
            yield self._stream_response(error=to_proto(err))

    async def InitialSync(  # type: ignore[override]
        self, request: replication_pb2.InitialSyncRequest, context: Ctx
    ) -> AsyncIterator[replication_pb2.InitialSyncResponse]:
        node = self.node
        if not node.is_primary:
            yield replication_pb2.InitialSyncResponse(error=to_proto(self._not_primary()))
            return
        q: queue.Queue[tuple[str, Any, int, int]] = queue.Queue(maxsize=SNAPSHOT_QUEUE)
        stop = threading.Event()

        def put(item: tuple[str, Any, int, int]) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                sync_point, chunks = initial_sync.snapshot(node.storage)
            except BaseException as exc:
                put(("error", exc, 0, 0))
                return
            try:
                for chunk in chunks:
                    if not put(("chunk", chunk, chunks.documents, chunks.total_documents)):
                        return
                put(("end", sync_point, chunks.documents, chunks.total_documents))
            except BaseException as exc:
                put(("error", exc, 0, 0))
            finally:
                chunks.close()

        log.info("initial sync for %s: starting a snapshot", request.replica_id or "?")
        thread = threading.Thread(target=produce, name="initial sync snapshot", daemon=True)
        thread.start()
        sync_point = 0
        try:
            while True:
                try:
                    kind, value, docs, total = await asyncio.to_thread(
                        q.get, True, SNAPSHOT_IDLE_S
                    )
                except queue.Empty:
                    yield replication_pb2.InitialSyncResponse(
                        error=to_proto(
                            LauraError(ErrorCode.OPERATION_FAILED, "the snapshot stalled")
                        )
                    )
                    return
                if kind == "error":
                    err = value if isinstance(value, LauraError) else LauraError(
                        ErrorCode.INTERNAL_ERROR, f"snapshot failed: {value!r}"
                    )
                    yield replication_pb2.InitialSyncResponse(error=to_proto(err))
                    return
                if kind == "end":
                    yield replication_pb2.InitialSyncResponse(
                        complete=True, sync_point_oplog_id=value, documents=docs,
                        total_documents=total,
                    )
                    log.info("initial sync for %s: sent %d documents (sync point op %d)",
                             request.replica_id or "?", docs, value)
                    return
                if not sync_point:
                    # The header chunk carries the sync point; read it from the snapshot.
                    sync_point = _sync_point_of(value)
                yield replication_pb2.InitialSyncResponse(
                    data_chunk=value, sync_point_oplog_id=sync_point, documents=docs,
                    total_documents=total,
                )
        finally:
            stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    q.get_nowait()

    @rpc_method
    async def RequestVote(self, request: replication_pb2.VoteRequest, context: Ctx) -> Any:
        if not request.candidate_id:
            raise LauraError(ErrorCode.BAD_VALUE, "RequestVote needs a candidate_id")
        return await self.node.handle_vote(request)

    @rpc_method
    async def AcknowledgeWrite(
        self, request: replication_pb2.WriteAcknowledgmentRequest, context: Ctx
    ) -> Any:
        node = self.node
        if request.term > node.term:
            await node.observe_term(request.term, "acknowledgement of a newer term")
        if not node.is_primary:
            return replication_pb2.WriteAcknowledgmentResponse(
                term=node.term, error=to_proto(self._not_primary())
            )
        if request.term < node.term:
            return replication_pb2.WriteAcknowledgmentResponse(
                term=node.term,
                error=to_proto(
                    LauraError(
                        ErrorCode.INTERRUPTED_DUE_TO_REPL_STATE_CHANGE,
                        f"acknowledgement of term {request.term}, the primary's is {node.term}",
                    )
                ),
            )
        for ack in request.acks:
            node.record_contact(ack.node_id, ack.oplog_id if ack.success else None)
        top = max((a.oplog_id for a in request.acks), default=0)
        return replication_pb2.WriteAcknowledgmentResponse(
            all_acknowledged=top >= node.own_last,
            ack_count=len(request.acks),
            term=node.term,
        )

    @rpc_method
    async def AppendOplog(self, request: replication_pb2.OplogEntry, context: Ctx) -> Any:
        raise LauraError(
            ErrorCode.NOT_IMPLEMENTED,
            "AppendOplog (push replication) is not supported: members pull the primary's "
            "oplog with StreamOplog",
        )


def _sync_point_of(chunk: bytes) -> int:
    import bson

    with contextlib.suppress(Exception):
        header = bson.decode(chunk)
        if header.get("t") == "header":
            return int(header.get("sync_point", 0))
    return 0
