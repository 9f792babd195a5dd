"""Index administration at the router: CreateIndex, DropIndex, ListIndexes.

* CreateIndex validates the spec (keys a non-empty document of ``field: 1 | -1``;
  the name derived like MongoDB's, ``a_1_b_-1``), records it on the config server
  first (which enforces the cluster-wide rules, e.g. a unique index on a sharded
  collection must be prefixed by the shard key), then builds it on every shard
  holding the collection (the chunk owners; the primary when unsharded; a
  collection that does not exist yet is created). Each shard builds atomically; if
  any shard fails, what this request built is dropped again on every shard and a
  record it added is removed, then the error is returned: nothing half-built.
* DropIndex drops on every shard holding the collection, then removes the record.
* ListIndexes asks one shard holding the collection (the config record, plus the
  implicit ``_id_`` index, when no shard has the collection yet).

Routing tables are reloaded before each of these (they are rare; a cached map that
predates a ShardCollection by another router would miss shards).
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
from collections.abc import Mapping
from typing import Any

from bson.decimal128 import Decimal128

from lauradb.bsonkit.codec import decode_document, encode_document, encode_ordered
from lauradb.cluster import router_ext_pb2, shard_pb2
from lauradb.errors import ErrorCode, LauraError
from router.context import RouterContext
from router.namespaces import check_namespace
from router.routing_table import RoutingTable

__all__ = [
    "ID_INDEX",
    "create_index",
    "drop_index",
    "index_name",
    "list_indexes",
    "normalize_index",
]

ID_INDEX = "_id_"
INDEX_BUILD_TIMEOUT = 600.0  # building an index reads the whole collection
_NOT_THERE = (ErrorCode.INDEX_NOT_FOUND, ErrorCode.NAMESPACE_NOT_FOUND)


def _cannot(message: str) -> LauraError:
    return LauraError(ErrorCode.CANNOT_CREATE_INDEX, message)


def _direction(field: str, value: Any) -> int:
    if isinstance(value, bool):
        raise _cannot(f"index key {field!r}: values in the key pattern must be 1 or -1")
    if isinstance(value, str):
        raise _cannot(f"index key {field!r}: index type {value!r} is not supported")
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if isinstance(value, (int, float, decimal.Decimal)):
        if value == 1:
            return 1
        if value == -1:
            return -1
    raise _cannot(f"index key {field!r}: values in the key pattern must be 1 or -1, not {value!r}")


def _check_field(field: Any) -> None:
    if not isinstance(field, str) or not field:
        raise _cannot("index key field names cannot be empty")
    if "\0" in field:
        raise _cannot(f"index key {field!r} may not contain a null byte")
    for part in field.split("."):
        if not part:
            raise _cannot(f"index key {field!r} has an empty path component")
        if part.startswith("$"):
            raise _cannot(f"index key {field!r}: field names may not start with '$'")


def normalize_keys(keys: Mapping[str, Any]) -> dict[str, int]:
    """``{field: 1 | -1}`` in key order (1.0, Int64(-1)... accepted); else CANNOT_CREATE_INDEX."""
    if not isinstance(keys, Mapping) or not keys:
        raise _cannot("the index key pattern must be a non-empty document")
    out: dict[str, int] = {}
    for field, value in keys.items():
        _check_field(field)
        out[field] = _direction(field, value)
    return out


def index_name(keys: Mapping[str, int]) -> str:
    """MongoDB's default index name: ``{a: 1, b: -1}`` -> ``"a_1_b_-1"``."""
    return "_".join(f"{field}_{direction}" for field, direction in keys.items())


def normalize_index(spec: router_ext_pb2.IndexSpec) -> router_ext_pb2.IndexSpec:
    """The validated spec as sent to the config server and the shards (name set)."""
    if not spec.keys:
        raise _cannot("an index needs a key pattern ('keys')")
    keys = normalize_keys(decode_document(spec.keys, "index keys"))
    name = spec.name or index_name(keys)
    if "\0" in name:
        raise _cannot("an index name may not contain a null byte")
    if name == "*":
        raise _cannot("'*' is not a valid index name")
    if keys == {"_id": 1}:
        if spec.unique or spec.sparse:
            raise _cannot("the _id index is always unique and never sparse: no options allowed")
        if name not in (ID_INDEX, index_name(keys)):
            raise _cannot(f"the _id index already exists with the name {ID_INDEX!r}")
        name = ID_INDEX
    elif name == ID_INDEX:
        raise _cannot(f"the index name {ID_INDEX!r} is reserved for the _id index")
    return router_ext_pb2.IndexSpec(
        name=name, keys=encode_ordered(keys), unique=spec.unique, sparse=spec.sparse
    )


async def _fresh_table(ctx: RouterContext, database: str, collection: str) -> RoutingTable | None:
    ctx.cache.invalidate(f"{database}.{collection}")
    return await ctx.table_or_none(database, collection)


def _holders(table: RoutingTable) -> list[str]:
    return list(table.owning_shards) or [table.primary_shard]


async def _on_shards(
    ctx: RouterContext,
    table: RoutingTable,
    shards: list[str],
    method: str,
    make: Any,
    timeout: float | None = None,
) -> list[Any]:
    """``method`` on each shard concurrently; answers or exceptions, in shard order."""
    calls = [
        ctx.shards.call(s, ctx.shards.address_of(table, s), method, make(s), timeout=timeout)
        for s in shards
    ]
    return list(await asyncio.gather(*calls, return_exceptions=True))


def _first_error(answers: list[Any]) -> BaseException | None:
    errors = [a for a in answers if isinstance(a, BaseException)]
    for e in errors:
        if not isinstance(e, Exception):
            return e  # cancellation first
    return errors[0] if errors else None


# ============================================================================ create


async def create_index(
    ctx: RouterContext, req: router_ext_pb2.CreateIndexRequest
) -> router_ext_pb2.CreateIndexResponse:
    check_namespace(req.database, req.collection)
    spec = normalize_index(req.index)
    if spec.name == ID_INDEX:
        return router_ext_pb2.CreateIndexResponse(name=ID_INDEX, created=False)
    ctx.cache.invalidate(f"{req.database}.{req.collection}")
    table = await ctx.table_for_write(req.database, req.collection)
    record = await ctx.config.record_index(req.database, req.collection, spec)
    shards = _holders(table)
    timeout = max(ctx.shards.timeout, INDEX_BUILD_TIMEOUT)

    def build(_shard: str) -> shard_pb2.ShardCreateIndexRequest:
        return shard_pb2.ShardCreateIndexRequest(
            database=req.database, collection=req.collection, index=spec
        )

    answers = await _on_shards(ctx, table, shards, "CreateIndex", build, timeout)
    failure = _first_error(answers)
    if failure is not None:
        await _undo_create(ctx, table, shards, answers, spec.name, record.created, req)
        raise failure
    created = record.created or any(a.created for a in answers)
    return router_ext_pb2.CreateIndexResponse(name=spec.name, created=created)


async def _undo_create(
    ctx: RouterContext,
    table: RoutingTable,
    shards: list[str],
    answers: list[Any],
    name: str,
    recorded: bool,
    req: router_ext_pb2.CreateIndexRequest,
) -> None:
    """Drop what a failed CreateIndex built (best effort; the build error wins).

    Dropped on the shards that built it, and (when this request recorded a new
    index) on the shards whose outcome is unknown (unreachable, timed out). A shard
    that answered an error built nothing (builds are atomic), and a shard that
    already had the index keeps it.
    """
    undo = [
        s
        for s, a in zip(shards, answers, strict=True)
        if (not isinstance(a, BaseException) and a.created)
        or (recorded and isinstance(a, BaseException) and _outcome_unknown(a))
    ]

    def drop(_shard: str) -> shard_pb2.ShardDropIndexRequest:
        return shard_pb2.ShardDropIndexRequest(
            database=req.database, collection=req.collection, name=name
        )

    if undo:
        await _on_shards(ctx, table, undo, "DropIndex", drop)
    if recorded:
        with contextlib.suppress(LauraError):
            await ctx.config.remove_index_record(req.database, req.collection, name)


def _outcome_unknown(err: BaseException) -> bool:
    if not isinstance(err, LauraError):
        return True
    return err.code in (ErrorCode.SHARD_UNAVAILABLE, ErrorCode.EXCEEDED_TIME_LIMIT)


# ============================================================================ drop


async def drop_index(
    ctx: RouterContext, req: router_ext_pb2.DropIndexRequest
) -> router_ext_pb2.DropIndexResponse:
    check_namespace(req.database, req.collection)
    name = req.name
    if not name:
        raise LauraError(ErrorCode.BAD_VALUE, "the name of the index to drop is required")
    if name == ID_INDEX:
        raise LauraError(ErrorCode.INVALID_OPTIONS, "cannot drop the _id index")
    ns = f"{req.database}.{req.collection}"
    table = await _fresh_table(ctx, req.database, req.collection)
    if table is None:
        raise LauraError(ErrorCode.NAMESPACE_NOT_FOUND, f"ns not found: {ns}")
    shards = _holders(table)

    def drop(_shard: str) -> shard_pb2.ShardDropIndexRequest:
        return shard_pb2.ShardDropIndexRequest(
            database=req.database, collection=req.collection, name=name
        )

    answers = await _on_shards(ctx, table, shards, "DropIndex", drop)
    missing = [a for a in answers if isinstance(a, LauraError) and a.code in _NOT_THERE]
    failure = _first_error([a for a in answers if not any(a is m for m in missing)])
    if failure is not None:
        raise failure
    dropped: list[str] = []
    for a in answers:
        if not isinstance(a, BaseException):
            dropped.extend(n for n in a.dropped if n not in dropped)
    records = [name] if name != "*" else await _recorded_names(ctx, req.database, req.collection)
    removed = []
    for n in records:
        if (await ctx.config.remove_index_record(req.database, req.collection, n)).removed:
            removed.append(n)
    if missing and len(missing) == len(answers) and not removed:
        raise missing[0]  # no shard had it (nor the config server)
    dropped.extend(n for n in removed if n not in dropped)
    return router_ext_pb2.DropIndexResponse(dropped=dropped)


async def _recorded_names(ctx: RouterContext, database: str, collection: str) -> list[str]:
    resp = await ctx.config.collection_indexes(database, collection)
    return [i.name for i in resp.indexes if i.name and i.name != ID_INDEX]


# ============================================================================ list


def _id_index() -> router_ext_pb2.IndexSpec:
    return router_ext_pb2.IndexSpec(name=ID_INDEX, keys=encode_document({"_id": 1}))


async def list_indexes(
    ctx: RouterContext, req: router_ext_pb2.ListIndexesRequest
) -> router_ext_pb2.ListIndexesResponse:
    check_namespace(req.database, req.collection)
    ns = f"{req.database}.{req.collection}"
    table = await _fresh_table(ctx, req.database, req.collection)
    if table is None:
        raise LauraError(ErrorCode.NAMESPACE_NOT_FOUND, f"ns does not exist: {ns}")
    shard = _holders(table)[0]
    try:
        resp = await ctx.shards.call(
            shard,
            ctx.shards.address_of(table, shard),
            "ListIndexes",
            shard_pb2.ShardListIndexesRequest(database=req.database, collection=req.collection),
        )
    except LauraError as err:
        if err.code != ErrorCode.NAMESPACE_NOT_FOUND or not table.sharded:
            raise
        # Sharded but no document written yet: the config server's records.
        records = await ctx.config.collection_indexes(req.database, req.collection)
        out = router_ext_pb2.ListIndexesResponse()
        out.indexes.append(_id_index())
        out.indexes.extend(i for i in records.indexes if i.name != ID_INDEX)
        return out
    return router_ext_pb2.ListIndexesResponse(indexes=resp.indexes)
