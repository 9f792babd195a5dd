"""The monitors of every shard of a process, keyed by shard id, with Hello over a
shared channel pool.

``get(shard_id)`` is a dict lookup that answers ``None`` for one-member shards, so
callers keep today's path for standalone shards and only consult a monitor for
replica sets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence

from lauradb.cluster import replset_pb2, shard_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.replset.monitor import (
    DEFAULT_BUFFER_WINDOW_S,
    HelloFn,
    ReplicaSetMonitor,
)
from lauradb.rpc.channels import ChannelPool
from lauradb.rpc.errors import from_proto

__all__ = ["ReplicaSets", "pool_hello", "validate_members"]


def pool_hello(pool: ChannelPool) -> HelloFn:
    """``ShardService.Hello`` on a member through ``pool``."""

    async def hello(address: str, timeout: float) -> replset_pb2.HelloResponse:
        stub = shard_pb2_grpc.ShardServiceStub(pool.get(address))
        resp: replset_pb2.HelloResponse = await stub.Hello(
            replset_pb2.HelloRequest(), timeout=timeout
        )
        if resp.error.code:
            raise from_proto(resp.error)
        return resp

    return hello


def validate_members(members: Iterable[str]) -> list[str]:
    """``host:port`` strings, deduplicated, order kept; BAD_VALUE naming a bad one."""
    out: list[str] = []
    for raw in members:
        m = raw.strip()
        host, sep, port = m.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise LauraError(ErrorCode.BAD_VALUE, f"member {raw!r} is not host:port")
        if m not in out:
            out.append(m)
    return out


class ReplicaSets:
    """shard id -> monitor, for the shards that are replica sets (2+ members)."""

    def __init__(
        self, hello: HelloFn, buffer_window: float = DEFAULT_BUFFER_WINDOW_S
    ) -> None:
        self._hello = hello
        self.buffer_window = buffer_window
        # shard id -> monitor; public so hot paths can test it without a method call
        self.monitors: dict[str, ReplicaSetMonitor] = {}
        self._monitors = self.monitors

    def __bool__(self) -> bool:
        return bool(self._monitors)

    def __contains__(self, shard_id: object) -> bool:
        return shard_id in self._monitors

    def get(self, shard_id: str) -> ReplicaSetMonitor | None:
        return self._monitors.get(shard_id)

    def items(self) -> list[tuple[str, ReplicaSetMonitor]]:
        return list(self._monitors.items())

    def update(self, shard_id: str, members: Sequence[str]) -> ReplicaSetMonitor | None:
        """Track ``shard_id``'s members (a new monitor only when they changed)."""
        members = list(dict.fromkeys(m for m in members if m))
        current = self._monitors.get(shard_id)
        if len(members) < 2:
            if current is not None:
                del self._monitors[shard_id]
                _close_later(current)
            return None
        if current is not None and list(current.members) == members:
            return current
        mon = ReplicaSetMonitor(shard_id, members, self._hello, buffer_window=self.buffer_window)
        if current is not None:
            # keep what we know about members that stay
            for addr, state in current.states.items():
                if addr in mon.states:
                    mon.states[addr] = state
            _close_later(current)
        self._monitors[shard_id] = mon
        with contextlib.suppress(RuntimeError):  # learn the primary before the first call
            task = asyncio.get_running_loop().create_task(mon.refresh())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return mon

    async def primary_address(self, shard_id: str, members: Sequence[str], seed: str) -> str:
        """The primary of ``shard_id`` (``seed`` for a standalone shard: no RPC)."""
        if len(members) < 2:
            return seed
        mon = self.update(shard_id, members)
        assert mon is not None
        return await mon.primary()

    def invalidate(self, shard_id: str, address: str) -> None:
        mon = self._monitors.get(shard_id)
        if mon is not None:
            mon.invalidate(address)

    def retain(self, shard_ids: Iterable[str]) -> None:
        keep = set(shard_ids)
        for sid in [s for s in self._monitors if s not in keep]:
            _close_later(self._monitors.pop(sid))

    async def close(self) -> None:
        monitors = list(self._monitors.values())
        self._monitors.clear()
        for m in monitors:
            await m.close()


def _close_later(mon: ReplicaSetMonitor) -> None:
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop().create_task(mon.close())
