"""Marks nodes down when they miss heartbeats, and up again when they return.

Heartbeat times live in memory (no disk write per heartbeat); only up/down
transitions go through the catalog (one transaction each, topology version bumped).
After a restart every stored node that was up gets a full timeout to heartbeat again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from config_server.catalog import Catalog
from lauradb.errors import LauraError

log = logging.getLogger("lauradb.config.failure_detector")


class FailureDetector:
    def __init__(
        self,
        catalog: Catalog,
        *,
        timeout: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._catalog = catalog
        self.timeout = timeout
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._last_seen: dict[str, float] = {}
        self._last_heartbeat_ms: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        now = monotonic()
        for node in catalog.list_nodes():
            if node.up:
                self._last_seen[node.node_id] = now

    def rearm(self) -> None:
        """Taking over as the leader config server: every node the metadata says is up
        gets a full timeout from now to heartbeat (to any config server; the others
        forward heartbeats to the leader). What this server saw while not leading is
        not a reason to mark anything down."""
        now = self._monotonic()
        self._last_seen = {node.node_id: now for node in self._catalog.list_nodes() if node.up}

    def tracking(self, node_id: str) -> bool:
        """True while the node is believed up (known, heartbeating)."""
        return node_id in self._last_seen

    def heartbeat(self, node_id: str) -> bool:
        """Record a heartbeat of a known node; True if it came back up (topology changed)."""
        was_up = node_id in self._last_seen
        self._last_seen[node_id] = self._monotonic()
        millis = int(self._wall_clock() * 1000)
        self._last_heartbeat_ms[node_id] = millis
        if was_up:
            return False
        return self._catalog.set_node_up(node_id, True, millis)

    def forget(self, node_id: str) -> None:
        self._last_seen.pop(node_id, None)
        self._last_heartbeat_ms.pop(node_id, None)

    def last_heartbeat_ms(self, node_id: str) -> int | None:
        return self._last_heartbeat_ms.get(node_id)

    def check(self) -> list[str]:
        """Mark down every node silent for longer than the timeout; returns their ids."""
        now = self._monotonic()
        down: list[str] = []
        for node_id, seen in list(self._last_seen.items()):
            if now - seen <= self.timeout:
                continue
            del self._last_seen[node_id]
            try:
                changed = self._catalog.set_node_up(node_id, False)
            except LauraError:
                log.exception("cannot mark node %s down", node_id)
                continue
            if changed:
                log.warning("node %s missed heartbeats for %.1fs: marked down", node_id, now - seen)
                down.append(node_id)
        return down

    async def _run(self) -> None:
        interval = max(0.05, min(1.0, self.timeout / 5))
        while True:
            await asyncio.sleep(interval)
            self.check()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="failure-detector")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
