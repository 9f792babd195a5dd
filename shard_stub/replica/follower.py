"""A secondary's replication loop: pull the primary's oplog, acknowledge, apply on commit.

* Finds the primary (``ReplicaNode.sync_source``: the primary it follows, else what the
  peers' ``Hello`` say) and opens ``StreamOplog`` from its last entry + 1 with that
  entry's term (the log-matching check).
* Appends every batch durably, acknowledges its last durable op id (``AcknowledgeWrite``
  after each batch and at least every ~100 ms, which is also the primary's liveness
  signal), and applies entries only up to the commit point the primary reports: a
  secondary's documents only ever contain majority-committed entries.
* Divergence (the primary does not have our entry at start - 1): the last common entry
  is found by binary search (probing streams); an unapplied diverged tail is truncated;
  if applied entries diverge (a former primary's writes the majority never had) the member
  RESYNCs: wipe + initial sync. A member with no data (or an interrupted initial sync)
  whose primary has a non-empty log initial-syncs too. It serves no reads until synced.
* Arbiters stream nothing: they only send liveness acknowledgements to the primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from lauradb.cluster import replication_pb2, replication_pb2_grpc, replset_pb2, shard_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import from_proto, from_rpc_error
from shard_stub import initial_sync

if TYPE_CHECKING:
    from shard_stub.replica.node import ReplicaNode

log = logging.getLogger("lauradb.shard.replset.follower")

EOF: Any = aio.EOF  # type: ignore[attr-defined]  # the end of a server stream

STREAM_MAX_S = 300.0  # a stream call is reopened at least this often (call deadline)
INITIAL_SYNC_MAX_S = 3600.0
INITIAL_SYNC_IDLE_S = 60.0
ACK_INTERVAL_S = 0.1
ACK_TIMEOUT_S = 1.0
PROGRESS_LOG_S = 2.0


class Resync(Exception):
    """The member must be wiped and initial-synced (reason in the message)."""


class Follower:
    def __init__(self, node: ReplicaNode) -> None:
        self.node = node
        self.last_write_ms = 0
        self._syncing = False
        self._paused = False
        self._attempt: asyncio.Task[None] | None = None
        self._ack_wake = asyncio.Event()
        self._validated_term = -1
        self._batch_ts: deque[tuple[int, int]] = deque()  # (last op id, timestamp) appended

    # ------------------------------------------------------------------ control

    @property
    def syncing(self) -> bool:
        """In an initial sync, or one was interrupted (the data is incomplete)."""
        oplog = self.node.storage.oplog
        return self._syncing or (oplog is not None and oplog.sync_pending)

    async def pause(self) -> None:
        """Stop the current stream (its storage work finishes first) until ``resume``."""
        self._paused = True
        attempt = self._attempt
        if attempt is not None and not attempt.done():
            attempt.cancel()
            await asyncio.wait({attempt})

    def resume(self) -> None:
        self._paused = False

    async def run(self) -> None:
        from shard_stub.replica.node import Role

        node = self.node
        while True:
            if node.role is Role.ARBITER:
                await self._arbiter_step()
                continue
            if self._paused or node.role is Role.PRIMARY or node.role is Role.STARTUP:
                await asyncio.sleep(0.05)
                continue
            source = node.sync_source()
            if not source:
                await asyncio.sleep(0.05)
                continue
            attempt = asyncio.create_task(self._follow(source), name=f"follow {source}")
            self._attempt = attempt
            try:
                await asyncio.wait({attempt})
            except asyncio.CancelledError:
                attempt.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await attempt
                raise
            finally:
                self._attempt = None
            if attempt.cancelled():
                continue
            exc = attempt.exception()
            if exc is not None:
                if isinstance(exc, LauraError):
                    log.info("following %s stopped: %s", source, exc)
                else:
                    log.warning("following %s failed: %r", source, exc)
                node.primary_lost(source)
                await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ streaming

    def _stub(self, source: str) -> replication_pb2_grpc.ReplicationServiceStub:
        return replication_pb2_grpc.ReplicationServiceStub(self.node.pool.get(source))

    async def _follow(self, source: str) -> None:
        from shard_stub.replica.node import Role

        node = self.node
        oplog = node.oplog
        stub = self._stub(source)
        try:
            if oplog.sync_pending:
                await self._initial_sync(stub, source, "an earlier initial sync did not finish")
            elif oplog.last().op_id == 0 and oplog.applied == 0:
                if await self._source_last_op(source) > 0:
                    await self._initial_sync(stub, source, "this member has no data")
            await self._stream(stub, source)
        except Resync as why:
            log.warning(
                "RESYNC from %s: %s (the entries this member has beyond the common point "
                "were never majority-committed)", source, why,
            )
            await self._initial_sync(stub, source, f"resync: {why}")
        finally:
            if node.role is Role.RECOVERING and not self.syncing:
                await node._set_role(Role.SECONDARY, "sync source lost")

    async def _source_last_op(self, source: str) -> int:
        stub = shard_pb2_grpc.ShardServiceStub(self.node.pool.get(source))
        try:
            resp: replset_pb2.HelloResponse = await stub.Hello(
                replset_pb2.HelloRequest(), timeout=1.0
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, target=source) from None
        return int(resp.last_op_id)

    def _request(self, start: int, last_term: int) -> replication_pb2.ReplicationStreamRequest:
        return replication_pb2.ReplicationStreamRequest(
            replica_id=self.node.node_id, start_oplog_id=start, last_term=last_term,
            term=self.node.term,
        )

    async def _stream(
        self, stub: replication_pb2_grpc.ReplicationServiceStub, source: str
    ) -> None:
        from shard_stub.replica.node import Role, run_in_thread

        node = self.node
        oplog = node.oplog
        last = oplog.last()
        call = stub.StreamOplog(self._request(last.op_id + 1, last.term), timeout=STREAM_MAX_S)
        acker = asyncio.create_task(self._ack_loop(stub, source), name="acks")
        idle = node.step_down_timeout_s
        self._validated_term = -1
        try:
            while True:
                try:
                    resp = await asyncio.wait_for(call.read(), timeout=idle)
                except TimeoutError:
                    raise LauraError(
                        ErrorCode.HOST_UNREACHABLE, f"no message from {source} for {idle:g}s"
                    ) from None
                except grpc.RpcError as exc:
                    raise from_rpc_error(exc, target=source) from None
                if resp is EOF:
                    return
                assert isinstance(resp, replication_pb2.ReplicationStreamResponse)
                self._check_error(resp)
                if resp.term < node.term:
                    raise LauraError(
                        ErrorCode.NOT_WRITABLE_PRIMARY,
                        f"{source} is primary of term {resp.term}, older than {node.term}",
                    )
                if resp.term > node.term:
                    await node.observe_term(resp.term, f"stream from {source}")
                if resp.diverged:
                    await self._reconcile(stub, source)
                    return
                if node.role is Role.PRIMARY or node.term != resp.term:
                    return
                node.leader_contact(resp.primary_id, source, resp.term)
                self._validated_term = resp.term
                if not node.caught_up:
                    node.caught_up = True
                    log.info("following %s (term %d) from op %d", source, resp.term,
                             last.op_id + 1)
                if resp.entries:
                    entries = list(resp.entries)
                    await run_in_thread(oplog.append, entries)
                    self._batch_ts.append((entries[-1].op_id, entries[-1].timestamp))
                    node.local_progress(entries[-1].op_id)
                    self._ack_wake.set()
                target = min(resp.commit_oplog_id, oplog.last().op_id)
                if target > node.commit_op_id:
                    node.set_commit(target)
                if target > oplog.applied:
                    applied = await run_in_thread(oplog.apply_through, target)
                    self._note_applied(applied)
        finally:
            self._validated_term = -1
            call.cancel()
            acker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acker

    def _note_applied(self, applied: int) -> None:
        while self._batch_ts and self._batch_ts[0][0] <= applied:
            _, ts = self._batch_ts.popleft()
            self.last_write_ms = ts

    def _check_error(self, resp: Any) -> None:
        if resp.HasField("error") and resp.error.code:
            err = from_proto(resp.error)
            if err.details.get("oplog_trimmed"):
                raise Resync(f"the source no longer has the entries needed: {err.message}")
            raise err

    async def _ack_loop(
        self, stub: replication_pb2_grpc.ReplicationServiceStub, source: str
    ) -> None:
        node = self.node
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ack_wake.wait(), ACK_INTERVAL_S)
            self._ack_wake.clear()
            if self._validated_term != node.term:
                continue  # acks only for a log that matched this primary's
            req = replication_pb2.WriteAcknowledgmentRequest(
                acks=[
                    replication_pb2.WriteAcknowledgment(
                        node_id=node.node_id, oplog_id=node.own_last, success=True
                    )
                ],
                term=node.term,
            )
            try:
                resp = await stub.AcknowledgeWrite(req, timeout=ACK_TIMEOUT_S)
            except grpc.RpcError as exc:
                log.debug("acknowledgement to %s failed: %s", source, exc.code())
                continue
            if resp.term > node.term:
                await node.observe_term(resp.term, f"acknowledgement answer from {source}")

    # ------------------------------------------------------------------ divergence

    async def _probe(
        self, stub: replication_pb2_grpc.ReplicationServiceStub, source: str, k: int
    ) -> bool:
        """Does the source's entry ``k`` have our term for it?"""
        term = self.node.oplog.term_at(k)
        if term is None:
            raise Resync(f"this member no longer has entry {k} to compare")
        call = stub.StreamOplog(self._request(k + 1, term), timeout=5.0)
        try:
            resp = await asyncio.wait_for(call.read(), timeout=5.0)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, target=source) from None
        finally:
            call.cancel()
        if resp is EOF:
            raise LauraError(ErrorCode.HOST_UNREACHABLE, f"{source} ended the probe stream")
        assert isinstance(resp, replication_pb2.ReplicationStreamResponse)
        self._check_error(resp)
        if resp.term > self.node.term:
            await self.node.observe_term(resp.term, f"probe of {source}")
        return not resp.diverged

    async def _reconcile(
        self, stub: replication_pb2_grpc.ReplicationServiceStub, source: str
    ) -> None:
        """Our log diverged from the source's: truncate to the last common entry, or
        RESYNC when entries we applied are not in the source's log."""
        from shard_stub.replica.node import run_in_thread

        oplog = self.node.oplog
        applied, last = oplog.applied, oplog.last().op_id
        if not await self._probe(stub, source, applied):
            raise Resync(f"applied entry {applied} is not in {source}'s log")
        lo, hi = applied, last - 1  # lo matches; the largest matching entry is in [lo, hi]
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if await self._probe(stub, source, mid):
                lo = mid
            else:
                hi = mid - 1
        log.warning(
            "oplog diverged from %s after op %d: dropping the unapplied entries %d..%d",
            source, lo, lo + 1, last,
        )
        await run_in_thread(oplog.truncate_after, lo)
        self.node.own_last = oplog.last().op_id
        while self._batch_ts and self._batch_ts[-1][0] > lo:
            self._batch_ts.pop()

    # ------------------------------------------------------------------ initial sync

    async def _initial_sync(
        self, stub: replication_pb2_grpc.ReplicationServiceStub, source: str, reason: str
    ) -> None:
        from shard_stub.replica.node import Role, run_in_thread

        node = self.node
        self._syncing = True
        node.caught_up = False
        await node._set_role(Role.RECOVERING, "initial sync")
        log.info("initial sync from %s: %s", source, reason)
        started = time.monotonic()
        call = stub.InitialSync(
            replication_pb2.InitialSyncRequest(replica_id=node.node_id),
            timeout=INITIAL_SYNC_MAX_S,
        )
        chunks: list[bytes] = []
        sync_point = 0
        complete = False
        logged = started
        try:
            while True:
                try:
                    resp = await asyncio.wait_for(call.read(), timeout=INITIAL_SYNC_IDLE_S)
                except TimeoutError:
                    raise LauraError(
                        ErrorCode.HOST_UNREACHABLE,
                        f"initial sync from {source}: nothing received for "
                        f"{INITIAL_SYNC_IDLE_S:g}s",
                    ) from None
                except grpc.RpcError as exc:
                    raise from_rpc_error(exc, target=source) from None
                if resp is EOF:
                    break
                assert isinstance(resp, replication_pb2.InitialSyncResponse)
                if resp.HasField("error") and resp.error.code:
                    raise from_proto(resp.error)
                if resp.sync_point_oplog_id:
                    sync_point = resp.sync_point_oplog_id
                if resp.data_chunk:
                    chunks.append(bytes(resp.data_chunk))
                now = time.monotonic()
                if now - logged >= PROGRESS_LOG_S:
                    logged = now
                    log.info("initial sync from %s: received %d of %d documents", source,
                             resp.documents, resp.total_documents)
                if resp.complete:
                    complete = True
                    break
        finally:
            call.cancel()
        if not complete:
            raise LauraError(
                ErrorCode.OPERATION_FAILED, f"initial sync from {source} ended before completion"
            )

        def progress(done: int, total: int) -> None:
            log.debug("initial sync: loaded %d of %d documents", done, total)

        await run_in_thread(initial_sync.restore, node.storage, chunks, sync_point, progress)
        oplog = node.oplog
        node.own_last = oplog.last().op_id
        self._batch_ts.clear()
        self._syncing = False
        log.info(
            "initial sync from %s done in %.1fs: sync point op %d, %d chunks", source,
            time.monotonic() - started, sync_point, len(chunks),
        )
        await node._set_role(Role.SECONDARY, "initial sync done")

    # ------------------------------------------------------------------ arbiters

    async def _arbiter_step(self) -> None:
        node = self.node
        source = node.sync_source()
        if source:
            stub = self._stub(source)
            req = replication_pb2.WriteAcknowledgmentRequest(
                acks=[replication_pb2.WriteAcknowledgment(node_id=node.node_id, success=True)],
                term=node.term,
            )
            try:
                resp = await stub.AcknowledgeWrite(req, timeout=ACK_TIMEOUT_S)
            except grpc.RpcError:
                node.primary_lost(source)
            else:
                if resp.term > node.term:
                    await node.observe_term(resp.term, f"acknowledgement answer from {source}")
                if not (resp.HasField("error") and resp.error.code) and resp.term == node.term:
                    info = node.peers.get(source)
                    node.leader_contact(info.node_id if info else "", source, resp.term)
                else:
                    node.primary_lost(source)
        await asyncio.sleep(ACK_INTERVAL_S)
