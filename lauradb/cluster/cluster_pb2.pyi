from lauradb.cluster import common_pb2 as _common_pb2
from lauradb.cluster import error_pb2 as _error_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[NodeRole]
    PRIMARY: _ClassVar[NodeRole]
    SECONDARY: _ClassVar[NodeRole]
    ARBITER: _ClassVar[NodeRole]
    SHARD: _ClassVar[NodeRole]
    CONFIG_SERVER: _ClassVar[NodeRole]
    ROUTER: _ClassVar[NodeRole]
UNKNOWN: NodeRole
PRIMARY: NodeRole
SECONDARY: NodeRole
ARBITER: NodeRole
SHARD: NodeRole
CONFIG_SERVER: NodeRole
ROUTER: NodeRole

class Node(_message.Message):
    __slots__ = ("id", "host", "port", "role", "priority", "tags", "up", "last_heartbeat_ms", "shard_id", "replset", "term")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    REPLSET_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    id: str
    host: str
    port: int
    role: NodeRole
    priority: int
    tags: _containers.ScalarMap[str, str]
    up: bool
    last_heartbeat_ms: int
    shard_id: str
    replset: str
    term: int
    def __init__(self, id: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., role: _Optional[_Union[NodeRole, str]] = ..., priority: _Optional[int] = ..., tags: _Optional[_Mapping[str, str]] = ..., up: _Optional[bool] = ..., last_heartbeat_ms: _Optional[int] = ..., shard_id: _Optional[str] = ..., replset: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...

class NodeRegistrationRequest(_message.Message):
    __slots__ = ("node", "seed_nodes")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SEED_NODES_FIELD_NUMBER: _ClassVar[int]
    node: Node
    seed_nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ..., seed_nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class NodeRegistrationResponse(_message.Message):
    __slots__ = ("success", "message", "cluster_nodes", "topology", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_NODES_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    cluster_nodes: _containers.RepeatedCompositeFieldContainer[Node]
    topology: ClusterTopology
    error: _error_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., cluster_nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., topology: _Optional[_Union[ClusterTopology, _Mapping]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class NodeDeregistrationRequest(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class NodeDeregistrationResponse(_message.Message):
    __slots__ = ("success", "message", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    error: _error_pb2.Error
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ClusterTopology(_message.Message):
    __slots__ = ("version", "nodes", "primary_id", "replica_sets", "shards", "error")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_SETS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    version: int
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    primary_id: str
    replica_sets: _containers.RepeatedCompositeFieldContainer[ReplicaSet]
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    error: _error_pb2.Error
    def __init__(self, version: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., primary_id: _Optional[str] = ..., replica_sets: _Optional[_Iterable[_Union[ReplicaSet, _Mapping]]] = ..., shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class ReplicaSet(_message.Message):
    __slots__ = ("id", "node_ids", "primary_id", "term")
    ID_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    id: str
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    primary_id: str
    term: int
    def __init__(self, id: _Optional[str] = ..., node_ids: _Optional[_Iterable[str]] = ..., primary_id: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...

class ShardInfo(_message.Message):
    __slots__ = ("shard_id", "node_id", "chunks", "host", "port", "draining", "members")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    node_id: str
    chunks: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChunkRange]
    host: str
    port: int
    draining: bool
    members: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, shard_id: _Optional[str] = ..., node_id: _Optional[str] = ..., chunks: _Optional[_Iterable[_Union[_common_pb2.ChunkRange, _Mapping]]] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., draining: _Optional[bool] = ..., members: _Optional[_Iterable[str]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "timestamp", "status")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    timestamp: int
    status: NodeStatus
    def __init__(self, node_id: _Optional[str] = ..., timestamp: _Optional[int] = ..., status: _Optional[_Union[NodeStatus, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("ack", "timestamp", "topology", "error")
    ACK_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ack: bool
    timestamp: int
    topology: ClusterTopology
    error: _error_pb2.Error
    def __init__(self, ack: _Optional[bool] = ..., timestamp: _Optional[int] = ..., topology: _Optional[_Union[ClusterTopology, _Mapping]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("role", "last_oplog_id", "resources", "term", "replset", "commit_oplog_id")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LAST_OPLOG_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    REPLSET_FIELD_NUMBER: _ClassVar[int]
    COMMIT_OPLOG_ID_FIELD_NUMBER: _ClassVar[int]
    role: NodeRole
    last_oplog_id: int
    resources: ResourceStats
    term: int
    replset: str
    commit_oplog_id: int
    def __init__(self, role: _Optional[_Union[NodeRole, str]] = ..., last_oplog_id: _Optional[int] = ..., resources: _Optional[_Union[ResourceStats, _Mapping]] = ..., term: _Optional[int] = ..., replset: _Optional[str] = ..., commit_oplog_id: _Optional[int] = ...) -> None: ...

class ResourceStats(_message.Message):
    __slots__ = ("cpu_percent", "memory_bytes", "disk_bytes_used", "disk_bytes_total")
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_USED_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    memory_bytes: int
    disk_bytes_used: int
    disk_bytes_total: int
    def __init__(self, cpu_percent: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., disk_bytes_used: _Optional[int] = ..., disk_bytes_total: _Optional[int] = ...) -> None: ...

class GetTopologyRequest(_message.Message):
    __slots__ = ("min_version",)
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    min_version: int
    def __init__(self, min_version: _Optional[int] = ...) -> None: ...
