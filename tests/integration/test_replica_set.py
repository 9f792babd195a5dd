"""A 3-member shard replica set (``--replset``) with a real config server.

Members are started directly (a small helper here, independent of the Cluster
harness). Writes and reads go to ShardService on the members themselves (placement
check ignored: the collection is unsharded and the config server knows nothing of it).

Covers: one primary elected (Hello); w:majority writes acknowledged; secondaries
converge (Hello, reads with secondary_ok); a write to a secondary fails with
NOT_WRITABLE_PRIMARY and reads without secondary_ok with NOT_PRIMARY_OR_SECONDARY;
kill -9 the primary -> a new primary with a higher term, no majority-acknowledged write
lost; the old primary restarted rejoins as a secondary and converges; a member whose
data directory was wiped initial-syncs; w:3 with a member down -> write_concern_error
after wtimeout while the write is applied; never two primaries in one term (from the
``role change`` log lines).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bson
import grpc
import pytest
from grpc import aio

from lauradb.cluster import replset_pb2, shard_pb2, shard_pb2_grpc
from lauradb.errors import ErrorCode
from tests.integration.harness import HOST, LOG_LEVEL, Proc, eventually, free_port, laura_error

pytestmark = pytest.mark.integration

REPLSET = "rs0"
DB = "rsdb"
COLL = "items"
ELECTION_TIMEOUT_MS = 300
IGNORE = shard_pb2.ShardVersion(ignore=True)
ROLE_CHANGE = re.compile(r"role change: replset=(\S+) node=(\S+) term=(\d+) role=(\w+)")


class ReplicaSetProcs:
    """A config server and the members of one replica set, on free loopback ports."""

    def __init__(self, base: Path, members: int = 3) -> None:
        self.base = base
        config_address = f"{HOST}:{free_port()}"
        self.config = self._proc(
            "config", "config_server", config_address, base / "config", ["--no-balancer"]
        )
        addresses = [f"{HOST}:{free_port()}" for _ in range(members)]
        self.members = [
            self._proc(
                f"m{i}",
                "shard_stub",
                address,
                base / f"m{i}",
                [
                    "--shard-id", REPLSET, "--config", config_address,
                    "--replset", REPLSET,
                    "--peers", ",".join(a for a in addresses if a != address),
                    "--election-timeout-ms", str(ELECTION_TIMEOUT_MS),
                ],
            )
            for i, address in enumerate(addresses)
        ]
        self._channels: dict[str, aio.Channel] = {}

    @staticmethod
    def _proc(name: str, module: str, address: str, data: Path, extra: Sequence[str]) -> Proc:
        host, port = address.rsplit(":", 1)
        return Proc(
            name, module,
            ["--host", host, "--port", port, "--log-level", LOG_LEVEL, "--data-dir", str(data),
             *extra],
            address=address, data_dir=data, log_path=data.parent / f"{name}.log",
        )

    async def start(self) -> None:
        for proc in [self.config, *self.members]:
            proc.start()
        await asyncio.gather(*(p.wait_healthy() for p in [self.config, *self.members]))

    async def stop(self) -> None:
        for ch in self._channels.values():
            await ch.close(None)
        self._channels.clear()
        for proc in [*self.members, self.config]:
            await asyncio.to_thread(proc.terminate)  # exit 0 on SIGTERM (killed: skipped)
            proc.forget()

    def stub(self, i: int) -> shard_pb2_grpc.ShardServiceStub:
        address = self.members[i].address
        if address not in self._channels:
            self._channels[address] = aio.insecure_channel(address)
        return shard_pb2_grpc.ShardServiceStub(self._channels[address])

    async def hello(self, i: int) -> replset_pb2.HelloResponse:
        resp: replset_pb2.HelloResponse = await self.stub(i).Hello(
            replset_pb2.HelloRequest(), timeout=2.0
        )
        return resp

    async def hellos(self) -> dict[int, replset_pb2.HelloResponse]:
        out: dict[int, replset_pb2.HelloResponse] = {}
        for i, proc in enumerate(self.members):
            if not proc.alive:
                continue
            try:
                out[i] = await self.hello(i)
            except grpc.RpcError:
                pass
        return out

    async def primary(self, *, above_term: int = -1, timeout: float = 30.0) -> int:
        """The index of the (single, highest-term) primary, once there is one."""

        async def find() -> tuple[int] | None:  # a tuple: member 0 is falsy
            hellos = await self.hellos()
            primaries = [(h.term, i) for i, h in hellos.items() if h.is_primary]
            if not primaries:
                return None
            term, i = max(primaries)
            return (i,) if term > above_term else None

        found = await eventually(find, timeout=timeout, what="a primary")
        assert found is not None
        return found[0]

    def role_changes(self) -> list[tuple[str, int, str]]:
        out: list[tuple[str, int, str]] = []
        for proc in self.members:
            for m in ROLE_CHANGE.finditer(proc.log_text()):
                out.append((m.group(2), int(m.group(3)), m.group(4)))
        return out

    def assert_one_primary_per_term(self) -> None:
        leaders: dict[int, set[str]] = {}
        for node, term, role in self.role_changes():
            if role == "PRIMARY":
                leaders.setdefault(term, set()).add(node)
        assert leaders, "no member ever became primary"
        two = {t: n for t, n in leaders.items() if len(n) > 1}
        assert not two, f"two primaries in one term: {two}"


def wc(w: str = "majority", wtimeout_ms: int = 0) -> replset_pb2.WriteConcern:
    return replset_pb2.WriteConcern(w=w, wtimeout_ms=wtimeout_ms)


async def insert(
    rs: ReplicaSetProcs, i: int, docs: list[dict[str, Any]], concern: replset_pb2.WriteConcern
) -> shard_pb2.ShardInsertResponse:
    resp: shard_pb2.ShardInsertResponse = await rs.stub(i).Insert(
        shard_pb2.ShardInsertRequest(
            database=DB, collection=COLL, documents=[bson.encode(d) for d in docs],
            ordered=True, version=IGNORE, write_concern=concern,
        ),
        timeout=30.0,
    )
    return resp


async def ids_on(rs: ReplicaSetProcs, i: int, *, secondary_ok: bool = True) -> set[int]:
    resp = await rs.stub(i).Find(
        shard_pb2.ShardFindRequest(
            database=DB, collection=COLL, version=IGNORE, secondary_ok=secondary_ok,
            batch_size=100000,
        ),
        timeout=10.0,
    )
    assert not resp.cursor_id
    return {int(bson.decode(d)["_id"]) for d in resp.documents}


async def converged(rs: ReplicaSetProcs, members: Sequence[int], expected: set[int]) -> bool:
    for i in members:
        if not (await rs.hello(i)).caught_up:
            return False
        if await ids_on(rs, i) != expected:
            return False
    return True


@pytest.fixture
async def replset(tmp_path: Path) -> Any:
    rs = ReplicaSetProcs(tmp_path)
    await rs.start()
    try:
        yield rs
    finally:
        await rs.stop()


async def test_failover_keeps_majority_writes(replset: ReplicaSetProcs) -> None:
    rs = replset
    p = await rs.primary()
    first = await rs.hello(p)
    assert first.replset == REPLSET and first.role == "PRIMARY" and first.term >= 1
    secondaries = [i for i in range(3) if i != p]

    # w:majority writes are acknowledged; secondaries converge.
    acked: set[int] = set()
    for batch in range(5):
        docs = [{"_id": batch * 10 + k, "v": batch} for k in range(10)]
        resp = await insert(rs, p, docs, wc())
        assert resp.inserted_count == 10 and not resp.HasField("write_concern_error")
        acked |= {d["_id"] for d in docs}
    await eventually(lambda: converged(rs, range(3), acked), timeout=20, what="convergence")

    # A secondary rejects writes (before touching anything) and plain reads.
    with pytest.raises(grpc.RpcError) as info:
        await insert(rs, secondaries[0], [{"_id": 999}], wc())
    assert laura_error(info.value).code == ErrorCode.NOT_WRITABLE_PRIMARY
    with pytest.raises(grpc.RpcError) as info:
        await ids_on(rs, secondaries[0], secondary_ok=False)
    assert laura_error(info.value).code == ErrorCode.NOT_PRIMARY_OR_SECONDARY
    assert 999 not in await ids_on(rs, p)

    # kill -9 the primary: a new one with a higher term; every acked write is there.
    rs.members[p].kill()
    q = await rs.primary(above_term=first.term)
    assert q != p
    assert (await rs.hello(q)).term > first.term
    assert await ids_on(rs, q) == acked
    docs = [{"_id": 100 + k} for k in range(10)]
    resp = await insert(rs, q, docs, wc())
    assert resp.inserted_count == 10 and not resp.HasField("write_concern_error")
    acked |= {d["_id"] for d in docs}

    # The old primary restarts, rejoins as a secondary and converges.
    rs.members[p].restart()
    await rs.members[p].wait_healthy()
    await eventually(lambda: converged(rs, range(3), acked), timeout=30, what="rejoin")
    assert (await rs.hello(p)).role == "SECONDARY"

    # A member whose data directory is wiped resyncs (initial sync).
    w = next(i for i in range(3) if i not in (p, q))
    rs.members[w].kill()
    data_dir = rs.members[w].data_dir
    assert data_dir is not None
    shutil.rmtree(data_dir)
    docs = [{"_id": 200 + k} for k in range(10)]
    resp = await insert(rs, q, docs, wc())  # majority: q + p
    assert not resp.HasField("write_concern_error")
    acked |= {d["_id"] for d in docs}
    rs.members[w].restart()
    await rs.members[w].wait_healthy()
    await eventually(lambda: converged(rs, range(3), acked), timeout=30, what="initial sync")
    assert "initial sync from" in rs.members[w].log_text()

    # w:3 with one member down: the write is applied, its write concern fails.
    rs.members[w].kill()
    resp = await insert(rs, q, [{"_id": 300}], wc("3", wtimeout_ms=500))
    assert resp.inserted_count == 1
    assert resp.HasField("write_concern_error")
    assert resp.write_concern_error.error.code == ErrorCode.WRITE_CONCERN_FAILED
    assert resp.write_concern_error.acknowledged == 2
    assert 300 in await ids_on(rs, q)
    # w larger than the set: BAD_VALUE before writing.
    with pytest.raises(grpc.RpcError) as info:
        await insert(rs, q, [{"_id": 301}], wc("4"))
    assert laura_error(info.value).code == ErrorCode.BAD_VALUE
    assert 301 not in await ids_on(rs, q)

    rs.assert_one_primary_per_term()
