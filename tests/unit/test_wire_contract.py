"""The generated descriptors keep LauraDB's fixed wire surface (WIRE.md) intact.

The fixed surface is encoded below as data, in the same notation as WIRE.md
("name=number type"), so this test never reads files outside the repository. Every
service, RPC, message, field and enum value listed must exist exactly as listed
(name, number, type, repeated/map, message and enum types, streaming); our additions
to a fixed message must take field numbers from 100 upward.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor

from lauradb.cluster import (
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    error_pb2,
    replication_pb2,
    replication_pb2_grpc,
    router_ext_pb2,
    routing_pb2,
    routing_pb2_grpc,
    shard_pb2,
    transaction_pb2,
    transaction_pb2_grpc,
)

PACKAGE = "lauradb.cluster"
FIRST_ADDITION_NUMBER = 100

FIXED_SURFACE = """
### common
- enum `OperationType`: UNKNOWN_OP=0, INSERT=1, UPDATE=2, DELETE=3, CREATE_COLLECTION=4, DROP_COLLECTION=5, CREATE_INDEX=6, DROP_INDEX=7
- message `ChunkRange`: chunk_id=1 string, min_key=2 bytes, max_key=3 bytes

### cluster
- service `ClusterService`: RegisterNode(NodeRegistrationRequest) → NodeRegistrationResponse; DeregisterNode(NodeDeregistrationRequest) → NodeDeregistrationResponse; Heartbeat(HeartbeatRequest) → HeartbeatResponse; GetTopology(GetTopologyRequest) → ClusterTopology
- message `Node`: id=1 string, host=2 string, port=3 int32, role=4 NodeRole, priority=5 int64, tags=6 map<string,string>
- enum `NodeRole`: UNKNOWN=0, PRIMARY=1, SECONDARY=2, ARBITER=3, SHARD=4, CONFIG_SERVER=5, ROUTER=6
- message `NodeRegistrationRequest`: node=1 Node, seed_nodes=2 repeated string
- message `NodeRegistrationResponse`: success=1 bool, message=2 string, cluster_nodes=3 repeated Node, topology=4 ClusterTopology
- message `NodeDeregistrationRequest`: node_id=1 string, reason=2 string
- message `NodeDeregistrationResponse`: success=1 bool, message=2 string
- message `ClusterTopology`: version=1 int64, nodes=2 repeated Node, primary_id=3 string, replica_sets=4 repeated ReplicaSet, shards=5 repeated ShardInfo
- message `ReplicaSet`: id=1 string, node_ids=2 repeated string, primary_id=3 string, term=4 int64
- message `ShardInfo`: shard_id=1 string, node_id=2 string, chunks=3 repeated ChunkRange
- message `HeartbeatRequest`: node_id=1 string, timestamp=2 int64, status=3 NodeStatus
- message `HeartbeatResponse`: ack=1 bool, timestamp=2 int64, topology=3 ClusterTopology
- message `NodeStatus`: role=1 NodeRole, last_oplog_id=2 int64, resources=3 ResourceStats
- message `ResourceStats`: cpu_percent=1 double, memory_bytes=2 int64, disk_bytes_used=3 int64, disk_bytes_total=4 int64
- message `GetTopologyRequest`: min_version=1 int64

### replication
- service `ReplicationService`: StreamOplog(ReplicationStreamRequest) → stream ReplicationStreamResponse; InitialSync(InitialSyncRequest) → stream InitialSyncResponse; RequestVote(VoteRequest) → VoteResponse; AcknowledgeWrite(WriteAcknowledgmentRequest) → WriteAcknowledgmentResponse; AppendOplog(OplogEntry) → AppendOplogResponse
- message `OplogEntry`: op_id=1 int64, timestamp=2 int64 (unix ms), namespace=3 string ("db.coll"), op_type=4 OperationType, document=5 bytes, query=6 bytes, update=7 bytes, txn_id=8 int64
- message `ReplicationStreamRequest`: replica_id=1 string, start_oplog_id=2 int64, initial_sync=3 bool
- message `ReplicationStreamResponse`: entries=1 repeated OplogEntry, latest_oplog_id=2 int64, more_available=3 bool
- message `InitialSyncRequest`: replica_id=1 string, collections=2 repeated string
- message `InitialSyncResponse`: data_chunk=1 bytes, complete=2 bool, sync_point_oplog_id=3 int64
- message `VoteRequest`: candidate_id=1 string, term=2 int64, last_oplog_id=3 int64, priority=4 int64
- message `VoteResponse`: vote_granted=1 bool, term=2 int64, voter_id=3 string
- message `WriteAcknowledgment`: node_id=1 string, oplog_id=2 int64, success=3 bool, error=4 string
- message `WriteAcknowledgmentRequest`: acks=1 repeated WriteAcknowledgment
- message `WriteAcknowledgmentResponse`: all_acknowledged=1 bool, ack_count=2 int32
- message `AppendOplogResponse`: success=1 bool, oplog_id=2 int64, error=3 string

### routing
- service `RouterService`: Query(QueryRequest) → QueryResponse; Insert(InsertRequest) → InsertResponse; Update(UpdateRequest) → UpdateResponse; Delete(DeleteRequest) → DeleteResponse; Aggregate(AggregationRequest) → AggregationResponse; GetShardMap(GetShardMapRequest) → GetShardMapResponse
- service `ConfigService`: AddShard(AddShardRequest) → AddShardResponse; RemoveShard(RemoveShardRequest) → RemoveShardResponse; SplitChunk(SplitChunkRequest) → SplitChunkResponse; MigrateChunk(MigrateChunkRequest) → MigrateChunkResponse
- message `QueryRequest`: request_id=1 string, database=2 string, collection=3 string, query=4 bytes, projection=5 bytes, limit=6 int64, skip=7 int64, sort=8 bytes, shard_key=9 bytes
- message `QueryResponse`: request_id=1 string, documents=2 repeated bytes, more_available=3 bool, cursor_id=4 string, stats=5 QueryStats
- message `QueryStats`: documents_examined=1 int32, documents_returned=2 int32, execution_time_ms=3 int64, shards_queried=4 repeated string
- message `InsertRequest`: request_id=1 string, database=2 string, collection=3 string, documents=4 repeated bytes, ordered=5 bool
- message `InsertResponse`: request_id=1 string, inserted_count=2 int32, errors=3 repeated InsertError
- message `InsertError`: index=1 int32, error=2 string
- message `UpdateRequest`: request_id=1 string, database=2 string, collection=3 string, query=4 bytes, update=5 bytes, multi=6 bool, upsert=7 bool
- message `UpdateResponse`: request_id=1 string, matched_count=2 int32, modified_count=3 int32, upserted_count=4 int32
- message `DeleteRequest`: request_id=1 string, database=2 string, collection=3 string, query=4 bytes, multi=5 bool
- message `DeleteResponse`: request_id=1 string, deleted_count=2 int32
- message `AggregationRequest`: request_id=1 string, database=2 string, collection=3 string, pipeline=4 repeated bytes
- message `AggregationResponse`: request_id=1 string, results=2 repeated bytes
- message `ShardRouteInfo`: shard_id=1 string, node_id=2 string, host=3 string, port=4 int32, chunks=5 repeated ChunkRange
- message `GetShardMapRequest`: database=1 string, collection=2 string, version=3 int64 (return the map only if newer than this)
- message `GetShardMapResponse`: version=1 int64, shards=2 repeated ShardRouteInfo, shard_key_field=3 string, strategy=4 ShardingStrategy
- enum `ShardingStrategy`: UNKNOWN_STRATEGY=0, HASH=1, RANGE=2, COMPOUND=3
- message `AddShardRequest`: shard_id=1 string, node_id=2 string, host=3 string, port=4 int32
- message `AddShardResponse`: success=1 bool, message=2 string
- message `RemoveShardRequest`: shard_id=1 string
- message `RemoveShardResponse`: success=1 bool, message=2 string
- message `SplitChunkRequest`: chunk_id=1 string, split_point=2 bytes
- message `SplitChunkResponse`: success=1 bool, left_chunk_id=2 string, right_chunk_id=3 string
- message `MigrateChunkRequest`: chunk_id=1 string, from_shard=2 string, to_shard=3 string
- message `MigrateChunkResponse`: success=1 bool, documents_migrated=2 int64, error=3 string

### transaction
- service `TransactionService`: Prepare(PrepareRequest) → PrepareResponse; Commit(CommitRequest) → CommitResponse; Abort(AbortRequest) → AbortResponse; QueryTransactionState(RecoveryRequest) → RecoveryResponse
- message `Transaction`: txn_id=1 string, timestamp=2 int64, participants=3 repeated string, state=4 TransactionState
- enum `TransactionState`: UNKNOWN_STATE=0, ACTIVE=1, PREPARING=2, PREPARED=3, COMMITTING=4, COMMITTED=5, ABORTING=6, ABORTED=7
- message `PrepareRequest`: txn_id=1 string, coordinator_id=2 string, operations=3 repeated Operation, timeout_ms=4 int64
- message `Operation`: database=1 string, collection=2 string, op_type=3 OperationType, data=4 bytes
- message `PrepareResponse`: txn_id=1 string, participant_id=2 string, vote=3 bool, error=4 string
- message `CommitRequest`: txn_id=1 string, coordinator_id=2 string
- message `CommitResponse`: txn_id=1 string, participant_id=2 string, success=3 bool, error=4 string
- message `AbortRequest`: txn_id=1 string, coordinator_id=2 string, reason=3 string
- message `AbortResponse`: txn_id=1 string, participant_id=2 string, success=3 bool, error=4 string
- message `RecoveryRequest`: txn_id=1 string, requesting_node_id=2 string
- message `RecoveryResponse`: txn_id=1 string, state=2 TransactionState, participants=3 repeated string, coordinator_id=4 string
"""

# One generated module per fixed .proto file (section of the table).
SECTION_MODULES: dict[str, ModuleType] = {
    "common": common_pb2,
    "cluster": cluster_pb2,
    "replication": replication_pb2,
    "routing": routing_pb2,
    "transaction": transaction_pb2,
}
ALL_MODULES: list[ModuleType] = [
    *SECTION_MODULES.values(),
    error_pb2,
    router_ext_pb2,
    shard_pb2,
]
GRPC_MODULES: dict[str, ModuleType] = {
    "cluster": cluster_pb2_grpc,
    "replication": replication_pb2_grpc,
    "routing": routing_pb2_grpc,
    "transaction": transaction_pb2_grpc,
}

SCALAR_TYPES: dict[str, int] = {
    "string": FieldDescriptor.TYPE_STRING,
    "bytes": FieldDescriptor.TYPE_BYTES,
    "bool": FieldDescriptor.TYPE_BOOL,
    "int32": FieldDescriptor.TYPE_INT32,
    "int64": FieldDescriptor.TYPE_INT64,
    "double": FieldDescriptor.TYPE_DOUBLE,
}


# --- the table, parsed -------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    name: str
    number: int
    type_name: str  # a scalar, an enum or message name, or "map<K,V>"
    repeated: bool


@dataclass(frozen=True)
class RpcSpec:
    name: str
    input_type: str
    output_type: str
    server_streaming: bool


@dataclass(frozen=True)
class Item:
    section: str
    kind: str  # "service" | "message" | "enum"
    name: str
    body: str

    def __str__(self) -> str:
        return f"{self.section}.{self.name}"


ITEM_LINE = re.compile(r"^- (service|message|enum) `(\w+)`: (.+)$")
FIELD = re.compile(r"^(\w+)=(\d+) (repeated )?(map<\w+,\w+>|\w+)$")
RPC = re.compile(r"^(\w+)\((\w+)\) → (stream )?(\w+)$")
ENUM_VALUE = re.compile(r"^(\w+)=(\d+)$")
COMMENT = re.compile(r" \([^)]*\)")


def parse_surface(text: str) -> list[Item]:
    items: list[Item] = []
    section = ""
    for line in text.strip().splitlines():
        if line.startswith("### "):
            section = line[4:].strip()
        elif line.strip():
            match = ITEM_LINE.match(line)
            assert match, f"unparsable table line: {line!r}"
            items.append(Item(section, match[1], match[2], match[3]))
    return items


def parse_fields(body: str) -> list[FieldSpec]:
    specs = []
    for part in COMMENT.sub("", body).split(", "):
        match = FIELD.match(part.strip())
        assert match, f"unparsable field: {part!r}"
        specs.append(FieldSpec(match[1], int(match[2]), match[4], bool(match[3])))
    return specs


def parse_rpcs(body: str) -> list[RpcSpec]:
    specs = []
    for part in body.split("; "):
        match = RPC.match(part.strip())
        assert match, f"unparsable rpc: {part!r}"
        specs.append(RpcSpec(match[1], match[2], match[4], bool(match[3])))
    return specs


def parse_enum(body: str) -> dict[str, int]:
    values = {}
    for part in body.split(", "):
        match = ENUM_VALUE.match(part.strip())
        assert match, f"unparsable enum value: {part!r}"
        values[match[1]] = int(match[2])
    return values


ITEMS = parse_surface(FIXED_SURFACE)
SERVICES = [i for i in ITEMS if i.kind == "service"]
MESSAGES = [i for i in ITEMS if i.kind == "message"]
ENUMS = [i for i in ITEMS if i.kind == "enum"]


def file_of(item: Item) -> FileDescriptor:
    descriptor: FileDescriptor = SECTION_MODULES[item.section].DESCRIPTOR
    return descriptor


def full(name: str) -> str:
    return f"{PACKAGE}.{name}"


# --- the table itself is what WIRE.md lists --------------------------------------


def test_table_is_complete() -> None:
    assert [i.section for i in SERVICES] == [
        "cluster", "replication", "routing", "routing", "transaction"
    ]
    assert len(MESSAGES) == 58
    assert len(ENUMS) == 4
    assert sum(len(parse_rpcs(s.body)) for s in SERVICES) == 23
    assert sum(len(parse_fields(m.body)) for m in MESSAGES) == 200
    names = [i.name for i in ITEMS]
    assert len(names) == len(set(names)), "an item is listed twice"


# --- package and files -----------------------------------------------------------


@pytest.mark.parametrize("module", ALL_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_package_is_lauradb_cluster(module: ModuleType) -> None:
    assert module.DESCRIPTOR.package == PACKAGE
    assert module.DESCRIPTOR.name.startswith("lauradb/cluster/")


@pytest.mark.parametrize("section", sorted(SECTION_MODULES))
def test_fixed_source_file_names(section: str) -> None:
    assert SECTION_MODULES[section].DESCRIPTOR.name == f"lauradb/cluster/{section}.proto"


# --- services ----------------------------------------------------------------------


@pytest.mark.parametrize("item", SERVICES, ids=str)
def test_service_rpcs(item: Item) -> None:
    services = file_of(item).services_by_name
    assert item.name in services, f"service {item.name} missing from {item.section}.proto"
    service = services[item.name]
    assert service.full_name == full(item.name)
    for rpc in parse_rpcs(item.body):
        method = service.methods_by_name.get(rpc.name)
        assert method is not None, f"{item.name}.{rpc.name} is missing"
        where = f"{item.name}.{rpc.name}"
        assert method.input_type.full_name == full(rpc.input_type), where
        assert method.output_type.full_name == full(rpc.output_type), where
        assert method.client_streaming is False, where
        assert method.server_streaming is rpc.server_streaming, where


class _RecordingChannel:
    """Stands in for a grpc channel: records the method paths a stub asks for."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}

    def _record(self, kind: str) -> Any:
        def factory(path: str, *args: Any, **kwargs: Any) -> str:
            self.paths[path.rsplit("/", 1)[-1]] = path
            return kind

        return factory

    def __getattr__(self, kind: str) -> Any:
        return self._record(kind)


@pytest.mark.parametrize("item", SERVICES, ids=str)
def test_generated_stub_method_paths(item: Item) -> None:
    channel = _RecordingChannel()
    stub_class = getattr(GRPC_MODULES[item.section], f"{item.name}Stub")
    stub = stub_class(channel)
    for rpc in parse_rpcs(item.body):
        assert channel.paths[rpc.name] == f"/{PACKAGE}.{item.name}/{rpc.name}"
        expected_kind = "unary_stream" if rpc.server_streaming else "unary_unary"
        assert getattr(stub, rpc.name) == expected_kind


# --- messages ----------------------------------------------------------------------


def describe_type(field: FieldDescriptor) -> str:
    """The field's type in the table's notation (without 'repeated')."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        message: Descriptor | None = field.message_type
        assert message is not None
        if message.GetOptions().map_entry:
            key, value = message.fields_by_name["key"], message.fields_by_name["value"]
            return f"map<{describe_type(key)},{describe_type(value)}>"
        return message.full_name
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return field.enum_type.full_name
    for name, code in SCALAR_TYPES.items():
        if field.type == code:
            return name
    return f"<type {field.type}>"


def expected_type(spec: FieldSpec) -> str:
    if spec.type_name in SCALAR_TYPES or spec.type_name.startswith("map<"):
        return spec.type_name
    return full(spec.type_name)


def is_map(field: FieldDescriptor) -> bool:
    message = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
    return message is not None and bool(message.GetOptions().map_entry)


@pytest.mark.parametrize("item", MESSAGES, ids=str)
def test_message_fixed_fields(item: Item) -> None:
    messages = file_of(item).message_types_by_name
    assert item.name in messages, f"message {item.name} missing from {item.section}.proto"
    message = messages[item.name]
    assert message.full_name == full(item.name)
    for spec in parse_fields(item.body):
        where = f"{item.name}.{spec.name}"
        field = message.fields_by_name.get(spec.name)
        assert field is not None, f"{where} is missing"
        assert field.number == spec.number, f"{where} renumbered to {field.number}"
        assert describe_type(field) == expected_type(spec), f"{where} retyped"
        repeated = spec.repeated or spec.type_name.startswith("map<")
        assert field.is_repeated is repeated, f"{where}: repeated should be {repeated}"
        assert is_map(field) is spec.type_name.startswith("map<"), where
        assert field.containing_oneof is None or field.containing_oneof.name.startswith("_"), (
            f"{where} moved into a oneof"
        )


@pytest.mark.parametrize("item", MESSAGES, ids=str)
def test_message_additions_numbered_from_100(item: Item) -> None:
    message = file_of(item).message_types_by_name[item.name]
    fixed = {spec.name for spec in parse_fields(item.body)}
    additions = [f for f in message.fields if f.name not in fixed]
    low = [f"{f.name}={f.number}" for f in additions if f.number < FIRST_ADDITION_NUMBER]
    assert not low, f"{item.name}: our additions must use numbers >= 100: {low}"


# --- enums -------------------------------------------------------------------------


@pytest.mark.parametrize("item", ENUMS, ids=str)
def test_enum_values(item: Item) -> None:
    enums = file_of(item).enum_types_by_name
    assert item.name in enums, f"enum {item.name} missing from {item.section}.proto"
    enum = enums[item.name]
    assert enum.full_name == full(item.name)
    actual = {value.name: value.number for value in enum.values}
    for name, number in parse_enum(item.body).items():
        assert actual.get(name) == number, f"{item.name}.{name} should be {number}"
    numbers = [value.number for value in enum.values]
    assert len(numbers) == len(set(numbers)), f"{item.name} reuses a number"


# --- the error model rides on field 100 ---------------------------------------------


def test_error_message_shape() -> None:
    error = error_pb2.DESCRIPTOR.message_types_by_name["Error"]
    shape = {f.name: (f.number, describe_type(f)) for f in error.fields}
    assert shape == {
        "code": (1, "int32"),
        "code_name": (2, "string"),
        "message": (3, "string"),
        "details": (4, "bytes"),
    }
