"""ClusterService: node membership, heartbeats and the cluster topology."""

from __future__ import annotations

import logging
import time
from typing import Any

from grpc import aio

from config_server import convert
from config_server.catalog import Catalog, TopologyView
from config_server.failure_detector import FailureDetector
from lauradb.cluster import cluster_pb2, cluster_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.server import rpc_method

log = logging.getLogger("lauradb.config.cluster")

Context = aio.ServicerContext[Any, Any]


class ClusterService(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(self, catalog: Catalog, detector: FailureDetector) -> None:
        self.catalog = catalog
        self.detector = detector
        self._shard_cache: tuple[TopologyView, list[cluster_pb2.ShardInfo]] | None = None

    def topology(self) -> cluster_pb2.ClusterTopology:
        view = self.catalog.topology()
        cached = self._shard_cache
        if cached is None or cached[0] is not view:
            cached = (view, convert.shard_infos(view))
            self._shard_cache = cached
        return convert.topology_message(view, cached[1], self.detector.last_heartbeat_ms)

    @rpc_method
    async def RegisterNode(
        self, request: cluster_pb2.NodeRegistrationRequest, context: Context
    ) -> cluster_pb2.NodeRegistrationResponse:
        node = request.node
        if not node.id:
            raise LauraError(ErrorCode.BAD_VALUE, "node.id is required")
        if not node.host or not 0 < node.port < 65536:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"node '{node.id}' needs a host and a port in 1..65535, "
                f"got {node.host!r}:{node.port}",
            )
        record = convert.node_record(node, now_ms=int(time.time() * 1000))
        version = self.catalog.register_node(record)
        self.detector.heartbeat(record.node_id)
        log.info("node %s registered at %s:%d (topology %d)", node.id, node.host, node.port, version)
        topology = self.topology()
        return cluster_pb2.NodeRegistrationResponse(
            success=True,
            message=f"node '{node.id}' registered",
            cluster_nodes=topology.nodes,
            topology=topology,
        )

    @rpc_method
    async def DeregisterNode(
        self, request: cluster_pb2.NodeDeregistrationRequest, context: Context
    ) -> cluster_pb2.NodeDeregistrationResponse:
        self.catalog.deregister_node(request.node_id)
        self.detector.forget(request.node_id)
        log.info("node %s deregistered: %s", request.node_id, request.reason or "no reason given")
        return cluster_pb2.NodeDeregistrationResponse(
            success=True, message=f"node '{request.node_id}' deregistered"
        )

    @rpc_method
    async def Heartbeat(
        self, request: cluster_pb2.HeartbeatRequest, context: Context
    ) -> cluster_pb2.HeartbeatResponse:
        if not request.node_id:
            raise LauraError(ErrorCode.BAD_VALUE, "node_id is required")
        if not self.detector.tracking(request.node_id):
            self.catalog.get_node(request.node_id)  # NODE_NOT_FOUND: register first
        if self.detector.heartbeat(request.node_id):
            log.info("node %s is up again", request.node_id)
        return cluster_pb2.HeartbeatResponse(
            ack=True, timestamp=int(time.time() * 1000), topology=self.topology()
        )

    @rpc_method
    async def GetTopology(
        self, request: cluster_pb2.GetTopologyRequest, context: Context
    ) -> cluster_pb2.ClusterTopology:
        return self.topology()
