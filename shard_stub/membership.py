"""Membership with the config server: register once, then heartbeat every second.

Runs in the background and never blocks serving: while the config server is down
the loop retries with exponential backoff (0.2 s .. 5 s); when the config server
no longer knows the node (NODE_NOT_FOUND, e.g. it lost its state) or after any
failure, the shard registers again before the next heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from lauradb.aio import wait_event
from lauradb.cluster import cluster_pb2, cluster_pb2_grpc
from lauradb.errors import LauraError
from lauradb.rpc.channels import ChannelPool
from lauradb.rpc.errors import from_proto, from_rpc_error

log = logging.getLogger("lauradb.shard.membership")

HEARTBEAT_INTERVAL_S = 1.0
CALL_TIMEOUT_S = 2.0
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0


def node_id_for(shard_id: str) -> str:
    """A standalone shard's node id (replica-set members: ``--node-id`` or
    ``shard-{shard_id}-{port}``, see ``ShardApp``)."""
    return f"shard-{shard_id}"


@dataclass(frozen=True)
class ReplicaStatus:
    """What a replica-set member reports in its registration and heartbeats."""

    replset: str
    role: cluster_pb2.NodeRole  # PRIMARY / SECONDARY / ARBITER
    term: int
    last_oplog_id: int
    commit_oplog_id: int
    priority: int


ReplicaStatusFn = Callable[[], ReplicaStatus]


class Membership:
    """RegisterNode + Heartbeat loop of one shard node."""

    def __init__(
        self,
        *,
        shard_id: str,
        host: str,
        port: int,
        config_address: str,
        pool: ChannelPool,
        data_path: Path | None = None,
        interval: float = HEARTBEAT_INTERVAL_S,
        node_id: str | None = None,
        replica_status: ReplicaStatusFn | None = None,
    ) -> None:
        self.shard_id = shard_id
        self.node_id = node_id or node_id_for(shard_id)
        self.replica_status = replica_status
        self._registered_role: cluster_pb2.NodeRole | None = None
        self.host = host
        self.port = port
        self.config_address = config_address
        self.pool = pool
        self.data_path = data_path
        self.interval = interval
        self.registered = False
        self.heartbeats = 0
        self.topology_version = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _stub(self) -> cluster_pb2_grpc.ClusterServiceStub:
        return cluster_pb2_grpc.ClusterServiceStub(self.pool.get(self.config_address))

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name=f"membership {self.node_id}")
        return self._task

    async def stop(self, deregister: bool = True) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if deregister and self.registered:
            try:
                await self._stub().DeregisterNode(
                    cluster_pb2.NodeDeregistrationRequest(
                        node_id=self.node_id, reason="shard shutting down"
                    ),
                    timeout=1.0,
                )
            except grpc.RpcError as exc:
                log.info("deregistration failed: %s", from_rpc_error(exc))
            self.registered = False

    async def run(self) -> None:
        backoff = BACKOFF_MIN_S
        failures = 0
        while not self._stop.is_set():
            try:
                if self.registered and self.replica_status is not None:
                    if self.replica_status().role != self._registered_role:
                        self.registered = False  # register again with the new role
                if not self.registered:
                    await self.register()
                await self.heartbeat()
                if failures:
                    log.warning("config server %s reachable again", self.config_address)
                failures = 0
                backoff = BACKOFF_MIN_S
                delay = self.interval
            except LauraError as err:
                failures += 1
                self.registered = False
                level = logging.WARNING if failures in (1, 10) or failures % 60 == 0 else logging.DEBUG
                log.log(level, "membership with %s failed (%d): %s", self.config_address, failures, err)
                delay = backoff
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            await wait_event(self._stop, delay)

    async def register(self) -> None:
        node = cluster_pb2.Node(
            id=self.node_id,
            host=self.host,
            port=self.port,
            role=cluster_pb2.SHARD,
            tags={"shard_id": self.shard_id},
            shard_id=self.shard_id,
        )
        if self.replica_status is not None:
            status = self.replica_status()
            node.role = status.role
            node.replset = status.replset
            node.term = status.term
            node.priority = status.priority
            node.tags["replset"] = status.replset
            self._registered_role = status.role
        try:
            resp = await self._stub().RegisterNode(
                cluster_pb2.NodeRegistrationRequest(node=node), timeout=CALL_TIMEOUT_S
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, target=self.config_address) from None
        if resp.HasField("error") and resp.error.code:
            raise from_proto(resp.error)
        self.registered = True
        self.topology_version = resp.topology.version
        log.info("registered as %s with %s%s", self.node_id, self.config_address,
                 f" ({cluster_pb2.NodeRole.Name(node.role)})" if self.replica_status else "")

    async def heartbeat(self) -> None:
        status = cluster_pb2.NodeStatus(role=cluster_pb2.SHARD, resources=self._resources())
        if self.replica_status is not None:
            rs = self.replica_status()
            status.role = rs.role
            status.replset = rs.replset
            status.term = rs.term
            status.last_oplog_id = rs.last_oplog_id
            status.commit_oplog_id = rs.commit_oplog_id
        req = cluster_pb2.HeartbeatRequest(
            node_id=self.node_id, timestamp=int(time.time() * 1000), status=status
        )
        try:
            resp = await self._stub().Heartbeat(req, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, target=self.config_address) from None
        if resp.HasField("error") and resp.error.code:
            raise from_proto(resp.error)
        self.heartbeats += 1
        self.topology_version = resp.topology.version

    def _resources(self) -> cluster_pb2.ResourceStats:
        stats = cluster_pb2.ResourceStats()
        if self.data_path is None:
            return stats
        used = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                used += os.stat(f"{self.data_path}{suffix}").st_size
        stats.disk_bytes_used = used
        with contextlib.suppress(OSError):
            stats.disk_bytes_total = shutil.disk_usage(self.data_path.parent).total
        return stats
