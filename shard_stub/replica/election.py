"""Raft rules of a shard replica set, as pure functions (no I/O, no clocks of their own).

* Votes (``decide_vote``): a voter grants at most one vote per term, only to a candidate
  whose log is at least as up to date as its own (last entry's term, then its op id), and
  -- our priority rule -- not when both logs are equal and the voter itself is electable
  with a higher priority (so the higher-priority member wins ties). A voter that heard
  from a live primary within the minimum election timeout refuses without adopting the
  candidate's term (Raft thesis 4.2.3, "leader stickiness"). Pre-votes (Raft 9.6) are
  answered with the same rules but change nothing.
* Majorities are over the voting members (every member, arbiters included).
* The commit point is the highest op id durable on a majority of voting members; only an
  entry of the current term is committed by counting (Raft 5.4.2). Arbiters hold no data,
  so they count in the denominator and never in the numerator.
* A primary steps down when it has not heard from a majority within the election timeout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def majority(voting_members: int) -> int:
    """Votes (or acknowledgements) needed out of ``voting_members``."""
    if voting_members <= 0:
        raise ValueError("a replica set has at least one voting member")
    return voting_members // 2 + 1


def log_up_to_date(candidate: tuple[int, int], voter: tuple[int, int]) -> bool:
    """Raft 5.4.1: is a log ending at ``candidate`` (last term, last op id) at least as up
    to date as one ending at ``voter``?"""
    return candidate >= voter


@dataclass(frozen=True)
class VoteDecision:
    """A voter's answer and the durable state it must hold before answering."""

    granted: bool
    term: int  # the voter's current term after the request
    voted_for: str | None  # the voter's vote in ``term`` after the request
    reason: str = ""

    def changes(self, term: int, voted_for: str | None) -> bool:
        """Must the voter persist anything (compared with its state before)?"""
        return (self.term, self.voted_for) != (term, voted_for)


def decide_vote(
    *,
    current_term: int,
    voted_for: str | None,
    voter_last: tuple[int, int],
    voter_priority: int,
    voter_electable: bool,
    candidate_id: str,
    candidate_term: int,
    candidate_last: tuple[int, int],
    candidate_priority: int,
    leader_recently_seen: bool = False,
    pre_vote: bool = False,
) -> VoteDecision:
    """The vote of one member for ``candidate_id`` (see the module docstring).

    A pre-vote never changes ``current_term``/``voted_for``; it answers "would I vote for
    you in ``candidate_term``" ignoring a vote already cast in a lower term.
    """
    unchanged = VoteDecision(False, current_term, voted_for)
    if candidate_term < current_term:
        return _deny(unchanged, f"candidate term {candidate_term} < current term {current_term}")
    if leader_recently_seen:
        return _deny(unchanged, "a primary was heard from within the election timeout")
    term, vote = current_term, voted_for
    if candidate_term > current_term:
        term, vote = candidate_term, None  # adopt the newer term (a real vote only)
    if pre_vote:
        if candidate_term == current_term and vote not in (None, candidate_id):
            return _deny(unchanged, f"already voted for {vote} in term {term}")
        reason = _log_objection(voter_last, voter_priority, voter_electable, candidate_last,
                                candidate_priority)
        if reason:
            return _deny(unchanged, reason)
        return VoteDecision(True, current_term, voted_for, "pre-vote granted")
    adopted = VoteDecision(False, term, vote)
    if vote not in (None, candidate_id):
        return _deny(adopted, f"already voted for {vote} in term {term}")
    reason = _log_objection(voter_last, voter_priority, voter_electable, candidate_last,
                            candidate_priority)
    if reason:
        return _deny(adopted, reason)
    return VoteDecision(True, term, candidate_id, "granted")


def _deny(state: VoteDecision, reason: str) -> VoteDecision:
    return VoteDecision(False, state.term, state.voted_for, reason)


def _log_objection(
    voter_last: tuple[int, int],
    voter_priority: int,
    voter_electable: bool,
    candidate_last: tuple[int, int],
    candidate_priority: int,
) -> str:
    if not log_up_to_date(candidate_last, voter_last):
        return (
            f"candidate log (term {candidate_last[0]}, op {candidate_last[1]}) is behind "
            f"the voter's (term {voter_last[0]}, op {voter_last[1]})"
        )
    if candidate_last == voter_last and voter_electable and voter_priority > candidate_priority:
        return f"the voter has a higher priority ({voter_priority} > {candidate_priority})"
    return ""


def can_stand(priority: int, arbiter: bool) -> bool:
    """Arbiters and priority-0 members never become candidates."""
    return priority > 0 and not arbiter


def election_won(granted: int, voting_members: int) -> bool:
    """``granted`` counts the candidate's own vote."""
    return granted >= majority(voting_members)


def commit_point(
    own_last: int,
    peer_acks: Mapping[str, int],
    voting_members: int,
    term_start: int,
    current: int = 0,
) -> int:
    """The primary's commit point.

    ``own_last``: the primary's last durable op id; ``peer_acks``: the last op id each
    other data-bearing member acknowledged (arbiters absent or 0); ``voting_members``: all
    voting members, the primary included; ``term_start``: the op id of the primary's first
    entry of its term (its no-op) -- entries before it are committed only indirectly;
    ``current``: the commit point so far (it never moves back).
    """
    need = majority(voting_members)
    acks = sorted([own_last, *peer_acks.values()], reverse=True)
    if len(acks) < need:
        return current
    candidate = acks[need - 1]
    if candidate < term_start or candidate <= current:
        return current
    return candidate


def acknowledged_by(op_id: int, own_last: int, peer_acks: Iterable[int]) -> int:
    """How many data-bearing members (the primary included) have ``op_id``."""
    return int(own_last >= op_id) + sum(1 for a in peer_acks if a >= op_id)


def should_step_down(
    now: float,
    last_contact: Mapping[str, float],
    voting_members: int,
    timeout_s: float,
) -> bool:
    """A primary that has not heard from a majority of voting members (itself included)
    within ``timeout_s`` steps down. ``last_contact``: other members' last contact times."""
    heard = 1 + sum(1 for t in last_contact.values() if now - t <= timeout_s)
    return heard < majority(voting_members)


def election_timeout_ms(base_ms: int, priority: int, rand: float) -> float:
    """A randomized election timeout in [base, 2*base), shorter for higher priority.

    ``rand`` in [0, 1). Priority p > 1 scales the timeout by 1/p^0.5 (at least base/3), so
    higher-priority members usually time out (and stand) first.
    """
    scale = 1.0 if priority <= 1 else max(1.0 / (priority ** 0.5), 1.0 / 3.0)
    return base_ms * (1.0 + rand) * scale
