"""The replica-set member driver: roles, elections, the primary's bookkeeping.

One ``ReplicaNode`` per shard process started with ``--replset``. It owns

* the role (STARTUP, SECONDARY, PRIMARY, ARBITER, RECOVERING) and the durable
  term/vote (``state.DurableState``); every role change is logged as one line
  ``role change: replset=R node=N term=T role=ROLE`` (tests parse these);
* the election timer: a member that is electable (priority > 0, not an arbiter, not
  syncing) and has not heard from a primary within its randomized timeout runs a Raft
  pre-vote, then a real election (``RequestVote`` to every peer concurrently, short
  deadlines); on winning it applies its whole log tail, stamps its term on new entries
  and appends a no-op of its term before it accepts writes;
* as primary: each member's acknowledged op id and last contact, the commit point
  (majority, current-term rule), write-concern waiters, stepping down when it has not
  heard from a majority within the (maximum) election timeout or sees a higher term, and
  oplog retention;
* a peer monitor (``Hello`` to every peer) that learns peer ids/roles and where the
  primary is; the follower loop (``follower.Follower``) streams from it.

Writes reach storage only through ``run_write`` (role checked under the storage write
lock, so no entry is written once the node stepped down).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from lauradb.cluster import (
    cluster_pb2,
    replication_pb2,
    replication_pb2_grpc,
    replset_pb2,
    shard_pb2_grpc,
)
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import ChannelPool
from shard_stub.membership import ReplicaStatus
from shard_stub.replica import election
from shard_stub.replica.state import DurableState
from shard_stub.replica.waits import run_in_thread, wait_event
from shard_stub.replica.write_concern import WriteConcernSpec, WriteConcernWaiters
from shard_stub.storage import ShardStorage

log = logging.getLogger("lauradb.shard.replset")

T = TypeVar("T")

DEFAULT_ELECTION_TIMEOUT_MS = 500
DEFAULT_OPLOG_MAX_ENTRIES = 500_000
STEP_DOWN_MIN_S = 3.0  # see Node.step_down_timeout_s
TICK_S = 0.025
HEARTBEAT_S = 0.1  # stream heartbeats, acks, step-down checks
PEER_POLL_S = 0.1  # Hello to peers while no primary is followed
PEER_POLL_IDLE_S = 1.0  # ... and while one is
RETENTION_S = 2.0
LIVE_MEMBER_S = 60.0  # a member heard from this recently keeps the oplog it still needs
MAJORITY_READ_WAIT_S = 10.0
MAJORITY_READ_LOCKED_WAIT_S = 0.25  # longest a majority read holds the write lock waiting


class Role(enum.StrEnum):
    STARTUP = "STARTUP"
    SECONDARY = "SECONDARY"
    PRIMARY = "PRIMARY"
    ARBITER = "ARBITER"
    RECOVERING = "RECOVERING"


@dataclass(frozen=True)
class ReplicaConfig:
    replset: str
    node_id: str
    address: str  # this member's host:port as peers reach it
    peers: tuple[str, ...]  # the other members' host:port
    priority: int = 1
    arbiter: bool = False
    election_timeout_ms: int = DEFAULT_ELECTION_TIMEOUT_MS
    oplog_max_entries: int = DEFAULT_OPLOG_MAX_ENTRIES

    @property
    def voting_members(self) -> int:
        return 1 + len(self.peers)

    @property
    def members(self) -> list[str]:
        return sorted([self.address, *self.peers])


def validate_config(config: ReplicaConfig) -> None:
    """Clear errors for impossible member configurations (at start)."""
    if not config.replset.strip():
        raise LauraError(ErrorCode.BAD_VALUE, "--replset must not be empty")
    if len(set(config.peers)) != len(config.peers):
        raise LauraError(ErrorCode.BAD_VALUE, f"--peers lists a member twice: {config.peers}")
    if config.address in config.peers:
        raise LauraError(
            ErrorCode.BAD_VALUE,
            f"--peers must list the OTHER members, not this one ({config.address})",
        )
    if config.priority < 0:
        raise LauraError(ErrorCode.BAD_VALUE, "--priority must be >= 0")
    if config.arbiter and config.priority > 0:
        raise LauraError(ErrorCode.BAD_VALUE, "an --arbiter has priority 0 (pass --priority 0)")
    if config.election_timeout_ms < 50:
        raise LauraError(ErrorCode.BAD_VALUE, "--election-timeout-ms must be >= 50")
    if config.oplog_max_entries < 1:
        raise LauraError(ErrorCode.BAD_VALUE, "--oplog-max-entries must be positive")


@dataclass
class PeerInfo:
    address: str
    node_id: str = ""
    role: str = ""
    term: int = 0
    is_primary: bool = False
    last_op_id: int = 0
    seen_at: float = 0.0  # monotonic; 0: never answered


@dataclass
class Contact:
    acked: int = 0
    at: float = 0.0


@dataclass
class _Notifier:
    """Wakes stream senders when the oplog or the commit point advances."""

    event: asyncio.Event = field(default_factory=asyncio.Event)

    def fire(self) -> None:
        self.event.set()
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        await wait_event(self.event, timeout)


class ReplicaNode:
    """The replication control plane of one member (see the module docstring)."""

    def __init__(
        self,
        config: ReplicaConfig,
        storage: ShardStorage,
        pool: ChannelPool,
        data_dir: Any,
    ) -> None:
        validate_config(config)
        self.config = config
        self.node_id = config.node_id
        self.storage = storage
        self.pool = pool
        self.durable = DurableState(data_dir, config.replset)
        self.role = Role.STARTUP
        self.term = 0
        self.voted_for: str | None = None
        self.primary_id = ""  # node id of the primary (this node when PRIMARY)
        self.primary_address = ""
        self.commit_op_id = 0
        self.own_last = 0  # last durable op id in this member's oplog
        self.term_start = 0  # PRIMARY: op id of its no-op (first entry of its term)
        self.caught_up = False
        self.peers: dict[str, PeerInfo] = {a: PeerInfo(a) for a in config.peers}
        self.contacts: dict[str, Contact] = {}  # PRIMARY: by member node id
        self.leader_seen_at = 0.0  # last valid contact with a primary (monotonic)
        self._timer_from = time.monotonic()
        self._timeout_s = self._new_timeout()
        self._primary_since = 0.0
        self._term_lock = asyncio.Lock()
        self._role_lock = asyncio.Lock()
        self._commit_cond = threading.Condition()
        self.notifier = _Notifier()
        self.waiters = WriteConcernWaiters(self._satisfied, self._acknowledged)
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.role_listeners: list[Callable[[Role], None]] = []
        # Called in the switching worker thread under the storage write lock, BEFORE the
        # new role is visible (no write runs as primary before them): node-local state
        # that must be in place before the first write (e.g. migration critical sections).
        self.role_switch_hooks: list[Callable[[Role], None]] = []
        self._stopping = False
        self._poll_now = asyncio.Event()  # look for the primary at once
        from shard_stub.replica.follower import Follower  # circular at import time

        self.follower = Follower(self)

    # ------------------------------------------------------------------ properties

    @property
    def oplog(self) -> Any:
        oplog = self.storage.oplog
        if oplog is None:
            raise LauraError(ErrorCode.INTERNAL_ERROR, "replica set member without an oplog")
        return oplog

    @property
    def is_primary(self) -> bool:
        return self.role is Role.PRIMARY

    @property
    def electable(self) -> bool:
        return election.can_stand(self.config.priority, self.config.arbiter)

    @property
    def readable_secondary(self) -> bool:
        return self.role is Role.SECONDARY and self.caught_up

    @property
    def voting_members(self) -> int:
        return self.config.voting_members

    @property
    def data_bearing_members(self) -> int:
        arbiters = sum(1 for p in self.peers.values() if p.role == Role.ARBITER)
        return (0 if self.config.arbiter else 1) + len(self.peers) - arbiters

    def peer_ids(self) -> dict[str, str]:
        """node id -> address of the peers that answered Hello."""
        return {p.node_id: a for a, p in self.peers.items() if p.node_id}

    def _new_timeout(self) -> float:
        return election.election_timeout_ms(
            self.config.election_timeout_ms, self.config.priority, random.random()
        ) / 1000.0

    @property
    def min_timeout_s(self) -> float:
        return self.config.election_timeout_ms / 1000.0

    @property
    def step_down_timeout_s(self) -> float:
        """How long a primary goes without hearing from a majority before it steps
        down: 4 election timeouts, at least 3 s. Much longer than the followers' election
        timeout on purpose: a stepped-down primary interrupts its in-flight writes, and
        a primary's event loop stalled by a loaded machine (seen at load 13-20 on 2
        cores: a step-down every 1-2 s with 2 x 500 ms) must not look like a partition.
        Failover after a crash is driven by the followers' timeouts and does not wait
        for this."""
        return max(4 * self.config.election_timeout_ms / 1000.0, STEP_DOWN_MIN_S)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        state = await asyncio.to_thread(self.durable.load)
        self.term, self.voted_for = state.term, state.voted_for
        oplog = self.oplog
        last = await asyncio.to_thread(oplog.last)
        self.own_last = last.op_id
        self.storage.on_commit = self._on_commit_threaded
        self._timer_from = time.monotonic()
        await self._set_role(Role.ARBITER if self.config.arbiter else Role.SECONDARY, "started")
        log.info(
            "replica set %s member %s at %s: term %d, last op %d (term %d), applied %d, "
            "peers %s, priority %d%s",
            self.config.replset, self.node_id, self.config.address, self.term, last.op_id,
            last.term, oplog.applied, ", ".join(self.config.peers) or "-",
            self.config.priority, " (arbiter)" if self.config.arbiter else "",
        )
        self._spawn(self._election_loop(), "election timer")
        self._spawn(self._peer_monitor(), "peer monitor")
        self._spawn(self._retention_loop(), "oplog retention")
        self._spawn(self.follower.run(), "follower")

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"{name} {self.node_id}"))  # type: ignore[arg-type]

    async def stop(self) -> None:
        self._stopping = True
        self.storage.on_commit = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self.waiters.interrupt("the member is shutting down")

    # ------------------------------------------------------------------ roles and terms

    async def _set_role(self, role: Role, reason: str) -> None:
        """Change the role under the storage write lock (no write runs meanwhile)."""
        if role is self.role:
            return
        old = self.role

        def switch() -> None:
            with self.storage.write_lock():
                for hook in self.role_switch_hooks:
                    try:
                        hook(role)
                    except Exception:  # hooks must not break the driver
                        log.exception("role switch hook failed")
                self.role = role
                self.storage.is_primary = role is Role.PRIMARY

        await run_in_thread(switch)
        if role is Role.PRIMARY:
            self.primary_id = self.node_id
            self.primary_address = self.config.address
        elif old is Role.PRIMARY:
            self.primary_id = ""
            self.primary_address = ""
            self.waiters.interrupt(f"the primary stepped down ({reason})")
            with self._commit_cond:
                self._commit_cond.notify_all()
        log.info(
            "role change: replset=%s node=%s term=%d role=%s from=%s reason=%s",
            self.config.replset, self.node_id, self.term, role.value, old.value,
            reason.replace(" ", "_"),
        )
        self.notifier.fire()
        for listener in self.role_listeners:
            try:
                listener(role)
            except Exception:  # listeners must not break the driver
                log.exception("role listener failed")

    async def observe_term(self, term: int, reason: str = "") -> bool:
        """A higher term was seen: adopt it (durably) and stop being primary. True when
        the term changed."""
        if term <= self.term:
            return False
        async with self._term_lock:
            if term <= self.term:
                return False
            await run_in_thread(self.durable.save, term, None)
            old = self.term
            self.term, self.voted_for = term, None
            log.info("term %d -> %d (%s)", old, term, reason or "a higher term was seen")
        if self.role is Role.PRIMARY:
            await self._set_role(Role.SECONDARY, f"higher term {term} seen: {reason}")
        self.reset_timer()
        self._poll_now.set()
        self.follower.kick()  # an attempt on a source of an older term may be stale
        return True

    def reset_timer(self) -> None:
        self._timer_from = time.monotonic()
        self._timeout_s = self._new_timeout()

    def leader_contact(self, primary_id: str, address: str, term: int) -> None:
        """A valid message from the primary of ``term`` (== our term)."""
        now = time.monotonic()
        self.leader_seen_at = now
        self._timer_from = now
        self.primary_id = primary_id
        self.primary_address = address

    def primary_lost(self, address: str) -> None:
        if self.primary_address == address and self.role is not Role.PRIMARY:
            self.primary_address = ""
            self.primary_id = ""
        info = self.peers.get(address)
        if info is not None:
            info.is_primary = False  # until it says so again
        self._poll_now.set()

    def leader_recently_seen(self) -> bool:
        now = time.monotonic()
        if self.role is Role.PRIMARY:
            return not election.should_step_down(
                now, self._live_contacts(), self.voting_members, self.min_timeout_s
            ) or now - self._primary_since < self.min_timeout_s
        return bool(self.primary_id) and now - self.leader_seen_at < self.min_timeout_s

    def _live_contacts(self) -> dict[str, float]:
        ids = self.peer_ids()
        return {nid: c.at for nid, c in self.contacts.items() if nid in ids}

    # ------------------------------------------------------------------ votes

    async def handle_vote(self, req: replication_pb2.VoteRequest) -> replication_pb2.VoteResponse:
        async with self._term_lock:
            last = self.oplog.last()
            decision = election.decide_vote(
                current_term=self.term,
                voted_for=self.voted_for,
                voter_last=(last.term, last.op_id),
                voter_priority=self.config.priority,
                voter_electable=self.electable and self.caught_up,
                candidate_id=req.candidate_id,
                candidate_term=req.term,
                candidate_last=(req.last_oplog_term, req.last_oplog_id),
                candidate_priority=int(req.priority),
                leader_recently_seen=self.leader_recently_seen(),
                pre_vote=req.pre_vote,
            )
            higher = decision.term > self.term
            if not req.pre_vote and decision.changes(self.term, self.voted_for):
                await run_in_thread(self.durable.save, decision.term, decision.voted_for)
                self.term, self.voted_for = decision.term, decision.voted_for
        kind = "pre-vote" if req.pre_vote else "vote"
        log.info(
            "%s for %s in term %d: %s (%s)", kind, req.candidate_id, req.term,
            "granted" if decision.granted else "denied", decision.reason,
        )
        if higher and not req.pre_vote and self.role is Role.PRIMARY:
            await self._set_role(Role.SECONDARY, f"vote request of term {req.term}")
        if decision.granted and not req.pre_vote:
            self.reset_timer()
            self._poll_now.set()  # the candidate may be primary soon: find it quickly
            self.follower.kick()  # ... and stop waiting on a silent older source
        return replication_pb2.VoteResponse(
            vote_granted=decision.granted, term=self.term, voter_id=self.node_id,
            reason=decision.reason,
        )

    async def _ask_vote(
        self, address: str, req: replication_pb2.VoteRequest
    ) -> replication_pb2.VoteResponse | None:
        stub = replication_pb2_grpc.ReplicationServiceStub(self.pool.get(address))
        try:
            resp: replication_pb2.VoteResponse = await stub.RequestVote(
                req, timeout=max(0.2, self.min_timeout_s)
            )
            return resp
        except grpc.RpcError as exc:
            log.debug("vote request to %s failed: %s", address, exc.code())
            return None

    async def _election_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                if self.role is Role.PRIMARY:
                    await self._check_primary()
                elif (
                    self.role is Role.SECONDARY
                    and self.electable
                    and self.caught_up_for_election()
                    and time.monotonic() - self._timer_from > self._timeout_s
                ):
                    await self._run_election()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("election loop step failed")
                self.reset_timer()

    def caught_up_for_election(self) -> bool:
        # A member still in (or needing) an initial sync does not stand; an empty log in
        # a brand-new set does (every member is empty then).
        return not self.follower.syncing

    async def _run_election(self) -> None:
        self.reset_timer()
        last = self.oplog.last()
        pre_term = self.term + 1
        req = replication_pb2.VoteRequest(
            candidate_id=self.node_id, term=pre_term, last_oplog_id=last.op_id,
            priority=self.config.priority, last_oplog_term=last.term, pre_vote=True,
        )
        if self.config.peers:
            answers = await asyncio.gather(*(self._ask_vote(a, req) for a in self.config.peers))
        else:
            answers = []
        for a in answers:
            if a is not None and a.term > self.term and not a.vote_granted:
                # A member already in a later term: learn it (no vote asked in it yet).
                await self.observe_term(a.term, f"pre-vote answer from {a.voter_id}")
        granted = 1 + sum(1 for a in answers if a is not None and a.vote_granted)
        if not election.election_won(granted, self.voting_members):
            log.debug("pre-vote for term %d lost (%d of %d)", pre_term, granted,
                      self.voting_members)
            return
        if self.role is not Role.SECONDARY or self.leader_recently_seen():
            return
        async with self._term_lock:
            term = self.term + 1
            await run_in_thread(self.durable.save, term, self.node_id)
            self.term, self.voted_for = term, self.node_id
        self.reset_timer()
        last = self.oplog.last()
        log.info("election: standing for term %d (last op %d of term %d)", term, last.op_id,
                 last.term)
        req = replication_pb2.VoteRequest(
            candidate_id=self.node_id, term=term, last_oplog_id=last.op_id,
            priority=self.config.priority, last_oplog_term=last.term,
        )
        if self.config.peers:
            answers = await asyncio.gather(*(self._ask_vote(a, req) for a in self.config.peers))
        else:
            answers = []
        for a in answers:
            if a is not None and a.term > term:
                await self.observe_term(a.term, f"vote answer from {a.voter_id}")
                return
        granted = 1 + sum(1 for a in answers if a is not None and a.vote_granted)
        if self.term != term or self.role is not Role.SECONDARY:
            return
        if not election.election_won(granted, self.voting_members):
            log.info("election for term %d lost (%d of %d votes)", term, granted,
                     self.voting_members)
            return
        await self._become_primary(term, granted)

    async def _become_primary(self, term: int, votes: int) -> None:
        await self.follower.pause()
        try:
            if self.term != term or self.role is not Role.SECONDARY:
                return
            oplog = self.oplog

            def prepare() -> int:
                with self.storage.write_lock():
                    last = oplog.last()
                    oplog.apply_through(last.op_id)
                    self.storage.oplog_term = term
                    return int(oplog.noop(term))

            noop = await run_in_thread(prepare)
            if self.term != term:
                log.info("term moved on to %d while taking over term %d", self.term, term)
                return
            now = time.monotonic()
            self.term_start = noop
            self.own_last = max(self.own_last, noop)
            self.contacts = {}
            self._primary_since = now
            self.caught_up = True
            await self._set_role(Role.PRIMARY, f"won election with {votes} votes")
            self._recompute_commit()
        finally:
            self.follower.resume()

    async def _check_primary(self) -> None:
        now = time.monotonic()
        if now - self._primary_since < self.step_down_timeout_s:
            return
        if election.should_step_down(
            now, self._live_contacts(), self.voting_members, self.step_down_timeout_s
        ):
            await self._set_role(
                Role.SECONDARY,
                f"no contact with a majority for {self.step_down_timeout_s:g}s",
            )
            self.reset_timer()

    # ------------------------------------------------------------------ peers

    async def _peer_monitor(self) -> None:
        while True:
            if self.config.peers:
                await asyncio.gather(*(self._poll_peer(a) for a in self.config.peers))
            following = self.role is Role.PRIMARY or (
                bool(self.primary_id) and time.monotonic() - self.leader_seen_at < 1.0
            )
            await wait_event(self._poll_now, PEER_POLL_IDLE_S if following else PEER_POLL_S)
            self._poll_now.clear()

    async def _poll_peer(self, address: str) -> None:
        stub = shard_pb2_grpc.ShardServiceStub(self.pool.get(address))
        try:
            resp: replset_pb2.HelloResponse = await stub.Hello(
                replset_pb2.HelloRequest(), timeout=0.5
            )
        except grpc.RpcError:
            return
        if resp.replset and resp.replset != self.config.replset:
            log.warning("peer %s belongs to replica set %s, not %s", address, resp.replset,
                        self.config.replset)
            return
        info = self.peers[address]
        info.node_id, info.role, info.term = resp.node_id, resp.role, resp.term
        info.is_primary, info.last_op_id = resp.is_primary, resp.last_op_id
        info.seen_at = time.monotonic()
        if resp.term > self.term:
            await self.observe_term(resp.term, f"Hello from {address}")
        if resp.is_primary and address != self.primary_address:
            self.follower.kick()  # following another member (or none): re-check

    def sync_source(self) -> str:
        """The address to stream from: the primary we follow, else one a peer reports."""
        if self.primary_address and self.primary_address != self.config.address:
            return self.primary_address
        now = time.monotonic()
        best: PeerInfo | None = None
        for p in self.peers.values():
            if p.is_primary and p.term >= self.term and now - p.seen_at < 3.0:
                if best is None or p.term > best.term:
                    best = p
        return best.address if best is not None else ""

    def peer_last_op(self, address: str) -> int:
        info = self.peers.get(address)
        return info.last_op_id if info is not None else 0

    # ------------------------------------------------------------------ primary progress

    def _on_commit_threaded(self, op_id: int) -> None:
        loop = self._loop
        if loop is None or self._stopping:
            return
        with contextlib.suppress(RuntimeError):  # loop closed at shutdown
            loop.call_soon_threadsafe(self.local_progress, op_id)

    def local_progress(self, op_id: int) -> None:
        """This member wrote (primary) or appended (follower) entries up to ``op_id``."""
        if op_id > self.own_last:
            self.own_last = op_id
        if self.role is Role.PRIMARY:
            self._recompute_commit()
        self.notifier.fire()

    def record_contact(self, node_id: str, acked: int | None = None) -> None:
        """A member pulled from or acknowledged to this primary."""
        if node_id not in self.peer_ids():
            return  # not (yet) known as a member: neither liveness nor acks count
        c = self.contacts.setdefault(node_id, Contact())
        c.at = time.monotonic()
        if acked is not None and acked > c.acked:
            c.acked = acked
            self._recompute_commit()

    def peer_acks(self) -> dict[str, int]:
        ids = self.peer_ids()
        return {nid: c.acked for nid, c in self.contacts.items() if nid in ids}

    def _recompute_commit(self) -> None:
        if self.role is not Role.PRIMARY:
            return
        new = election.commit_point(
            self.own_last, self.peer_acks(), self.voting_members, self.term_start,
            self.commit_op_id,
        )
        if new > self.commit_op_id:
            self.set_commit(new)
        self.waiters.notify()

    def set_commit(self, op_id: int) -> None:
        if op_id <= self.commit_op_id:
            return
        with self._commit_cond:
            self.commit_op_id = op_id
            self._commit_cond.notify_all()
        self.notifier.fire()

    def _satisfied(self, op_id: int, spec: WriteConcernSpec) -> bool:
        if self.role is not Role.PRIMARY:
            return False
        if spec.w is None:
            return self.commit_op_id >= op_id
        return self._acknowledged(op_id) >= spec.w

    def _acknowledged(self, op_id: int) -> int:
        return election.acknowledged_by(op_id, self.own_last, self.peer_acks().values())

    # ------------------------------------------------------------------ writes and reads

    def require_primary(self, what: str = "writes") -> None:
        if self.role is not Role.PRIMARY:
            hint = f"; the primary is {self.primary_address}" if self.primary_address else ""
            raise LauraError(
                ErrorCode.NOT_WRITABLE_PRIMARY,
                f"member {self.node_id} of replica set {self.config.replset} is "
                f"{self.role.value}, not the primary: it accepts no {what}{hint}",
                {"primary": self.primary_address} if self.primary_address else None,
            )

    async def run_write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a storage write in a thread, the role checked under the write lock."""
        term = self.term

        def guarded() -> T:
            with self.storage.write_lock():
                if self.role is not Role.PRIMARY or self.term != term:
                    self.require_primary()
                    raise LauraError(
                        ErrorCode.INTERRUPTED_DUE_TO_REPL_STATE_CHANGE,
                        f"the term changed from {term} to {self.term} before the write ran",
                    )
                return fn(*args, **kwargs)

        return await asyncio.to_thread(guarded)

    async def wait_write_concern(
        self, op_id: int, spec: WriteConcernSpec, max_wait_s: float | None
    ) -> replset_pb2.WriteConcernError | None:
        self.local_progress(op_id)  # the commit hook may not have run on the loop yet
        return await self.waiters.wait(op_id, spec, max_wait_s)

    def majority_read(self, fn: Callable[[], T], timeout_s: float = MAJORITY_READ_WAIT_S) -> T:
        """(In a worker thread) run ``fn`` on a snapshot holding only majority-committed
        writes: under the storage write lock (no write can start) once the commit point
        covers the last op id. The lock is held only briefly: first wait WITHOUT it for
        the entries written so far to commit, then take it and wait at most
        ``MAJORITY_READ_LOCKED_WAIT_S`` for the few written meanwhile; if they are not
        committed by then, let go (a step-down or writes may need the lock) and start
        over, until ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._wait_commit(self.oplog.last().op_id, deadline)
            with self.storage.write_lock():
                target = self.oplog.last().op_id
                locked_deadline = min(deadline, time.monotonic() + MAJORITY_READ_LOCKED_WAIT_S)
                if self._wait_commit(target, locked_deadline, final=locked_deadline >= deadline):
                    return fn()

    def _wait_commit(self, target: int, deadline: float, final: bool = True) -> bool:
        """Wait until the commit point reaches ``target``; False at ``deadline`` unless
        ``final`` (then EXCEEDED_TIME_LIMIT). NOT_WRITABLE_PRIMARY once not primary."""
        with self._commit_cond:
            while self.commit_op_id < target:
                if self.role is not Role.PRIMARY:
                    self.require_primary("majority reads")
                left = deadline - time.monotonic()
                if left <= 0:
                    if not final:
                        return False
                    raise LauraError(
                        ErrorCode.EXCEEDED_TIME_LIMIT,
                        f"read concern majority: op {target} not majority-committed "
                        f"in time (commit point {self.commit_op_id})",
                    )
                self._commit_cond.wait(min(left, 0.1))
        return True

    # ------------------------------------------------------------------ retention

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(RETENTION_S)
            try:
                keep = self._keep_from()
                oplog = self.oplog
                if keep > oplog.first_op_id() > 0:
                    n = await run_in_thread(oplog.trim, keep)
                    if n:
                        log.debug("oplog: trimmed %d entries before %d", n, keep)
            except asyncio.CancelledError:
                raise
            except LauraError as err:
                log.debug("oplog retention failed: %s", err)

    def _keep_from(self) -> int:
        oplog = self.oplog
        last = self.own_last
        applied = oplog.applied
        bound = last - self.config.oplog_max_entries + 1  # never longer than this
        if self.role is Role.PRIMARY:
            # Keep what every data-bearing member still needs; a member not heard from
            # for LIVE_MEMBER_S (since this primary took over) no longer holds it back.
            now = time.monotonic()
            needed: list[int] = []
            for peer in self.peers.values():
                if peer.role == Role.ARBITER:
                    continue
                c = self.contacts.get(peer.node_id) if peer.node_id else None
                heard = c.at if c is not None and c.at else self._primary_since
                if now - heard < LIVE_MEMBER_S:
                    needed.append(c.acked if c is not None else 0)
            keep = min([self.commit_op_id, *needed])
        else:
            keep = 0
        return min(max(keep, bound), applied)

    # ------------------------------------------------------------------ Hello

    def member_status(self) -> ReplicaStatus:
        """For registration and heartbeats with the config server."""
        role = {
            Role.PRIMARY: cluster_pb2.PRIMARY,
            Role.ARBITER: cluster_pb2.ARBITER,
        }.get(self.role, cluster_pb2.SECONDARY)
        return ReplicaStatus(
            replset=self.config.replset, role=role, term=self.term,
            last_oplog_id=self.own_last, commit_oplog_id=self.commit_op_id,
            priority=self.config.priority,
        )

    def hello(self) -> replset_pb2.HelloResponse:
        oplog = self.oplog
        return replset_pb2.HelloResponse(
            node_id=self.node_id,
            replset=self.config.replset,
            role=self.role.value,
            is_primary=self.role is Role.PRIMARY,
            term=self.term,
            primary_address=self.primary_address,
            members=self.config.members,
            last_applied_op_id=oplog.applied,
            last_op_id=self.own_last,
            commit_op_id=self.commit_op_id,
            caught_up=self.role is Role.PRIMARY or self.readable_secondary,
            last_write_ms=self.follower.last_write_ms,
            address=self.config.address,
        )
