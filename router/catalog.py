"""Collection and database administration at the router.

* ListCollections: the union of the collection names every shard holds for the
  database (a shard that cannot be reached fails the call with SHARD_UNAVAILABLE:
  a partial list would look complete) and the sharded collections the config server
  knows (an empty sharded collection may live on no shard yet), with each sharded
  collection's key and strategy.
* DropCollection / DropDatabase: every shard is asked first whether it answers (a
  cheap ListCollections), so that a shard known to be down fails the call before
  anything is dropped; then every shard drops its data, then the config server drops
  the metadata (a failure half way leaves the metadata in place and the call can be
  repeated); the router forgets its cached maps and closes its cursors over what was
  dropped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lauradb.cluster import router_ext_pb2, shard_pb2
from lauradb.errors import ErrorCode, LauraError
from router.context import RouterContext
from router.namespaces import check_namespace

__all__ = ["all_shards", "drop_collection", "drop_database", "list_collections"]


def _check_database(database: str) -> None:
    check_namespace(database, "x")  # the collection part is a placeholder


async def all_shards(ctx: RouterContext) -> list[tuple[str, str]]:
    """``(shard_id, address)`` of every shard in the cluster (asked afresh)."""
    resp = await ctx.config.list_shards()
    addresses = {s.shard_id: f"{s.host}:{s.port}" for s in resp.shards if s.host}
    if addresses:
        ctx.shards.set_addresses(
            addresses, {s.shard_id: list(s.members) for s in resp.shards if s.host}
        )
        # replica sets: the primary (catalog operations write)
        addresses = {s: ctx.shards.address_of(None, s) for s in addresses}
    return sorted(addresses.items())


async def _on_every_shard(
    ctx: RouterContext, method: str, request: Any
) -> list[Any]:
    """``method`` on every shard concurrently; fails with the first error (in shard order)."""
    shards = await all_shards(ctx)
    answers = await asyncio.gather(
        *(ctx.shards.call(s, addr, method, request) for s, addr in shards),
        return_exceptions=True,
    )
    for a in answers:
        if isinstance(a, BaseException) and not isinstance(a, Exception):
            raise a
    for a in answers:
        if isinstance(a, BaseException):
            raise a
    return list(answers)




async def _all_answer(ctx: RouterContext, database: str) -> None:
    """Fail with SHARD_UNAVAILABLE unless every shard answers (before a drop)."""
    await _on_every_shard(
        ctx, "ListCollections", shard_pb2.ShardListCollectionsRequest(database=database)
    )


async def list_collections(
    ctx: RouterContext, req: router_ext_pb2.ListCollectionsRequest
) -> router_ext_pb2.ListCollectionsResponse:
    _check_database(req.database)
    dbs = await ctx.config.list_databases()
    info = next((d for d in dbs.databases if d.name == req.database), None)
    out = router_ext_pb2.ListCollectionsResponse()
    if info is None:
        return out  # MongoDB: an unknown database has no collections
    answers = await _on_every_shard(
        ctx, "ListCollections", shard_pb2.ShardListCollectionsRequest(database=req.database)
    )
    names = set(info.collections) | set(info.sharded_collections)
    for a in answers:
        names.update(a.collections)
    sharded = set(info.sharded_collections)
    for name in sorted(names):
        entry = out.collections.add(name=name)
        if name not in sharded:
            continue
        table = await ctx.table_or_none(req.database, name)
        if table is None or not table.sharded or table.pattern is None:
            continue
        entry.sharded = True
        entry.shard_key_fields.extend(table.pattern.fields)
        entry.strategy = table.pattern.strategy
    return out


async def drop_collection(
    ctx: RouterContext, req: router_ext_pb2.DropCollectionRequest
) -> router_ext_pb2.DropCollectionResponse:
    ns = check_namespace(req.database, req.collection)
    await _all_answer(ctx, req.database)
    answers = await _on_every_shard(
        ctx,
        "DropCollection",
        shard_pb2.ShardDropCollectionRequest(database=req.database, collection=req.collection),
    )
    try:
        meta = await ctx.config.drop_collection_metadata(req.database, req.collection)
        meta_dropped = meta.dropped
    except LauraError as err:
        if err.code != ErrorCode.NAMESPACE_NOT_FOUND:
            raise
        meta_dropped = False
    finally:
        ctx.cache.invalidate(ns)
    await ctx.cursors.kill_namespace(ns)
    dropped = meta_dropped or any(a.dropped for a in answers)
    return router_ext_pb2.DropCollectionResponse(dropped=dropped)


async def drop_database(
    ctx: RouterContext, req: router_ext_pb2.DropDatabaseRequest
) -> router_ext_pb2.DropDatabaseResponse:
    _check_database(req.database)
    await _all_answer(ctx, req.database)
    answers = await _on_every_shard(
        ctx, "DropDatabase", shard_pb2.ShardDropDatabaseRequest(database=req.database)
    )
    try:
        meta = await ctx.config.drop_database_metadata(req.database)
        meta_dropped = meta.dropped
    except LauraError as err:
        if err.code != ErrorCode.NAMESPACE_NOT_FOUND:
            raise
        meta_dropped = False
    finally:
        ctx.cache.invalidate_database(req.database)
    await ctx.cursors.kill_namespace(req.database, database=True)
    dropped = meta_dropped or any(a.dropped for a in answers)
    return router_ext_pb2.DropDatabaseResponse(dropped=dropped)
