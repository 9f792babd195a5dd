"""Issue 10's bank on replica-set shards: kill -9 of a shard's primary during transfers.

Two shards of three members each, the accounts hashed over them, transfers and the
consistent reader through two routers (``test_txn_bank.Load``). The primary of each
shard in turn is killed with SIGKILL while transactions are in flight: prepared
records, coordinator records and decisions are majority-committed before they are
acted on, so the new primary reloads the prepared transactions (their locks) and
resolves them, and the transfers go on. The killed member is restarted (it rejoins as
a secondary). Afterwards no lock is left, the total is exact and no balance is
negative; every consistent read saw the exact total.
"""

from __future__ import annotations

import pytest

from tests.chaos.test_txn_bank import PROGRESS, ClusterFactory, Load, assert_settled, make_bank

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


async def test_bank_on_replica_sets_survives_primary_kills(cluster: ClusterFactory) -> None:
    c = await cluster(shards=2, replicas=3)
    for shard_id in c.shard_ids:
        await c.primary_of(shard_id)
    second = await make_bank(c)
    load = Load(c, [c.router, second], seed=21)
    load.start()
    try:
        await load.progress(PROGRESS, "start")
        for shard_id in c.shard_ids:
            victim = await c.kill_primary(shard_id)
            # a new primary is elected, reloads the prepared transactions, resolves them
            await load.progress(PROGRESS, f"killing the primary of {shard_id}")
            await c.restart(victim)
        await load.progress(PROGRESS, "restarting the killed members")
    finally:
        await load.finish()
    await assert_settled(c, load.bank)
