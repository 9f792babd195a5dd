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

The crash-point tests arm one process with ``--test-txn-crash-at POINT:P`` (testing
only: it exits with status 137 when a transaction reaches POINT; see
``router/txn_failpoints.py`` and ``shard_stub/transactions/failpoints.py``), restart it
each time it dies until it crashed ``CRASHES`` times, then restart it unarmed: every
protocol point is proven hit (the exit status and the crash line in its log), and the
in-doubt transactions it left are resolved by recovery (the shards' recovery lines).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
import pytest
import pytest_asyncio

from lauradb.cluster import (
    common_pb2,
    routing_pb2,
    routing_pb2_grpc,
    transaction_pb2,
    transaction_pb2_grpc,
)
from lauradb.crashpoints import CRASH_EXIT_CODE
from lauradb.errors import ErrorCode
from router.txn_failpoints import POINTS as ROUTER_POINTS
from shard_stub.transactions.failpoints import POINTS as SHARD_POINTS
from tests.conftest import NO_BALANCER
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


async def make_bank(c: Cluster, router_args: list[str] | None = None) -> Proc:
    """The accounts, then a second router (with ``router_args``)."""
    await shard_collection(c.config_stub(), DB, COLL, ["_id"], "hashed")
    await insert_many(
        c.router_stub(), DB, COLL, [{"_id": i, "balance": START} for i in range(ACCOUNTS)]
    )
    for shard_id in c.shard_ids:
        holder = await c.primary_of(shard_id) if c.replicas > 1 else c.members(shard_id)[0]
        assert await c.member_ids(holder, DB, COLL), f"{shard_id} holds no account"
    return await c.add_router(router_args or [])


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


# --- crash points ---------------------------------------------------------------------

CRASHES = 3  # crashes of the armed process per test
CRASH_PROBABILITY = 0.5  # not every transaction crashes it: crashed and live ones mix

# What proves that a transaction the crash left in doubt was resolved by recovery: a
# line of a shard's log naming it. A router that died mid-protocol never finishes its
# transaction, so the coordinator shard's driver always does (presuming abort of an
# undecided one, or pushing the decision), unless a participant that timed out asked
# first (then the coordinator shard presumed abort at its request).
RECOVERED_ABORT = re.compile(
    r"recovered decision ABORTED|presumed aborted|no decision within its timeout|"
    r"delivering ABORTED to"
)
RECOVERED_COMMIT = re.compile(r"recovered decision COMMITTED|delivering COMMITTED to")
RECOVERED_ANY = re.compile(f"{RECOVERED_ABORT.pattern}|{RECOVERED_COMMIT.pattern}")
ROUTER_EVIDENCE = {
    "after-coordinate": RECOVERED_ABORT,  # recorded, never prepared: presumed abort
    "after-first-prepare": RECOVERED_ABORT,
    "after-prepares": RECOVERED_ABORT,
    "after-decision": RECOVERED_ANY,  # the recorded decision (mostly COMMITTED) pushed
    "after-first-commit": RECOVERED_COMMIT,
}
CRASHED_TXN = re.compile(r"crash point (\S+) reached \((\w+)\)")


def _arm(proc: Proc, point: str) -> None:
    proc.args += ["--test-txn-crash-at", f"{point}:{CRASH_PROBABILITY}"]


def _disarm(proc: Proc) -> None:
    i = proc.args.index("--test-txn-crash-at")
    del proc.args[i : i + 2]


async def crash_and_restart(victim: Proc, point: str) -> None:
    """Restart ``victim`` each time it reaches its crash point until it crashed
    ``CRASHES`` times (the last restart unarmed); the load keeps running throughout."""
    crashes = 0

    async def died() -> bool:
        return not victim.alive

    while True:
        await eventually(died, timeout=60.0, interval=0.05, what=f"{victim.name} at {point}")
        code = victim.returncode
        assert code == CRASH_EXIT_CODE, f"{victim.name} exited with {code}\n{victim.log_tail()}"
        crashes += 1
        if crashes >= CRASHES:
            _disarm(victim)
        victim.restart()
        try:
            await victim.wait_healthy()
        except AssertionError:
            # armed, it may reach its point again before it is seen healthy
            if victim.alive or victim.returncode != CRASH_EXIT_CODE:
                raise
            continue
        if crashes >= CRASHES:
            return


def crashed_txns(proc: Proc, point: str, offset: int = 0) -> list[str]:
    """The transactions ``proc`` was running when it reached ``point`` (its log from
    ``offset``)."""
    return [
        m.group(2)
        for m in CRASHED_TXN.finditer(proc.log_text(offset))
        if m.group(1) == point
    ]


async def assert_resolved_by_recovery(
    c: Cluster, txn_ids: list[str], pattern: re.Pattern[str]
) -> None:
    """Every one of ``txn_ids`` has a recovery line (``pattern``) in a shard's log."""

    async def resolved() -> bool:
        lines = [
            line
            for p in c.shard_procs
            for line in p.log_text().splitlines()
            if pattern.search(line)
        ]
        missing = [t for t in txn_ids if not any(t in line for line in lines)]
        assert not missing, f"no recovery line for {missing}"
        return True

    await eventually(resolved, timeout=30.0, interval=0.2, what="recovery of the crashed")


async def run_crash_point(c: Cluster, victim: Proc, routers: list[Proc], point: str,
                          seed: int) -> list[str]:
    """Transfers and reads while ``victim`` crashes ``CRASHES`` times at ``point``;
    everything settled afterwards. The ids of the transactions it crashed in."""
    offset = victim.log_size()
    load = Load(c, routers, seed=seed)
    load.start()
    try:
        await load.progress(5, "start")
        await crash_and_restart(victim, point)
        await load.progress(PROGRESS, f"{CRASHES} crashes at {point}")
    finally:
        await load.finish()
    await assert_settled(c, load.bank)
    txn_ids = crashed_txns(victim, point, offset)
    assert len(txn_ids) >= CRASHES, txn_ids
    return txn_ids


# One bank for every crash point (a cluster per point would double the time): each
# test arms its victim, and leaves it unarmed, the money all there and nothing locked.
on_bank_loop = pytest.mark.asyncio(loop_scope="session")


@dataclass
class CrashBank:
    cluster: Cluster
    second: Proc  # an unarmed router besides ``cluster.router``


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def crash_bank(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[CrashBank]:
    c = Cluster(tmp_path_factory.mktemp("txn-crash-bank"), shards=3,
                extra_config_args=NO_BALANCER)
    try:
        await c.start()
        second = await make_bank(c)
        yield CrashBank(c, second)
    finally:
        await c.stop()


@on_bank_loop
@pytest.mark.parametrize("point", ROUTER_POINTS)
async def test_bank_router_crash_points(crash_bank: CrashBank, point: str) -> None:
    """A router dies at ``point`` of the protocol (repeatedly); the other goes on. Every
    transaction it died in is resolved by the shards' recovery."""
    c = crash_bank.cluster
    crasher = await c.add_router(["--test-txn-crash-at", f"{point}:{CRASH_PROBABILITY}"])
    txn_ids = await run_crash_point(
        c, crasher, [c.router, crasher], point, seed=ROUTER_POINTS.index(point)
    )
    await assert_resolved_by_recovery(c, txn_ids, ROUTER_EVIDENCE[point])
    crasher.terminate()


@on_bank_loop
@pytest.mark.parametrize("point", SHARD_POINTS)
async def test_bank_shard_crash_points(crash_bank: CrashBank, point: str) -> None:
    """A shard dies at ``point`` (repeatedly): as a participant, and as the coordinator
    shard of the transactions whose first operation it holds. What it made durable
    before dying stands after its restart."""
    c = crash_bank.cluster
    victim = c.shards[1]
    offset = victim.log_size()
    victim.terminate()
    _arm(victim, point)
    await c.restart(victim)
    txn_ids = await run_crash_point(
        c, victim, [c.router, crash_bank.second], point, seed=10 + SHARD_POINTS.index(point)
    )
    stub = transaction_pb2_grpc.TransactionServiceStub(c.channel(victim.address))
    if point == "after-prepare-record":
        # the prepared record was durable: reloaded (its documents locked) at restart
        assert "prepared transactions reloaded" in victim.log_text(offset)
    elif point == "after-commit-apply":
        # the applied commit was durable: a resent Commit is answered from it
        for txn_id in txn_ids:
            resp = await stub.Commit(transaction_pb2.CommitRequest(txn_id=txn_id),
                                     timeout=CALL_TIMEOUT)
            assert resp.success, (txn_id, resp)
    else:
        # the recorded decision was durable: the coordinator record still has it
        for txn_id in txn_ids:
            state = await stub.QueryTransactionState(
                transaction_pb2.RecoveryRequest(txn_id=txn_id), timeout=CALL_TIMEOUT
            )
            assert state.state in (transaction_pb2.COMMITTED, transaction_pb2.ABORTED), (
                txn_id, state,
            )
