"""A synchronous connection to the router: RouterService and ConfigService stubs,
plaintext or (mutual) TLS."""

from __future__ import annotations

from typing import Any

import grpc

from lauradb.cluster import replset_pb2, routing_pb2_grpc, shard_pb2_grpc
from lauradb.rpc.channels import TlsSettings, make_sync_channel
from lauradb.rpc.errors import from_rpc_error


class Client:
    """Calls the router with a deadline; a failed call raises the LauraError it carried.
    ``tls``: trust ``tls.ca`` (system roots without one) and present ``tls.cert`` as the
    client certificate when given (routers started with ``--tls-client-auth require``);
    None: plaintext."""

    def __init__(self, address: str, timeout: float, tls: TlsSettings | None = None) -> None:
        self.address = address
        self.timeout = timeout
        self.tls = tls
        self._channel = make_sync_channel(address, tls)
        self.router = routing_pb2_grpc.RouterServiceStub(self._channel)
        self.config = routing_pb2_grpc.ConfigServiceStub(self._channel)

    def call(self, method: Any, request: Any) -> Any:
        """``method(request)`` with the deadline; grpc errors become LauraError."""
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, target=self.address) from None

    def hello(self, member: str, timeout: float = 1.0) -> replset_pb2.HelloResponse | None:
        """``ShardService.Hello`` on a shard member (None when it does not answer)."""
        channel = make_sync_channel(member, self.tls)
        try:
            stub = shard_pb2_grpc.ShardServiceStub(channel)
            resp: replset_pb2.HelloResponse = stub.Hello(replset_pb2.HelloRequest(), timeout=timeout)
            return resp
        except grpc.RpcError:
            return None
        finally:
            channel.close()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
