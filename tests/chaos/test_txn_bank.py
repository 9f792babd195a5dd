"""Issue 10, the bank test: money is never created, destroyed or locked forever.

Accounts spread over 3 shards (hashed ``_id``), each starting with the same balance.
Transfer tasks move random amounts between random accounts, each transfer one
transaction of two updates (the debit with a precondition: the balance covers it),
through two routers. A reader repeatedly reads every account in one transaction (READ
operations are locking reads, so a successful read is a consistent cut) and checks the
total. Meanwhile processes are killed with SIGKILL and restarted: the coordinating
router, a participant shard, the config server. Afterwards every account can be written
by an ordinary update (no lock left behind), the total is exact, and no balance is
negative.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
import pytest

from lauradb.cluster import common_pb2, routing_pb2, routing_pb2_grpc, transaction_pb2
from lauradb.errors import ErrorCode
from tests.integration.harness import (
    Cluster,
    Proc,
    dec,
    enc,
    eventually,
    insert_many,
    laura_error,
    query_all,
    shard_collection,
)

pytestmark = [pytest.mark.chaos]

ClusterFactory = Callable[..., Awaitable[Cluster]]

DB = "bank"
COLL = "accounts"
ACCOUNTS = 24
START = 100
TOTAL = ACCOUNTS * START
TRANSFER_TASKS = 4
TXN_TIMEOUT_MS = 2000
CALL_TIMEOUT = 10.0
PROGRESS = 15  # committed transfers required after each restart


@dataclass
class Bank:
    committed: int = 0
    refused: int = 0  # the precondition (enough money) failed: nothing applied
    failed: int = 0  # aborted, or outcome unknown (a killed router)
    reads: int = 0
    violations: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def note_error(self, exc: grpc.RpcError) -> ErrorCode:
        code = laura_error(exc).code
        self.errors[code.name] = self.errors.get(code.name, 0) + 1
        return code


def _update(account: int, filter: dict[str, Any], update: dict[str, Any]) -> Any:
    return transaction_pb2.TransactionOperation(
        database=DB, collection=COLL, op_type=common_pb2.UPDATE,
        filter=enc(filter), update=enc(update), expect_matched=1,
    )


def transfer(source: int, target: int, amount: int) -> transaction_pb2.ExecuteTransactionRequest:
    return transaction_pb2.ExecuteTransactionRequest(
        operations=[
            _update(source, {"_id": source, "balance": {"$gte": amount}},
                    {"$inc": {"balance": -amount}}),
            _update(target, {"_id": target}, {"$inc": {"balance": amount}}),
        ],
        timeout_ms=TXN_TIMEOUT_MS,
    )


def read_all() -> transaction_pb2.ExecuteTransactionRequest:
    return transaction_pb2.ExecuteTransactionRequest(
        operations=[
            transaction_pb2.TransactionOperation(
                database=DB, collection=COLL, op_type=common_pb2.READ, filter=enc({}),
            )
        ],
        timeout_ms=TXN_TIMEOUT_MS,
    )


class Load:
    """Transfer tasks and a consistent reader, through every live router."""

    def __init__(self, cluster: Cluster, routers: list[Proc], seed: int) -> None:
        self.cluster = cluster
        self.routers = routers
        self.bank = Bank()
        self.rng = random.Random(seed)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def stub(self) -> routing_pb2_grpc.RouterServiceStub:
        live = [r for r in self.routers if r.alive] or self.routers
        return self.cluster.router_stub(self.rng.choice(live))

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._transfers()) for _ in range(TRANSFER_TASKS)]
        self.tasks.append(asyncio.create_task(self._reader()))

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)

    async def _transfers(self) -> None:
        bank = self.bank
        while not self.stop.is_set():
            source, target = self.rng.sample(range(ACCOUNTS), 2)
            request = transfer(source, target, self.rng.randint(1, 30))
            try:
                await self.stub().ExecuteTransaction(request, timeout=CALL_TIMEOUT)
                bank.committed += 1
            except grpc.RpcError as exc:
                if bank.note_error(exc) == ErrorCode.TRANSACTION_PRECONDITION_FAILED:
                    bank.refused += 1
                else:
                    bank.failed += 1
                    await asyncio.sleep(0.02)  # back off a little after a failure

    async def _reader(self) -> None:
        bank = self.bank
        while not self.stop.is_set():
            try:
                response = await self.stub().ExecuteTransaction(read_all(), timeout=CALL_TIMEOUT)
            except grpc.RpcError:
                await asyncio.sleep(0.02)
                continue
            docs = [dec(d) for d in response.results[0].documents]
            total = sum(d["balance"] for d in docs)
            if len(docs) != ACCOUNTS or total != TOTAL:
                bank.violations.append(f"read {len(docs)} accounts totalling {total}")
            bank.reads += 1

    async def progress(self, transfers: int, what: str, timeout: float = 60.0) -> None:
        """Wait until ``transfers`` more transfers committed (the system recovered)."""
        target = self.bank.committed + transfers

        async def enough() -> bool:
            return self.bank.committed >= target

        await eventually(enough, timeout=timeout, interval=0.1, what=f"progress after {what}")


async def make_bank(c: Cluster) -> Proc:
    await shard_collection(c.config_stub(), DB, COLL, ["_id"], "hashed")
    await insert_many(
        c.router_stub(), DB, COLL, [{"_id": i, "balance": START} for i in range(ACCOUNTS)]
    )
    for index in range(len(c.shards)):
        assert await c.shard_count(index, DB, COLL, {}) > 0, f"shard{index} holds no account"
    return await c.add_router()


async def assert_settled(c: Cluster, bank: Bank) -> None:
    """No lock left: every account takes an ordinary write; the money is all there."""
    router = c.router_stub()

    async def writable(account: int) -> bool:
        request = routing_pb2.UpdateRequest(
            database=DB, collection=COLL, query=enc({"_id": account}),
            update=enc({"$set": {"checked": True}}),
        )
        await router.Update(request, timeout=CALL_TIMEOUT)
        return True

    for account in range(ACCOUNTS):
        await eventually(
            partial(writable, account), timeout=60.0, interval=0.2,
            what=f"account {account} writable",
        )
    docs = await query_all(router, DB, COLL)
    balances = {d["_id"]: d["balance"] for d in docs}
    assert len(balances) == ACCOUNTS, balances
    assert sum(balances.values()) == TOTAL, (balances, bank)
    assert min(balances.values()) >= 0, balances
    response = await router.ExecuteTransaction(read_all(), timeout=CALL_TIMEOUT)
    assert sum(dec(d)["balance"] for d in response.results[0].documents) == TOTAL
    assert not bank.violations, bank.violations[:5]


async def test_bank_total_is_constant_under_load(cluster: ClusterFactory) -> None:
    c = await cluster(shards=3)
    second = await make_bank(c)
    load = Load(c, [c.router, second], seed=1)
    load.start()
    try:
        await load.progress(60, "start")

        async def reads() -> bool:
            return load.bank.reads >= 5

        await eventually(reads, timeout=60.0, interval=0.1, what="consistent reads")
    finally:
        await load.finish()
    await assert_settled(c, load.bank)
    assert load.bank.committed >= 60


async def test_bank_survives_kills(cluster: ClusterFactory) -> None:
    c = await cluster(shards=3)
    second = await make_bank(c)
    load = Load(c, [c.router, second], seed=2)
    rng = random.Random(3)
    load.start()
    try:
        await load.progress(PROGRESS, "start")
        victims: list[tuple[str, Proc]] = [
            ("coordinating router", c.router),
            ("participant shard", c.shards[rng.randrange(len(c.shards))]),
            ("config server", c.config),
            ("coordinating router", c.router),
            ("participant shard", c.shards[rng.randrange(len(c.shards))]),
        ]
        for what, victim in victims:
            # kill at a random point of the stream of transactions in flight
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            victim.kill()
            if victim is c.config:
                # transactions do not go through the config server: they carry on
                await load.progress(2, "killing the config server")
            await c.restart(victim)
            await load.progress(PROGRESS, f"restarting the {what}")
    finally:
        await load.finish()
    await assert_settled(c, load.bank)
