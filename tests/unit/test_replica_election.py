"""Raft rules of shard replica sets (shard_stub.replica.election) and write-concern waits.

The property test drives a small simulated cluster through random interleavings of
election timeouts, message deliveries, duplicates and drops (votes decided by
``decide_vote`` only): at most one vote per term per voter, hence at most one leader
per term.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lauradb.cluster import replset_pb2
from lauradb.errors import ErrorCode, LauraError
from shard_stub.replica import election, write_concern
from shard_stub.replica.election import decide_vote
from shard_stub.replica.write_concern import WriteConcernSpec, WriteConcernWaiters


def vote(**overrides: object) -> election.VoteDecision:
    args: dict[str, object] = dict(
        current_term=3, voted_for=None, voter_last=(2, 10), voter_priority=1,
        voter_electable=True, candidate_id="c", candidate_term=4, candidate_last=(2, 10),
        candidate_priority=1,
    )
    args.update(overrides)
    return decide_vote(**args)  # type: ignore[arg-type]


class TestVotes:
    def test_grants_and_adopts_the_term(self) -> None:
        d = vote()
        assert d.granted and d.term == 4 and d.voted_for == "c"
        assert d.changes(3, None)

    def test_stale_term_denied(self) -> None:
        d = vote(candidate_term=2)
        assert not d.granted and d.term == 3 and "term" in d.reason

    def test_one_vote_per_term(self) -> None:
        d = vote(current_term=4, voted_for="other")
        assert not d.granted and d.voted_for == "other"
        again = vote(current_term=4, voted_for="c")  # a retried request: same answer
        assert again.granted and not again.changes(4, "c")

    def test_log_must_be_up_to_date(self) -> None:
        assert not vote(candidate_last=(1, 50)).granted  # older last term loses
        assert not vote(candidate_last=(2, 9)).granted  # same term, shorter
        assert vote(candidate_last=(3, 1)).granted  # newer last term wins
        denied = vote(candidate_last=(2, 9))
        assert denied.term == 4 and denied.voted_for is None  # the term is adopted anyway

    def test_priority_rule_on_equal_logs(self) -> None:
        assert not vote(voter_priority=2, candidate_priority=1).granted
        # ... only when the voter could stand itself, and only on equal logs.
        assert vote(voter_priority=2, candidate_priority=1, voter_electable=False).granted
        assert vote(voter_priority=2, candidate_priority=1, candidate_last=(2, 11)).granted

    def test_leader_stickiness(self) -> None:
        d = vote(leader_recently_seen=True)
        assert not d.granted and d.term == 3  # the term is NOT adopted

    def test_pre_vote_changes_nothing(self) -> None:
        d = vote(pre_vote=True)
        assert d.granted and d.term == 3 and d.voted_for is None
        assert not vote(pre_vote=True, candidate_last=(1, 1)).granted
        assert not vote(pre_vote=True, current_term=4, voted_for="x").granted


def test_majority_and_roles() -> None:
    assert [election.majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert election.election_won(2, 3) and not election.election_won(1, 3)
    assert not election.can_stand(0, False) and not election.can_stand(1, True)
    assert election.can_stand(1, False)


def test_commit_point_current_term_rule() -> None:
    # 3 voting members; the primary's term started at op 10 (its no-op).
    assert election.commit_point(12, {"a": 11, "b": 5}, 3, 10) == 11
    assert election.commit_point(12, {"a": 9, "b": 5}, 3, 10) == 0  # op 9: an older term
    assert election.commit_point(12, {"a": 9}, 3, 10, current=4) == 4  # never moves back
    assert election.commit_point(7, {}, 1, 1) == 7  # a one-member set
    # An arbiter counts among the voters but never acknowledges: 2 of 3 needed.
    assert election.commit_point(12, {"data": 0}, 3, 1) == 0
    assert election.commit_point(12, {"data": 12}, 3, 1) == 12


def test_step_down_and_timeouts() -> None:
    now = 100.0
    assert not election.should_step_down(now, {"a": 99.5, "b": 10.0}, 3, 1.0)
    assert election.should_step_down(now, {"a": 98.0, "b": 10.0}, 3, 1.0)
    assert not election.should_step_down(now, {}, 1, 1.0)
    low = election.election_timeout_ms(500, 1, 0.0)
    assert low == 500 and election.election_timeout_ms(500, 1, 0.999) < 1000
    assert election.election_timeout_ms(500, 4, 0.5) < election.election_timeout_ms(500, 1, 0.5)
    assert election.acknowledged_by(5, 6, [5, 4, 7]) == 3


# ---------------------------------------------------------------- simulated cluster


@dataclass
class SimNode:
    name: str
    priority: int
    last: tuple[int, int]
    term: int = 0
    voted_for: str | None = None
    candidate_term: int = 0  # the term it is campaigning in (0: not campaigning)
    votes: set[str] = field(default_factory=set)
    votes_cast: dict[int, str] = field(default_factory=dict)  # term -> candidate


@dataclass(frozen=True)
class Msg:
    kind: str  # "req" | "resp"
    src: str
    dst: str
    term: int
    last: tuple[int, int] = (0, 0)
    priority: int = 1
    granted: bool = False


actions = st.lists(
    st.tuples(
        st.sampled_from(["timeout", "deliver", "deliver", "deliver", "dup", "drop", "append"]),
        st.integers(0, 1000),
        st.booleans(),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(
    size=st.sampled_from([3, 5]),
    logs=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), min_size=5, max_size=5),
    priorities=st.lists(st.integers(0, 3), min_size=5, max_size=5),
    steps=actions,
)
def test_at_most_one_leader_per_term(
    size: int, logs: list[tuple[int, int]], priorities: list[int],
    steps: list[tuple[str, int, bool]],
) -> None:
    nodes = {
        f"n{i}": SimNode(f"n{i}", priorities[i], (logs[i][0], logs[i][0] + logs[i][1]))
        for i in range(size)
    }
    names = sorted(nodes)
    net: list[Msg] = []
    leaders: dict[int, set[str]] = {}
    for kind, pick, flag in steps:
        if kind == "timeout":
            n = nodes[names[pick % size]]
            if not election.can_stand(n.priority, False):
                continue
            n.term += 1
            n.voted_for = n.name
            n.votes_cast[n.term] = n.name
            n.candidate_term = n.term
            n.votes = {n.name}
            net += [Msg("req", n.name, o, n.term, n.last, n.priority) for o in names if o != n.name]
        elif kind == "append":
            # A leader of the current term appends an entry of its term.
            n = nodes[names[pick % size]]
            if n.name in leaders.get(n.term, set()):
                n.last = (n.term, n.last[1] + 1)
        elif not net:
            continue
        elif kind == "drop":
            net.pop(pick % len(net))
        elif kind in ("deliver", "dup"):
            m = net[pick % len(net)] if kind == "dup" else net.pop(pick % len(net))
            dst = nodes[m.dst]
            if m.kind == "req":
                d = decide_vote(
                    current_term=dst.term, voted_for=dst.voted_for, voter_last=dst.last,
                    voter_priority=dst.priority, voter_electable=dst.priority > 0,
                    candidate_id=m.src, candidate_term=m.term, candidate_last=m.last,
                    candidate_priority=m.priority, leader_recently_seen=flag and kind == "dup",
                )
                if d.term > dst.term:
                    dst.candidate_term = 0
                dst.term, dst.voted_for = d.term, d.voted_for
                if d.granted:
                    assert dst.votes_cast.setdefault(d.term, m.src) == m.src, "two votes"
                net.append(Msg("resp", m.dst, m.src, d.term, granted=d.granted))
            else:
                if m.term > dst.term:
                    dst.term, dst.voted_for, dst.candidate_term = m.term, None, 0
                elif m.granted and dst.candidate_term == m.term == dst.term:
                    dst.votes.add(m.src)
                    if election.election_won(len(dst.votes), size):
                        leaders.setdefault(m.term, set()).add(dst.name)
                        dst.candidate_term = 0
    for term, who in leaders.items():
        assert len(who) <= 1, f"two leaders in term {term}: {who}"


# ---------------------------------------------------------------- write concern


def test_parse_write_concern() -> None:
    assert write_concern.parse(None, 3) == WriteConcernSpec()
    spec = write_concern.parse(replset_pb2.WriteConcern(w="2", wtimeout_ms=1500), 3)
    assert spec == WriteConcernSpec(2, 1.5)
    assert write_concern.parse(replset_pb2.WriteConcern(w="majority"), 1).majority
    for bad in ("x", "-1", "1.5"):
        with pytest.raises(LauraError) as info:
            write_concern.parse(replset_pb2.WriteConcern(w=bad), 3)
        assert info.value.code == ErrorCode.BAD_VALUE
    with pytest.raises(LauraError) as info:
        write_concern.parse(replset_pb2.WriteConcern(w="4"), 3)
    assert info.value.code == ErrorCode.BAD_VALUE and "exceeds" in info.value.message


async def test_waiters_wake_time_out_and_interrupt() -> None:
    acks = {"me": 0, "a": 0, "b": 0}

    def acknowledged(op_id: int) -> int:
        return sum(1 for v in acks.values() if v >= op_id)

    def satisfied(op_id: int, spec: WriteConcernSpec) -> bool:
        need = 2 if spec.w is None else spec.w
        return acknowledged(op_id) >= need

    waiters = WriteConcernWaiters(satisfied, acknowledged)
    acks["me"] = 5
    assert await waiters.wait(5, WriteConcernSpec(1)) is None  # already satisfied
    task = asyncio.create_task(waiters.wait(5, WriteConcernSpec(None, 5.0)))
    await asyncio.sleep(0.01)
    assert len(waiters) == 1
    acks["a"] = 5
    waiters.notify()
    assert await task is None and len(waiters) == 0

    err = await waiters.wait(6, WriteConcernSpec(3, 0.05))
    assert err is not None and err.error.code == ErrorCode.WRITE_CONCERN_FAILED
    assert err.acknowledged == 0 and len(waiters) == 0

    task = asyncio.create_task(waiters.wait(9, WriteConcernSpec(None)))
    await asyncio.sleep(0.01)
    waiters.interrupt("stepped down")
    err = await task
    assert err is not None
    assert err.error.code == ErrorCode.INTERRUPTED_DUE_TO_REPL_STATE_CHANGE
