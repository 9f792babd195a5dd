"""Wiring: metadata store, catalog, services and the RPC server."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from config_server import metrics
from config_server.balancer import Balancer, BalancerSettings
from config_server.catalog import Catalog
from config_server.cluster_service import ClusterService
from config_server.config_service import ConfigService
from config_server.failure_detector import FailureDetector
from config_server.leader_duties import LeaderDuties
from config_server.leadership import DEFAULT_TTL, AlwaysLeader, EtcdLeadership, Leadership
from config_server.migrations import Migrator
from config_server.move_primary import PrimaryMover
from config_server.shard_notifier import ShardNotifier
from config_server.shard_removal import ShardRemoval
from config_server.shard_rpc import ShardRpc
from config_server.store import open_store
from lauradb.cluster import cluster_pb2, cluster_pb2_grpc, routing_pb2, routing_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.replset import ReplicaSets, pool_hello
from lauradb.rpc.channels import ChannelPool
from lauradb.rpc.server import RpcServer

log = logging.getLogger("lauradb.config")

CLUSTER_SERVICE = cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name
CONFIG_SERVICE = routing_pb2.DESCRIPTOR.services_by_name["ConfigService"].full_name


class ConfigServerApp:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        data_dir: str | Path,
        store: str = "sqlite",
        heartbeat_timeout: float = 5.0,
        metrics_port: int | None = None,
        balancer: BalancerSettings | None = None,
        advertise_host: str | None = None,
        lease_ttl: float = DEFAULT_TTL,
    ) -> None:
        self.store_spec = store
        self.advertise_host = advertise_host or _advertised_host(host)
        self.lease_ttl = lease_ttl
        self.duties: LeaderDuties | None = None
        self.store = open_store(store, data_dir)
        self.catalog = Catalog(self.store)
        self.pool = ChannelPool()
        # primaries of replica-set shards, shared by every config -> shard call
        self.replsets = ReplicaSets(pool_hello(self.pool))
        self.notifier = ShardNotifier(self.pool, replsets=self.replsets)
        self.detector = FailureDetector(self.catalog, timeout=heartbeat_timeout)
        self.shard_rpc = ShardRpc(self.pool, self.replsets)
        self.migrator = Migrator(self.catalog, self.notifier, self.shard_rpc)
        self.mover = PrimaryMover(self.catalog, self.notifier, self.shard_rpc)
        self.removal = ShardRemoval(
            self.catalog, lambda sid: self.balancer.blocked_databases(sid), moves_primaries=True
        )
        self.balancer = Balancer(
            self.catalog, self.migrator, self.notifier, self.shard_rpc, self.removal, balancer,
            self.mover,
        )
        metrics.track_topology_version(self.catalog.topology_version)
        self.server = RpcServer(
            name="lauradb-config", host=host, port=port, metrics_port=metrics_port
        )
        self.cluster_service = ClusterService(self.catalog, self.detector, pool_hello(self.pool))
        self.server.add_service(
            cluster_pb2_grpc.add_ClusterServiceServicer_to_server,
            self.cluster_service,
            CLUSTER_SERVICE,
        )
        self.config_service = ConfigService(
            self.catalog, self.notifier, self.migrator, self.balancer, self.removal,
            self.mover, hello=pool_hello(self.pool),
        )
        self.server.add_service(
            routing_pb2_grpc.add_ConfigServiceServicer_to_server,
            self.config_service,
            CONFIG_SERVICE,
        )
        self.server.on_stop(self._close)

    # ------------------------------------------------------------------ leadership

    def _leadership(self, address: str) -> Leadership:
        if self.store_spec.startswith("etcd://"):
            return EtcdLeadership(self.store_spec, address, ttl=self.lease_ttl)
        return AlwaysLeader(address)

    async def _lead(self) -> None:
        """This server became the leader: decide the migrations a previous leader (or
        process) left running, then run the balancer and the failure detector."""
        self.balancer.reload_enabled()
        self.detector.rearm()
        self.migrator.recover()
        self.detector.start()
        self.balancer.start()

    async def _follow(self) -> None:
        """Leadership lost (or shutting down): stop the leader's loops."""
        await self.balancer.stop()
        await self.detector.stop()

    async def _close(self) -> None:
        if self.duties is not None:
            await self.duties.close()
        await self.balancer.stop()
        await self.migrator.close()
        await self.detector.stop()
        await self.replsets.close()
        await self.pool.close()
        self.store.close()

    async def start(self) -> int:
        try:
            port = await self.server.start()
        except RuntimeError as exc:  # grpc raises this when the port cannot be bound
            raise LauraError(
                ErrorCode.HOST_UNREACHABLE,
                f"cannot listen on {self.server.host}:{self.server.port}: {exc}",
            ) from None
        address = f"{self.advertise_host}:{port}"
        self.duties = LeaderDuties(
            self._leadership(address), self.store, self.pool, address=address,
            gain=self._lead, lose=self._follow,
        )
        self.config_service.leader = self.duties
        self.cluster_service.leader = self.duties
        await self.duties.start()
        await self.server.set_serving(True)
        return port

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop cleanly."""
        try:
            await self.start()
        except BaseException:
            await self._close()
            raise
        self.server.install_signal_handlers()
        await self.server.wait()


def _advertised_host(host: str) -> str:
    """How other config servers reach this one (in the leader key): ``host``, or the
    machine's host name when listening on every interface."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        return socket.gethostname()
    return host
