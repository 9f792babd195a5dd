"""The pure parts of the Python driver (lauradb.client): addresses and options, request
building, response parsing, the error mapping, the retry rule and the cursor state
machine. Programs are driven by hand with made-up responses (no server)."""

from __future__ import annotations

import datetime
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import bson
import grpc
import pytest
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument

from lauradb.client import (
    BulkWriteError,
    ConfigurationError,
    CursorNotFound,
    DeleteMany,
    DeleteOne,
    DuplicateKeyError,
    ExecutionTimeout,
    InsertOne,
    InvalidOperation,
    LauraDBError,
    NetworkTimeout,
    OperationFailure,
    ReplaceOne,
    ServerUnavailable,
    UpdateMany,
    UpdateOne,
    WriteError,
    ops,
)
from lauradb.client import _common as c
from lauradb.client._transport import RetryState, RouterList
from lauradb.client.bulk import bulk_write
from lauradb.client.cursor import CursorCore, FindSpec, aggregate_call, find_call
from lauradb.client.errors import from_error_proto, from_rpc_error, is_retryable, never_sent
from lauradb.client.ops import Call, Program
from lauradb.client.status import cluster_status
from lauradb.cluster import cluster_pb2, error_pb2
from lauradb.cluster import router_ext_pb2 as ext
from lauradb.cluster import routing_pb2 as r
from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.errors import ERROR_TRAILER

CODEC = c.ClientOptions.build(
    None, timeout=None, retry_writes=True, retry_reads=True, codec_options=None,
    document_class=None, tz_aware=None, tls=False, tls_ca_file=None, tls_cert_file=None,
    tls_key_file=None, tls_server_name=None,
).codec_options


def options(addresses: list[str], **kw: Any) -> c.ClientOptions:
    args: dict[str, Any] = dict(
        timeout=None, retry_writes=True, retry_reads=True, codec_options=None,
        document_class=None, tz_aware=None, tls=False, tls_ca_file=None, tls_cert_file=None,
        tls_key_file=None, tls_server_name=None,
    )
    args.update(kw)
    return c.ClientOptions.build(addresses, **args)


class Script:
    """Drives a program: each call is answered by the next scripted item (a response,
    or an exception thrown back into the program)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[Call] = []

    def run(self, program: Program[Any]) -> Any:
        try:
            call = next(program)
            while True:
                self.calls.append(call)
                call.served_by = "r1:27017"
                answer = self.answers.pop(0)
                if callable(answer):
                    answer = answer(call)
                if isinstance(answer, BaseException):
                    call = program.throw(answer)
                else:
                    call = program.send(answer)
        except StopIteration as stop:
            return stop.value


# ------------------------------------------------------------------ addresses and options


def test_parse_addresses() -> None:
    assert c.parse_addresses("localhost:27017") == ["localhost:27017"]
    assert c.parse_addresses("db1") == ["db1:27017"]
    assert c.parse_addresses("a:1,b:2") == ["a:1", "b:2"]
    assert c.parse_addresses("lauradb://a:1,b:2/") == ["a:1", "b:2"]
    assert c.parse_addresses(["a:1", "b:2,c:3", "a:1"]) == ["a:1", "b:2", "c:3"]
    assert c.parse_addresses("[::1]:5") == ["[::1]:5"]
    assert c.parse_addresses(None) == ["localhost:27017"]
    for bad in ("a:port", "a:0", "a:70000", ""):
        with pytest.raises(ConfigurationError):
            c.parse_addresses(bad)


def test_options() -> None:
    opts = options(["a:1"], tz_aware=True, document_class=dict, timeout=5)
    assert opts.timeout == 5.0 and opts.codec_options.tz_aware
    assert opts.tls is None and opts.credentials() is None
    with pytest.raises(ConfigurationError):
        options(["a:1"], timeout=0)
    with pytest.raises(ConfigurationError):
        options(["a:1"], tls=True, tls_cert_file="x.pem")  # key missing
    tls = options(["a:1"], tls=True, tls_ca_file="/nonexistent/ca.pem", tls_server_name="db")
    assert tls.tls is not None and tls.tls.ca == "/nonexistent/ca.pem"
    assert ("grpc.ssl_target_name_override", "db") in tls.channel_options()
    with pytest.raises(ConfigurationError, match="cannot read"):
        tls.credentials()


# ------------------------------------------------------------------ argument forms


def test_sort_projection_and_index_forms() -> None:
    assert c.sort_list("a") == [("a", 1)]
    assert c.sort_list("a", -1) == [("a", -1)]
    assert c.sort_list([("a", 1), ("b", -1)]) == [("a", 1), ("b", -1)]
    assert c.sort_list({"a": -1}) == [("a", -1)]
    with pytest.raises(ValueError):
        c.sort_list("a", 2)
    with pytest.raises(TypeError):
        c.sort_list(5)
    assert c.projection_doc(["a", "b"]) == {"a": 1, "b": 1}
    assert c.projection_doc({"a": 0}) == {"a": 0}
    assert c.projection_doc({}) is None and c.projection_doc(None) is None
    with pytest.raises(TypeError):
        c.projection_doc("a")
    assert c.index_list("a") == [("a", 1)]
    assert c.index_list([("a", 1), ("b", "hashed")]) == [("a", 1), ("b", "hashed")]
    assert c.gen_index_name([("a", 1), ("b", -1)]) == "a_1_b_-1"
    # bson.encode would move _id first: order-sensitive documents keep their order.
    ordered = c.encode_ordered({"n": -1, "_id": 1}, CODEC)
    assert list(bson.decode(ordered).items()) == [("n", -1), ("_id", 1)]
    spec = FindSpec("db", "c", sort=[("n", -1), ("_id", 1)])
    assert list(bson.decode(spec.request(CODEC).sort)) == ["n", "_id"]
    index = next(ops.create_index("db", "c", [("b", 1), ("_id", 1)], name=None, unique=False,
                                  sparse=False, codec=CODEC))
    assert list(bson.decode(index.request.index.keys)) == ["b", "_id"]
    assert ops.shard_key_fields({"k": "hashed"}, False) == (["k"], True)
    assert ops.shard_key_fields("a,b", False) == (["a", "b"], False)
    assert ops.shard_key_fields(["a"], True) == (["a"], True)
    with pytest.raises(ValueError):
        ops.shard_key_fields({"a": 1, "b": "hashed"}, False)


# ------------------------------------------------------------------ writes


def test_insert_one_generates_id_on_the_callers_document() -> None:
    doc: dict[str, Any] = {"x": 1}
    script = Script(r.InsertResponse(inserted_count=1))
    result = script.run(ops.insert_one("db", "c", doc, CODEC))
    assert isinstance(doc["_id"], ObjectId) and result.inserted_id == doc["_id"]
    (call,) = script.calls
    assert (call.method, call.kind, call.retryable) == ("Insert", "write", True)
    req = call.request
    assert (req.database, req.collection, req.ordered) == ("db", "c", True)
    assert len(req.request_id) == 32 and int(req.request_id, 16) >= 0
    assert bson.decode(req.documents[0]) == doc
    assert next(iter(bson.decode(req.documents[0]))) == "_id"  # _id first, as drivers do

    given = {"_id": 7, "x": 1}
    script = Script(r.InsertResponse(inserted_count=1))
    assert script.run(ops.insert_one("db", "c", given, CODEC)).inserted_id == 7
    raw = RawBSONDocument(bson.encode({"_id": 3}))
    script = Script(r.InsertResponse(inserted_count=1))
    assert script.run(ops.insert_one("db", "c", raw, CODEC)).inserted_id == 3
    with pytest.raises(TypeError):
        next(ops.insert_one("db", "c", [1, 2], CODEC))


def test_insert_one_per_document_error_is_a_duplicate_key_error() -> None:
    resp = r.InsertResponse(inserted_count=0)
    resp.errors.add(index=0, error="E11000 duplicate key", code=11000, code_name="DUPLICATE_KEY")
    with pytest.raises(DuplicateKeyError) as info:
        Script(resp).run(ops.insert_one("db", "c", {"_id": 1}, CODEC))
    err = info.value
    assert isinstance(err, WriteError) and isinstance(err, OperationFailure)
    assert isinstance(err, LauraError) and err.code == 11000
    assert err.details["index"] == 0 and err.details["codeName"] == "DUPLICATE_KEY"
    assert err.address == "r1:27017"


def test_insert_many_batches_and_bulk_write_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ops.insert_batches([b"x" * 10] * 5, max_docs=2) == [(0, 2), (2, 4), (4, 5)]
    assert ops.insert_batches([b"x" * 10] * 5, max_bytes=25) == [(0, 2), (2, 4), (4, 5)]
    assert ops.insert_batches([b"x" * 100], max_bytes=10) == [(0, 1)]
    assert ops.insert_batches([]) == []

    docs = [{"_id": i} for i in range(5)]
    first = r.InsertResponse(inserted_count=2)
    second = r.InsertResponse(inserted_count=1)
    second.errors.add(index=0, error="dup", code=11000, code_name="DUPLICATE_KEY")
    monkeypatch.setattr(ops, "INSERT_BATCH_DOCS", 2)
    script = Script(first, second, r.InsertResponse(inserted_count=1))
    with pytest.raises(BulkWriteError) as info:
        script.run(ops.insert_many("db", "c", docs, False, CODEC))
    assert [len(call.request.documents) for call in script.calls] == [2, 2, 1]
    assert len({call.request.request_id for call in script.calls}) == 3
    details = info.value.details
    assert details["nInserted"] == 4
    assert [(e["index"], e["code"], e["op"]) for e in details["writeErrors"]] == [
        (2, 11000, {"_id": 2})
    ]
    with pytest.raises(TypeError):
        next(ops.insert_many("db", "c", [], True, CODEC))
    with pytest.raises(TypeError):
        next(ops.insert_many("db", "c", {"a": 1}, True, CODEC))


def test_update_and_replace_rules() -> None:
    def upd(update: Any, *, replace: bool = False, multi: bool = False) -> Call:
        program = ops.update("db", "c", {"a": 1}, update, multi=multi, upsert=True,
                             replace=replace, array_filters=None, codec=CODEC)
        return next(program)

    call = upd({"$set": {"b": 2}})
    assert call.request.upsert and not call.request.multi and call.retryable
    assert bson.decode(call.request.update) == {"$set": {"b": 2}}
    assert not upd({"$set": {"b": 2}}, multi=True).retryable  # update_many: never retried
    assert bson.decode(upd({"b": 2}, replace=True).request.update) == {"b": 2}
    with pytest.raises(ValueError, match=r"\$ operators"):
        upd({"b": 2})
    with pytest.raises(ValueError):
        upd({})
    with pytest.raises(ValueError):
        upd({"$set": {"b": 2}}, replace=True)
    with pytest.raises(TypeError):
        upd([{"$set": {"b": 1}}])

    resp = r.UpdateResponse(matched_count=0, modified_count=0, upserted_count=1,
                            upserted_id=bson.encode({"_id": 9}))
    result = ops.parse_update(resp, CODEC)
    assert (result.upserted_id, result.matched_count, result.modified_count) == (9, 0, 0)
    result = ops.parse_update(r.UpdateResponse(matched_count=3, modified_count=2), CODEC)
    assert (result.upserted_id, result.matched_count, result.modified_count) == (None, 3, 2)


def test_delete_calls() -> None:
    one = next(ops.delete("db", "c", {"a": 1}, multi=False, codec=CODEC))
    many = next(ops.delete("db", "c", None, multi=True, codec=CODEC))
    assert one.retryable and not many.retryable
    assert bson.decode(many.request.query) == {}
    result = Script(r.DeleteResponse(deleted_count=4)).run(
        ops.delete("db", "c", {}, multi=True, codec=CODEC))
    assert result.deleted_count == 4
    with pytest.raises(TypeError):
        next(ops.delete("db", "c", [1], multi=False, codec=CODEC))


def test_bulk_write_ordered_and_unordered() -> None:
    requests = [
        InsertOne({"_id": 1}),
        InsertOne({"_id": 2}),
        UpdateOne({"_id": 1}, {"$set": {"a": 1}}),
        ReplaceOne({"_id": 5}, {"a": 5}, upsert=True),
        DeleteMany({"a": 0}),
        UpdateMany({}, {"$inc": {"n": 1}}),
        DeleteOne({"_id": 2}),
    ]
    answers = [
        r.InsertResponse(inserted_count=2),
        r.UpdateResponse(matched_count=1, modified_count=1),
        r.UpdateResponse(upserted_count=1, upserted_id=bson.encode({"_id": 5})),
        r.DeleteResponse(deleted_count=0),
        r.UpdateResponse(matched_count=3, modified_count=3),
        r.DeleteResponse(deleted_count=1),
    ]
    script = Script(*answers)
    result = script.run(bulk_write("db", "c", requests, True, CODEC))
    assert [call.method for call in script.calls] == [
        "Insert", "Update", "Update", "Delete", "Update", "Delete"
    ]
    assert [call.retryable for call in script.calls] == [True, True, True, False, False, True]
    assert (result.inserted_count, result.matched_count, result.modified_count,
            result.deleted_count, result.upserted_count) == (2, 4, 4, 1, 1)
    assert result.upserted_ids == {3: 5}

    failure = WriteError("bad update", int(ErrorCode.IMMUTABLE_FIELD))
    ops_list = [UpdateOne({"_id": 1}, {"$set": {"_id": 2}}), DeleteOne({"_id": 3})]
    with pytest.raises(BulkWriteError) as info:
        Script(failure).run(bulk_write("db", "c", ops_list, True, CODEC))  # stops
    assert [e["index"] for e in info.value.details["writeErrors"]] == [0]
    assert info.value.details["writeErrors"][0]["op"]["q"] == {"_id": 1}
    with pytest.raises(BulkWriteError) as info:
        Script(failure, r.DeleteResponse(deleted_count=1)).run(
            bulk_write("db", "c", ops_list, False, CODEC))  # carries on
    assert info.value.details["nRemoved"] == 1
    with pytest.raises(InvalidOperation):
        next(bulk_write("db", "c", [], True, CODEC))
    with pytest.raises(TypeError):
        next(bulk_write("db", "c", [{"insertOne": {}}], True, CODEC))  # type: ignore[list-item]
    with pytest.raises(ValueError):
        UpdateOne({}, {"a": 1})
    assert UpdateMany({}, {"$set": {"a": 1}}) == UpdateMany({}, {"$set": {"a": 1}})
    assert DeleteMany({"a": 1}) != DeleteMany({"a": 2})


def test_bulk_write_connection_errors_propagate() -> None:
    down = ServerUnavailable("router unavailable")
    with pytest.raises(ServerUnavailable):
        Script(down).run(bulk_write("db", "c", [InsertOne({"_id": 1})], False, CODEC))


# ------------------------------------------------------------------ reads and admin


def test_reads() -> None:
    assert Script(ext.CountResponse(count=5)).run(
        ops.count_documents("db", "c", {"a": 1}, skip=1, limit=2, codec=CODEC)) == 5
    with pytest.raises(TypeError):
        next(ops.count_documents("db", "c", {}, skip="1", limit=0, codec=CODEC))  # type: ignore[arg-type]
    values = ext.DistinctResponse(values=bson.encode({"values": [1, "a"]}))
    assert Script(values).run(ops.distinct("db", "c", "k", None, CODEC)) == [1, "a"]
    missing = OperationFailure("ns does not exist", int(ErrorCode.NAMESPACE_NOT_FOUND))
    assert Script(missing).run(ops.list_indexes("db", "c", CODEC)) == []
    idx = ext.ListIndexesResponse()
    idx.indexes.add(name="_id_", keys=bson.encode({"_id": 1}))
    idx.indexes.add(name="a_1", keys=bson.encode({"a": 1}), unique=True)
    assert Script(idx).run(ops.list_indexes("db", "c", CODEC)) == [
        {"v": 2, "key": {"_id": 1}, "name": "_id_"},
        {"v": 2, "key": {"a": 1}, "name": "a_1", "unique": True},
    ]
    create = next(ops.create_index("db", "c", [("a", 1), ("b", -1)], name=None, unique=True,
                                   sparse=False, codec=CODEC))
    assert list(bson.decode(create.request.index.keys).items()) == [("a", 1), ("b", -1)]
    drop = next(ops.drop_index("db", "c", [("a", 1), ("b", -1)]))
    assert drop.request.name == "a_1_b_-1"
    with pytest.raises(InvalidOperation):
        next(ops.drop_index("db", "c", "_id_"))


def test_admin_programs() -> None:
    call = next(ops.shard_collection("shop.orders", {"customer": "hashed"}, hashed=False,
                                     unique=False, initial_chunks=0))
    assert (call.service, call.method, call.retryable) == ("config", "ShardCollection", False)
    assert call.request.strategy == r.HASH and list(call.request.shard_key_fields) == ["customer"]
    call = next(ops.shard_collection("a.b", ["x", "y"], hashed=False, unique=True,
                                     initial_chunks=0))
    assert call.request.strategy == r.COMPOUND and call.request.unique
    with pytest.raises(ValueError):
        next(ops.shard_collection("nodot", "k", hashed=False, unique=False, initial_chunks=0))
    call = next(ops.add_shard("s9", "10.0.0.1:27018"))
    assert (call.request.host, call.request.port) == ("10.0.0.1", 27018)


def test_cluster_status_program() -> None:
    shards = ext.ListShardsResponse(shards=[
        cluster_pb2.ShardInfo(shard_id="s1", host="h", port=2),
        cluster_pb2.ShardInfo(shard_id="s0", host="h", port=1, draining=True),
    ])
    dbs = ext.ListDatabasesResponse(databases=[ext.DatabaseInfo(
        name="shop", primary_shard="s0", collections=["a"], sharded_collections=["orders"])])
    shard_map = r.GetShardMapResponse(sharded=True, strategy=r.HASH, shard_key_fields=["k"])
    shard_map.shards.add(shard_id="s0").chunks.add(chunk_id="c1")
    route = shard_map.shards.add(shard_id="s1")
    route.chunks.add(chunk_id="c2")
    route.chunks.add(chunk_id="c3")
    colls = ext.ListCollectionsResponse()
    colls.collections.add(name="a")
    colls.collections.add(name="orders")
    status = Script(
        shards, ext.GetBalancerStatusResponse(enabled=True, rounds=3),
        ext.ListMigrationsResponse(), dbs, colls,
        OperationFailure("count failed", 1),  # a: Count fails -> documents None
        ext.CountResponse(count=10), shard_map,
    ).run(cluster_status())
    assert [(s.id, s.state, s.chunks) for s in status.shards] == [
        ("s0", "draining", 1), ("s1", "active", 2)
    ]
    assert status.balancer.enabled and status.balancer.rounds == 3
    (db,) = status.databases
    a, orders = db.collections
    assert (a.name, a.documents, a.error, a.sharded) == ("a", None, "INTERNAL_ERROR", False)
    assert (orders.documents, orders.key, orders.strategy, orders.chunks) == (
        10, {"k": "hashed"}, "hashed", {"s0": 1, "s1": 2})
    assert status.to_dict()["databases"][0]["name"] == "shop"


# ------------------------------------------------------------------ errors


class FakeRpcError(grpc.RpcError):
    def __init__(self, status: grpc.StatusCode, details: str, error: error_pb2.Error | None = None) -> None:
        self._status = status
        self._details = details
        self._error = error

    def code(self) -> grpc.StatusCode:
        return self._status

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        if self._error is None:
            return ()
        return ((ERROR_TRAILER, self._error.SerializeToString()),)


def test_error_mapping_from_error_messages() -> None:
    def err(code: int, write: bool = False) -> Any:
        proto = error_pb2.Error(code=code, code_name="X", message="m",
                                details=bson.encode({"shard": "s0"}))
        return from_error_proto(proto, write=write)

    assert type(err(11000)) is DuplicateKeyError
    assert type(err(43)) is CursorNotFound
    assert type(err(50)) is ExecutionTimeout
    assert type(err(20002)) is ServerUnavailable
    assert type(err(20014)) is OperationFailure
    assert type(err(20014, write=True)) is WriteError
    e = err(2)
    assert e.details == {"shard": "s0", "code": 2, "codeName": "X", "errmsg": "m"}
    unknown = err(987654)
    assert unknown.code == ErrorCode.INTERNAL_ERROR and unknown.details["code"] == 987654
    copy = pickle.loads(pickle.dumps(e))
    assert type(copy) is OperationFailure and copy.code == 2
    bulk = BulkWriteError({"writeErrors": [{"index": 1, "errmsg": "x"}]})
    assert pickle.loads(pickle.dumps(bulk)).details["writeErrors"][0]["index"] == 1


def test_error_mapping_from_rpc_errors() -> None:
    trailer = error_pb2.Error(code=20008, code_name="UNKNOWN_OPERATOR", message="$foo")
    e = from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "x", trailer), address="a:1")
    assert type(e) is OperationFailure and e.code == 20008 and e.address == "a:1"
    assert not is_retryable(e) and not never_sent(e)

    down = from_rpc_error(FakeRpcError(
        grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; Connection refused"))
    assert type(down) is ServerUnavailable and is_retryable(down) and never_sent(down)
    reset = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    assert is_retryable(reset) and not never_sent(reset)
    reset2 = from_rpc_error(FakeRpcError(grpc.StatusCode.UNKNOWN, "Connection reset by peer"))
    assert type(reset2) is ServerUnavailable
    late = from_rpc_error(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    assert type(late) is NetworkTimeout and not is_retryable(late)
    shard_down = from_rpc_error(FakeRpcError(
        grpc.StatusCode.UNAVAILABLE, "x",
        error_pb2.Error(code=20002, code_name="SHARD_UNAVAILABLE", message="shard0 down")))
    assert type(shard_down) is ServerUnavailable and not never_sent(shard_down)
    other = from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad"), write=True)
    assert type(other) is WriteError and other.code == ErrorCode.BAD_VALUE


def test_response_error_field() -> None:
    assert ops.response_error(r.DeleteResponse(deleted_count=1)) is None
    resp = r.UpdateResponse()
    resp.error.CopyFrom(error_pb2.Error(code=2, message="bad"))
    assert ops.response_error(resp).code == 2
    mig = r.MigrateChunkResponse(error="legacy string")
    assert ops.response_error(mig) is None
    mig.error_info.CopyFrom(error_pb2.Error(code=96, message="failed"))
    assert ops.response_error(mig).code == 96


# ------------------------------------------------------------------ retry rule


def _attempts(call: Call, opts: c.ClientOptions, errors: Sequence[LauraDBError]) -> int:
    """How many attempts the rule allows against a sequence of failures."""
    state = RetryState(call, opts)
    n = 1
    for e in errors:
        if not state.should_retry(e):
            return n
        n += 1
    return n


UNAVAILABLE = ServerUnavailable("x: router unavailable: Socket closed",
                                details={"grpcStatus": "UNAVAILABLE"})
REFUSED = ServerUnavailable("x: router unavailable: failed to connect to all addresses",
                            details={"grpcStatus": "UNAVAILABLE"})


def test_retry_rule() -> None:
    two = options(["a:1", "b:2"])
    write = Call("router", "Insert", None, "write")
    many = Call("router", "Update", None, "write", retryable=False)
    read = Call("router", "Query", None)
    pinned = Call("router", "GetMore", None, address="a:1")
    forever = [UNAVAILABLE] * 5
    assert _attempts(write, two, forever) == 2  # retried once
    assert _attempts(read, two, forever) == 2
    assert _attempts(many, two, forever) == 1  # update_many: never
    assert _attempts(pinned, two, forever) == 1
    assert _attempts(write, two, [NetworkTimeout("late")] * 3) == 1
    assert _attempts(write, two, [OperationFailure("no", 2)] * 3) == 1
    # Never sent: every router once, whatever the operation (then the one retry).
    assert _attempts(many, two, [REFUSED] * 5) == 2
    assert _attempts(write, two, [REFUSED] * 5) == 3
    assert _attempts(write, options(["a:1"], retry_writes=False), forever) == 1
    assert _attempts(read, options(["a:1"], retry_reads=False), forever) == 1
    assert _attempts(read, options(["a:1"], retry_writes=False), forever) == 2


def test_router_failover_order() -> None:
    routers = RouterList(("a:1", "b:2", "c:3"))
    assert routers.current == "a:1"
    assert routers.failover("a:1") == "b:2"
    assert routers.failover("a:1") == "b:2"  # a stale report does not move it again
    assert routers.failover("b:2") == "c:3"
    assert routers.failover("c:3") == "a:1"


# ------------------------------------------------------------------ cursors


def _batch(docs: list[dict[str, Any]], cursor: str = "") -> r.QueryResponse:
    return r.QueryResponse(documents=[bson.encode(d) for d in docs], cursor_id=cursor,
                           more_available=bool(cursor))


def _drain(core: CursorCore, answer: Callable[[Call], Any]) -> list[Any]:
    out = []
    while True:
        data = core.pop()
        if data is not None:
            out.append(bson.decode(data))
            continue
        if core.done:
            return out
        call = core.next_call()
        if call is None:
            return out
        call.served_by = call.address or "r2:27017"
        core.absorb(call, answer(call))


def test_cursor_core_pages_and_pins_getmore() -> None:
    spec = FindSpec("db", "c", {"a": 1}, ["a"], 2, 0, [("a", -1)], 2)
    req = spec.request(CODEC)
    assert bson.decode(req.projection) == {"a": 1} and bson.decode(req.sort) == {"a": -1}
    assert (req.skip, req.batch_size, req.limit) == (2, 2, 0)
    core = CursorCore(find_call(spec, CODEC), CODEC, spec.batch_size)
    batches = iter([_batch([{"i": 1}, {"i": 2}], "cur1"), _batch([{"i": 3}, {"i": 4}], "cur1"),
                    _batch([{"i": 5}])])
    seen: list[Call] = []

    def answer(call: Call) -> Any:
        seen.append(call)
        return next(batches)

    assert [d["i"] for d in _drain(core, answer)] == [1, 2, 3, 4, 5]
    assert [call.method for call in seen] == ["Query", "GetMore", "GetMore"]
    assert seen[0].address == ""  # the first call may go to any router
    assert all(call.address == "r2:27017" for call in seen[1:])  # pinned to the opener
    assert seen[1].request.cursor_id == "cur1" and seen[1].request.batch_size == 2
    assert core.batches == 3 and not core.alive
    assert core.take_kill() is None  # exhausted: no KillCursors


def test_cursor_core_kill_and_limit() -> None:
    spec = FindSpec("db", "c", limit=3)
    core = CursorCore(find_call(spec, CODEC), CODEC, 0, 3)
    call = core.next_call()
    assert call is not None
    call.served_by = "r1:1"
    core.absorb(call, _batch([{"i": i} for i in range(5)], "cur9"))
    got = [core.pop() for _ in range(4)]
    assert got[3] is None and core.done and not core.alive  # limit reached
    assert core.take_kill() == ("r1:1", "cur9")
    assert core.take_kill() is None  # once
    with pytest.raises(TypeError):
        FindSpec("db", "c", filter=[("a", 1)])
    with pytest.raises(ValueError):
        FindSpec("db", "c", skip=-1)


def test_aggregate_call() -> None:
    call = aggregate_call("db", "c", [{"$match": {}}], batch_size=5, allow_disk_use=True,
                          max_memory_bytes=0, codec=CODEC)
    assert call.method == "Aggregate" and call.retryable and call.request.batch_size == 5
    out = aggregate_call("db", "c", [{"$out": "x"}], batch_size=0, allow_disk_use=False,
                         max_memory_bytes=0, codec=CODEC)
    assert not out.retryable
    with pytest.raises(TypeError):
        aggregate_call("db", "c", {"$match": {}}, batch_size=0,  # type: ignore[arg-type]
                       allow_disk_use=False, max_memory_bytes=0, codec=CODEC)
    core = CursorCore(call, CODEC)
    resp = r.AggregationResponse(results=[bson.encode({"n": 1})], cursor_id="a1",
                                 more_available=True)
    call.served_by = "r:1"
    core.absorb(call, resp)
    assert core.cursor_id == "a1" and bson.decode(core.pop() or b"") == {"n": 1}


def test_codec_options_decode() -> None:
    when = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
    data = bson.encode({"t": when})
    naive = c.decode(data, CODEC)["t"]
    aware = c.decode(data, options(["a:1"], tz_aware=True).codec_options)["t"]
    assert naive.tzinfo is None and aware.tzinfo is not None and aware == when


def test_package_exports_and_misspelled_methods() -> None:
    import lauradb
    from lauradb.client import AsyncClient, Client

    assert lauradb.Client is Client and lauradb.AsyncClient is AsyncClient
    client = Client(["127.0.0.1:1", "127.0.0.1:2"])  # channels are made on first use
    try:
        assert client.addresses == ["127.0.0.1:1", "127.0.0.1:2"]
        coll = client.shop.orders
        assert coll.full_name == "shop.orders" and client["shop"]["orders"] == coll
        assert coll.sub.name == "orders.sub"
        with pytest.raises(TypeError, match="no such method"):
            coll.insert_onee({})
        with pytest.raises(AttributeError):
            client._private  # noqa: B018
        with pytest.raises(TypeError):
            client[5]  # type: ignore[index]
    finally:
        client.close()
    with pytest.raises(InvalidOperation):
        client.shop.orders.insert_one({})  # closed
