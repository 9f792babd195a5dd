"""Migrations and prepared transactions: a chunk migration or a movePrimary waits (at
most ``--migration-txn-wait-s``) for the prepared transactions locking documents it
would copy; past that bound it fails with the retryable CONFLICTING_OPERATION_IN_PROGRESS
and changes nothing, and it succeeds once the transaction resolved. A commit that
resolves it while it waits is copied (not lost).

The test plays the router (TransactionService calls to the shard itself) so that a
transaction stays prepared for as long as it needs. One 2-shard cluster with a 3 s
bound for the module.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import bson
import grpc
import pytest
import pytest_asyncio

from lauradb.cluster import (
    router_ext_pb2,
    routing_pb2,
    shard_pb2,
    transaction_pb2,
    transaction_pb2_grpc,
)
from lauradb.cluster.common_pb2 import UPDATE
from lauradb.errors import ErrorCode
from tests.conftest import NO_BALANCER
from tests.integration.harness import (
    Cluster,
    Proc,
    chunks_of,
    enc,
    eventually,
    get_shard_map,
    insert_many,
    laura_error,
    shard_collection,
    split_chunk,
    unique_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

RPC = 30.0
WAIT_S = 3.0  # --migration-txn-wait-s of the module's shards
T = transaction_pb2
WAITING = "prepared transaction(s) locking"  # the donor's / old primary's log line


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def c(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    cluster = Cluster(
        tmp_path_factory.mktemp("txn-migration-waits"), shards=2,
        extra_config_args=NO_BALANCER, extra_shard_args=["--migration-txn-wait-s", str(WAIT_S)],
    )
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


def txn_stub(c: Cluster, shard_id: str) -> transaction_pb2_grpc.TransactionServiceStub:
    return transaction_pb2_grpc.TransactionServiceStub(c.channel(proc_of(c, shard_id).address))


def proc_of(c: Cluster, shard_id: str) -> Proc:
    return c.shards[c.shard_index(shard_id)]


async def hold(
    c: Cluster, shard_id: str, db: str, coll: str, _id: Any, update: dict[str, Any],
    version: shard_pb2.ShardVersion,
) -> str:
    """Prepare a one-participant two-phase transaction updating ``_id`` on ``shard_id``
    (its own coordinator, no record: nothing resolves it for a minute); its id."""
    txn_id = f"held-{uuid.uuid4().hex[:12]}"
    resp = await txn_stub(c, shard_id).Prepare(
        T.PrepareRequest(
            txn_id=txn_id, coordinator_id=shard_id,
            coordinator_hosts=[proc_of(c, shard_id).address], participants=[shard_id],
            fingerprint=b"fp", timeout_ms=60_000,
            operations=[T.Operation(
                database=db, collection=coll, op_type=UPDATE, version=version,
                data=enc({"q": {"_id": _id}, "u": update, "multi": False, "upsert": False}),
            )],
        ),
        timeout=RPC,
    )
    assert resp.vote and resp.state == T.PREPARED, resp
    return txn_id


async def resolve(c: Cluster, shard_id: str, txn_id: str, commit: bool) -> None:
    stub = txn_stub(c, shard_id)
    resp: Any
    if commit:
        resp = await stub.Commit(T.CommitRequest(txn_id=txn_id, coordinator_id=shard_id),
                                 timeout=RPC)
    else:
        resp = await stub.Abort(T.AbortRequest(txn_id=txn_id, coordinator_id=shard_id),
                                timeout=RPC)
    assert resp.success, resp


async def doc_on(c: Cluster, shard_id: str, db: str, coll: str, _id: Any) -> dict[str, Any] | None:
    resp = await c.shard_stub(c.shard_index(shard_id)).Find(
        shard_pb2.ShardFindRequest(
            database=db, collection=coll, filter=enc({"_id": _id}),
            version=shard_pb2.ShardVersion(ignore=True), batch_size=10,
        ),
        timeout=RPC,
    )
    docs = [bson.decode(d) for d in resp.documents]
    return docs[0] if docs else None


async def test_migration_gives_up_on_a_prepared_document_then_succeeds(c: Cluster) -> None:
    db = unique_name("mig")
    config = c.config_server_stub()
    assert (await shard_collection(config, db, "m", ["k"], "range")).success
    (whole,) = chunks_of(await get_shard_map(config, db, "m"))
    await split_chunk(config, whole.chunk_id, {"k": 10})
    await insert_many(c.router_stub(), db, "m", [{"_id": i, "k": i, "v": 0} for i in range(20)])
    smap = await get_shard_map(config, db, "m")
    high = next(ch for ch in chunks_of(smap) if ch.min == {"k": 10})
    home = high.shard
    other = next(s for s in c.shard_ids if s != home)
    major, minor = max(
        (ch.version_major, ch.version_minor)
        for s in smap.shards if s.shard_id == home for ch in s.chunks
    )
    version = shard_pb2.ShardVersion(epoch=smap.epoch, major=major, minor=minor)
    txn_id = await hold(c, home, db, "m", 15, {"$set": {"v": 15}}, version)

    async def migrate() -> routing_pb2.MigrateChunkResponse:
        resp: routing_pb2.MigrateChunkResponse = await config.MigrateChunk(
            routing_pb2.MigrateChunkRequest(chunk_id=high.chunk_id, from_shard=home,
                                            to_shard=other),
            timeout=120,
        )
        return resp

    # locked past --migration-txn-wait-s: the migration aborts, retryable, nothing moved
    try:
        refused = await migrate()
        assert not refused.success, refused
        message = refused.error
    except grpc.RpcError as exc:
        err = laura_error(exc)
        assert err.code == ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS, err
        message = err.message
    assert "prepared transaction" in message and txn_id in message, message
    after = chunks_of(await get_shard_map(config, db, "m"))
    assert next(ch for ch in after if ch.chunk_id == high.chunk_id).shard == home
    # once the transaction resolved, the same migration succeeds (and carries the commit)
    await resolve(c, home, txn_id, commit=True)
    resp = await migrate()
    assert resp.success, resp
    after = chunks_of(await get_shard_map(config, db, "m"))
    assert next(ch for ch in after if ch.chunk_id == high.chunk_id).shard == other
    moved = await doc_on(c, other, db, "m", 15)
    assert moved is not None and moved["v"] == 15


async def primary_of(c: Cluster, db: str) -> str:
    resp = await c.config_stub().ListDatabases(router_ext_pb2.ListDatabasesRequest(), timeout=RPC)
    return next(d.primary_shard for d in resp.databases if d.name == db)


async def move_primary(c: Cluster, db: str, to_shard: str) -> Any:
    return await c.config_stub().MovePrimary(
        router_ext_pb2.MovePrimaryConfigRequest(database=db, to_shard=to_shard), timeout=120
    )


async def test_move_primary_waits_for_prepared_transactions(c: Cluster) -> None:
    db = unique_name("mp")
    resp = await c.config_stub().EnsureDatabase(
        router_ext_pb2.EnsureDatabaseRequest(database=db), timeout=RPC
    )
    old = str(resp.primary_shard)
    new = next(s for s in c.shard_ids if s != old)
    await insert_many(c.router_stub(), db, "u", [{"_id": i, "v": 0} for i in range(20)])
    unsharded = shard_pb2.ShardVersion(unsharded=True)
    proc = proc_of(c, old)

    # 1. a prepared document of an unsharded collection stays locked past the bound:
    #    movePrimary fails (retryable) and changes nothing
    first = await hold(c, old, db, "u", 1, {"$set": {"v": 1}}, unsharded)
    with pytest.raises(grpc.RpcError) as info:
        await move_primary(c, db, new)
    err = laura_error(info.value)
    assert err.code == ErrorCode.CONFLICTING_OPERATION_IN_PROGRESS, err
    assert "prepared transaction" in err.message and first in err.message, err
    assert await primary_of(c, db) == old
    assert await doc_on(c, new, db, "u", 1) is None  # no copy left on the target
    await resolve(c, old, first, commit=False)

    # 2. one that commits while movePrimary waits: the commit is copied, not lost
    second = await hold(c, old, db, "u", 2, {"$set": {"v": 2}}, unsharded)
    mark = proc.log_size()
    move = asyncio.create_task(move_primary(c, db, new))
    try:
        async def waiting() -> bool:
            return WAITING in proc.log_text(mark)

        await eventually(waiting, timeout=30, what="movePrimary waiting for the transaction")
        assert not move.done()
        await resolve(c, old, second, commit=True)
        moved = await asyncio.wait_for(move, 120)
    finally:
        if not move.done():
            move.cancel()
    assert moved.success, moved
    assert await primary_of(c, db) == new
    doc = await doc_on(c, new, db, "u", 2)
    assert doc is not None and doc["v"] == 2, doc
    untouched = await doc_on(c, new, db, "u", 1)
    assert untouched is not None and untouched["v"] == 0, untouched  # aborted: not applied
