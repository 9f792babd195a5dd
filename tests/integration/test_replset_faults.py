"""Issue 9, bad input and faults on replica-set shards: clear errors, self-healing.

One cluster (1 shard, a 3-member replica set) for all of it:

* ``w`` larger than the member count -> BAD_VALUE through the router, nothing written;
* a write sent to a secondary -> NOT_WRITABLE_PRIMARY (naming the primary);
* AddShard with members of different replica sets, with a standalone shard, or with
  a member list that disagrees with the members' own ``--peers`` -> BAD_VALUE, the
  existing record untouched;
* a member restarted with ``--peers`` that disagree with the recorded members: its
  registration is refused (BAD_VALUE, logged by the member), the record is kept;
* a member restarted with garbage over its SQLite file, and one with its data
  directory gone: each starts empty, initial-syncs by itself, and holds every document.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from lauradb.client import AsyncClient, OperationFailure, WriteConcern
from lauradb.cluster import replset_pb2, router_ext_pb2, routing_pb2, shard_pb2
from lauradb.errors import ErrorCode
from shard_stub.storage import DB_FILENAME
from tests.chaos.test_replset_jepsen import members_caught_up
from tests.integration.harness import (
    HOST,
    Cluster,
    Proc,
    enc,
    eventually,
    free_port,
    laura_error,
    unique_name,
)

ClusterFactory = Callable[..., Awaitable[Cluster]]


def _peers_arg(proc: Proc) -> str:
    return proc.args[proc.args.index("--peers") + 1]


def _set_peers(proc: Proc, peers: str) -> None:
    proc.args[proc.args.index("--peers") + 1] = peers


async def _add_shard_error(c: Cluster, shard_id: str, members: list[str]) -> str:
    host, port = members[0].rsplit(":", 1)
    with pytest.raises(grpc.RpcError) as info:
        await c.config_server_stub().AddShard(
            routing_pb2.AddShardRequest(
                shard_id=shard_id, host=host, port=int(port), members=members
            ),
            timeout=30,
        )
    err = laura_error(info.value)
    assert err.code == ErrorCode.BAD_VALUE, err
    return err.message


async def _recorded_members(c: Cluster) -> dict[str, list[str]]:
    shards = await c.config_server_stub().ListShards(router_ext_pb2.ListShardsRequest(), timeout=10)
    return {s.shard_id: list(s.members) for s in shards.shards}


async def test_replica_set_bad_input_and_faults(cluster: ClusterFactory, tmp_path: Path) -> None:
    c = await cluster(1, replicas=3)
    await eventually(lambda: members_caught_up(c, "shard0"), timeout=30,
                     what="a primary and caught-up secondaries")
    members = [p.address for p in c.members("shard0")]
    db, coll_name = unique_name("faults"), "docs"
    async with AsyncClient(
        c.router_address, write_concern=WriteConcern(w="majority"), timeout=30
    ) as client:
        coll = client[db][coll_name]
        await coll.insert_many([{"_id": i} for i in range(200)])

        # w larger than the number of members: BAD_VALUE before anything is written
        too_many = coll.with_options(write_concern=WriteConcern(w=4))
        with pytest.raises(OperationFailure) as w_info:
            await too_many.insert_one({"_id": "w4"})
        assert w_info.value.code == ErrorCode.BAD_VALUE, w_info.value
        assert "w:4" in w_info.value.message, w_info.value.message
        assert await coll.count_documents({"_id": "w4"}) == 0

    # a write sent to a secondary: NOT_WRITABLE_PRIMARY naming the primary
    primary = await c.primary_of("shard0")
    secondary = next(p for p in c.members("shard0") if p is not primary)
    request = shard_pb2.ShardInsertRequest(
        database=db, collection=coll_name, documents=[enc({"_id": "on-secondary"})],
        version=shard_pb2.ShardVersion(ignore=True),
        write_concern=replset_pb2.WriteConcern(w="1"),
    )
    try:
        resp = await c.shard_stub_at(secondary).Insert(request, timeout=10)
        code, message = resp.error.code, resp.error.message
    except grpc.RpcError as exc:
        err = laura_error(exc)
        code, message = err.code, err.message
    assert code == ErrorCode.NOT_WRITABLE_PRIMARY, (code, message)
    assert primary.address in message and "not the primary" in message, message

    # AddShard: members of different replica sets / a standalone shard / a member list
    # that disagrees with the members' own --peers
    other_port = free_port()
    other = Proc(
        "other-set", "shard_stub",
        ["--host", HOST, "--port", str(other_port), "--log-level", "info",
         "--data-dir", str(tmp_path / "other"), "--shard-id", "other",
         "--config", c.config_address, "--replset", "elsewhere"],
        address=f"{HOST}:{other_port}", data_dir=tmp_path / "other",
        log_path=tmp_path / "other-set.log",
    )
    other.start()
    try:
        await other.wait_healthy()
        message = await _add_shard_error(c, "mixed", [members[0], other.address])
        assert "different replica sets" in message and "elsewhere" in message, message
        message = await _add_shard_error(c, "partial", members[:2])
        assert "AddShard lists 2 members" in message, message
    finally:
        other.terminate()
        other.forget()
    assert await _recorded_members(c) == {"shard0": members}

    # a member restarted with --peers that disagree with the recorded members:
    # its registration is refused, the record kept
    secondary.terminate()
    good_peers = _peers_arg(secondary)
    _set_peers(secondary, good_peers.split(",")[0])
    secondary.args += ["--priority", "0"]  # a misconfigured member must not stand
    mark = secondary.log_size()
    await c.restart(secondary)

    def refused() -> bool:
        text = secondary.log_text(mark)
        return "membership with" in text and "the config server records 3 members" in text

    await eventually(lambda: _async(refused()), timeout=20, what="the registration refused")
    assert await _recorded_members(c) == {"shard0": members}
    secondary.terminate()
    _set_peers(secondary, good_peers)
    secondary.args = secondary.args[:-2]
    await c.restart(secondary)
    await eventually(lambda: members_caught_up(c, "shard0"), timeout=30,
                     what=f"{secondary.name} back with its right peers")

    # a corrupt data file, then a missing data directory: the member resyncs by itself
    expected = set(range(200))
    for damage in ("corrupt", "missing"):
        primary = await c.primary_of("shard0")
        victim = next(p for p in c.members("shard0") if p is not primary)
        victim.kill()
        assert victim.data_dir is not None
        if damage == "corrupt":
            db_file = victim.data_dir / DB_FILENAME
            size = db_file.stat().st_size
            db_file.write_bytes(b"\x5a" * max(size, 8192))
        else:
            shutil.rmtree(victim.data_dir)
        mark = victim.log_size()
        await c.restart(victim)

        async def resynced(proc: Proc = victim) -> bool:
            if not await members_caught_up(c, "shard0"):
                return False
            return await c.member_ids(proc, db, coll_name) == expected

        await eventually(resynced, timeout=45, what=f"{victim.name} resynced ({damage})")
        text = victim.log_text(mark)
        assert "initial sync from" in text, victim.log_tail(offset=mark)
        if damage == "corrupt":
            assert "is corrupt" in text and "moved it to" in text, victim.log_tail(offset=mark)
            assert list(victim.data_dir.glob(f"{DB_FILENAME}.corrupt-*"))


async def _async(value: bool) -> bool:
    return value
