"""Config server leadership: always-leader (SQLite) and etcd lease + election, against a
real local etcd (the session's ``etcd_server``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from config_server.leadership import AlwaysLeader, EtcdLeadership
from config_server.store import MetadataConflict
from config_server.store_etcd import EtcdMetadataStore
from lauradb.errors import ErrorCode, LauraError
from lauradb.etcd_local import LocalEtcd
from tests.conftest import etcd_cluster_name

WAIT = 30.0  # generous bound for conditions (never a timing assertion)


async def test_always_leader() -> None:
    leadership = AlwaysLeader("cfg0")
    lost: list[bool] = []
    leadership.on_loss(lambda: lost.append(True))
    assert not leadership.is_leader
    await leadership.campaign()
    assert leadership.is_leader and await leadership.leader() == "cfg0"
    assert leadership.fence() is None
    await leadership.resign()
    assert not leadership.is_leader and lost == [True]


async def test_one_of_two_wins_and_the_other_takes_over(
    etcd_server: LocalEtcd, request: pytest.FixtureRequest
) -> None:
    url = f"{etcd_server.url}/{etcd_cluster_name(request)}"
    a = EtcdLeadership(url, "cfg-a", ttl=2)
    b = EtcdLeadership(url, "cfg-b", ttl=2)
    store = EtcdMetadataStore(url)
    a_lost = asyncio.Event()
    a.on_loss(a_lost.set)
    try:
        await asyncio.wait_for(a.campaign(), WAIT)
        assert a.is_leader and await b.leader() == "cfg-a"
        b_campaign = asyncio.create_task(b.campaign())
        fence = a.fence()
        assert fence is not None
        store.set_fence(*fence)
        with store.transaction() as tx:  # the leader writes
            tx.set_meta("written-by", "a")
        await asyncio.sleep(0)  # let b try (and fail) at least once
        assert not b_campaign.done() and not b.is_leader

        a.suspend_keepalive()  # a is cut off from etcd: its lease will expire
        await asyncio.wait_for(a_lost.wait(), WAIT)
        assert not a.is_leader
        await asyncio.wait_for(b_campaign, WAIT)
        assert b.is_leader and await a.leader() == "cfg-b"
        assert not a.is_leader  # a stepped down before its lease could expire

        # a's fence is stale: its store can no longer commit
        with pytest.raises(LauraError) as exc, store.transaction() as tx:
            tx.set_meta("written-by", "a again")
        assert exc.value.code == ErrorCode.NOT_WRITABLE_PRIMARY
        assert not isinstance(exc.value, MetadataConflict)

        b_lost = asyncio.Event()
        b.on_loss(b_lost.set)
        await b.resign()  # revokes the lease: a can take over at once
        assert b_lost.is_set() and not b.is_leader
        await asyncio.wait_for(a.campaign(), WAIT)
        assert a.is_leader and await b.leader() == "cfg-a"
    finally:
        store.close()
        await a.close()
        await b.close()


async def test_campaign_waits_while_etcd_is_down(tmp_path: Path) -> None:
    etcd = LocalEtcd(tmp_path / "etcd")
    etcd.start()
    try:
        leadership = EtcdLeadership(etcd.url, "cfg-x", ttl=2)
        failures = asyncio.Event()
        drop = leadership._drop_client

        async def counting_drop() -> None:
            failures.set()
            await drop()

        leadership._drop_client = counting_drop  # type: ignore[method-assign]
        etcd.stop()
        campaign = asyncio.create_task(leadership.campaign())
        await asyncio.wait_for(failures.wait(), WAIT)  # it tried and failed
        assert not campaign.done()  # keeps trying: neither fails nor hangs the loop
        etcd.start()
        await asyncio.wait_for(campaign, WAIT)
        assert leadership.is_leader
        await leadership.close()
        assert not leadership.is_leader
    finally:
        etcd.stop()
