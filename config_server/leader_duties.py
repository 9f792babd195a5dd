"""What only the leading config server does, and how the others defer to it.

Several config servers may share one etcd store (``--store etcd://...``). Any of them
answers every RPC: reads come from its own mirror of the store, and metadata changes
asked for by an RPC (AddShard, ShardCollection, SplitChunk, CommitChunkMigration,
RegisterNode, ...) are etcd transactions guarded by revision compares, safe from any
server. What must run in ONE place runs on the leader only (``Leadership``: an etcd
lease; with SQLite the single server leads from the start):

- the background duties: the balancer loop (auto-splits, migrations, shard draining,
  primary moves) and the failure detector's "node down" decisions;
- the orchestration RPCs whose state lives in the leader's memory: MigrateChunk (the
  migration task that finishes the row), MovePrimary / CommitMovePrimary (the running
  primary moves), SetBalancerState / GetBalancerStatus (the balancer's flags and
  counters), RemoveShard (wakes the balancer). A non-leader forwards them to the
  leader (the advertised address in the leader key), marked with the
  ``lauradb-forwarded-by`` metadata so a forwarded call is never forwarded again.
  Heartbeats a non-leader receives are handled locally and also forwarded to the
  leader in the background: its failure detector sees every node.

``LeaderDuties`` campaigns, and on winning: makes its mirror current, sets the store's
fence (every commit of this process then requires its leader key, so a deposed
leader's late writes fail with NOT_WRITABLE_PRIMARY), decides the migrations left
"running" by a previous leader (committed if the recipient owns the chunk, otherwise
failed and the recipient told to abort: ``Migrator.recover``), re-arms the failure
detector (every up node gets a full timeout) and starts the loops. When the lease is
lost (``Leadership`` steps down a margin before etcd can expire it) the loops are
cancelled at once, the fence removed, and the server campaigns again. A migration task
already running on the deposed leader is left to end: its donor's commit and its final
row write are revision-guarded transactions, and the new leader has marked the row
failed already (so the donor's commit is refused and it keeps the chunk), unless the
commit won the race (the row is then committed): either way one owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from config_server.leadership import AlwaysLeader, Leadership
from config_server.store import MetadataStore
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import ChannelPool
from lauradb.rpc.errors import from_rpc_error

log = logging.getLogger("lauradb.config.leader")

FORWARDED_KEY = "lauradb-forwarded-by"
LEADER_CACHE_S = 1.0  # how long a looked-up leader address is trusted
LEADER_POLL_S = 0.2  # while nobody leads (an election), look again this often
FORWARD_TIMEOUT_S = 30.0  # a forwarded call without a deadline of its own
BACKGROUND_FORWARD_S = 1.0  # deadline of a forwarded heartbeat

Context = aio.ServicerContext[Any, Any]


def forwarded_by(context: Context | None) -> str:
    """The config server that forwarded this call ("" when a client made it)."""
    if context is None:
        return ""
    for key, value in context.invocation_metadata() or ():
        if key == FORWARDED_KEY:
            return value if isinstance(value, str) else value.decode()
    return ""


class LeaderDuties:
    """See the module doc. ``gain``/``lose`` start and stop the leader's work."""

    def __init__(
        self,
        leadership: Leadership,
        store: MetadataStore,
        pool: ChannelPool,
        *,
        address: str,
        gain: Callable[[], Awaitable[None]],
        lose: Callable[[], Awaitable[None]],
    ) -> None:
        self.leadership = leadership
        self.store = store
        self.pool = pool
        self.address = address
        self._gain = gain
        self._lose = lose
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._leader_cache: tuple[float, str] | None = None
        self._background: dict[str, asyncio.Task[None]] = {}
        self.terms = 0  # how many times this server became leader
        leadership.on_loss(self._lost.set)

    @property
    def single(self) -> bool:
        """The only config server (SQLite): leads from the start, forwards nothing."""
        return isinstance(self.leadership, AlwaysLeader)

    @property
    def is_leader(self) -> bool:
        return self.leadership.is_leader

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """SQLite: lead now (before serving, as a restart always did). etcd: campaign
        in the background."""
        if self.single:
            await self.leadership.campaign()
            await self._take_over()
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="config-leadership"
        )

    async def _take_over(self) -> None:
        self.terms += 1
        fence = self.leadership.fence()
        await asyncio.to_thread(self.store.sync)
        if fence is not None:
            set_fence = getattr(self.store, "set_fence", None)
            if set_fence is not None:
                set_fence(*fence)
        await self._gain()

    async def _step_down(self) -> None:
        try:
            await self._lose()
        finally:
            set_fence = getattr(self.store, "set_fence", None)
            if set_fence is not None:
                set_fence(None)

    async def _run(self) -> None:
        while not self._closed:
            self._lost.clear()
            try:
                await self.leadership.campaign()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                log.warning("leader election failed: %s; trying again", exc)
                await asyncio.sleep(LEADER_POLL_S)
                continue
            started = time.monotonic()
            log.info("%s is the leader config server: starting the balancer and "
                     "the failure detector", self.address)
            self._leader_cache = None
            try:
                await self._take_over()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("taking over as leader failed; resigning")
                await self.leadership.resign()
            log.debug("take-over done in %.3fs", time.monotonic() - started)
            await self._lost.wait()
            log.warning("%s no longer leads: stopping the balancer and the failure "
                        "detector", self.address)
            self._leader_cache = None
            await self._step_down()

    async def close(self) -> None:
        """Stop leading (the lease is revoked: another server takes over at once)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for pending in list(self._background.values()):
            pending.cancel()
        with contextlib.suppress(Exception):
            await self._step_down()
        with contextlib.suppress(Exception):
            await self.leadership.close()

    # ------------------------------------------------------------------ the leader

    async def leader_address(self, *, wait: float = 0.0) -> str:
        """The leading config server's address ("" when nobody leads). ``wait``:
        during an election, look again until someone leads or that many seconds
        passed."""
        if self.is_leader:
            return self.address
        if self.single:
            return ""
        deadline = time.monotonic() + wait
        while True:
            cached = self._leader_cache
            now = time.monotonic()
            if cached is not None and now - cached[0] < LEADER_CACHE_S and cached[1]:
                return cached[1]
            try:
                leader = await self.leadership.leader() or ""
            except Exception as exc:
                log.debug("cannot read the leader key: %s", exc)
                leader = ""
            self._leader_cache = (time.monotonic(), leader)
            if leader or time.monotonic() >= deadline:
                return leader
            await asyncio.sleep(LEADER_POLL_S)

    async def forward(
        self,
        service: str,
        method: str,
        request: Any,
        response_type: Any,
        context: Context | None,
    ) -> Any | None:
        """None: this server leads (or is the only one): handle the call here.
        Otherwise the leader's answer to the same call (its errors re-raised)."""
        if self.single or self.is_leader:
            return None
        if forwarded_by(context):
            raise LauraError(
                ErrorCode.NOT_WRITABLE_PRIMARY,
                f"config server {self.address} is not the leader (a forwarded "
                f"{method} reached it); retry",
            )
        remaining = context.time_remaining() if context is not None else None
        budget = FORWARD_TIMEOUT_S if remaining is None else max(remaining - 0.05, 0.05)
        started = time.monotonic()
        wait = min(budget / 2, max(self.leadership.ttl, 1.0) + 1.0)
        leader = await self.leader_address(wait=wait)
        if self.is_leader:  # won an election meanwhile
            return None
        if not leader or leader == self.address:
            raise LauraError(
                ErrorCode.NOT_WRITABLE_PRIMARY,
                f"no config server leads right now (an election is under way): "
                f"{method} needs the leader; retry",
            )
        timeout = max(budget - (time.monotonic() - started), 0.05)
        call = self.pool.get(leader).unary_unary(
            f"/{service}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        try:
            return await call(request, timeout=timeout, metadata=((FORWARDED_KEY, self.address),))
        except grpc.RpcError as exc:
            self._leader_cache = None
            raise from_rpc_error(exc, target=f"leader config server {leader}") from None

    def forward_in_background(
        self, service: str, method: str, request: Any, response_type: Any, key: str
    ) -> None:
        """Send a copy of this call to the leader without waiting (heartbeats); at most
        one in flight per ``key``; failures ignored (the next one will do)."""
        if self.single or self.is_leader or key in self._background:
            return

        async def send() -> None:
            try:
                leader = await self.leader_address()
                if not leader or leader == self.address:
                    return
                call = self.pool.get(leader).unary_unary(
                    f"/{service}/{method}",
                    request_serializer=type(request).SerializeToString,
                    response_deserializer=response_type.FromString,
                )
                await call(
                    request, timeout=BACKGROUND_FORWARD_S,
                    metadata=((FORWARDED_KEY, self.address),),
                )
            except grpc.RpcError as exc:
                log.debug("forwarding %s to the leader failed: %s", method, exc.code())
                self._leader_cache = None
            except Exception as exc:
                log.debug("forwarding %s to the leader failed: %s", method, exc)
            finally:
                self._background.pop(key, None)

        self._background[key] = asyncio.get_running_loop().create_task(
            send(), name=f"forward-{method}-{key}"
        )
