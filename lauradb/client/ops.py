"""Every operation written once, as a *program*: a generator that yields the RPCs it
needs (``Call``) and receives their responses, then returns the result. The sync
client runs a program with blocking stubs, the async client with ``grpc.aio``; the
request building and response parsing here are shared (and unit-testable with no
server: drive the generator by hand).

A program may catch the client exception of a call (the runner throws it into the
generator at the ``yield``), e.g. to carry on with an unordered bulk write.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from bson.codec_options import CodecOptions

from lauradb.client import _common as c
from lauradb.client.errors import (
    BulkWriteError,
    InvalidOperation,
    OperationFailure,
    WriteError,
    error_class,
)
from lauradb.client.results import DeleteResult, InsertManyResult, InsertOneResult, UpdateResult
from lauradb.cluster import router_ext_pb2 as ext
from lauradb.cluster import routing_pb2 as r
from lauradb.errors import ErrorCode

__all__ = [
    "Call",
    "Pause",
    "Program",
    "check_replacement_doc",
    "check_update_doc",
    "count_documents",
    "create_index",
    "delete",
    "distinct",
    "drop_collection",
    "drop_database",
    "drop_index",
    "insert_many",
    "insert_one",
    "list_collections",
    "list_database_names",
    "list_indexes",
    "run_local",
    "update",
]

T = TypeVar("T")

Service = Literal["router", "config"]
Kind = Literal["read", "write", "admin"]

# Documents per Insert RPC, and bytes (the router splits further per shard).
INSERT_BATCH_DOCS = 10_000
INSERT_BATCH_BYTES = 16 * 1024 * 1024


@dataclass
class Call:
    """One RPC on a router.

    ``retryable``: may be sent again once (same request, so the same ``request_id``)
    after a ServerUnavailable, on the next router. ``address``: pinned to one router
    (cursor continuation), never failed over. ``kind == "write"``: errors are
    WriteError. ``check_error``: raise the response's ``error`` field when set.
    ``served_by`` is filled in by the runner: the router that answered. ``timeout``:
    this call's deadline in seconds (None: the client's ``timeout``).
    """

    service: Service
    method: str
    request: Any
    kind: Kind = "read"
    retryable: bool = True
    address: str = ""
    check_error: bool = True
    served_by: str = ""
    timeout: float | None = None


@dataclass
class Pause:
    """Yielded by a program to wait ``seconds`` before its next call (a retry's
    backoff); the runner sends None back."""

    seconds: float


Program = Generator[Any, Any, T]  # yields Call (or Pause), receives responses


def run_local(program: Program[T], answer: Any) -> T:
    """Drive a program whose calls are answered by ``answer(call)`` (tests, tools)."""
    try:
        call = next(program)
        while True:
            call = program.send(answer(call))
    except StopIteration as stop:
        result: T = stop.value
        return result


# ============================================================================ responses


def response_error(resp: Any) -> Any:
    """The ``lauradb.cluster.Error`` a response carries in its field 100 (``error``, or
    ``error_info`` where ``error`` is a fixed string field), when it is set."""
    fields = resp.DESCRIPTOR.fields_by_name
    for name in ("error", "error_info"):
        field = fields.get(name)
        if field is None or field.message_type is None:
            continue
        if field.message_type.full_name != "lauradb.cluster.Error":
            continue
        if resp.HasField(name):
            err = getattr(resp, name)
            if err.code:
                return err
    return None


# ============================================================================ writes


def _write_error_details(index: int, err: Any, op: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": index,
        "code": int(err.code),
        "codeName": err.code_name or _code_name(int(err.code)),
        "errmsg": err.error,
    }
    if op is not None:
        out["op"] = op
    return out


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return "UNKNOWN"


def write_error_from_details(details: Mapping[str, Any], address: str = "") -> WriteError:
    cls = error_class(int(details.get("code", 0)), write=True)
    if not issubclass(cls, WriteError):
        cls = WriteError
    return cls(str(details.get("errmsg", "")), int(details.get("code", 0)), details, address=address)


def insert_request(db: str, coll: str, docs: list[bytes], ordered: bool) -> r.InsertRequest:
    return r.InsertRequest(
        request_id=c.new_request_id(), database=db, collection=coll, documents=docs,
        ordered=ordered,
    )


def insert_one(db: str, coll: str, document: Any, codec: CodecOptions[Any]) -> Program[InsertOneResult]:
    doc_id, data = c.encode_document_for_insert(document, codec)
    call = Call("router", "Insert", insert_request(db, coll, [data], True), "write",
                check_error=False)
    resp: r.InsertResponse = yield call
    if resp.errors:
        raise write_error_from_details(_write_error_details(0, resp.errors[0]), call.served_by)
    return InsertOneResult(doc_id)


def insert_batches(
    encoded: Sequence[bytes],
    max_docs: int | None = None,
    max_bytes: int | None = None,
) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: consecutive slices within both limits (default
    ``INSERT_BATCH_DOCS`` / ``INSERT_BATCH_BYTES``; at least one document each)."""
    max_docs = max_docs or INSERT_BATCH_DOCS
    max_bytes = max_bytes or INSERT_BATCH_BYTES
    out: list[tuple[int, int]] = []
    start = size = 0
    for i, data in enumerate(encoded):
        if i > start and (i - start >= max_docs or size + len(data) > max_bytes):
            out.append((start, i))
            start, size = i, 0
        size += len(data)
    if start < len(encoded):
        out.append((start, len(encoded)))
    return out


def insert_many(
    db: str,
    coll: str,
    documents: Iterable[Any],
    ordered: bool,
    codec: CodecOptions[Any],
) -> Program[InsertManyResult]:
    if isinstance(documents, Mapping) or not isinstance(documents, Iterable):
        raise TypeError("documents must be a non-empty list")
    docs = list(documents)
    ids: list[Any] = []
    encoded: list[bytes] = []
    for doc in docs:
        doc_id, data = c.encode_document_for_insert(doc, codec)
        ids.append(doc_id)
        encoded.append(data)
    if not encoded:
        raise TypeError("documents must be a non-empty list")
    write_errors: list[dict[str, Any]] = []
    inserted = 0
    for start, end in insert_batches(encoded):
        call = Call("router", "Insert", insert_request(db, coll, encoded[start:end], ordered),
                    "write", check_error=False)
        resp: r.InsertResponse = yield call
        inserted += resp.inserted_count
        write_errors.extend(
            _write_error_details(start + e.index, e, _op(docs, start + e.index))
            for e in resp.errors
        )
        if ordered and resp.errors:
            break
    if write_errors:
        raise BulkWriteError(_bulk_details(write_errors, n_inserted=inserted))
    return InsertManyResult(ids)


def _op(docs: Sequence[Any], index: int) -> Any:
    return docs[index] if 0 <= index < len(docs) else None


def _bulk_details(write_errors: list[dict[str, Any]], **counts: int) -> dict[str, Any]:
    return {
        "writeErrors": write_errors,
        "writeConcernErrors": [],
        "nInserted": counts.get("n_inserted", 0),
        "nUpserted": counts.get("n_upserted", 0),
        "nMatched": counts.get("n_matched", 0),
        "nModified": counts.get("n_modified", 0),
        "nRemoved": counts.get("n_removed", 0),
        "upserted": [],
    }


def check_update_doc(update: Any) -> None:
    """pymongo's rule for update_one/update_many: a non-empty document whose keys are
    ``$`` operators."""
    if isinstance(update, list):
        raise TypeError("aggregation pipeline updates are not supported by LauraDB")
    if not isinstance(update, Mapping):
        raise TypeError(f"update must be a mapping, not {type(update).__name__}")
    if not update:
        raise ValueError("update cannot be empty")
    first = next(iter(update))
    if not str(first).startswith("$"):
        raise ValueError("update only works with $ operators")


def check_replacement_doc(replacement: Any) -> None:
    """pymongo's rule for replace_one: a document without ``$`` operators."""
    if not isinstance(replacement, Mapping):
        raise TypeError(f"replacement must be a mapping, not {type(replacement).__name__}")
    if replacement:
        first = next(iter(replacement))
        if str(first).startswith("$"):
            raise ValueError("replacement can not include $ operators")


def update_request(
    db: str,
    coll: str,
    filter: Any,
    update: Any,
    *,
    multi: bool,
    upsert: bool,
    replace: bool,
    array_filters: Sequence[Mapping[str, Any]] | None,
    codec: CodecOptions[Any],
) -> r.UpdateRequest:
    if replace:
        check_replacement_doc(update)
        if array_filters:
            raise ValueError("array_filters only work with update operators")
    else:
        check_update_doc(update)
    req = r.UpdateRequest(
        request_id=c.new_request_id(),
        database=db,
        collection=coll,
        query=c.encode_filter(filter, codec),
        update=c.encode(update, codec, "update"),
        multi=multi,
        upsert=upsert,
    )
    for af in array_filters or ():
        req.array_filters.append(c.encode(af, codec, "array filter"))
    return req


def parse_update(resp: r.UpdateResponse, codec: CodecOptions[Any]) -> UpdateResult:
    raw: dict[str, Any] = {"n": resp.matched_count + resp.upserted_count,
                           "nModified": resp.modified_count}
    if resp.upserted_count and resp.upserted_id:
        raw["upserted"] = c.decode(resp.upserted_id, codec).get("_id")
    return UpdateResult(raw)


def update(
    db: str,
    coll: str,
    filter: Any,
    update: Any,
    *,
    multi: bool,
    upsert: bool,
    replace: bool,
    array_filters: Sequence[Mapping[str, Any]] | None,
    codec: CodecOptions[Any],
) -> Program[UpdateResult]:
    req = update_request(db, coll, filter, update, multi=multi, upsert=upsert, replace=replace,
                         array_filters=array_filters, codec=codec)
    resp: r.UpdateResponse = yield Call("router", "Update", req, "write", retryable=not multi)
    return parse_update(resp, codec)


def delete_request(db: str, coll: str, filter: Any, multi: bool, codec: CodecOptions[Any]) -> r.DeleteRequest:
    return r.DeleteRequest(
        request_id=c.new_request_id(), database=db, collection=coll,
        query=c.encode_filter(filter, codec), multi=multi,
    )


def delete(db: str, coll: str, filter: Any, *, multi: bool, codec: CodecOptions[Any]) -> Program[DeleteResult]:
    req = delete_request(db, coll, filter, multi, codec)
    resp: r.DeleteResponse = yield Call("router", "Delete", req, "write", retryable=not multi)
    return DeleteResult({"n": resp.deleted_count})


# ============================================================================ reads


def count_documents(
    db: str, coll: str, filter: Any, *, skip: int, limit: int, codec: CodecOptions[Any]
) -> Program[int]:
    req = ext.CountRequest(
        request_id=c.new_request_id(), database=db, collection=coll,
        query=c.encode_filter(filter, codec), skip=c.check_int("skip", skip),
        limit=c.check_int("limit", limit),
    )
    resp: ext.CountResponse = yield Call("router", "Count", req)
    return int(resp.count)


def distinct(db: str, coll: str, key: str, filter: Any, codec: CodecOptions[Any]) -> Program[list[Any]]:
    if not isinstance(key, str):
        raise TypeError("key must be a string")
    req = ext.DistinctRequest(
        request_id=c.new_request_id(), database=db, collection=coll, key=key,
        query=c.encode_filter(filter, codec),
    )
    resp: ext.DistinctResponse = yield Call("router", "Distinct", req)
    if not resp.values:
        return []
    return list(c.decode(resp.values, codec).get("values", []))


# ============================================================================ indexes


def create_index(
    db: str,
    coll: str,
    keys: Any,
    *,
    name: str | None,
    unique: bool,
    sparse: bool,
    codec: CodecOptions[Any],
) -> Program[str]:
    pairs = c.index_list(keys)
    spec = ext.IndexSpec(
        name=name or "", keys=c.encode_ordered(dict(pairs), codec, "keys"), unique=bool(unique),
        sparse=bool(sparse),
    )
    req = ext.CreateIndexRequest(
        request_id=c.new_request_id(), database=db, collection=coll, index=spec
    )
    resp: ext.CreateIndexResponse = yield Call("router", "CreateIndex", req, "admin")
    return resp.name or name or c.gen_index_name(pairs)


def drop_index(db: str, coll: str, index_or_name: Any) -> Program[list[str]]:
    if isinstance(index_or_name, str):
        name = index_or_name
    else:
        name = c.gen_index_name(c.index_list(index_or_name))
    if name == "_id_":
        raise InvalidOperation("the _id_ index cannot be dropped")
    req = ext.DropIndexRequest(
        request_id=c.new_request_id(), database=db, collection=coll, name=name
    )
    # Not retried: a repeat after a lost reply would fail with INDEX_NOT_FOUND.
    resp: ext.DropIndexResponse = yield Call("router", "DropIndex", req, "admin", retryable=False)
    return list(resp.dropped)


def index_document(spec: ext.IndexSpec, codec: CodecOptions[Any]) -> dict[str, Any]:
    """An index as pymongo's ``list_indexes`` shows it: ``v``, ``key``, ``name``..."""
    out: dict[str, Any] = {"v": 2, "key": c.decode(spec.keys, codec), "name": spec.name}
    if spec.unique:
        out["unique"] = True
    if spec.sparse:
        out["sparse"] = True
    return out


def list_indexes(db: str, coll: str, codec: CodecOptions[Any]) -> Program[list[dict[str, Any]]]:
    req = ext.ListIndexesRequest(database=db, collection=coll)
    try:
        resp: ext.ListIndexesResponse = yield Call("router", "ListIndexes", req)
    except OperationFailure as err:
        if err.code == ErrorCode.NAMESPACE_NOT_FOUND:
            return []  # as pymongo: no collection, no indexes
        raise
    return [index_document(spec, codec) for spec in resp.indexes]


# ============================================================================ catalog


def list_collections(db: str) -> Program[list[dict[str, Any]]]:
    resp: ext.ListCollectionsResponse = yield Call(
        "router", "ListCollections", ext.ListCollectionsRequest(database=db)
    )
    out = []
    for info in resp.collections:
        entry: dict[str, Any] = {"name": info.name, "type": "collection", "info": {}}
        if info.sharded:
            entry["info"] = {
                "sharded": True,
                "key": list(info.shard_key_fields),
                "strategy": info.strategy,
            }
        out.append(entry)
    return out


def list_database_names() -> Program[list[str]]:
    resp: ext.ListDatabasesResponse = yield Call(
        "config", "ListDatabases", ext.ListDatabasesRequest()
    )
    return sorted(d.name for d in resp.databases)


def drop_collection(db: str, coll: str) -> Program[bool]:
    req = ext.DropCollectionRequest(request_id=c.new_request_id(), database=db, collection=coll)
    resp: ext.DropCollectionResponse = yield Call("router", "DropCollection", req, "admin")
    return bool(resp.dropped)


def drop_database(db: str) -> Program[bool]:
    req = ext.DropDatabaseRequest(request_id=c.new_request_id(), database=db)
    resp: ext.DropDatabaseResponse = yield Call("router", "DropDatabase", req, "admin")
    return bool(resp.dropped)

# ============================================================================ admin


def shard_key_fields(key: Any, hashed: bool) -> tuple[list[str], bool]:
    """``"k"``, ``["a", "b"]``, ``{"k": "hashed"}`` or ``{"a": 1, "b": 1}`` -> fields and
    whether the first field is hashed."""
    if isinstance(key, str):
        fields = [f.strip() for f in key.split(",")]
    elif isinstance(key, Mapping):
        fields = [str(k) for k in key]
        values = list(key.values())
        if values and values[0] == "hashed":
            hashed = True
        bad = [v for v in values[1 if values and values[0] == "hashed" else 0:] if v != 1]
        if bad:
            raise ValueError(f"shard key values must be 1 (or 'hashed' first), got {dict(key)!r}")
    elif isinstance(key, Iterable):
        fields = [str(f) for f in key]
    else:
        raise TypeError("key must be a field name, a list of field names or a key pattern")
    if not fields or any(not f for f in fields):
        raise ValueError(f"bad shard key {key!r}")
    return fields, hashed


def shard_collection(
    namespace: str, key: Any, *, hashed: bool, unique: bool, initial_chunks: int
) -> Program[dict[str, Any]]:
    db, coll = c.split_namespace(namespace)
    fields, hashed = shard_key_fields(key, hashed)
    if hashed:
        strategy = r.HASH
    else:
        strategy = r.RANGE if len(fields) == 1 else r.COMPOUND
    req = r.ShardCollectionRequest(
        database=db, collection=coll, shard_key_fields=fields, strategy=strategy,
        initial_chunks=c.check_int("initial_chunks", initial_chunks), unique=bool(unique),
    )
    resp: r.ShardCollectionResponse = yield Call(
        "config", "ShardCollection", req, "admin", retryable=False
    )
    return {
        "collectionsharded": namespace,
        "key": {f: "hashed" if hashed and i == 0 else 1 for i, f in enumerate(fields)},
        "chunks": resp.chunks,
        "epoch": resp.epoch,
        "version": resp.version,
    }


def add_shard(shard_id: str, address: str) -> Program[dict[str, Any]]:
    host, colon, port = address.rpartition(":")
    if not (shard_id and host and colon and port.isdigit()):
        raise ValueError(f"expected a shard id and HOST:PORT, got {shard_id!r}, {address!r}")
    req = r.AddShardRequest(shard_id=shard_id, host=host, port=int(port))
    resp: r.AddShardResponse = yield Call("config", "AddShard", req, "admin")
    return {"shardAdded": shard_id, "address": f"{host}:{port}", "message": resp.message}


def remove_shard(shard_id: str) -> Program[dict[str, Any]]:
    resp: r.RemoveShardResponse = yield Call(
        "config", "RemoveShard", r.RemoveShardRequest(shard_id=shard_id), "admin"
    )
    return {
        "shard": shard_id,
        "state": resp.state or ("completed" if resp.success else "unknown"),
        "remaining_chunks": resp.remaining_chunks,
        "remaining_databases": resp.remaining_databases,
        "message": resp.message,
    }


def list_shards() -> Program[list[dict[str, Any]]]:
    resp: ext.ListShardsResponse = yield Call("config", "ListShards", ext.ListShardsRequest())
    return [
        {"_id": s.shard_id, "host": f"{s.host}:{s.port}",
         "state": "draining" if s.draining else "active"}
        for s in sorted(resp.shards, key=lambda s: s.shard_id)
    ]


def set_balancer_state(enabled: bool) -> Program[bool]:
    resp: ext.SetBalancerStateResponse = yield Call(
        "config", "SetBalancerState", ext.SetBalancerStateRequest(enabled=enabled), "admin"
    )
    return bool(resp.enabled)
