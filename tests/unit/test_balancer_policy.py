"""The balancer's pure policy (config_server.balancer_policy), property-tested."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config_server.balancer_policy import (
    BALANCE,
    DRAIN,
    Move,
    PolicyChunk,
    apply_moves,
    chunk_counts,
    imbalance,
    plan_round,
    split_decisions,
)

Collections = dict[str, list[PolicyChunk]]


@st.composite
def layouts(draw: st.DrawFn) -> tuple[Collections, list[str], set[str], int]:
    """Collections of chunks spread over shards, some draining, some jumbo."""
    n_shards = draw(st.integers(1, 6))
    shards = [f"s{i}" for i in range(n_shards)]
    draining = set(draw(st.lists(st.sampled_from(shards), max_size=n_shards - 1, unique=True)))
    threshold = draw(st.integers(1, 4))
    collections: Collections = {}
    for ns_i in range(draw(st.integers(1, 3))):
        owners = draw(st.lists(st.sampled_from(shards), max_size=40))
        jumbo = draw(st.lists(st.booleans(), min_size=len(owners), max_size=len(owners)))
        collections[f"db.c{ns_i}"] = [
            PolicyChunk(f"c{ns_i}_{i}", owner, j and draw(st.integers(0, 4)) == 0)
            for i, (owner, j) in enumerate(zip(owners, jumbo, strict=True))
        ]
    return collections, shards, draining, threshold


def check_round(
    moves: Sequence[Move],
    collections: Mapping[str, Sequence[PolicyChunk]],
    draining: set[str],
    busy: set[str],
    avoid: set[str] = frozenset(),  # type: ignore[assignment]
) -> None:
    used: list[str] = []
    chunks = {(ns, c.chunk_id): c for ns, cs in collections.items() for c in cs}
    for move in moves:
        chunk = chunks[(move.namespace, move.chunk_id)]
        assert chunk.shard == move.from_shard != move.to_shard
        assert not chunk.jumbo, "a jumbo chunk was scheduled"
        assert chunk.chunk_id not in avoid
        assert move.to_shard not in draining, "a draining shard was picked as a recipient"
        assert move.from_shard not in busy and move.to_shard not in busy
        assert move.reason == (DRAIN if move.from_shard in draining else BALANCE)
        used += [move.from_shard, move.to_shard]
    assert len(used) == len(set(used)), f"two migrations on one shard: {moves}"


def run_to_fixpoint(
    collections: Collections, shards: list[str], draining: set[str], threshold: int
) -> tuple[Collections, int]:
    total = sum(len(c) for c in collections.values())
    rounds = 0
    while True:
        moves = plan_round(collections, shards, draining=draining, threshold=threshold)
        check_round(moves, collections, draining, set())
        if not moves:
            return collections, rounds
        collections = apply_moves(collections, moves)
        rounds += 1
        assert rounds <= 4 * (total + 1) ** 2, "the policy does not converge"


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_converges_within_threshold_and_never_moves_jumbo(
    layout: tuple[Collections, list[str], set[str], int],
) -> None:
    collections, shards, draining, threshold = layout
    final, _ = run_to_fixpoint(collections, shards, draining, threshold)
    active = [s for s in shards if s not in draining]
    for ns, chunks in final.items():
        before = {c.chunk_id: c for c in collections[ns]}
        for chunk in chunks:
            if before[chunk.chunk_id].jumbo:
                assert chunk.shard == before[chunk.chunk_id].shard  # never moved
        counts = chunk_counts(chunks, active)
        low = min(counts.values())
        movable_on = {c.shard for c in chunks if not c.jumbo}
        for shard, n in counts.items():
            if shard in movable_on:
                assert n - low <= threshold, (ns, counts, threshold)
        # drained: only jumbo chunks may stay on draining shards
        assert all(c.jumbo for c in chunks if c.shard in draining)
        if not any(c.jumbo for c in chunks):
            assert imbalance(counts) <= threshold


@settings(max_examples=150, deadline=None)
@given(layouts(), st.data())
def test_rounds_respect_busy_shards_and_avoided_chunks(
    layout: tuple[Collections, list[str], set[str], int], data: st.DataObject
) -> None:
    collections, shards, draining, threshold = layout
    busy = set(data.draw(st.lists(st.sampled_from(shards), unique=True)))
    ids = [c.chunk_id for cs in collections.values() for c in cs]
    avoid = set(data.draw(st.lists(st.sampled_from(ids), unique=True))) if ids else set()
    moves = plan_round(
        collections, shards, draining=draining, busy=busy, threshold=threshold, avoid=avoid
    )
    check_round(moves, collections, draining, busy, avoid)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 6), st.integers(0, 60), st.integers(1, 4))
def test_new_empty_shard_receives_chunks(n_shards: int, n_chunks: int, threshold: int) -> None:
    shards = [f"s{i}" for i in range(n_shards)]
    # everything on s0 (as after sharding with data on the primary), then a new shard
    collections = {"db.c": [PolicyChunk(f"c{i}", "s0") for i in range(n_chunks)]}
    final, rounds = run_to_fixpoint(collections, shards, set(), threshold)
    counts = chunk_counts(final["db.c"], shards)
    assert imbalance(counts) <= threshold
    if n_chunks > threshold:
        assert rounds > 0
    if n_chunks > (n_shards - 1) * threshold:  # else it could be balanced without it
        assert counts[shards[-1]] > 0


def test_examples() -> None:
    chunks = {"db.c": [PolicyChunk(f"c{i}", "a") for i in range(5)]}
    moves = plan_round(chunks, ["a", "b", "c"], threshold=2)
    assert moves == [Move("db.c", "c0", "a", "b", BALANCE)]  # lowest bound, lowest id
    # b busy: a -> c instead
    moves = plan_round(chunks, ["a", "b", "c"], busy={"b"}, threshold=2)
    assert moves == [Move("db.c", "c0", "a", "c", BALANCE)]
    # within threshold: nothing to do
    even = {"db.c": [PolicyChunk("x", "a"), PolicyChunk("y", "a"), PolicyChunk("z", "b")]}
    assert plan_round(even, ["a", "b"], threshold=1) == []
    # drains go first, even within the threshold, to the emptiest non-draining shard
    drain = {
        "db.c": [PolicyChunk("j", "a", jumbo=True), PolicyChunk("k", "a"), PolicyChunk("m", "b")]
    }
    assert plan_round(drain, ["a", "b", "c"], draining={"a"}) == [
        Move("db.c", "k", "a", "c", DRAIN)
    ]
    # two disjoint pairs in one round
    four = {"db.c": [PolicyChunk(f"c{i}", "a" if i < 6 else "b") for i in range(12)]}
    moves = plan_round(four, ["a", "b", "c", "d"], threshold=1)
    assert {(m.from_shard, m.to_shard) for m in moves} == {("a", "c"), ("b", "d")}
    with pytest.raises(ValueError):
        plan_round(chunks, ["a"], threshold=0)
    # a single active shard never balances; unknown owners are ignored
    assert plan_round({"db.c": [PolicyChunk("q", "gone")]}, ["a"]) == []


def test_split_decisions() -> None:
    chunks = [
        PolicyChunk("big", "a"),
        PolicyChunk("small", "a"),
        PolicyChunk("jumbo-big", "a", jumbo=True),
        PolicyChunk("jumbo-fits", "a", jumbo=True),
        PolicyChunk("moving", "a"),
        PolicyChunk("unknown", "a"),
    ]
    sizes = {"big": 101, "small": 100, "jumbo-big": 500, "jumbo-fits": 10, "moving": 1000}
    d = split_decisions(chunks, sizes, 100, moving={"moving"})
    assert d.split == ["big"]
    assert d.unjumbo == ["jumbo-fits"]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 300) | st.none()), max_size=20),
    st.integers(1, 200),
)
def test_split_decisions_never_split_jumbo_or_small(
    spec: list[tuple[bool, int | None]], limit: int
) -> None:
    chunks = [PolicyChunk(f"c{i}", "a", jumbo) for i, (jumbo, _) in enumerate(spec)]
    sizes = {f"c{i}": s for i, (_, s) in enumerate(spec) if s is not None}
    d = split_decisions(chunks, sizes, limit)
    for chunk in chunks:
        size = sizes.get(chunk.chunk_id)
        assert (chunk.chunk_id in d.split) == (
            size is not None and not chunk.jumbo and size > limit
        )
        assert (chunk.chunk_id in d.unjumbo) == (
            size is not None and chunk.jumbo and size <= limit
        )
