"""Server bootstrap shared by every process.

Every process serves its services plus gRPC health (``grpc.health.v1``, per service
and overall ""), server reflection (so ``grpcurl -plaintext HOST:PORT list`` works),
Prometheus metrics on an optional HTTP port, and stops cleanly on SIGTERM/SIGINT:
health goes NOT_SERVING, new calls are refused, in-flight calls get a grace period,
then the ``on_stop`` hooks run (flush, close) and the process exits 0.

With TLS settings (``--tls-cert``/``--tls-key``, see ``lauradb.rpc.channels``) the port
is a TLS port whose certificate is re-read when the files change (gRPC's dynamic
server credentials): new connections get the new certificate, open ones keep working.

``--health-port`` adds a second listener, always plaintext, that serves only
``grpc.health.v1`` from the same health state (readiness "", per service, and
``liveness``): Kubernetes' gRPC probes cannot present a client certificate, so they use
it when the main port requires mutual TLS. Every other service answers UNIMPLEMENTED
there.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from prometheus_client import Counter, start_http_server

from lauradb.errors import ErrorCode, LauraError
from lauradb.fast_metrics import FastHistogram
from lauradb.rpc.channels import (
    MAX_MESSAGE_BYTES,
    TlsSettings,
    current_tls,
    make_channel,
    read_file,
)
from lauradb.rpc.errors import abort
from lauradb.rpc.request_context import (
    RequestIdFilter,
    bind_request_id,
    request_id_of,
    reset_request_id,
)

log = logging.getLogger("lauradb.rpc")

# Health service name that is SERVING from start() until stop() whatever the readiness
# ("" and per service): Kubernetes liveness probes ask for it, readiness asks for "".
LIVENESS_SERVICE = "liveness"

RPC_LATENCY = FastHistogram(
    "lauradb_rpc_latency_seconds",
    "Server-side latency of RPCs",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
RPC_ERRORS = Counter("lauradb_rpc_errors_total", "RPCs that failed, by error code", ["method", "code"])

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.so_reuseport", 0),
]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]


def rpc_method(fn: Handler) -> Handler:
    """Wrap a servicer method: LauraError -> status + Error trailer; metrics; the
    request id (``request_id`` field or a generated one) bound for log lines.

    Hot path: the method's latency histogram child is looked up once, here (a
    ``labels()`` call per RPC costs a lock and a dict lookup); error counters, rare,
    are looked up when they happen."""
    name = fn.__qualname__
    latency = RPC_LATENCY.labels(name)
    perf = time.perf_counter

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        start = perf()
        token = bind_request_id(request_id_of(request))
        try:
            return await fn(self, request, context)
        except LauraError as err:
            RPC_ERRORS.labels(name, err.code_name).inc()
            await abort(context, err)
        except aio.AbortError:
            RPC_ERRORS.labels(name, "ABORTED").inc()
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: report it, keep serving
            log.exception("unhandled error in %s", name)
            RPC_ERRORS.labels(name, "INTERNAL_ERROR").inc()
            await abort(context, LauraError(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            latency.observe(perf() - start)
            reset_request_id(token)

    return wrapper


class GenericOnly:
    """What generated registration code (``add_*Servicer_to_server``) is given instead
    of the server: every service is served through generic handlers only.

    Generated code registers each method twice, as a generic handler and as a
    "registered method". grpc.aio's server then keeps one pending request-call future
    per registered method and waits on all of them with ``asyncio.wait`` for every call
    it accepts: the cost of each call grows with the number of methods served (the
    router serves ~50). Generic handlers cost one future and one dict lookup, whatever
    the count.
    """

    def __init__(self, server: Any) -> None:
        self._server = server
        self._pending: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._pending.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        pass  # generated code added the generic handler of these very methods too

    def register(self, add: Callable[[Any, Any], None], servicer: Any) -> None:
        """``add(servicer, self)``: a generated ``add_*Servicer_to_server``."""
        add(servicer, self)
        if self._pending:
            self._server.add_generic_rpc_handlers(tuple(self._pending))
            self._pending.clear()


class CertificateReloader:
    """The fetcher of ``grpc.dynamic_ssl_server_credentials``: gRPC calls it on each new
    connection; it returns a new certificate configuration when the files' mtimes
    changed since the last one it gave (None = keep the current one)."""

    def __init__(self, tls: TlsSettings) -> None:
        self.tls = tls
        self._stamp = tls.stamp()

    def configuration(self) -> Any:
        key = read_file(self.tls.key)
        cert = read_file(self.tls.cert)
        assert key is not None and cert is not None
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=read_file(self.tls.ca)
        )

    def __call__(self) -> Any:
        stamp = self.tls.stamp()
        if stamp == self._stamp:
            return None
        try:
            config = self.configuration()
        except (LauraError, grpc.RpcError, ValueError):  # a half-written file: try later
            log.warning("cannot reload TLS certificate; keeping the current one")
            return None
        self._stamp = stamp
        log.info("reloaded TLS certificate %s", self.tls.cert)
        return config


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """TLS server credentials that reload the certificate when its files change.
    ``require`` demands a client certificate signed by the CA; with ``none`` gRPC
    Python does not ask for one (a certificate-less client is fine)."""
    reloader = CertificateReloader(tls)
    return grpc.dynamic_ssl_server_credentials(
        reloader.configuration(),
        reloader,
        require_client_authentication=tls.client_auth == "require",
    )


_process_health_port: int | None = None


def set_process_health_port(port: int | None) -> None:
    """Set once at process start (``run_process``) from ``--health-port``."""
    global _process_health_port
    _process_health_port = port


class RpcServer:
    """A grpc.aio server with health, reflection, metrics and signal handling; a TLS
    port when ``tls`` (default: the process's ``current_tls()``) has a certificate; a
    plaintext health-only port when ``health_port`` (default: the process's
    ``--health-port``) is set."""

    def __init__(
        self,
        *,
        name: str,
        host: str,
        port: int,
        metrics_port: int | None = None,
        tls: TlsSettings | None = None,
        health_port: int | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.metrics_port = metrics_port
        self.tls = tls if tls is not None else current_tls()
        self.health_port = health_port if health_port is not None else _process_health_port
        self.server = aio.server(options=SERVER_OPTIONS)
        self.health = health_aio.HealthServicer()
        GenericOnly(self.server).register(health_pb2_grpc.add_HealthServicer_to_server, self.health)
        # The health-only listener: a server of its own (a grpc server's services are on
        # all of its ports) sharing the health servicer, hence its state.
        self.health_server: aio.Server | None = None
        if self.health_port is not None:
            self.health_server = aio.server(options=SERVER_OPTIONS)
            GenericOnly(self.health_server).register(
                health_pb2_grpc.add_HealthServicer_to_server, self.health
            )
        self._service_names: list[str] = []
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._stopping = asyncio.Event()
        self.bound_port = 0
        self.bound_health_port = 0

    def add_service(
        self, register: Callable[[Any, aio.Server], None], servicer: Any, full_name: str
    ) -> None:
        """Register a generated servicer (generic handlers only: ``GenericOnly``)."""
        GenericOnly(self.server).register(register, servicer)
        self._service_names.append(full_name)

    def on_stop(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._on_stop.append(hook)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        for svc in self._service_names:
            await self.health.set(svc, status)

    async def start(self) -> int:
        names = [*self._service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME]
        GenericOnly(self.server).register(
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
            reflection_aio.ReflectionServicer(names),
        )
        address = f"{self.host}:{self.port}"
        try:
            if self.tls is not None and self.tls.cert:
                creds = server_credentials(self.tls)
                self.bound_port = self.server.add_secure_port(address, creds)
            else:
                self.bound_port = self.server.add_insecure_port(address)
        except RuntimeError:
            self.bound_port = 0
        if self.bound_port == 0:
            raise LauraError(ErrorCode.HOST_UNREACHABLE, f"cannot listen on {address}")
        if self.health_server is not None:
            health_address = f"{self.host}:{self.health_port}"
            try:
                self.bound_health_port = self.health_server.add_insecure_port(health_address)
            except RuntimeError:
                self.bound_health_port = 0
            if self.bound_health_port == 0:
                raise LauraError(
                    ErrorCode.HOST_UNREACHABLE, f"cannot listen on {health_address} (health)"
                )
        await self.set_serving(False)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        if self.metrics_port is not None:
            start_http_server(self.metrics_port, addr=self.host)
        log.info("%s listening on %s:%d", self.name, self.host, self.bound_port)
        if self.health_server is not None:
            log.info(
                "%s health (plaintext) on %s:%d", self.name, self.host, self.bound_health_port
            )
        return self.bound_port

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait(self) -> None:
        """Serve until a signal (or request_stop), then shut down cleanly."""
        await self._stopping.wait()
        await self.stop()

    async def stop(self, grace: float = 5.0) -> None:
        log.info("%s stopping", self.name)
        await self.set_serving(False)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)
        if self.health_server is not None:  # probes saw NOT_SERVING during the grace
            await self.health_server.stop(None)
        for hook in reversed(self._on_stop):
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")
        log.info("%s stopped", self.name)


def setup_logging(level: str = "warning", fmt: str = "text") -> None:
    """Quiet by default; ``--log-level info`` shows progress of long operations."""
    import json

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            out = {
                "ts": round(record.created, 3),
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
            for key in ("request_id", "shard", "namespace"):
                if hasattr(record, key):
                    out[key] = getattr(record, key)
            if record.exc_info:
                out["exc"] = self.formatException(record.exc_info)
            return json.dumps(out)

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())  # request_id / rid_tag on every record
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s%(rid_tag)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("grpc").setLevel(logging.ERROR)


async def wait_for_health(
    address: str, timeout: float, service: str = "", tls: TlsSettings | None = None
) -> None:
    """Wait until ``address`` reports SERVING (used by the launcher and tests); over TLS
    when ``tls`` is given."""
    deadline = time.monotonic() + timeout
    # Plaintext: a default-options channel, like most clients' own channels. gRPC shares
    # subchannels between channels with identical arguments, so a successful wait also
    # wakes the caller's channels to a restarted process (instead of leaving them in
    # reconnect backoff, failing fast with the old 'connection refused').
    channel = aio.insecure_channel(address) if tls is None else make_channel(address, tls)
    async with channel as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} not SERVING within {timeout}s")
            await asyncio.sleep(0.05)
