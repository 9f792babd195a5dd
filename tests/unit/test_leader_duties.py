"""LeaderDuties over a real etcd: one of two candidates leads, with the store fenced by
its leader key; when it can no longer renew its lease it stops its duties (``lose``)
before the other one starts them (``gain``); the follower names the leader."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from config_server.leader_duties import LeaderDuties
from config_server.leadership import EtcdLeadership
from config_server.store_etcd import EtcdMetadataStore
from lauradb.etcd_local import LocalEtcd
from lauradb.rpc.channels import ChannelPool
from tests.conftest import etcd_cluster_name
from tests.integration.harness import eventually


@pytest.fixture
def url(etcd_server: LocalEtcd, request: pytest.FixtureRequest) -> str:
    return f"{etcd_server.url}/{etcd_cluster_name(request)}"


@pytest.fixture
def stores(url: str) -> Iterator[list[EtcdMetadataStore]]:
    opened = [EtcdMetadataStore(url), EtcdMetadataStore(url)]
    yield opened
    for store in opened:
        store.close()


async def test_a_deposed_leader_stops_before_the_next_one_starts(
    url: str, stores: list[EtcdMetadataStore]
) -> None:
    events: list[tuple[str, int]] = []
    duties: list[LeaderDuties] = []
    pool = ChannelPool()

    def make(i: int) -> LeaderDuties:
        async def gain() -> None:
            events.append(("gain", i))

        async def lose() -> None:
            events.append(("lose", i))

        leadership = EtcdLeadership(url, f"c{i}", ttl=2)
        return LeaderDuties(leadership, stores[i], pool, address=f"c{i}", gain=gain, lose=lose)

    try:
        duties.append(make(0))
        await duties[0].start()

        async def first_leads() -> bool:
            return duties[0].is_leader and ("gain", 0) in events

        await eventually(first_leads, what="c0 leading")
        duties.append(make(1))
        await duties[1].start()
        assert await duties[1].leader_address() == "c0"
        assert stores[0]._fence is not None and stores[1]._fence is None
        with stores[0].transaction() as tx:  # the leader's writes pass its fence
            tx.set_meta("probe", "0")

        assert isinstance(duties[0].leadership, EtcdLeadership)
        duties[0].leadership.suspend_keepalive()  # cut off from etcd, as it were

        async def second_leads() -> bool:
            return duties[1].is_leader and ("gain", 1) in events

        await eventually(second_leads, timeout=20, what="c1 leading")
        assert events.index(("lose", 0)) < events.index(("gain", 1)), events
        assert stores[0]._fence is None and stores[1]._fence is not None
        assert await duties[0].leader_address() == "c1"
    finally:
        for d in duties:
            await d.close()
        await pool.close()
