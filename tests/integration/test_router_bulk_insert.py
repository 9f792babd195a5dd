"""Unordered inserts through the router: per-document errors by the caller's index, and
a batch that meets STALE_CONFIG is re-routed (its documents by their indexes) and
completed."""

from __future__ import annotations

from typing import Any

import bson
import grpc
import pytest
from bson.objectid import ObjectId

from lauradb.cluster import routing_pb2
from lauradb.errors import ErrorCode
from tests.integration.harness import (
    RPC_TIMEOUT,
    Cluster,
    count,
    insert_many,
    laura_error,
    query_all,
    shard_collection,
)


async def _insert(cluster: Cluster, db: str, coll: str, docs: list[Any]) -> routing_pb2.InsertResponse:
    request = routing_pb2.InsertRequest(
        database=db,
        collection=coll,
        documents=[d if isinstance(d, bytes) else bson.encode(d) for d in docs],
        ordered=False,
    )
    response: routing_pb2.InsertResponse = await cluster.router_stub().Insert(
        request, timeout=RPC_TIMEOUT
    )
    return response


async def test_unordered_errors_by_index_and_stale_batches_rerouted(
    shared_cluster: Cluster, db_name: str
) -> None:
    router = shared_cluster.router_stub()
    # Cached by the router as unsharded, then sharded behind its back.
    assert await insert_many(router, db_name, "late", [{"_id": i, "k": i} for i in range(20)]) == 20
    config = shared_cluster.config_server_stub()
    assert (await shard_collection(config, db_name, "late", ["k"], "hashed")).success
    docs: list[Any] = [{"_id": 20 + i, "k": 20 + i} for i in range(300)]
    docs[7] = {"_id": 3, "k": 3}  # duplicate of a stored document
    docs[50] = {"_id": 500, "k": [1, 2]}  # unroutable: an array in the shard key
    docs[99] = {"k": 9999}  # no _id: the router adds one
    docs[120] = {"_id": 21, "k": 21}  # duplicate inside the batch (index 1 has _id 21)
    response = await _insert(shared_cluster, db_name, "late", docs)  # STALE_CONFIG -> re-route
    assert [(e.index, e.code) for e in response.errors] == [
        (7, ErrorCode.DUPLICATE_KEY),
        (50, ErrorCode.BAD_VALUE),
        (120, ErrorCode.DUPLICATE_KEY),
    ]
    assert response.inserted_count == 297
    assert await count(router, db_name, "late", {}) == 317
    added = await query_all(router, db_name, "late", {"k": 9999})
    assert len(added) == 1 and isinstance(added[0]["_id"], ObjectId)
    # Malformed BSON anywhere fails the whole request: nothing is written.
    bad = bson.encode({"_id": 1000, "k": 1000, "s": "x"})
    bad = bad[:-3] + b"\xff" + bad[-2:]  # invalid UTF-8 inside the document
    good = [{"_id": 2000 + i, "k": 2000 + i} for i in range(5)]
    with pytest.raises(grpc.RpcError) as exc:
        await _insert(shared_cluster, db_name, "late", [*good, bad])
    assert laura_error(exc.value).code == ErrorCode.INVALID_BSON
    assert "document 5" in laura_error(exc.value).message
    assert await count(router, db_name, "late", {"k": {"$gte": 2000, "$lt": 3000}}) == 0
