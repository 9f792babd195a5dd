"""Issue 6: the admin CLI ``lauradb`` against the shared 3-shard cluster (and a fresh
one of its own for ``balancer start|stop`` and ``shard remove``, which change it).

The CLI runs in-process (``main([...])`` in a worker thread, output through capsys),
plus one subprocess smoke test of ``python -m lauradb.cli.main``. The CLI over mutual
TLS is tested in test_tls.py and test_launcher.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from lauradb.cli.main import main
from lauradb.cli.render import bar
from lauradb.cluster import router_ext_pb2, routing_pb2_grpc
from tests.integration.harness import REPO_ROOT, Cluster, insert_many

pytestmark = [pytest.mark.integration]
on_session_loop = pytest.mark.asyncio(loop_scope="session")


def parse_docs(out: str) -> list[dict[str, Any]]:
    """The pretty-printed documents ``query`` wrote, one after another."""
    decoder, docs, pos = json.JSONDecoder(), [], 0
    while out[pos:].strip():
        pos += len(out[pos:]) - len(out[pos:].lstrip())
        doc, pos = decoder.raw_decode(out, pos)
        docs.append(doc)
    return docs


async def run(
    capsys: pytest.CaptureFixture[str], cluster: Cluster, *argv: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["--router", cluster.router_address, *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def drop(cluster: Cluster, db: str) -> None:
    await cluster.router_stub().DropDatabase(
        router_ext_pb2.DropDatabaseRequest(database=db), timeout=30
    )


def test_bar() -> None:
    assert bar(8, 10) == "████████░░"
    assert bar(0, 10) == "░" * 10
    assert bar(1, 100) == "█" + "░" * 9


@on_session_loop
async def test_shards_and_balancer(
    shared_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await run(capsys, shared_cluster, "shard", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "ADDRESS", "STATE"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert set(shared_cluster.shard_ids) <= set(rows)
    shard0, (address, state) = "shard0", rows["shard0"]
    assert state == "active"

    # Adding an existing shard at the same address is idempotent.
    code, out, err = await run(capsys, shared_cluster, "shard", "add", shard0, address)
    assert code == 0, err
    assert f"shard {shard0} at {address} added" in out

    code, out, _ = await run(capsys, shared_cluster, "balancer", "status")
    assert code == 0
    assert out.startswith("balancer: disabled")  # the test cluster runs --no-balancer
    assert "in progress: 0" in out

    code, _, err = await run(capsys, shared_cluster, "shard", "add", "x", "no-port")
    assert code == 2 and err.startswith("lauradb: BAD_VALUE: expected HOST:PORT")


@on_session_loop
async def test_insert_query_and_indexes(
    shared_cluster: Cluster, db_name: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ns = f"{db_name}.people"
    code, out, err = await run(capsys, shared_cluster, "collection", "shard", ns,
                               "--key", "k", "--hashed", "--chunks", "6")
    assert code == 0, err
    assert "6 chunks" in out

    data = tmp_path / "people.jsonl"
    lines = [json.dumps({"_id": i, "k": i, "name": f"p{i}", "age": i % 50}) for i in range(2500)]
    lines.insert(10, "")  # blank lines are skipped
    lines.insert(20, "{not json")  # file line 21
    lines.append('{"_id": 0, "k": 0}')  # duplicate _id: reported with its line number
    lines.append('{"_id": {"$oid": "5f0000000000000000000001"}, "k": -1, '
                 '"at": {"$date": "2024-01-02T03:04:05Z"}}')
    data.write_text("\n".join(lines) + "\n")
    code, out, err = await run(capsys, shared_cluster, "insert", ns, str(data))
    assert code == 1  # some lines failed
    assert "inserted 2501 of 2503 documents" in out
    assert "inserted 999/2503" in err and "inserted 2501/2503" in err
    assert "lauradb: line 21: FAILED_TO_PARSE" in err
    assert f"lauradb: line {len(lines) - 1}: DUPLICATE_KEY" in err

    code, out, err = await run(capsys, shared_cluster, "query", ns, '{"age": {"$lt": 2}}',
                               "--sort", '{"k": -1}', "--limit", "3",
                               "--projection", '{"name": 1}')
    assert code == 0, err
    assert parse_docs(out) == [
        {"_id": 2451, "name": "p2451"},
        {"_id": 2450, "name": "p2450"},
        {"_id": 2401, "name": "p2401"},
    ]

    code, out, err = await run(capsys, shared_cluster, "query", ns,
                               '{"_id": {"$oid": "5f0000000000000000000001"}}')
    assert code == 0, err
    assert '"at": {\n    "$date": "2024-01-02T03:04:05Z"\n  }' in out

    # every document, past the first batch (GetMore)
    code, out, _ = await run(capsys, shared_cluster, "query", ns, "{}")
    assert code == 0 and len(parse_docs(out)) == 2501

    code, out, err = await run(capsys, shared_cluster, "index", "create", ns, '{"age": 1}',
                               "--sparse")
    assert code == 0, err
    assert "created: age_1" in out
    code, out, err = await run(capsys, shared_cluster, "index", "create", ns, '{"name": -1}',
                               "--name", "by_name")
    assert code == 0 and "created: by_name" in out
    code, out, _ = await run(capsys, shared_cluster, "index", "list", ns)
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) >= {"_id_", "age_1", "by_name"}
    assert "sparse" in rows["age_1"] and '{"name": -1}' in rows["by_name"]
    code, out, _ = await run(capsys, shared_cluster, "index", "drop", ns, "age_1")
    assert code == 0 and "dropped: age_1" in out
    code, out, _ = await run(capsys, shared_cluster, "index", "list", ns)
    assert "age_1" not in out

    # A filter the server rejects: exit 1, one line.
    code, out, err = await run(capsys, shared_cluster, "query", ns, '{"a": {"$bogus": 1}}')
    assert code == 1 and out == ""
    assert err.startswith("lauradb: ") and err.count("\n") == 1
    # Unparseable JSON is a usage error.
    code, _, err = await run(capsys, shared_cluster, "query", ns, "{bad")
    assert code == 2 and err.startswith("lauradb: FAILED_TO_PARSE")
    await drop(shared_cluster, db_name)


@on_session_loop
async def test_split_then_status(
    shared_cluster: Cluster, db_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = f"{db_name}.ranged"
    code, out, err = await run(capsys, shared_cluster, "collection", "shard", ns, "--key", "k")
    assert code == 0, err
    for point in (10, 20, 30):
        code, out, err = await run(capsys, shared_cluster, "chunk", "split", ns,
                                   "--at", json.dumps({"k": point}))
        assert code == 0, err
        assert f'at {{"k": {point}}}' in out
    # a split point on an existing bound is refused by the config server
    code, _, err = await run(capsys, shared_cluster, "chunk", "split", ns, "--at", '{"k": 20}')
    assert code == 1 and err.startswith("lauradb: ") and err.count("\n") == 1

    await run(capsys, shared_cluster, "query", f"{db_name}.plain", "{}")
    stub = shared_cluster.router_stub()
    await insert_many(stub, db_name, "plain", [{"_id": i} for i in range(7)])
    await insert_many(stub, db_name, "ranged", [{"k": i} for i in range(40)])

    code, out, err = await run(capsys, shared_cluster, "status")
    assert code == 0, err
    assert "shards:" in out and "balancer: disabled" in out and "running migrations: none" in out
    section = out[out.index(f"  {db_name}  primary: "):]
    assert f"{ns}  sharded  key: {{ k: 1 }} (range)  documents: 40  chunks: 4" in section
    primary = section.split("primary: ")[1].split()[0]
    assert f"{primary}  ██████████  4" in section
    assert f"{db_name}.plain  unsharded on {primary}  documents: 7" in section

    # move the chunk holding k=25 ([20, 30)) to another shard
    other = next(s for s in shared_cluster.shard_ids if s != primary)
    code, out, err = await run(capsys, shared_cluster, "chunk", "move", ns,
                               "--find", '{"k": 25}', "--to", other)
    assert code == 0, err
    assert f"from {primary} to {other}: 10 documents" in out
    code, out, _ = await run(capsys, shared_cluster, "status")
    assert f"{primary}  {bar(3, 4)}  3" in out and f"{other}  {bar(1, 4)}  1" in out
    assert "documents: 40  chunks: 4" in out
    await drop(shared_cluster, db_name)


async def test_balancer_start_stop_and_shard_remove(
    cluster: Callable[..., Awaitable[Cluster]], db_name: str,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    """On a cluster of this test's own (3 shards, balancer initially off)."""
    c = await cluster(3)

    async def balancer_line() -> str:
        code, out, err = await run(capsys, c, "balancer", "status")
        assert code == 0, err
        return out.splitlines()[0]

    assert await balancer_line() == "balancer: disabled"
    code, out, err = await run(capsys, c, "balancer", "start")
    assert (code, out) == (0, "balancer enabled\n"), err
    assert await balancer_line() == "balancer: enabled"
    code, out, _ = await run(capsys, c, "status")
    assert code == 0 and "balancer: enabled" in out
    code, out, err = await run(capsys, c, "balancer", "stop")
    assert (code, out) == (0, "balancer disabled\n"), err
    assert await balancer_line() == "balancer: disabled"
    code, out, _ = await run(capsys, c, "status")
    assert code == 0 and "balancer: disabled" in out

    # A database (unsharded data) makes one shard its primary; another shard is spare.
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"_id": i}) + "\n" for i in range(5)))
    code, _, err = await run(capsys, c, "insert", f"{db_name}.c", str(data))
    assert code == 0, err
    code, out, _ = await run(capsys, c, "status")
    primary = out.split(f"  {db_name}  primary: ")[1].split()[0]
    spare, last = (s for s in c.shard_ids if s != primary)

    # The spare shard owns nothing: removed at once.
    code, out, err = await run(capsys, c, "shard", "remove", spare)
    assert code == 0, err
    assert out.splitlines() == [
        f"shard {spare}: completed  remaining chunks: 0  remaining databases: 0",
        f"shard '{spare}' removed from the cluster",
    ]
    code, out, _ = await run(capsys, c, "shard", "list")
    assert spare not in out and primary in out

    # The primary starts draining (the balancer is stopped, so it stays draining).
    code, out, err = await run(capsys, c, "shard", "remove", primary)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"shard {primary}: started  remaining chunks: 0  remaining databases: 1"
    assert lines[1].startswith(f"draining shard '{primary}' started: remaining 0 chunk(s), "
                               "1 database(s) as primary")
    code, out, _ = await run(capsys, c, "shard", "remove", primary)
    assert out.startswith(f"shard {primary}: ongoing  remaining chunks: 0  remaining databases: 1")
    code, out, _ = await run(capsys, c, "shard", "list")
    rows = {line.split()[0]: line.split()[2] for line in out.splitlines()[1:]}
    assert rows == {primary: "draining", last: "active"}

    # The last active shard cannot go: one line, exit 1.
    code, out, err = await run(capsys, c, "shard", "remove", last)
    assert code == 1 and out == ""
    assert err.startswith("lauradb: ILLEGAL_OPERATION: ") and "last shard" in err
    assert err.count("\n") == 1
    code, out, _ = await run(capsys, c, "query", f"{db_name}.c", "{}")
    assert code == 0 and len(parse_docs(out)) == 5  # the data is still served


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lauradb: ") and "invalid choice" in err and err.count("\n") == 1
    assert main(["chunk", "split", "nodot", "--at", "{}"]) == 2
    assert "INVALID_NAMESPACE" in capsys.readouterr().err


def cli(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lauradb.cli.main", *argv],
        input=stdin, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
    )


def test_subprocess_smoke(shared_cluster: Cluster, db_name: str) -> None:
    router = ("--router", shared_cluster.router_address)
    proc = cli(*router, "insert", f"{db_name}.c", "-", stdin='{"_id": 1}\n{"_id": 2}\n')
    assert proc.returncode == 0, proc.stderr
    assert "inserted 2 of 2 documents" in proc.stdout and "inserted 2/2" in proc.stderr
    proc = cli(*router, "status")
    assert proc.returncode == 0, proc.stderr
    assert f"{db_name}.c  unsharded on " in proc.stdout and "documents: 2" in proc.stdout
    with grpc.insecure_channel(shared_cluster.router_address) as channel:
        routing_pb2_grpc.RouterServiceStub(channel).DropDatabase(
            router_ext_pb2.DropDatabaseRequest(database=db_name), timeout=30
        )
    proc = cli(*router, "shard", "remove", "no_such_shard")
    assert proc.returncode == 1 and proc.stderr.startswith("lauradb: ")
    assert proc.stderr.count("\n") == 1
    proc = cli("--router", "127.0.0.1:1", "--timeout", "2", "status")
    assert proc.returncode == 1
    assert proc.stderr.startswith("lauradb: ") and "Traceback" not in proc.stderr
