"""Issue 9: a network partition isolates a replica set's primary.

One shard, a 3-member replica set whose member-to-member links each go through a
``TcpProxy`` of the test (``proxy_replica_links``: member A's ``--peers`` names the
proxy A->B); the config server and the router reach the members directly.

1. Writes (w:majority through the router) before the partition.
2. Every link to and from the primary is cut (both directions). The isolated primary
   still takes a w:1 write sent to it directly (it cannot know yet that it is cut off).
3. It steps down on its own (no majority contact), the two others elect a new primary
   of a later term, and w:majority writes through the router continue.
4. Heal: the old primary rejoins as a secondary of the new one and converges: its w:1
   write, which no majority ever had, is gone (rolled back by a resync); every
   w:majority write is present on every member.
5. At most one PRIMARY per term in the members' logs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest

from lauradb.client import AsyncClient, WriteConcern
from lauradb.cluster import replset_pb2, shard_pb2
from lauradb.errors import ErrorCode
from tests.chaos.test_replset_jepsen import members_caught_up, primaries_per_term
from tests.integration.harness import (
    Cluster,
    Proc,
    TcpProxy,
    enc,
    eventually,
    laura_error,
    proxy_replica_links,
    unique_name,
)

pytestmark = [pytest.mark.chaos]

ClusterFactory = Callable[..., Awaitable[Cluster]]

# A step-down window (4 x the election timeout, at least 3 s) comfortably longer than the few
# milliseconds the test needs to send its w:1 write to the isolated primary.
ELECTION_TIMEOUT_MS = 1000


async def test_isolated_primary_steps_down_majority_continues(cluster: ClusterFactory) -> None:
    c = await cluster(
        1, start=False, replicas=3,
        extra_shard_args=["--election-timeout-ms", str(ELECTION_TIMEOUT_MS)],
    )
    links = proxy_replica_links(c)
    for proxy in links.values():
        await proxy.start()
    try:
        await c.start()
        await eventually(lambda: members_caught_up(c, "shard0"), timeout=30,
                         what="a primary and caught-up secondaries")
        await _partition_scenario(c, links)
    finally:
        for proxy in links.values():
            await proxy.stop()


async def _partition_scenario(c: Cluster, links: dict[tuple[str, str], TcpProxy]) -> None:
    db, coll_name = unique_name("partition"), "items"
    majority_acked: set[str] = set()
    async with AsyncClient(
        c.router_address, write_concern=WriteConcern(w="majority"), timeout=30
    ) as client:
        coll = client[db][coll_name]
        for i in range(20):
            await coll.insert_one({"_id": f"before-{i}"})
            majority_acked.add(f"before-{i}")

        # Cut every link to and from the primary; the isolated primary still accepts a
        # w:1 write sent to it directly. (Should it have stepped down just before the cut
        # -- a starved machine can delay heartbeats -- heal and try again.)
        for attempt in range(3):
            old = await c.primary_of("shard0")
            old_term = (await c.hello(old)).term
            others = [p for p in c.members("shard0") if p is not old]
            isolated = [p for (a, b), p in links.items() if old.name in (a, b)]
            assert len(isolated) == 4
            for proxy in isolated:
                proxy.cut()
            try:
                resp = await c.shard_stub_at(old).Insert(
                    shard_pb2.ShardInsertRequest(
                        database=db, collection=coll_name,
                        documents=[enc({"_id": "isolated-w1"})],
                        version=shard_pb2.ShardVersion(ignore=True),
                        write_concern=replset_pb2.WriteConcern(w="1"),
                    ),
                    timeout=10,
                )
                code, message = resp.error.code, resp.error.message
            except grpc.RpcError as exc:
                err = laura_error(exc)
                code, message = err.code, err.message
            if code != ErrorCode.NOT_WRITABLE_PRIMARY or attempt == 2:
                break
            for proxy in isolated:
                proxy.heal()
            await eventually(lambda: members_caught_up(c, "shard0"), timeout=30,
                             what="the set settled before another attempt")
        assert not code, message
        assert resp.inserted_count == 1 and not resp.errors, resp

        # It steps down by itself; the majority side elects a primary of a later term.
        async def stepped_down() -> bool:
            return not (await c.hello(old)).is_primary

        await eventually(stepped_down, timeout=20, what=f"{old.name} stepping down")

        async def new_primary() -> Proc | None:
            for proc in others:
                hello = await c.hello(proc)
                if hello.is_primary and hello.term > old_term:
                    return proc
            return None

        elected = await eventually(new_primary, timeout=20, what="a primary on the majority side")
        assert elected is not None

        # Writes through the router continue on the majority side.
        for i in range(20):
            await coll.insert_one({"_id": f"during-{i}"})
            majority_acked.add(f"during-{i}")
        assert await c.primary_of("shard0") is elected

        # Heal: the old primary rejoins as a secondary and converges.
        for proxy in isolated:
            proxy.heal()
        for i in range(5):
            await coll.insert_one({"_id": f"after-{i}"})
            majority_acked.add(f"after-{i}")
        await eventually(lambda: members_caught_up(c, "shard0"), timeout=30,
                         what=f"{old.name} back as a caught-up secondary")
        assert not (await c.hello(old)).is_primary

        routed = {d["_id"] async for d in coll.find({})}
    assert "isolated-w1" not in routed, "a w:1 write no majority had survived the partition"
    assert majority_acked <= routed, sorted(majority_acked - routed)[:10]

    async def converged() -> bool:
        for proc in c.members("shard0"):
            held = {str(i) for i in await c.member_ids(proc, db, coll_name)}
            if held != routed:
                raise AssertionError(
                    f"{proc.name}: missing {sorted(routed - held)[:5]}, "
                    f"extra {sorted(held - routed)[:5]}"
                )
        return True

    await eventually(converged, timeout=30, what="every member holding the same documents")

    seen = primaries_per_term(c.shard_procs)
    double = {k: v for k, v in seen.items() if len(v) > 1}
    assert not double, f"two primaries in one term: {double}"
    assert old.log_text().count("RESYNC") + old.log_text().count("diverged") >= 1
