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

Nothing in an attempt waits unboundedly: every read has an idle bound, cancellations
always propagate (``waits``; Python 3.11's ``asyncio.wait_for`` can swallow them), and
the run loop watches the attempt: it is abandoned once the member knows of a newer
term or another primary while the source stays silent (e.g. the source was killed in a
way the stream does not notice). An abandoned attempt can no longer touch storage: its
storage calls check the attempt's generation under the storage write lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc import aio

from lauradb.cluster import replication_pb2, replication_pb2_grpc, replset_pb2, shard_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import from_proto, from_rpc_error
from shard_stub import initial_sync
from shard_stub.replica.waits import run_in_thread, stop_task, wait_event, with_timeout

if TYPE_CHECKING:
    from shard_stub.replica.node import ReplicaNode

log = logging.getLogger("lauradb.shard.replset.follower")

T = TypeVar("T")

EOF: Any = aio.EOF  # type: ignore[attr-defined]  # the end of a server stream

STREAM_MAX_S = 300.0  # a stream call is reopened at least this often (call deadline)
INITIAL_SYNC_MAX_S = 3600.0
INITIAL_SYNC_IDLE_S = 60.0
ACK_INTERVAL_S = 0.1
ACK_TIMEOUT_S = 1.0
PROGRESS_LOG_S = 2.0
WATCH_S = 0.1  # how often the run loop checks the running attempt
STALE_SILENCE_S = 0.5  # a source silent this long in an older term is abandoned
STOP_WAIT_S = 2.0  # how long to wait for a cancelled attempt / acker to finish
PEER_FRESH_S = 1.0  # a peer's Hello this recent counts for "another primary"


class Resync(Exception):
    """The member must be wiped and initial-synced (reason in the message)."""


class Abandoned(Exception):
    """The attempt was abandoned (a newer one, a pause): it must not touch storage."""


class Follower:
    def __init__(self, node: ReplicaNode) -> None:
        self.node = node
        self.last_write_ms = 0
        self._syncing = False
        self._paused = False
        self._attempt: asyncio.Task[None] | None = None
        self._generation = 0  # bumped when an attempt is abandoned (pause, stale)
        self._source = ""  # the running attempt's source
        self._source_term = 0  # the term that attempt follows (node's term at start)
        self._heard_at = 0.0  # monotonic: last message from that source
        self._in_storage = 0  # storage calls of attempts in progress (not "silence")
        self._kick = asyncio.Event()  # re-check the running attempt now
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
        self._generation += 1  # whatever still runs of it can no longer write
        attempt = self._attempt
        if attempt is not None and not await stop_task(attempt, STOP_WAIT_S):
            log.warning("the attempt on %s did not stop within %gs; left behind",
                        self._source, STOP_WAIT_S)

    def resume(self) -> None:
        self._paused = False

    def kick(self) -> None:
        """The member learned something about the primary or the term (a vote granted,
        a higher term, a Hello): re-check the running attempt now."""
        self._kick.set()

    def _stale(self, source: str) -> str:
        """Why the running attempt on ``source`` should be abandoned ("" = keep it)."""
        node = self.node
        if node.term <= self._source_term or self._in_storage:
            return ""  # storage work cannot be interrupted: abandoning gains nothing
        now = time.monotonic()
        for p in node.peers.values():
            if (
                p.address != source and p.is_primary and p.term >= node.term
                and now - p.seen_at < PEER_FRESH_S
            ):
                return f"{p.address} is primary of term {p.term}"
        silent = now - self._heard_at
        if silent >= STALE_SILENCE_S:
            return (f"term {node.term} began and {source} (term {self._source_term}) has "
                    f"been silent for {silent:.1f}s")
        return ""

    async def _watch(self, attempt: asyncio.Task[None], source: str, gen: int) -> str:
        """Wait for ``attempt`` to end (or to be abandoned by ``pause``); abandon it when
        it is stale. The reason when abandoned here, else ""."""
        while not attempt.done() and gen == self._generation:
            self._kick.clear()
            waiter = asyncio.ensure_future(self._kick.wait())
            try:
                await asyncio.wait({attempt, waiter}, timeout=WATCH_S,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if attempt.done():
                break
            why = self._stale(source)
            if why:
                self._generation += 1
                if not await stop_task(attempt, STOP_WAIT_S):
                    log.warning("the attempt on %s did not stop within %gs; left behind",
                                source, STOP_WAIT_S)
                return why
        return ""

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
            self._generation += 1
            gen = self._generation
            self._source, self._source_term = source, node.term
            self._heard_at = time.monotonic()
            attempt = asyncio.create_task(self._follow(source, gen), name=f"follow {source}")
            self._attempt = attempt
            try:
                abandoned = await self._watch(attempt, source, gen)
            except asyncio.CancelledError:
                self._generation += 1
                await stop_task(attempt, STOP_WAIT_S)
                raise
            finally:
                self._attempt = None
            if abandoned:
                log.info("following %s abandoned: %s", source, abandoned)
                node.primary_lost(source)
                continue
            if not attempt.done() or attempt.cancelled():
                continue  # paused (left behind if it did not stop: it cannot write)
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

    async def _storage(self, gen: int, fn: Callable[..., T], *args: Any) -> T:
        """Storage work of the attempt ``gen`` (replication threads), refused under the
        storage write lock once that attempt was abandoned."""
        node = self.node

        def guarded() -> T:
            with node.storage.write_lock():
                if gen != self._generation:
                    raise Abandoned(f"the attempt on {self._source} was abandoned")
                return fn(*args)

        self._in_storage += 1
        try:
            return await run_in_thread(guarded)
        finally:
            self._in_storage -= 1
            self._heard(gen)  # silence is counted from the end of storage work

    def _heard(self, gen: int) -> None:
        if gen == self._generation:
            self._heard_at = time.monotonic()

    async def _follow(self, source: str, gen: int) -> None:
        from shard_stub.replica.node import Role

        node = self.node
        oplog = node.oplog
        stub = self._stub(source)
        try:
            if oplog.sync_pending:
                await self._initial_sync(
                    stub, source, gen, "an earlier initial sync did not finish"
                )
            elif oplog.last().op_id == 0 and oplog.applied == 0:
                if await self._source_last_op(source) > 0:
                    await self._initial_sync(stub, source, gen, "this member has no data")
            await self._stream(stub, source, gen)
        except Resync as why:
            log.warning(
                "RESYNC from %s: %s (the entries this member has beyond the common point "
                "were never majority-committed)", source, why,
            )
            await self._initial_sync(stub, source, gen, f"resync: {why}")
        except Abandoned:
            return
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
        self, stub: replication_pb2_grpc.ReplicationServiceStub, source: str, gen: int
    ) -> None:
        from shard_stub.replica.node import Role

        node = self.node
        oplog = node.oplog
        last = oplog.last()
        call = stub.StreamOplog(self._request(last.op_id + 1, last.term), timeout=STREAM_MAX_S)
        acker = asyncio.create_task(self._ack_loop(stub, source, gen), name="acks")
        idle = node.step_down_timeout_s
        self._validated_term = -1
        announced = False
        try:
            while True:
                try:
                    resp = await with_timeout(call.read(), idle)
                except TimeoutError:
                    raise LauraError(
                        ErrorCode.HOST_UNREACHABLE, f"no message from {source} for {idle:g}s"
                    ) from None
                except grpc.RpcError as exc:
                    raise from_rpc_error(exc, target=source) from None
                if resp is EOF:
                    raise LauraError(
                        ErrorCode.HOST_UNREACHABLE, f"{source} ended the oplog stream"
                    )
                assert isinstance(resp, replication_pb2.ReplicationStreamResponse)
                if gen != self._generation:
                    return  # abandoned meanwhile
                self._heard(gen)
                self._check_error(resp)
                if resp.term < node.term:
                    raise LauraError(
                        ErrorCode.NOT_WRITABLE_PRIMARY,
                        f"{source} is primary of term {resp.term}, older than {node.term}",
                    )
                if resp.term > node.term:
                    await node.observe_term(resp.term, f"stream from {source}")
                if resp.diverged:
                    await self._reconcile(stub, source, gen)
                    return
                if node.role is Role.PRIMARY or node.term != resp.term:
                    return
                node.leader_contact(resp.primary_id, source, resp.term)
                self._validated_term = resp.term
                if gen == self._generation:
                    self._source_term = resp.term
                if not node.caught_up:
                    node.caught_up = True
                if not announced:
                    announced = True
                    log.info("following %s (term %d) from op %d", source, resp.term,
                             last.op_id + 1)
                if resp.entries:
                    entries = list(resp.entries)
                    await self._storage(gen, oplog.append, entries)
                    self._batch_ts.append((entries[-1].op_id, entries[-1].timestamp))
                    node.local_progress(entries[-1].op_id)
                    self._ack_wake.set()
                target = min(resp.commit_oplog_id, oplog.last().op_id)
                if target > node.commit_op_id:
                    node.set_commit(target)
                if target > oplog.applied:
                    applied = await self._storage(gen, oplog.apply_through, target)
                    self._note_applied(applied)
        finally:
            self._validated_term = -1
            call.cancel()
            if not await stop_task(acker, STOP_WAIT_S):
                log.warning("acknowledgements to %s did not stop within %gs", source,
                            STOP_WAIT_S)

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
        self, stub: replication_pb2_grpc.ReplicationServiceStub, source: str, gen: int
    ) -> None:
        node = self.node
        while gen == self._generation:
            await wait_event(self._ack_wake, ACK_INTERVAL_S)
            self._ack_wake.clear()
            if self._validated_term != node.term or gen != self._generation:
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
        self, stub: replication_pb2_grpc.ReplicationServiceStub, source: str, k: int,
        gen: int,
    ) -> bool:
        """Does the source's entry ``k`` have our term for it?"""
        term = self.node.oplog.term_at(k)
        if term is None:
            raise Resync(f"this member no longer has entry {k} to compare")
        call = stub.StreamOplog(self._request(k + 1, term), timeout=5.0)
        try:
            resp = await with_timeout(call.read(), 5.0)
        except TimeoutError:
            raise LauraError(
                ErrorCode.HOST_UNREACHABLE, f"{source} did not answer a log probe within 5s"
            ) from None
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, target=source) from None
        finally:
            call.cancel()
        if resp is EOF:
            raise LauraError(ErrorCode.HOST_UNREACHABLE, f"{source} ended the probe stream")
        assert isinstance(resp, replication_pb2.ReplicationStreamResponse)
        self._heard(gen)
        self._check_error(resp)
        if resp.term > self.node.term:
            await self.node.observe_term(resp.term, f"probe of {source}")
        return not resp.diverged

    async def _reconcile(
        self, stub: replication_pb2_grpc.ReplicationServiceStub, source: str, gen: int
    ) -> None:
        """Our log diverged from the source's: truncate to the last common entry, or
        RESYNC when entries we applied are not in the source's log."""
        oplog = self.node.oplog
        applied, last = oplog.applied, oplog.last().op_id
        if not await self._probe(stub, source, applied, gen):
            raise Resync(f"applied entry {applied} is not in {source}'s log")
        lo, hi = applied, last - 1  # lo matches; the largest matching entry is in [lo, hi]
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if await self._probe(stub, source, mid, gen):
                lo = mid
            else:
                hi = mid - 1
        log.warning(
            "oplog diverged from %s after op %d: dropping the unapplied entries %d..%d",
            source, lo, lo + 1, last,
        )
        await self._storage(gen, oplog.truncate_after, lo)
        self.node.own_last = oplog.last().op_id
        while self._batch_ts and self._batch_ts[-1][0] > lo:
            self._batch_ts.pop()

    # ------------------------------------------------------------------ initial sync

    async def _initial_sync(
        self, stub: replication_pb2_grpc.ReplicationServiceStub, source: str, gen: int,
        reason: str,
    ) -> None:
        from shard_stub.replica.node import Role

        node = self.node
        self._syncing = True
        try:
            await self._initial_sync_steps(stub, source, gen, reason)
        except BaseException:
            if not node.oplog.sync_pending:
                self._syncing = False  # nothing was wiped: the data is as before
            raise
        self._syncing = False
        await node._set_role(Role.SECONDARY, "initial sync done")

    async def _initial_sync_steps(
        self, stub: replication_pb2_grpc.ReplicationServiceStub, source: str, gen: int,
        reason: str,
    ) -> None:
        from shard_stub.replica.node import Role

        node = self.node
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
                    resp = await with_timeout(call.read(), INITIAL_SYNC_IDLE_S)
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
                self._heard(gen)
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

        await self._storage(
            gen, initial_sync.restore, node.storage, chunks, sync_point, progress
        )
        oplog = node.oplog
        node.own_last = oplog.last().op_id
        self._batch_ts.clear()
        log.info(
            "initial sync from %s done in %.1fs: sync point op %d, %d chunks", source,
            time.monotonic() - started, sync_point, len(chunks),
        )

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
