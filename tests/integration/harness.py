"""The integration-test harness: real LauraDB processes on loopback ports.

Typical use (fixtures live in ``tests/conftest.py``)::

    async def test_something(shared_cluster, db_name):
        router = shared_cluster.router_stub()
        await insert_many(router, db_name, "c", [{"_id": i} for i in range(10)])
        assert len(await query_all(router, db_name, "c", {})) == 10

    async def test_chaos(cluster):            # a fresh cluster of this test's own
        c = await cluster(shards=3)
        c.kill_shard(1)
        await c.restart_shard(1)

Every process writes its output to ``<tmp>/<name>.log``; failing tests show the part
written during the test (see ``tests/conftest.py``). Waits poll a condition with a
deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import bson
import grpc
from grpc import aio

from lauradb.bsonkit.codec import encode_ordered
from lauradb.bsonkit.order import compare
from lauradb.cluster import (
    cluster_pb2_grpc,
    replset_pb2,
    router_ext_pb2,
    routing_pb2,
    routing_pb2_grpc,
    shard_pb2,
    shard_pb2_grpc,
)
from lauradb.errors import LauraError
from lauradb.rpc.channels import CHANNEL_OPTIONS
from lauradb.rpc.errors import from_proto as from_rpc_error_proto
from lauradb.rpc.errors import from_rpc_error
from lauradb.rpc.server import wait_for_health

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
LOG_LEVEL = os.environ.get("LAURADB_TEST_LOG_LEVEL", "info")
HEALTH_TIMEOUT = float(os.environ.get("LAURADB_TEST_HEALTH_TIMEOUT", "30"))
STOP_TIMEOUT = 10.0
RPC_TIMEOUT = 30.0

T = TypeVar("T")

# --- ports ---------------------------------------------------------------------------

_handed_out: set[int] = set()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nobody listens on (and that this process has not handed out)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found")


def free_port_block(count: int) -> int:
    """A base port such that base .. base+count-1 are all free (launcher layouts)."""
    for _ in range(200):
        base = free_port()
        if base + count > 65535:
            continue
        block = range(base, base + count)
        if all(p == base or (p not in _handed_out and _port_is_free(p)) for p in block):
            _handed_out.update(block)
            return base
    raise RuntimeError(f"no block of {count} free ports found")


# --- waiting -------------------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``check`` until it returns a truthy value without raising; that value.

    On timeout, fail with the last exception (or falsy result) in the message.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = await check()
            if result:
                return result
            last = result
        except (grpc.RpcError, AssertionError, LauraError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g}s; last: {last!r}")
        await asyncio.sleep(interval)


# --- processes -----------------------------------------------------------------------

_active: dict[int, Proc] = {}


def active_procs() -> list[Proc]:
    """Processes of clusters that are currently up (for failure reports)."""
    return list(_active.values())


class Proc:
    """A child process (``python -m <module> <args>``) with its own log file."""

    def __init__(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        *,
        address: str,
        data_dir: Path | None,
        log_path: Path,
    ) -> None:
        self.name = name
        self.module = module
        self.args = list(args)
        self.address = address
        self.data_dir = data_dir
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.alive else f"exit {self.returncode}"
        return f"<Proc {self.name} {self.address} {state}>"

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def start(self) -> None:
        assert not self.alive, f"{self.name} is already running"
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"==== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.popen = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env
            )
        _active[id(self)] = self

    def restart(self) -> None:
        """Start again with the same arguments and data directory (must be stopped)."""
        self.start()

    async def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> None:
        """Wait until the process answers SERVING; fail at once if it exits."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise AssertionError(
                    f"{self.name} exited with {self.returncode} while starting\n{self.log_tail()}"
                )
            try:
                await wait_for_health(self.address, timeout=min(1.0, timeout))
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{self.name} at {self.address} not healthy within {timeout:g}s\n"
                        f"{self.log_tail()}"
                    ) from None

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        if self.alive and self.popen is not None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(STOP_TIMEOUT)

    def terminate(self, timeout: float = STOP_TIMEOUT, *, check: bool = True) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code.

        With ``check``, assert the process stopped cleanly (exit 0 within the timeout).
        """
        if self.popen is None:
            return None
        if not self.alive:
            return self.returncode
        self.popen.send_signal(signal.SIGTERM)
        code = self.wait_exit(timeout)
        if code is None:
            self.kill()
            if check:
                raise AssertionError(
                    f"{self.name} ignored SIGTERM for {timeout:g}s\n{self.log_tail()}"
                )
            return self.returncode
        if check and code != 0:
            raise AssertionError(f"{self.name} exited with {code} on SIGTERM\n{self.log_tail()}")
        return code

    def forget(self) -> None:
        _active.pop(id(self), None)

    def log_text(self, offset: int = 0) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_tail(self, lines: int = 60, offset: int = 0) -> str:
        text = self.log_text(offset).splitlines()[-lines:]
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(text)


# --- clusters ------------------------------------------------------------------------


class Cluster:
    """A config server, N shards (``shard0`` ...) and a router, on free ports.

    ``extra_config_args``: more flags for the config server (e.g. balancer settings);
    ``extra_shard_args`` / ``extra_router_args``: more flags for every shard / the router.
    ``add_router`` starts more routers (e.g. with other flags).
    ``replicas``: members per shard (default 1: standalone shards, as always). With
    R > 1 every shard is a replica set (``--replset shardI --peers ...``): ``shards[i]``
    is its member 0, ``members(shard_id)`` all of them; ``primary_of`` / ``kill_primary``
    find (via Hello) and kill -9 its primary.
    ``config_replicas``: config servers (default 1). More than one needs ``store``
    ``"etcd"`` (the harness starts a local etcd under ``base_dir``) or an
    ``etcd://host:port/name`` URL of a running one; ``config`` is the first of
    ``configs``, shards and routers get all of them (``config_list``);
    ``config_leader()`` finds the one leading. ``lease_ttl``: their ``--lease-ttl``.
    """

    def __init__(
        self,
        base_dir: Path,
        shards: int = 3,
        *,
        log_level: str = LOG_LEVEL,
        extra_config_args: Sequence[str] = (),
        extra_shard_args: Sequence[str] = (),
        extra_router_args: Sequence[str] = (),
        replicas: int = 1,
        config_replicas: int = 1,
        store: str = "sqlite",
        lease_ttl: float | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.replicas = replicas
        base_dir.mkdir(parents=True, exist_ok=True)
        if config_replicas > 1 and store == "sqlite":
            raise ValueError("several config servers need store='etcd' (or an etcd:// URL)")
        self.etcd: Any = None  # lauradb.etcd_local.LocalEtcd started by start()
        self.store = store
        if store == "etcd":
            from lauradb.etcd_local import LocalEtcd

            self.etcd = LocalEtcd(
                base_dir / "etcd", client_port=free_port(), peer_port=free_port()
            )
            self.store = f"{self.etcd.url}/{base_dir.name}-{uuid.uuid4().hex[:8]}"
        config_flags = list(extra_config_args)
        if self.store != "sqlite":
            config_flags = ["--store", self.store, *config_flags]
        if lease_ttl is not None:
            config_flags = ["--lease-ttl", f"{lease_ttl:g}", *config_flags]
        self.configs = [
            self._proc(
                "config" if i == 0 else f"config{i}", "config_server", f"{HOST}:{free_port()}",
                "config" if i == 0 else f"config{i}", log_level, config_flags,
            )
            for i in range(config_replicas)
        ]
        self.config = self.configs[0]
        config_address = ",".join(p.address for p in self.configs)
        self.shards = [
            self._proc(
                f"shard{i}",
                "shard_stub",
                f"{HOST}:{free_port()}",
                f"shard{i}",
                log_level,
                ["--shard-id", f"shard{i}", "--config", config_address, *extra_shard_args],
            )
            for i in range(shards)
        ]
        # members 1.. of replica-set shards (member 0 is self.shards[i])
        self.replica_members: dict[str, list[Proc]] = {}
        if replicas > 1:
            self._add_replica_members(config_address, log_level, list(extra_shard_args))
        self.router = self._proc(
            "router", "router", f"{HOST}:{free_port()}", None, log_level,
            ["--config", config_address, *extra_router_args],
        )
        self.log_level = log_level
        self.extra_routers: list[Proc] = []
        self._channels: dict[str, aio.Channel] = {}
        self._channel_loop: asyncio.AbstractEventLoop | None = None

    def _proc(
        self,
        name: str,
        module: str,
        address: str,
        data: str | None,
        log_level: str,
        extra: Sequence[str] = (),
    ) -> Proc:
        host, port = address.rsplit(":", 1)
        data_dir = self.base_dir / data if data is not None else None
        args = ["--host", host, "--port", port, "--log-level", log_level]
        if data_dir is not None:
            args += ["--data-dir", str(data_dir)]
        return Proc(
            name,
            module,
            [*args, *extra],
            address=address,
            data_dir=data_dir,
            log_path=self.base_dir / f"{name}.log",
        )

    def _add_replica_members(
        self, config_address: str, log_level: str, extra_shard_args: list[str]
    ) -> None:
        for i, first in enumerate(self.shards):
            shard_id = f"shard{i}"
            others = [
                self._proc(
                    f"{shard_id}-{j}", "shard_stub", f"{HOST}:{free_port()}", f"{shard_id}-{j}",
                    log_level, [],
                )
                for j in range(1, self.replicas)
            ]
            group = [first, *others]
            addresses = [p.address for p in group]
            for proc in group:
                peers = ",".join(a for a in addresses if a != proc.address)
                proc.args.extend(["--replset", shard_id, "--peers", peers])
                if proc is not first:
                    proc.args.extend(["--shard-id", shard_id, "--config", config_address,
                                      *extra_shard_args])
            self.replica_members[shard_id] = others

    # addresses and processes

    @property
    def procs(self) -> list[Proc]:
        return [*self.configs, *self.shard_procs, self.router, *self.extra_routers]

    @property
    def shard_procs(self) -> list[Proc]:
        """Every shard process (all members of replica-set shards)."""
        return [*self.shards, *(p for ms in self.replica_members.values() for p in ms)]

    def members(self, shard_id: str) -> list[Proc]:
        """All member processes of a shard (just ``shards[i]`` when standalone)."""
        return [self.shards[self.shard_index(shard_id)], *self.replica_members.get(shard_id, [])]

    async def hello(self, proc: Proc, timeout: float = 2.0) -> replset_pb2.HelloResponse:
        stub = shard_pb2_grpc.ShardServiceStub(self.channel(proc.address))
        resp: replset_pb2.HelloResponse = await stub.Hello(
            replset_pb2.HelloRequest(), timeout=timeout
        )
        return resp

    async def primary_of(self, shard_id: str, timeout: float = 20.0) -> Proc:
        """The member of ``shard_id`` that is primary (highest term), via Hello."""

        async def find() -> Proc | None:
            best: tuple[int, Proc] | None = None
            for proc in self.members(shard_id):
                if not proc.alive:
                    continue
                with contextlib.suppress(grpc.RpcError, asyncio.TimeoutError):
                    resp = await self.hello(proc, timeout=1.0)
                    if resp.is_primary and (best is None or resp.term > best[0]):
                        best = (resp.term, proc)
            return best[1] if best is not None else None

        found = await eventually(find, timeout=timeout, what=f"a primary of {shard_id}")
        assert found is not None
        return found

    async def kill_primary(self, shard_id: str) -> Proc:
        """kill -9 the primary of ``shard_id``; the killed process."""
        proc = await self.primary_of(shard_id)
        proc.kill()
        return proc

    @property
    def router_address(self) -> str:
        return self.router.address

    @property
    def config_address(self) -> str:
        """The first config server's address (dial it directly)."""
        return self.config.address

    @property
    def config_list(self) -> str:
        """Every config server, comma separated (what shards and routers are given)."""
        return ",".join(p.address for p in self.configs)

    async def config_leader(self, timeout: float = 30.0) -> Proc:
        """The config server that leads (runs the balancer), asked of a live one."""

        async def find() -> Proc | None:
            for proc in self.configs:
                if not proc.alive:
                    continue
                stub = routing_pb2_grpc.ConfigServiceStub(self.channel(proc.address))
                with contextlib.suppress(grpc.RpcError):
                    resp = await stub.GetBalancerStatus(
                        router_ext_pb2.GetBalancerStatusRequest(), timeout=2.0
                    )
                    for candidate in self.configs:
                        if candidate.address == resp.leader and candidate.alive:
                            return candidate
            return None

        found = await eventually(find, timeout=timeout, what="a leading config server")
        assert found is not None
        return found

    @property
    def shard_ids(self) -> list[str]:
        return [proc.name for proc in self.shards]

    def shard_index(self, shard_id: str) -> int:
        return self.shard_ids.index(shard_id)

    # lifecycle

    async def start(self) -> None:
        """Config servers and shards, AddShard for each, then the router; all healthy."""
        if self.etcd is not None and not self.etcd.running:
            await asyncio.to_thread(self.etcd.start)
        for proc in [*self.configs, *self.shard_procs]:
            proc.start()
        await asyncio.gather(*(proc.wait_healthy() for proc in [*self.configs, *self.shard_procs]))
        await self.add_shards()
        self.router.start()
        await self.router.wait_healthy()

    async def add_shards(self) -> None:
        async with aio.insecure_channel(self.config_address) as channel:
            stub = routing_pb2_grpc.ConfigServiceStub(channel)
            for proc in self.shards:
                host, port = proc.address.rsplit(":", 1)
                request = routing_pb2.AddShardRequest(shard_id=proc.name, host=host, port=int(port))
                if proc.name in self.replica_members:
                    request.members.extend(p.address for p in self.members(proc.name))
                await stub.AddShard(request, timeout=RPC_TIMEOUT)

    async def stop(self, *, check: bool = True) -> None:
        """Router, then shards, then config (SIGTERM; each must exit 0 if ``check``)."""
        await self.close_channels()
        failures: list[str] = []
        for group in ([self.router, *self.extra_routers], self.shard_procs, self.configs):
            results = await asyncio.gather(
                *(asyncio.to_thread(proc.terminate, check=check) for proc in group),
                return_exceptions=True,
            )
            failures += [str(r) for r in results if isinstance(r, BaseException)]
        for proc in self.procs:
            proc.forget()
        if self.etcd is not None:
            await asyncio.to_thread(self.etcd.stop)
        if failures:
            raise AssertionError("unclean shutdown:\n" + "\n".join(failures))

    async def add_router(self, extra_args: Sequence[str] = ()) -> Proc:
        """Start one more router (``router1``, ...) with ``extra_args``; wait until healthy."""
        proc = self._proc(
            f"router{len(self.extra_routers) + 1}", "router", f"{HOST}:{free_port()}", None,
            self.log_level, ["--config", self.config_list, *extra_args],
        )
        self.extra_routers.append(proc)
        proc.start()
        await proc.wait_healthy()
        return proc

    def kill_shard(self, index: int) -> None:
        """kill -9 one shard."""
        self.shards[index].kill()

    async def restart_shard(self, index: int) -> None:
        """Start a stopped shard again on the same port and data dir; wait until healthy."""
        await self.restart(self.shards[index])

    async def restart(self, proc: Proc) -> None:
        """Start any stopped process of this cluster again; wait until healthy."""
        proc.restart()
        await proc.wait_healthy()

    def kill_all(self) -> None:
        """kill -9 every process (router first)."""
        for proc in reversed(self.procs):
            proc.kill()

    async def restart_all(self) -> None:
        """Start every stopped process again on the same ports and dirs (no AddShard)."""
        await self.close_channels()
        first = [p for p in [*self.configs, *self.shard_procs] if not p.alive]
        for proc in first:
            proc.start()
        await asyncio.gather(*(proc.wait_healthy() for proc in first))
        if not self.router.alive:
            self.router.start()
        await self.router.wait_healthy()

    # stubs (channels are cached per event loop)

    def channel(self, address: str) -> aio.Channel:
        loop = asyncio.get_running_loop()
        if loop is not self._channel_loop:
            self._channels = {}  # those belonged to a loop that has finished
            self._channel_loop = loop
        ch = self._channels.get(address)
        if ch is None:
            ch = aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = ch
        return ch

    async def close_channels(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        if self._channel_loop is not None and self._channel_loop is asyncio.get_running_loop():
            for ch in channels:
                await ch.close(None)
        self._channel_loop = None

    def router_stub(self, proc: Proc | None = None) -> routing_pb2_grpc.RouterServiceStub:
        """RouterService on the router (or on ``proc``, e.g. one from ``add_router``)."""
        address = self.router_address if proc is None else proc.address
        return routing_pb2_grpc.RouterServiceStub(self.channel(address))

    def config_stub(self) -> routing_pb2_grpc.ConfigServiceStub:
        """ConfigService on the router (forwarded to the config server)."""
        return routing_pb2_grpc.ConfigServiceStub(self.channel(self.router_address))

    def config_server_stub(self) -> routing_pb2_grpc.ConfigServiceStub:
        """ConfigService on the config server itself."""
        return routing_pb2_grpc.ConfigServiceStub(self.channel(self.config_address))

    def cluster_stub(self) -> cluster_pb2_grpc.ClusterServiceStub:
        return cluster_pb2_grpc.ClusterServiceStub(self.channel(self.config_address))

    def shard_stub(self, index: int) -> shard_pb2_grpc.ShardServiceStub:
        return shard_pb2_grpc.ShardServiceStub(self.channel(self.shards[index].address))

    def shard_stub_at(self, proc: Proc) -> shard_pb2_grpc.ShardServiceStub:
        """ShardService on one shard process (e.g. a replica-set member)."""
        return shard_pb2_grpc.ShardServiceStub(self.channel(proc.address))

    async def member_ids(self, proc: Proc, db: str, coll: str) -> set[Any]:
        """The ``_id``s one shard process holds (read on it directly, version check
        skipped, secondaries allowed)."""
        request = shard_pb2.ShardFindRequest(
            database=db, collection=coll, filter=enc({}),
            version=shard_pb2.ShardVersion(ignore=True), secondary_ok=True, batch_size=100_000,
        )
        resp = await self.shard_stub_at(proc).Find(request, timeout=RPC_TIMEOUT)
        if resp.error.code:
            raise from_rpc_error_proto(resp.error)
        assert not resp.cursor_id, f"{proc.name}: more than one batch"
        return {dec(d)["_id"] for d in resp.documents}

    async def shard_count(self, index: int, db: str, coll: str, filter: Mapping[str, Any]) -> int:
        """Documents one shard holds (version check skipped), orphans filtered."""
        request = shard_pb2.ShardCountRequest(
            database=db,
            collection=coll,
            filter=enc(filter),
            version=shard_pb2.ShardVersion(ignore=True),
        )
        response = await self.shard_stub(index).Count(request, timeout=RPC_TIMEOUT)
        return int(response.count)


def unique_name(hint: str = "t", limit: int = 40) -> str:
    """A database/collection name safe for LauraDB, unique per call."""
    safe = "".join(ch if ch.isalnum() else "_" for ch in hint)[:limit].strip("_") or "t"
    return f"{safe}_{uuid.uuid4().hex[:8]}"


# --- BSON and RPC conveniences ----------------------------------------------------------


def enc(doc: Mapping[str, Any] | None) -> bytes:
    """BSON bytes of a document (None -> empty bytes: 'not given')."""
    return b"" if doc is None else bson.encode(doc)


def dec(data: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = bson.decode(data)
    return decoded


def laura_error(exc: BaseException) -> LauraError:
    """The LauraError a failed call carried (code, code_name, message)."""
    assert isinstance(exc, grpc.RpcError), f"not an RPC error: {exc!r}"
    return from_rpc_error(exc)


@dataclass
class QueryResult:
    docs: list[dict[str, Any]] = field(default_factory=list)
    batches: int = 0
    shards_queried: set[str] = field(default_factory=set)
    first: routing_pb2.QueryResponse | None = None


async def query(
    stub: routing_pb2_grpc.RouterServiceStub,
    db: str,
    coll: str,
    filter: Mapping[str, Any] | None = None,
    *,
    projection: Mapping[str, Any] | None = None,
    sort: Mapping[str, Any] | None = None,
    skip: int = 0,
    limit: int = 0,
    batch_size: int = 0,
    timeout: float = RPC_TIMEOUT,
    max_batches: int = 100_000,
) -> QueryResult:
    """Query through the router and follow GetMore until the cursor is exhausted."""
    request = routing_pb2.QueryRequest(
        database=db,
        collection=coll,
        query=enc(filter or {}),
        projection=enc(projection),
        sort=b"" if sort is None else encode_ordered(sort),  # keep a later _id in place
        skip=skip,
        limit=limit,
        batch_size=batch_size,
    )
    response = await stub.Query(request, timeout=timeout)
    result = QueryResult(first=response)
    while True:
        result.batches += 1
        result.docs.extend(dec(d) for d in response.documents)
        result.shards_queried.update(response.stats.shards_queried)
        if not (response.more_available and response.cursor_id):
            return result
        assert result.batches < max_batches, f"cursor {response.cursor_id} never ends"
        more = router_ext_pb2.GetMoreRequest(cursor_id=response.cursor_id, batch_size=batch_size)
        response = await stub.GetMore(more, timeout=timeout)


async def query_all(
    stub: routing_pb2_grpc.RouterServiceStub,
    db: str,
    coll: str,
    filter: Mapping[str, Any] | None = None,
    **kw: Any,
) -> list[dict[str, Any]]:
    """Every document a query returns, following GetMore."""
    return (await query(stub, db, coll, filter, **kw)).docs


async def insert_many(
    stub: routing_pb2_grpc.RouterServiceStub,
    db: str,
    coll: str,
    docs: Iterable[Mapping[str, Any]],
    *,
    batch: int = 1000,
    ordered: bool = True,
    check: bool = True,
    timeout: float = RPC_TIMEOUT,
) -> int:
    """Insert in batches; the number inserted. ``check``: fail on any per-document error."""
    pending = [enc(doc) for doc in docs]
    inserted = 0
    for start in range(0, len(pending), batch):
        request = routing_pb2.InsertRequest(
            database=db, collection=coll, documents=pending[start : start + batch], ordered=ordered
        )
        response = await stub.Insert(request, timeout=timeout)
        inserted += response.inserted_count
        if check and response.errors:
            first = response.errors[0]
            raise AssertionError(
                f"insert into {db}.{coll}: {len(response.errors)} errors, first at "
                f"{start + first.index}: {first.code_name} {first.error}"
            )
    return inserted


async def count(
    stub: routing_pb2_grpc.RouterServiceStub,
    db: str,
    coll: str,
    filter: Mapping[str, Any] | None = None,
    *,
    timeout: float = RPC_TIMEOUT,
) -> int:
    request = router_ext_pb2.CountRequest(database=db, collection=coll, query=enc(filter or {}))
    return int((await stub.Count(request, timeout=timeout)).count)


STRATEGIES = {
    "hashed": routing_pb2.HASH,
    "range": routing_pb2.RANGE,
    "compound": routing_pb2.COMPOUND,
}


async def shard_collection(
    config: routing_pb2_grpc.ConfigServiceStub,
    db: str,
    coll: str,
    fields: Sequence[str],
    strategy: str = "hashed",
    *,
    initial_chunks: int = 0,
    unique: bool = False,
) -> routing_pb2.ShardCollectionResponse:
    request = routing_pb2.ShardCollectionRequest(
        database=db,
        collection=coll,
        shard_key_fields=list(fields),
        strategy=STRATEGIES[strategy],
        initial_chunks=initial_chunks,
        unique=unique,
    )
    response: routing_pb2.ShardCollectionResponse = await config.ShardCollection(
        request, timeout=RPC_TIMEOUT
    )
    return response


async def get_shard_map(
    stub: routing_pb2_grpc.ConfigServiceStub | routing_pb2_grpc.RouterServiceStub,
    db: str,
    coll: str,
) -> routing_pb2.GetShardMapResponse:
    request = routing_pb2.GetShardMapRequest(database=db, collection=coll)
    response: routing_pb2.GetShardMapResponse = await stub.GetShardMap(
        request, timeout=RPC_TIMEOUT
    )
    return response


async def split_chunk(
    config: routing_pb2_grpc.ConfigServiceStub, chunk_id: str, point: Mapping[str, Any]
) -> routing_pb2.SplitChunkResponse:
    request = routing_pb2.SplitChunkRequest(chunk_id=chunk_id, split_point=enc(point))
    response: routing_pb2.SplitChunkResponse = await config.SplitChunk(
        request, timeout=RPC_TIMEOUT
    )
    return response


@dataclass(frozen=True)
class ChunkInfo:
    chunk_id: str
    shard: str
    min: dict[str, Any]
    max: dict[str, Any]

    def contains(self, key: Mapping[str, Any]) -> bool:
        """min <= key < max, comparing the shard-key values in field order."""
        values = list(key.values())
        return (
            _compare_seq(list(self.min.values()), values) <= 0
            and _compare_seq(values, list(self.max.values())) < 0
        )


def _compare_seq(a: Sequence[Any], b: Sequence[Any]) -> int:
    for x, y in zip(a, b, strict=True):
        c = compare(x, y)
        if c:
            return c
    return 0


def chunks_of(shard_map: routing_pb2.GetShardMapResponse) -> list[ChunkInfo]:
    """Every chunk of a (full) shard map with its owner and decoded bounds."""
    return [
        ChunkInfo(chunk.chunk_id, route.shard_id, dec(chunk.min_key), dec(chunk.max_key))
        for route in shard_map.shards
        for chunk in route.chunks
    ]


async def ping(address: str, timeout: float = 1.0) -> bool:
    """True if ``address`` answers health SERVING."""
    with contextlib.suppress(TimeoutError):
        await wait_for_health(address, timeout)
        return True
    return False


# --- network faults ----------------------------------------------------------------------


class TcpProxy:
    """A TCP forwarder on a free loopback port to ``target`` (host:port), in the test's
    event loop. ``cut()`` closes every forwarded connection and refuses new ones (a
    network partition of this link, both directions); ``heal()`` lets traffic through
    again. gRPC sees a cut link as UNAVAILABLE and reconnects after ``heal``."""

    def __init__(self, target: str, name: str = "") -> None:
        self.target = target
        self.name = name or target
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        self.is_cut = False
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, self.port)

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def cut(self) -> None:
        self.is_cut = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def heal(self) -> None:
        self.is_cut = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        host, port = self.target.rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.transport.abort()
            return
        if self.is_cut:  # cut while connecting
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            self._writers.discard(writer)
            self._writers.discard(up_writer)


def proxy_replica_links(cluster: Cluster) -> dict[tuple[str, str], TcpProxy]:
    """Route every member-to-member link of the cluster's replica sets through its own
    ``TcpProxy`` (call before ``cluster.start()``, then ``start()`` the proxies): member
    A's ``--peers`` names the proxy A->B instead of B. Returns ``(A, B) -> proxy`` by
    process name; the config server and routers still reach members directly."""
    links: dict[tuple[str, str], TcpProxy] = {}
    for shard_id in cluster.replica_members:
        group = cluster.members(shard_id)
        for src in group:
            peers = []
            for dst in group:
                if dst is src:
                    continue
                proxy = TcpProxy(dst.address, f"{src.name}->{dst.name}")
                links[(src.name, dst.name)] = proxy
                peers.append(proxy.address)
            i = src.args.index("--peers")
            src.args[i + 1] = ",".join(peers)
    return links
