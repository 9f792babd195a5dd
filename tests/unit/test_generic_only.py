"""GenericOnly: generated ``add_*Servicer_to_server`` code registers services through
generic handlers only (never ``add_registered_method_handlers``, whose per-method
futures grpc.aio awaits on every accepted call); and a real RpcServer built on it
serves health, reflection and its services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lauradb.cluster import routing_pb2, routing_pb2_grpc
from lauradb.rpc.server import LIVENESS_SERVICE, GenericOnly, RpcServer

ROUTER_SERVICE = routing_pb2.DESCRIPTOR.services_by_name["RouterService"]
CONFIG_SERVICE = routing_pb2.DESCRIPTOR.services_by_name["ConfigService"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class FakeServer:
    """Records what registration code does to a server."""

    def __init__(self) -> None:
        self.generic: list[tuple[grpc.GenericRpcHandler, ...]] = []
        self.registered: list[tuple[str, dict[str, Any]]] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.append(tuple(handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.registered.append((service, handlers))


class Details(grpc.HandlerCallDetails):
    """A ``grpc.HandlerCallDetails`` as a generic handler's ``service`` receives it."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def test_generated_code_does_register_methods_without_adaptor() -> None:
    """The premise: generated code given the server itself adds registered methods."""
    fake = FakeServer()
    routing_pb2_grpc.add_RouterServiceServicer_to_server(
        routing_pb2_grpc.RouterServiceServicer(), fake
    )
    assert len(fake.generic) == 1
    assert [service for service, _ in fake.registered] == [ROUTER_SERVICE.full_name]


def test_register_adds_one_generic_handler_and_no_registered_methods() -> None:
    fake = FakeServer()
    servicer = routing_pb2_grpc.RouterServiceServicer()
    GenericOnly(fake).register(routing_pb2_grpc.add_RouterServiceServicer_to_server, servicer)
    assert fake.registered == []
    assert len(fake.generic) == 1
    (handlers,) = fake.generic
    assert len(handlers) == 1


def test_generic_handler_resolves_every_router_method() -> None:
    fake = FakeServer()
    servicer = routing_pb2_grpc.RouterServiceServicer()
    GenericOnly(fake).register(routing_pb2_grpc.add_RouterServiceServicer_to_server, servicer)
    (handler,) = fake.generic[0]
    assert ROUTER_SERVICE.full_name == "lauradb.cluster.RouterService"
    assert len(ROUTER_SERVICE.methods) > 1
    for method in ROUTER_SERVICE.methods:
        resolved = handler.service(Details(f"/{ROUTER_SERVICE.full_name}/{method.name}"))
        assert resolved is not None, method.name
        assert resolved.unary_unary == getattr(servicer, method.name), method.name
        assert resolved.request_deserializer is not None
        assert resolved.response_serializer is not None
    assert handler.service(Details(f"/{ROUTER_SERVICE.full_name}/NoSuchMethod")) is None
    assert handler.service(Details(f"/{CONFIG_SERVICE.full_name}/Query")) is None


def test_each_register_flushes_its_own_handlers() -> None:
    fake = FakeServer()
    adaptor = GenericOnly(fake)
    adaptor.register(
        routing_pb2_grpc.add_RouterServiceServicer_to_server,
        routing_pb2_grpc.RouterServiceServicer(),
    )
    adaptor.register(
        routing_pb2_grpc.add_ConfigServiceServicer_to_server,
        routing_pb2_grpc.ConfigServiceServicer(),
    )
    assert fake.registered == []
    assert [len(h) for h in fake.generic] == [1, 1]
    config_handler = fake.generic[1][0]
    for method in CONFIG_SERVICE.methods:
        assert config_handler.service(Details(f"/{CONFIG_SERVICE.full_name}/{method.name}"))
    # a registration that adds nothing calls nothing
    adaptor.register(lambda servicer, server: None, object())
    assert len(fake.generic) == 2


# ----------------------------------------------------------------------------- a real server


@pytest.fixture
async def rpc_server() -> AsyncIterator[RpcServer]:
    server = RpcServer(name="t", host="127.0.0.1", port=0, tls=None)
    server.add_service(
        routing_pb2_grpc.add_RouterServiceServicer_to_server,
        routing_pb2_grpc.RouterServiceServicer(),  # every method: UNIMPLEMENTED
        ROUTER_SERVICE.full_name,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


async def _list_services(channel: aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names: list[str] = []
    async for response in call:
        names.extend(s.name for s in response.list_services_response.service)
    return names


async def test_rpc_server_serves_health_reflection_and_services(rpc_server: RpcServer) -> None:
    assert rpc_server.bound_port > 0
    async with aio.insecure_channel(f"127.0.0.1:{rpc_server.bound_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def status(service: str) -> int:
            resp = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            return int(resp.status)

        assert await status("") == NOT_SERVING  # not ready until set_serving(True)
        assert await status(LIVENESS_SERVICE) == SERVING
        await rpc_server.set_serving(True)
        assert await status("") == SERVING
        assert await status(ROUTER_SERVICE.full_name) == SERVING

        names = await _list_services(channel)
        assert set(names) >= {
            ROUTER_SERVICE.full_name,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }

        # the service registered through GenericOnly is reachable (the base servicer
        # answers UNIMPLEMENTED itself; an unknown method is UNIMPLEMENTED from gRPC)
        router = routing_pb2_grpc.RouterServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            await router.Query(routing_pb2.QueryRequest(database="d", collection="c"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "Method not implemented" in (info.value.details() or "")

        await rpc_server.set_serving(False)
        assert await status("") == NOT_SERVING
