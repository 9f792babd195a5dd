"""Wiring of the router process: channels, cache, services, health loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from lauradb.cluster import routing_pb2, routing_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.replset import DEFAULT_BUFFER_WINDOW_S
from lauradb.rpc.channels import ChannelPool
from lauradb.rpc.server import RpcServer
from router.config_client import DEFAULT_CONFIG_TIMEOUT, ConfigClient
from router.config_proxy import ConfigProxy
from router.context import DEFAULT_MEMORY_LIMIT, RouterContext
from router.cursors import IDLE_TIMEOUT, CursorRegistry
from router.retryable import RetryCache
from router.routing_cache import RoutingCache
from router.service import RouterService
from router.shard_client import DEFAULT_SHARD_TIMEOUT, ShardClient
from router.txn_plan import TxnSettings

__all__ = ["CONFIG_SERVICE", "ROUTER_SERVICE", "RouterApp"]

log = logging.getLogger("lauradb.router")

ROUTER_SERVICE = routing_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name
CONFIG_SERVICE = routing_pb2.DESCRIPTOR.services_by_name["ConfigService"].full_name

HEALTH_INTERVAL = 2.0
STARTUP_POLL = 0.2
FAILURES_BEFORE_NOT_SERVING = 2


class RouterApp:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        config_address: str,
        shard_timeout: float = DEFAULT_SHARD_TIMEOUT,
        config_timeout: float = DEFAULT_CONFIG_TIMEOUT,
        cursor_timeout: float = IDLE_TIMEOUT,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
        metrics_port: int | None = None,
        drop_write_replies: bool = False,
        failover_buffer: float = DEFAULT_BUFFER_WINDOW_S,
        txn_settings: TxnSettings | None = None,
    ) -> None:
        self.pool = ChannelPool()
        self.config = ConfigClient(self.pool.get(config_address), config_address, config_timeout)
        self.cache = RoutingCache(self.config)
        self.shards = ShardClient(self.pool, self.cache, shard_timeout, failover_buffer)
        self.cursors = CursorRegistry(cursor_timeout)
        self.ctx = RouterContext(
            self.config, self.cache, self.shards, self.cursors, memory_limit_bytes
        )
        self.server = RpcServer(
            name="lauradb-router", host=host, port=port, metrics_port=metrics_port
        )
        self.server.add_service(
            routing_pb2_grpc.add_RouterServiceServicer_to_server,
            RouterService(self.ctx, RetryCache(), drop_write_replies, txn_settings),
            ROUTER_SERVICE,
        )
        self.server.add_service(
            routing_pb2_grpc.add_ConfigServiceServicer_to_server,
            ConfigProxy(self.config, self.cache),
            CONFIG_SERVICE,
        )
        if drop_write_replies:
            log.warning(
                "--test-drop-write-replies: every write reply is dropped (UNAVAILABLE); "
                "testing only"
            )
        self.server.on_stop(self._close)
        self.serving = False
        self._health_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ health

    async def check_config(self) -> bool:
        """One ListShards call; refreshes the shard addresses on success."""
        try:
            resp = await self.config.list_shards(timeout=HEALTH_INTERVAL)
        except LauraError as err:
            log.info("config server check failed: %s", err)
            return False
        self.shards.set_addresses(
            {s.shard_id: f"{s.host}:{s.port}" for s in resp.shards if s.host},
            {s.shard_id: list(s.members) for s in resp.shards if s.host},
        )
        return True

    async def _health_loop(self) -> None:
        failures = 0
        while True:
            ok = await self.check_config()
            if ok:
                failures = 0
                if not self.serving:
                    self.serving = True
                    await self.server.set_serving(True)
                    log.info("config server reachable: SERVING")
            else:
                failures += 1
                if self.serving and failures >= FAILURES_BEFORE_NOT_SERVING:
                    self.serving = False
                    await self.server.set_serving(False)
                    log.warning("config server unreachable: NOT_SERVING")
            await asyncio.sleep(HEALTH_INTERVAL if self.serving else STARTUP_POLL)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        try:
            port = await self.server.start()
        except RuntimeError as exc:
            raise LauraError(
                ErrorCode.HOST_UNREACHABLE,
                f"cannot listen on {self.server.host}:{self.server.port}: {exc}",
            ) from None
        self.cursors.start()
        self._health_task = asyncio.get_running_loop().create_task(self._health_loop())
        return port

    async def _close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._health_task
            self._health_task = None
        with contextlib.suppress(Exception):
            await self.cursors.close()
        with contextlib.suppress(Exception):
            await self.shards.close()
        await self.pool.close()

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop cleanly."""
        try:
            await self.start()
        except BaseException:
            await self._close()
            raise
        self.server.install_signal_handlers()
        await self.server.wait()
