"""ClusterService: node membership, heartbeats and the cluster topology."""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from grpc import aio

from config_server import convert
from config_server.catalog import Catalog, TopologyView
from config_server.failure_detector import FailureDetector
from config_server.leader_duties import LeaderDuties, forwarded_by
from config_server.replset_checks import check_member_view
from lauradb.cluster import cluster_pb2, cluster_pb2_grpc
from lauradb.errors import ErrorCode, LauraError
from lauradb.replset.monitor import HelloFn
from lauradb.rpc.server import rpc_method

log = logging.getLogger("lauradb.config.cluster")

Context = aio.ServicerContext[Any, Any]

CLUSTER_SERVICE = cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name


class ClusterService(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(
        self, catalog: Catalog, detector: FailureDetector, hello: HelloFn | None = None
    ) -> None:
        self.catalog = catalog
        self.detector = detector
        self.hello = hello  # Hello on a member: checks a registering member's --peers
        self._shard_cache: tuple[TopologyView, list[cluster_pb2.ShardInfo]] | None = None
        # Replica-set members' live state (registration, then every heartbeat):
        # node id -> (replset, role, term). Not persisted: heartbeats refill it.
        self._members: dict[str, tuple[str, int, int]] = {}
        # who leads (set by the app once it listens); None: the only config server
        self.leader: LeaderDuties | None = None

    def _tell_leader(self, request: cluster_pb2.HeartbeatRequest, context: Context) -> None:
        """A non-leader passes the heartbeats it gets on to the leader, whose failure
        detector decides which nodes are down (in the background; best effort)."""
        if self.leader is not None and not forwarded_by(context):
            self.leader.forward_in_background(
                CLUSTER_SERVICE, "Heartbeat", request, cluster_pb2.HeartbeatResponse,
                request.node_id,
            )

    def topology(self) -> cluster_pb2.ClusterTopology:
        view = self.catalog.topology()
        cached = self._shard_cache
        if cached is None or cached[0] is not view:
            cached = (view, convert.shard_infos(view))
            self._shard_cache = cached
        topology = convert.topology_message(view, cached[1], self.detector.last_heartbeat_ms)
        if self._members:
            self._add_replica_sets(topology)
        return topology

    def _note_member(self, node_id: str, replset: str, role: int, term: int) -> None:
        if replset:
            self._members[node_id] = (replset, role, term)
        else:
            self._members.pop(node_id, None)

    def _add_replica_sets(self, topology: cluster_pb2.ClusterTopology) -> None:
        """``replica_sets`` (members, primary, term) and each member node's live role
        and term, from what the members last reported."""
        sets: dict[str, cluster_pb2.ReplicaSet] = {}
        best: dict[str, int] = {}  # replset -> term of the primary chosen so far
        for node in topology.nodes:
            state = self._members.get(node.id)
            if state is None:
                continue
            replset, role, term = state
            node.replset, node.term = replset, term
            node.role = role  # type: ignore[assignment]
            rs = sets.get(replset)
            if rs is None:
                rs = sets[replset] = cluster_pb2.ReplicaSet(id=replset)
            rs.node_ids.append(node.id)
            rs.term = max(rs.term, term)
            if node.up and role == cluster_pb2.PRIMARY and term >= best.get(replset, -1):
                best[replset] = term
                rs.primary_id = node.id
        for replset in sorted(sets):
            rs = sets[replset]
            if rs.primary_id and best[replset] < rs.term:
                rs.primary_id = ""  # a member already knows a newer term: it was deposed
            topology.replica_sets.append(rs)

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
        await self._check_replica_member(node)
        record = convert.node_record(node, now_ms=int(time.time() * 1000))
        version = self.catalog.register_node(record)
        self._note_member(node.id, node.replset, int(node.role), node.term)
        self.detector.heartbeat(record.node_id)
        self._tell_leader(cluster_pb2.HeartbeatRequest(node_id=node.id), context)
        log.info("node %s registered at %s:%d (topology %d)", node.id, node.host, node.port, version)
        topology = self.topology()
        return cluster_pb2.NodeRegistrationResponse(
            success=True,
            message=f"node '{node.id}' registered",
            cluster_nodes=topology.nodes,
            topology=topology,
        )

    async def _check_replica_member(self, node: cluster_pb2.Node) -> None:
        """A replica-set member registering for a shard whose members are recorded
        (AddShard done): it must be one of them, and its --peers must agree with the
        record (BAD_VALUE otherwise; the record is kept and the node stays unregistered)."""
        if not (node.replset and node.shard_id):
            return
        try:
            shard = self.catalog.get_shard(node.shard_id)
        except LauraError:
            return  # not added yet: AddShard checks the members then
        if not shard.members:
            return
        address = f"{node.host}:{node.port}"
        listing = ", ".join(shard.members)
        if address not in shard.members:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"node '{node.id}' at {address} registers as a member of replica set "
                f"'{node.replset}' for shard '{node.shard_id}', but the config server records "
                f"the shard's members as [{listing}]: start it with the --shard-id/--port of a "
                f"recorded member, or AddShard the shard with all its members",
            )
        if self.hello is None:
            return
        try:
            view = await self.hello(address, 1.0)
        except (grpc.RpcError, LauraError) as exc:
            log.debug("cannot check the peers of %s: %s", address, exc)
            return
        try:
            await check_member_view(node.shard_id, shard.members, address, view, self.hello)
        except LauraError as err:
            log.warning("registration of %s refused: %s", node.id, err.message)
            raise

    @rpc_method
    async def DeregisterNode(
        self, request: cluster_pb2.NodeDeregistrationRequest, context: Context
    ) -> cluster_pb2.NodeDeregistrationResponse:
        self.catalog.deregister_node(request.node_id)
        self.detector.forget(request.node_id)
        self._members.pop(request.node_id, None)
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
        self._tell_leader(request, context)
        status = request.status
        if request.HasField("status") and (status.replset or request.node_id in self._members):
            self._note_member(request.node_id, status.replset, int(status.role), status.term)
        return cluster_pb2.HeartbeatResponse(
            ack=True, timestamp=int(time.time() * 1000), topology=self.topology()
        )

    @rpc_method
    async def GetTopology(
        self, request: cluster_pb2.GetTopologyRequest, context: Context
    ) -> cluster_pb2.ClusterTopology:
        return self.topology()
