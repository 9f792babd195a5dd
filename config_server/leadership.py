"""Leadership among config servers: one of them leads (runs the balancer, makes the
metadata changes); the others stand by and take over when it goes away.

``Leadership`` is the interface: ``await campaign()`` returns once this candidate
leads; ``is_leader`` says whether it still does; ``on_loss(callback)`` is called (from
the event loop) when leadership ends, lost or resigned; ``resign()`` gives it up;
``fence()`` is what the etcd metadata store compares in every commit
(``EtcdMetadataStore.set_fence``), so a deposed leader cannot change metadata.

- ``AlwaysLeader``: the single config server with SQLite; leads from the start.
- ``EtcdLeadership``: an etcd lease (``ttl`` seconds) kept alive every ``ttl/3``, and
  the leader key ``/lauradb/<cluster>/election/<name>`` created in a Txn only if it
  does not exist (create_revision == 0), attached to the lease. The key disappears
  with the lease when the leader stops refreshing it (crash, partition), and a
  waiting candidate (polling the key every ``ttl/4`` at most) creates it next.
  A leader counts itself leader only until ``sent + ttl - margin`` of its last
  successful keep-alive (``sent``: when that request left), so it steps down before
  etcd lets the lease expire and another candidate can win.

Uses the aetcd asyncio client on the caller's event loop.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

import aetcd

from config_server.store_etcd import EtcdStoreSpec, parse_etcd_url

log = logging.getLogger("lauradb.config.leadership")

DEFAULT_TTL = 5.0
MIN_TTL = 2  # etcd grants at least ~2 s anyway (its minimum lease TTL)


class Leadership(abc.ABC):
    """See the module doc."""

    ttl: float = math.inf

    def __init__(self) -> None:
        self._loss_callbacks: list[Callable[[], None]] = []

    @property
    @abc.abstractmethod
    def is_leader(self) -> bool: ...

    @abc.abstractmethod
    async def campaign(self) -> None:
        """Wait until this candidate is the leader."""

    @abc.abstractmethod
    async def resign(self) -> None:
        """Stop leading (another candidate may take over at once)."""

    async def leader(self) -> str | None:
        """The current leader's candidate id (None: nobody leads right now)."""
        return None

    def fence(self) -> tuple[bytes, int] | None:
        """(leader key, its create revision) while leading with etcd, else None."""
        return None

    def on_loss(self, callback: Callable[[], None]) -> None:
        self._loss_callbacks.append(callback)

    def _fire_loss(self) -> None:
        for callback in list(self._loss_callbacks):
            try:
                callback()
            except Exception:
                log.exception("leadership loss callback failed")

    async def close(self) -> None:
        """Resign if leading and release resources."""
        await self.resign()


class AlwaysLeader(Leadership):
    """The only config server (SQLite store): it leads until it resigns."""

    def __init__(self, candidate: str = "") -> None:
        super().__init__()
        self.candidate = candidate
        self._leading = False

    @property
    def is_leader(self) -> bool:
        return self._leading

    async def campaign(self) -> None:
        self._leading = True

    async def resign(self) -> None:
        if self._leading:
            self._leading = False
            self._fire_loss()

    async def leader(self) -> str | None:
        return self.candidate if self._leading else None


class EtcdLeadership(Leadership):
    """Leader election with an etcd lease (see the module doc)."""

    def __init__(
        self,
        spec: EtcdStoreSpec | str,
        candidate: str,
        *,
        name: str = "config",
        ttl: float = DEFAULT_TTL,
        timeout: float = 2.0,
    ) -> None:
        super().__init__()
        if not candidate:
            raise ValueError("a candidate id is required")
        self.spec = parse_etcd_url(spec) if isinstance(spec, str) else spec
        self.candidate = candidate
        self.key = self.spec.root + b"election/" + name.encode()
        self.ttl = float(max(MIN_TTL, math.ceil(ttl)))
        self.timeout = min(timeout, self.ttl / 3)
        self.margin = max(0.2, self.ttl / 10)  # step down this long before expiry
        self._endpoint = 0
        self._client: aetcd.Client | None = None
        self._lease_id = 0
        self._create_revision = 0
        self._valid_until = 0.0
        self._leading = False
        self._keeper: asyncio.Task[None] | None = None
        self._suspended = False
        self._closed = False

    # ------------------------------------------------------------------ client

    async def _connect(self) -> aetcd.Client:
        if self._client is None:
            host, port = self.spec.endpoints[self._endpoint]
            client = aetcd.Client(host=host, port=port, timeout=self.timeout)
            await client.connect()
            self._client = client
        return self._client

    async def _drop_client(self) -> None:
        """After an error: the next call uses the next endpoint."""
        client, self._client = self._client, None
        self._endpoint = (self._endpoint + 1) % len(self.spec.endpoints)
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), self.timeout)

    # ------------------------------------------------------------------ status

    @property
    def is_leader(self) -> bool:
        return self._leading and time.monotonic() < self._valid_until - self.margin

    def fence(self) -> tuple[bytes, int] | None:
        return (self.key, self._create_revision) if self.is_leader else None

    async def leader(self) -> str | None:
        try:
            client = await self._connect()
            got = await client.get(self.key)
        except (aetcd.ClientError, OSError):
            await self._drop_client()
            raise
        return got.value.decode() if got is not None else None

    # ---------------------------------------------------------------- campaign

    async def campaign(self) -> None:
        if self.is_leader:
            return
        poll = min(self.ttl / 4, 0.5)
        while not self._closed:
            try:
                if await self._try_acquire():
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # etcd unreachable: try the next endpoint
                log.warning("leader election: %s", exc)
                await self._drop_client()
            await asyncio.sleep(poll)
        raise RuntimeError("leadership closed")

    async def _try_acquire(self) -> bool:
        client = await self._connect()
        if not self._lease_id:
            sent = time.monotonic()
            lease = await client.lease(int(self.ttl))
            self._lease_id = lease.id
            self._valid_until = sent + lease.ttl
        tx = client.transactions
        sent = time.monotonic()
        ok, _ = await client.transaction(
            compare=[tx.create(self.key) == 0],
            success=[tx.put(self.key, self.candidate.encode(), lease=self._lease_id)],
            failure=[],
        )
        if not ok:
            # someone leads; our lease stays alive meanwhile (refresh it cheaply)
            reply = await client.refresh_lease(self._lease_id)
            if reply is None or reply.TTL <= 0:
                self._lease_id = 0
            else:
                self._valid_until = sent + reply.TTL
            return False
        got = await client.get(self.key)
        if got is None or got.lease != self._lease_id:
            return False  # lost it already (lease expired in between)
        self._create_revision = got.create_revision
        self._leading = True
        log.info("%s leads (lease %x, ttl %gs)", self.candidate, self._lease_id, self.ttl)
        self._keeper = asyncio.get_running_loop().create_task(
            self._keep_alive(), name=f"lease-keepalive-{self.candidate}"
        )
        return True

    async def _keep_alive(self) -> None:
        """Refresh the lease every ttl/3; lose leadership when it could have expired
        (or the key is no longer ours)."""
        interval = self.ttl / 3
        try:
            while self._leading:
                wake = min(interval, max(self._valid_until - self.margin - time.monotonic(), 0))
                await asyncio.sleep(wake)
                if time.monotonic() >= self._valid_until - self.margin:
                    log.warning("%s: lease not refreshed in time; stepping down", self.candidate)
                    break
                sent = time.monotonic()
                if self._suspended:
                    continue
                try:
                    client = await self._connect()
                    reply = await asyncio.wait_for(
                        client.refresh_lease(self._lease_id), self.timeout
                    )
                    if reply is None or reply.TTL <= 0:
                        log.warning("%s: lease expired; stepping down", self.candidate)
                        break
                    got = await asyncio.wait_for(client.get(self.key), self.timeout)
                    if got is None or got.create_revision != self._create_revision:
                        log.warning("%s: leader key gone; stepping down", self.candidate)
                        break
                    self._valid_until = sent + reply.TTL
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("%s: lease keep-alive failed: %s", self.candidate, exc)
                    await self._drop_client()
        finally:
            if self._leading:
                self._leading = False
                self._lease_id = 0
                self._fire_loss()

    def suspend_keepalive(self) -> None:
        """Stop refreshing the lease, as if cut off from etcd (tests): the leader steps
        down ``margin`` before its lease can expire; then another candidate wins."""
        self._suspended = True

    async def resign(self) -> None:
        keeper, self._keeper = self._keeper, None
        self._suspended = False
        was_leading = self._leading
        self._leading = False
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper
        lease_id, self._lease_id = self._lease_id, 0
        if lease_id:
            with contextlib.suppress(Exception):
                client = await self._connect()
                await asyncio.wait_for(client.revoke_lease(lease_id), self.timeout)
        if was_leading:
            self._fire_loss()

    async def close(self) -> None:
        self._closed = True
        await self.resign()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), self.timeout)
