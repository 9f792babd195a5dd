"""Wiring of a shard node: storage, metadata cache, cursors, service, membership."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import grpc

from lauradb.cluster import (
    replication_pb2_grpc,
    router_ext_pb2,
    routing_pb2,
    routing_pb2_grpc,
    shard_pb2_grpc,
    transaction_pb2_grpc,
)
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import ChannelPool
from lauradb.rpc.errors import from_rpc_error
from lauradb.rpc.server import RpcServer
from shard_stub import metrics
from shard_stub.cursors import CursorManager
from shard_stub.membership import Membership, node_id_for
from shard_stub.metadata import FetchShardMap, ShardMetadata
from shard_stub.migration_settings import MigrationSettings
from shard_stub.migrations import Migrations
from shard_stub.oplog import Oplog
from shard_stub.replica.node import (
    DEFAULT_ELECTION_TIMEOUT_MS,
    DEFAULT_OPLOG_MAX_ENTRIES,
    ReplicaConfig,
    ReplicaNode,
    Role,
)
from shard_stub.replica.service import SERVICE_NAME as REPLICATION_SERVICE_NAME
from shard_stub.replica.service import ReplicationServicer
from shard_stub.retry_records import DEFAULT_MAX_RECORDS, DEFAULT_TTL_S, RetryPruner
from shard_stub.service import SERVICE_NAME, FetchIndexes, ShardServicer
from shard_stub.storage import ShardStorage
from shard_stub.transactions.coordinator import Coordinator
from shard_stub.transactions.participant import (
    DEFAULT_LOCK_WAIT_S,
    Participant,
    ParticipantSettings,
)
from shard_stub.transactions.peers import TxnPeers
from shard_stub.transactions.records import TxnRecords
from shard_stub.transactions.service import SERVICE_NAME as TXN_SERVICE_NAME
from shard_stub.transactions.service import TransactionServicer

log = logging.getLogger("lauradb.shard")

CONFIG_CALL_TIMEOUT_S = 5.0
CURSOR_REAP_INTERVAL_S = 30.0


def config_fetcher(pool: ChannelPool, config_address: str) -> FetchShardMap:
    """ConfigService.GetShardMap on the config server; failures as LauraError."""

    async def fetch(req: routing_pb2.GetShardMapRequest) -> routing_pb2.GetShardMapResponse:
        stub = routing_pb2_grpc.ConfigServiceStub(pool.get(config_address))
        try:
            resp: routing_pb2.GetShardMapResponse = await stub.GetShardMap(
                req, timeout=CONFIG_CALL_TIMEOUT_S
            )
        except grpc.RpcError as exc:
            err = from_rpc_error(exc, target=config_address)
            if err.code in (ErrorCode.EXCEEDED_TIME_LIMIT, ErrorCode.HOST_UNREACHABLE):
                raise LauraError(
                    ErrorCode.HOST_UNREACHABLE,
                    f"config server {config_address} unreachable, cannot verify placement "
                    f"of {req.database}.{req.collection}: {err.message}",
                ) from None
            raise err from None
        return resp

    return fetch


def config_index_fetcher(pool: ChannelPool, config_address: str) -> FetchIndexes:
    """ConfigService.GetCollectionIndexes on the config server; failures as LauraError."""

    async def fetch(database: str, collection: str) -> list[router_ext_pb2.IndexSpec]:
        stub = routing_pb2_grpc.ConfigServiceStub(pool.get(config_address))
        req = router_ext_pb2.GetCollectionIndexesRequest(
            database=database, collection=collection
        )
        try:
            resp = await stub.GetCollectionIndexes(req, timeout=CONFIG_CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            err = from_rpc_error(exc, target=config_address)
            if err.code in (ErrorCode.EXCEEDED_TIME_LIMIT, ErrorCode.HOST_UNREACHABLE):
                raise LauraError(
                    ErrorCode.HOST_UNREACHABLE,
                    f"config server {config_address} unreachable, cannot read the indexes "
                    f"recorded for {database}.{collection}: {err.message}",
                ) from None
            raise err from None
        return list(resp.indexes)

    return fetch


def lock_data_dir(data_dir: Path) -> int:
    """An exclusive lock on ``DIR/shard.lock`` (released when the process dies)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / "shard.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LauraError(
            ErrorCode.OPERATION_FAILED, f"cannot use data directory {data_dir}: {exc}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise LauraError(
            ErrorCode.OPERATION_FAILED,
            f"data directory {data_dir} is in use by another shard process",
        ) from None
    return fd


def advertised_host(host: str, advertise: str | None = None) -> str:
    """The address other processes use to reach us: ``advertise`` (--advertise-host) when
    given, else the bind host (``0.0.0.0``/``::`` -> the machine's host name)."""
    if advertise:
        return advertise
    if host in ("", "0.0.0.0", "::", "[::]"):
        return socket.gethostname()
    return host


@dataclass(frozen=True)
class ReplicaSettings:
    """``--replset`` and friends (see ``shard_stub.replica``)."""

    replset: str
    peers: tuple[str, ...] = ()
    priority: int = 1
    arbiter: bool = False
    node_id: str = ""
    election_timeout_ms: int = DEFAULT_ELECTION_TIMEOUT_MS
    oplog_max_entries: int = DEFAULT_OPLOG_MAX_ENTRIES


class ShardApp:
    """One shard node process."""

    def __init__(
        self,
        *,
        shard_id: str,
        host: str,
        port: int,
        data_dir: str | Path,
        advertise_host: str | None = None,
        config_address: str,
        metrics_port: int | None = None,
        heartbeat_interval: float = 1.0,
        migration_settings: MigrationSettings | None = None,
        retry_history_ttl_s: float = DEFAULT_TTL_S,
        retry_history_max_records: int = DEFAULT_MAX_RECORDS,
        replica: ReplicaSettings | None = None,
        txn_lock_wait_ms: int = int(DEFAULT_LOCK_WAIT_S * 1000),
    ) -> None:
        self.shard_id = shard_id
        self.host = host
        self.advertise_host = advertised_host(host, advertise_host)
        self.address = f"{self.advertise_host}:{port}"
        self.node_id = node_id_for(shard_id)
        self.config_address = config_address
        self.heartbeat_interval = heartbeat_interval
        self.data_dir = Path(data_dir)
        self.storage = ShardStorage(self.data_dir)
        self.retry_pruner = RetryPruner(
            self.storage, retry_history_ttl_s, retry_history_max_records
        )
        self._lock_fd: int | None = None
        self.pool = ChannelPool()
        self.metadata = ShardMetadata(shard_id, config_fetcher(self.pool, config_address))
        self.cursors = CursorManager()
        self.migrations = Migrations(
            shard_id=shard_id,
            storage=self.storage,
            metadata=self.metadata,
            cursors=self.cursors,
            pool=self.pool,
            config_address=config_address,
            data_dir=self.data_dir,
            settings=migration_settings,
        )
        self.servicer = ShardServicer(
            shard_id,
            self.storage,
            self.metadata,
            self.cursors,
            config_index_fetcher(self.pool, config_address),
            self.migrations,
        )
        self.server = RpcServer(
            name=f"lauradb-shard {shard_id}", host=host, port=port, metrics_port=metrics_port
        )
        self.server.add_service(
            shard_pb2_grpc.add_ShardServiceServicer_to_server, self.servicer, SERVICE_NAME
        )
        # Distributed transactions: this shard as a participant and as a coordinator
        # shard (shard_stub.transactions); records in the shard's own storage.
        self.txn_records = TxnRecords(self.storage)
        self.txn_peers = TxnPeers(self.pool)
        self.coordinator = Coordinator(
            self.txn_records, shard_id, self.txn_peers.call,
            wait_majority=self.servicer.wait_majority_of_last_write,
            run_write=self.servicer._write,
        )
        lock_wait_s = txn_lock_wait_ms / 1000.0
        self.servicer.txn_write_wait_s = 10 * lock_wait_s
        self.participant = Participant(
            shard_id, self.storage, self.txn_records, self.servicer,
            call=self.txn_peers.call, coordinator=self.coordinator,
            settings=ParticipantSettings(lock_wait_s=lock_wait_s),
        )
        self.txn_servicer = TransactionServicer(self.participant, self.coordinator)
        self.server.add_service(
            transaction_pb2_grpc.add_TransactionServiceServicer_to_server,
            self.txn_servicer,
            TXN_SERVICE_NAME,
        )
        # Replica set (--replset): None keeps a standalone shard exactly as before.
        self.replica: ReplicaNode | None = None
        if replica is not None:
            if port == 0:
                raise LauraError(ErrorCode.BAD_VALUE, "--replset needs a fixed --port")
            self.node_id = replica.node_id or f"shard-{shard_id}-{port}"
            self.replica = ReplicaNode(
                ReplicaConfig(
                    replset=replica.replset,
                    node_id=self.node_id,
                    address=self.address,
                    peers=tuple(replica.peers),
                    priority=replica.priority,
                    arbiter=replica.arbiter,
                    election_timeout_ms=replica.election_timeout_ms,
                    oplog_max_entries=replica.oplog_max_entries,
                ),
                self.storage,
                self.pool,
                self.data_dir,
            )
            self.servicer.set_replica(self.replica)
            # Migration state replicates; migrations run (and recover) on the primary.
            migrations = self.migrations
            migrations.replicate(self.servicer.wait_majority_of_last_write)
            self.replica.role_switch_hooks.append(
                lambda role: migrations.role_switching(role is Role.PRIMARY)
            )
            self.replica.role_listeners.append(
                lambda role: migrations.role_changed(role is Role.PRIMARY)
            )
            # Transactions run on the primary: a new one reloads the prepared records
            # (locks) before its first write, then runs recovery and the coordinator.
            participant, coordinator = self.participant, self.coordinator
            self.txn_servicer.replica = self.replica
            self.replica.role_switch_hooks.append(
                lambda role: participant.role_switching(role is Role.PRIMARY)
            )
            self.replica.role_listeners.append(
                lambda role: participant.role_changed(role is Role.PRIMARY)
            )
            self.replica.role_listeners.append(
                lambda role: coordinator.role_changed(role is Role.PRIMARY)
            )
            self.server.add_service(
                replication_pb2_grpc.add_ReplicationServiceServicer_to_server,
                ReplicationServicer(self.replica),
                REPLICATION_SERVICE_NAME,
            )
        self.servicer.node_id = self.node_id
        self.servicer.address = self.address
        self.membership: Membership | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.server.on_stop(self._close)

    async def _close(self) -> None:
        if self.membership is not None:
            await self.membership.stop()
        if self.replica is not None:
            await self.replica.stop()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.retry_pruner.stop()
        await self.participant.stop()
        await self.coordinator.stop()
        await self.migrations.close()
        self.cursors.close_all()
        await self.pool.close()
        await asyncio.to_thread(self.storage.close)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None
        log.info("shard %s: storage closed", self.shard_id)

    async def start(self) -> int:
        """Open storage, serve (SERVING), then join the cluster in the background."""
        self._lock_fd = lock_data_dir(self.data_dir)
        # a replica-set member with a corrupt data file starts empty and resyncs
        await asyncio.to_thread(self.storage.open, recover_corrupt=self.replica is not None)
        if self.replica is not None:
            # Writes that would log entries fail until this member is elected.
            self.storage.is_primary = False
            self.storage.oplog = await asyncio.to_thread(Oplog, self.storage)
        metrics.track_shard(self.shard_id, self.storage, self.metadata)
        await self.migrations.open()  # restart recovery before serving
        if self.replica is None:  # a replica set reloads them when elected
            await asyncio.to_thread(self.participant.open)
        port = await self.server.start()
        self.address = f"{self.advertise_host}:{port}"
        self.servicer.address = self.address
        self.migrations.set_address(self.advertise_host, port)
        if self.replica is not None:
            await self.replica.start()
        await self.server.set_serving(True)
        self.membership = Membership(
            shard_id=self.shard_id,
            host=self.advertise_host,
            port=port,
            config_address=self.config_address,
            pool=self.pool,
            data_path=self.storage.path,
            interval=self.heartbeat_interval,
            node_id=self.node_id,
            replica_status=self.replica.member_status if self.replica is not None else None,
        )
        self.membership.start()
        self._reaper = asyncio.create_task(self.cursors.run_reaper(CURSOR_REAP_INTERVAL_S))
        self.retry_pruner.start()
        if self.replica is None:
            self.participant.start()
            self.coordinator.start()
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
