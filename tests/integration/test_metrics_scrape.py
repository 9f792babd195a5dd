"""Prometheus endpoints of router, shards and config server, scraped over HTTP.

A fresh 3-shard cluster started with ``--metrics-port`` on every process; targeted
and scatter queries through the router; then each endpoint is parsed with
``prometheus_client.parser`` and the routing, storage and topology families checked.
Also: log lines written while handling a request carry its ``request_id``.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Awaitable, Callable

from prometheus_client.parser import text_string_to_metric_families

from lauradb.cluster import routing_pb2
from tests.integration.harness import (
    HOST,
    Cluster,
    Proc,
    count,
    enc,
    eventually,
    free_port,
    insert_many,
    query,
    shard_collection,
)

DOCS = 60
Samples = dict[str, list[tuple[dict[str, str], float]]]


def with_metrics_port(proc: Proc) -> str:
    """Add ``--metrics-port`` to a not yet started process; its scrape URL."""
    port = free_port()
    proc.args += ["--metrics-port", str(port)]
    return f"http://{HOST}:{port}/metrics"


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
    return body.decode()


async def scrape(url: str) -> Samples:
    """Every sample of the endpoint, by sample name: [(labels, value)]."""
    text = await asyncio.to_thread(_fetch, url)
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        value
        for have, value in samples.get(name, [])
        if all(have.get(k) == v for k, v in labels.items())
    )


async def test_metrics_endpoints(
    cluster: Callable[..., Awaitable[Cluster]], db_name: str
) -> None:
    c = await cluster(3, start=False)
    config_url = with_metrics_port(c.config)
    shard_urls = [with_metrics_port(p) for p in c.shards]
    router_url = with_metrics_port(c.router)
    await c.start()

    coll = "events"
    ns = f"{db_name}.{coll}"
    await shard_collection(c.config_stub(), db_name, coll, ["k"], "hashed", initial_chunks=6)
    router = c.router_stub()
    log_mark = c.router.log_size()
    first = routing_pb2.InsertRequest(
        request_id="obs-rid-0001",
        database=db_name,
        collection=coll,
        documents=[enc({"_id": 0, "k": 0})],
    )
    assert (await router.Insert(first, timeout=30)).inserted_count == 1
    await insert_many(router, db_name, coll, [{"_id": i, "k": i} for i in range(1, DOCS)])

    for k in (3, 7, 11):  # targeted: equality on the hashed shard key
        targeted = await query(router, db_name, coll, {"k": k})
        assert [d["_id"] for d in targeted.docs] == [k]
        assert len(targeted.shards_queried) == 1
    scatter = await query(router, db_name, coll, {})
    assert len(scatter.docs) == DOCS
    assert len(scatter.shards_queried) == 3
    assert await count(router, db_name, coll, {"k": {"$gte": 10}}) == DOCS - 10

    # router: targeting, cache, retries, per-RPC latency
    r = await scrape(router_url)
    assert total(r, "lauradb_router_targeted_total", operation="find") >= 3
    assert total(r, "lauradb_router_scatter_total", operation="find") >= 1
    assert total(r, "lauradb_router_scatter_total", operation="count") >= 1
    inserts = total(r, "lauradb_router_targeted_total", operation="insert") + total(
        r, "lauradb_router_scatter_total", operation="insert"
    )
    assert inserts >= 2
    assert total(r, "lauradb_router_shards_per_request_count", operation="find") >= 4
    assert total(r, "lauradb_router_shards_per_request_sum", operation="find") >= 3 + 3
    assert total(r, "lauradb_router_shard_map_cache_hits_total") > 0
    assert total(r, "lauradb_router_shard_map_cache_misses_total") >= 1
    assert "lauradb_router_shard_map_cache_refreshes_total" in r
    assert "lauradb_router_stale_retries_total" in r
    assert any(
        "Query" in labels.get("method", "")
        for labels, _ in r.get("lauradb_rpc_latency_seconds_count", [])
    )

    # shards: documents / bytes / owned chunks per collection
    async def shard_totals() -> tuple[float, float, float]:
        samples = [await scrape(url) for url in shard_urls]
        docs = sum(total(s, "lauradb_shard_documents", namespace=ns) for s in samples)
        size = sum(total(s, "lauradb_shard_bytes", namespace=ns) for s in samples)
        chunks = sum(total(s, "lauradb_shard_owned_chunks", namespace=ns) for s in samples)
        assert (docs, chunks) == (DOCS, 6), (docs, chunks)  # gauges refresh every 5 s
        return docs, size, chunks

    docs, size, chunks = await eventually(shard_totals, timeout=20, what="shard gauges")
    assert (docs, chunks) == (DOCS, 6)
    assert size > DOCS * 10
    for i, url in enumerate(shard_urls):
        s = await scrape(url)
        assert total(s, "lauradb_shard_documents", shard=f"shard{i}", namespace=ns) > 0
        assert "lauradb_rpc_latency_seconds_count" in s

    # config server: topology version, balancer and migration families
    cfg = await scrape(config_url)
    assert total(cfg, "lauradb_config_topology_version") > 0
    assert "lauradb_config_balancer_rounds_total" in cfg  # 0 here: --no-balancer
    assert "lauradb_config_auto_splits_total" in cfg

    # request ids: the router's log lines for the first insert carry its id
    async def check_log() -> bool:
        return "[rid=obs-rid-0001]" in c.router.log_text(log_mark)

    await eventually(check_log, timeout=10, what="request id in the router log")
