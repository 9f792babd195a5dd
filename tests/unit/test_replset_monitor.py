"""ReplicaSetMonitor: primary discovery, buffering, invalidation, read-preference
selection (with a fake Hello; the routing through real members is in
tests/integration/test_replset_routing.py)."""

from __future__ import annotations

import asyncio
import random

import pytest

from lauradb.cluster import replset_pb2
from lauradb.errors import ErrorCode, LauraError
from lauradb.replset import (
    MemberState,
    ReplicaSetMonitor,
    ReplicaSets,
    choose_member,
    elect_primary,
    parse_mode,
    validate_members,
)

A, B, C = "h:1", "h:2", "h:3"


class FakeSet:
    """Members' Hello answers; ``down`` members raise."""

    def __init__(self) -> None:
        self.answers: dict[str, replset_pb2.HelloResponse] = {}
        self.down: set[str] = set()
        self.calls = 0

    def set(self, address: str, role: str, term: int = 1, **kw: object) -> None:
        self.answers[address] = replset_pb2.HelloResponse(
            address=address, role=role, is_primary=role == "PRIMARY", term=term,
            replset="s0", caught_up=kw.pop("caught_up", True), **kw,  # type: ignore[arg-type]
        )

    async def hello(self, address: str, timeout: float) -> replset_pb2.HelloResponse:
        self.calls += 1
        if address in self.down or address not in self.answers:
            raise LauraError(ErrorCode.SHARD_UNAVAILABLE, f"{address} is down")
        return self.answers[address]


def monitor(fake: FakeSet, **kw: float) -> ReplicaSetMonitor:
    opts = {"buffer_window": 1.0, "poll_interval": 0.01, "refresh_interval": 0.05, **kw}
    return ReplicaSetMonitor("s0", [A, B, C], fake.hello, **opts)


def st(address: str, role: str, term: int = 1, rtt: float = 1.0, **kw: object) -> MemberState:
    s = MemberState(address, ok=True, is_primary=role == "PRIMARY", role=role, term=term,
                    caught_up=True, rtt_ms=rtt)
    for k, v in kw.items():
        setattr(s, k, v)
    return s


async def test_single_member_never_calls_hello() -> None:
    calls: list[str] = []

    async def hello(address: str, timeout: float) -> replset_pb2.HelloResponse:
        calls.append(address)
        raise AssertionError("no Hello for a standalone shard")

    mon = ReplicaSetMonitor("s0", [A], hello)
    assert not mon.is_replset
    assert await mon.primary() == A
    assert await mon.select(parse_mode("secondary")) == A
    mon.invalidate(A)
    assert await mon.primary() == A
    assert calls == []
    assert mon._refresher is None


async def test_discovers_primary_and_caches_it() -> None:
    fake = FakeSet()
    fake.set(A, "SECONDARY")
    fake.set(B, "PRIMARY")
    fake.set(C, "SECONDARY")
    mon = monitor(fake)
    assert await mon.primary() == B
    calls = fake.calls
    assert await mon.primary() == B
    assert fake.calls == calls  # cached: no more Hello
    await mon.close()


async def test_waits_for_a_new_primary_after_invalidate() -> None:
    fake = FakeSet()
    fake.set(A, "PRIMARY", term=1)
    fake.set(B, "SECONDARY", term=1)
    fake.set(C, "SECONDARY", term=1)
    mon = monitor(fake)
    assert await mon.primary() == A
    fake.down.add(A)
    fake.set(B, "SECONDARY", term=2)
    mon.invalidate(A)
    waiter = asyncio.ensure_future(mon.primary())
    await asyncio.sleep(0.05)
    assert not waiter.done()  # buffering: no primary yet
    fake.set(C, "PRIMARY", term=2)
    assert await asyncio.wait_for(waiter, 2) == C
    await mon.close()


async def test_no_primary_within_the_window_names_the_shard() -> None:
    fake = FakeSet()
    for a in (A, B, C):
        fake.set(a, "SECONDARY")
    mon = monitor(fake, buffer_window=0.1)
    with pytest.raises(LauraError) as info:
        await mon.primary()
    assert info.value.code == ErrorCode.NOT_WRITABLE_PRIMARY
    assert "s0" in str(info.value)
    fake.down.update((A, B, C))
    with pytest.raises(LauraError) as info:
        await mon.primary()
    assert info.value.code == ErrorCode.SHARD_UNAVAILABLE
    assert info.value.details["shard"] == "s0"
    await mon.close()


async def test_concurrent_callers_share_one_discovery() -> None:
    fake = FakeSet()
    fake.set(A, "SECONDARY")
    fake.set(B, "PRIMARY")
    fake.set(C, "SECONDARY")
    mon = monitor(fake)
    got = await asyncio.gather(*(mon.primary() for _ in range(20)))
    assert set(got) == {B}
    assert fake.calls == 3  # one round of Hello for all 20 callers
    await mon.close()


def test_highest_term_wins_and_deposed_primaries_are_ignored() -> None:
    assert elect_primary([st(A, "PRIMARY", 3), st(B, "PRIMARY", 4), st(C, "SECONDARY", 4)]).address == B  # type: ignore[union-attr]
    # A claims primary but B already knows term 5: A was deposed, no primary yet
    assert elect_primary([st(A, "PRIMARY", 4), st(B, "SECONDARY", 5)]) is None
    assert elect_primary([st(A, "SECONDARY"), st(B, "SECONDARY")]) is None


def test_read_preference_modes() -> None:
    rng = random.Random(1)
    p, s1, s2 = st(A, "PRIMARY", rtt=1), st(B, "SECONDARY", rtt=2), st(C, "SECONDARY", rtt=100)
    states = [p, s1, s2]
    assert choose_member(states, parse_mode("primary")) is p
    assert choose_member(states, parse_mode("primaryPreferred")) is p
    assert choose_member(states, parse_mode("secondary"), rng=rng) is s1  # C is too far
    assert choose_member(states, parse_mode("secondary_preferred"), rng=rng) is s1
    assert choose_member(states, parse_mode("nearest"), rng=rng) in (p, s1)
    s2.rtt_ms = 3
    assert {choose_member(states, parse_mode("secondary"), rng=rng).address for _ in range(50)} == {B, C}  # type: ignore[union-attr]
    # no secondary: secondaryPreferred falls back to the primary, secondary has none
    lonely = [p, st(B, "SECONDARY", caught_up=False), st(C, "RECOVERING")]
    assert choose_member(lonely, parse_mode("secondary")) is None
    assert choose_member(lonely, parse_mode("secondaryPreferred")) is p
    # no primary: primaryPreferred reads from a secondary, primary has none
    headless = [st(A, "SECONDARY"), st(B, "SECONDARY"), MemberState(C)]
    assert choose_member(headless, parse_mode("primary")) is None
    assert choose_member(headless, parse_mode("primaryPreferred")).address in (A, B)  # type: ignore[union-attr]
    with pytest.raises(LauraError):
        parse_mode("fastest")


def test_max_staleness_excludes_lagging_secondaries() -> None:
    now = 1_000_000
    p = st(A, "PRIMARY", last_write_ms=now, measured_ms=now)
    fresh = st(B, "SECONDARY", last_write_ms=now - 200, measured_ms=now)
    stale = st(C, "SECONDARY", last_write_ms=now - 30_000, measured_ms=now)
    sec = parse_mode("secondary")
    for _ in range(20):
        assert choose_member([p, fresh, stale], sec, max_staleness_ms=10_000) is fresh
    assert choose_member([p, stale], sec, max_staleness_ms=10_000) is None
    assert choose_member([p, stale], sec) is stale  # no limit
    # without a primary: against the freshest member
    assert choose_member([fresh, stale], sec, max_staleness_ms=10_000) is fresh


async def test_select_waits_for_a_secondary() -> None:
    fake = FakeSet()
    fake.set(A, "PRIMARY")
    fake.set(B, "SECONDARY", caught_up=False)
    mon = monitor(fake)
    fake.down.add(C)
    task = asyncio.ensure_future(mon.select(parse_mode("secondary")))
    await asyncio.sleep(0.05)
    assert not task.done()
    fake.set(B, "SECONDARY", caught_up=True)
    assert await asyncio.wait_for(task, 2) == B
    assert await mon.select(parse_mode("secondaryPreferred")) == B
    fake.set(B, "SECONDARY", caught_up=False)
    await mon.refresh()
    assert await mon.select(parse_mode("secondaryPreferred")) == A
    await mon.close()


async def test_background_refresh_only_while_in_use() -> None:
    fake = FakeSet()
    for a, r in ((A, "PRIMARY"), (B, "SECONDARY"), (C, "SECONDARY")):
        fake.set(a, r)
    mon = monitor(fake, idle_after=0.2)
    assert mon._refresher is None  # not started before use
    await mon.primary()
    assert mon._refresher is not None
    before = fake.calls
    await asyncio.sleep(0.15)
    assert fake.calls > before  # refreshed in the background
    for _ in range(100):
        if mon._refresher is None:
            break
        await asyncio.sleep(0.02)
    assert mon._refresher is None  # idle: stopped
    await mon.close()


async def test_registry_only_tracks_replica_sets() -> None:
    fake = FakeSet()
    sets = ReplicaSets(fake.hello)
    assert sets.update("s0", [A]) is None
    assert sets.get("s0") is None and not sets
    mon = sets.update("s1", [A, B, C])
    assert mon is not None and sets.get("s1") is mon
    assert sets.update("s1", [A, B, C]) is mon  # unchanged members: same monitor
    sets.retain([])
    assert sets.get("s1") is None
    await sets.close()


def test_validate_members() -> None:
    assert validate_members([" a:1", "b:2", "a:1"]) == ["a:1", "b:2"]
    for bad in ("a", "a:x", ":1", "a:0", "a:70000"):
        with pytest.raises(LauraError) as info:
            validate_members([bad])
        assert info.value.code == ErrorCode.BAD_VALUE


def test_client_concerns_set_request_fields_and_raise_write_concern_error() -> None:
    from lauradb.client import ReadPreference, WriteConcern, WriteConcernError
    from lauradb.client.concern import Concerns, apply_concerns
    from lauradb.client.ops import Call, run_local
    from lauradb.cluster import routing_pb2

    concerns = Concerns.build({"w": 2, "wtimeout": 50}, "secondaryPreferred", "majority")
    assert concerns.write_concern == WriteConcern(w=2, wtimeout=50)
    assert concerns.read_preference == ReadPreference.SECONDARY_PREFERRED
    seen: list[object] = []

    def program():  # type: ignore[no-untyped-def]
        resp = yield Call("router", "Insert", routing_pb2.InsertRequest(), "write")
        yield Call("router", "Query", routing_pb2.QueryRequest(), "read")
        return resp.inserted_count

    def answer(call: Call) -> object:
        seen.append(call.request)
        if call.kind == "write":
            out = routing_pb2.InsertResponse(inserted_count=1)
            out.write_concern_error.error.code = 64
            out.write_concern_error.error.message = "waiting for replication timed out"
            out.write_concern_error.acknowledged = 1
            return out
        return routing_pb2.QueryResponse()

    with pytest.raises(WriteConcernError) as info:
        run_local(apply_concerns(program(), concerns), answer)
    assert info.value.result == 1  # the write was applied
    assert info.value.details["writeConcernError"]["acknowledged"] == 1
    insert, query = seen
    assert insert.write_concern.w == "2" and insert.write_concern.wtimeout_ms == 50  # type: ignore[attr-defined]
    assert query.read_preference.mode == parse_mode("secondaryPreferred")  # type: ignore[attr-defined]
    assert query.read_concern.level == replset_pb2.READ_CONCERN_MAJORITY  # type: ignore[attr-defined]
    assert Concerns.build().replace(write_concern=WriteConcern(w=1)).write_concern == WriteConcern(w=1)
    with pytest.raises(ValueError):
        ReadPreference("fastest")
