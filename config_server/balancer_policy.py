"""The balancer's decisions, as pure functions (no I/O, no clock): unit-testable.

Balance is measured in CHUNKS per collection: a sharded collection is balanced when,
among the shards that are not draining, the chunk counts of the fullest and the
emptiest shard differ by at most ``threshold`` chunks (``--balance-threshold``,
default 2; at least 1). Chunks are split at ``--chunk-size-bytes``, so counts track
data. Each round:

1. drain: every draining shard (not already migrating) gives one movable chunk to
   the emptiest non-draining shard that is free;
2. balance: while some free donor has more than ``threshold`` chunks over the
   emptiest free recipient, move one chunk (its lowest-bound movable chunk) there.

A chunk is movable unless it is jumbo (never moved by the balancer) or listed in
``avoid`` (recently failed). Every shard takes part in at most one move per round
(and none while ``busy``), so moves of a round run in parallel on disjoint pairs.
Each balancing move lowers the sum of squared counts by at least ``2 * threshold``,
so repeating rounds always terminates.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

DRAIN = "drain"
BALANCE = "balance"


@dataclass(frozen=True)
class PolicyChunk:
    """A chunk as the policy sees it (ordered by its lower bound in its list)."""

    chunk_id: str
    shard: str
    jumbo: bool = False


@dataclass(frozen=True)
class Move:
    namespace: str
    chunk_id: str
    from_shard: str
    to_shard: str
    reason: str  # DRAIN or BALANCE


def chunk_counts(chunks: Iterable[PolicyChunk], shards: Iterable[str]) -> dict[str, int]:
    """Chunks per shard of ``shards`` (0 for a shard owning none; others ignored)."""
    counts = dict.fromkeys(shards, 0)
    for chunk in chunks:
        if chunk.shard in counts:
            counts[chunk.shard] += 1
    return counts


def imbalance(counts: Mapping[str, int], draining: Collection[str] = ()) -> int:
    """Fullest minus emptiest chunk count among the non-draining shards (0 if < 2)."""
    active = [n for s, n in counts.items() if s not in draining]
    return max(active) - min(active) if len(active) >= 2 else 0


def _movable(chunk: PolicyChunk, avoid: Collection[str]) -> bool:
    return not chunk.jumbo and chunk.chunk_id not in avoid


def _emptiest(
    counts: Mapping[str, int], candidates: Iterable[str], exclude: str = ""
) -> str | None:
    pool = [s for s in candidates if s != exclude]
    return min(pool, key=lambda s: (counts[s], s)) if pool else None


def _drain_moves(
    namespace: str,
    chunks: Sequence[PolicyChunk],
    shards: Sequence[str],
    draining: Collection[str],
    busy: set[str],
    avoid: Collection[str],
) -> list[Move]:
    counts = chunk_counts(chunks, shards)
    moves: list[Move] = []
    for donor in sorted(s for s in shards if s in draining):
        if donor in busy:
            continue
        chunk = next((c for c in chunks if c.shard == donor and _movable(c, avoid)), None)
        if chunk is None:
            continue
        free = [s for s in shards if s not in draining and s not in busy]
        recipient = _emptiest(counts, free, exclude=donor)
        if recipient is None:
            break
        moves.append(Move(namespace, chunk.chunk_id, donor, recipient, DRAIN))
        busy.update((donor, recipient))
        counts[donor] -= 1
        counts[recipient] += 1
    return moves


def _balance_moves(
    namespace: str,
    chunks: Sequence[PolicyChunk],
    shards: Sequence[str],
    draining: Collection[str],
    busy: set[str],
    threshold: int,
    avoid: Collection[str],
) -> list[Move]:
    active = [s for s in shards if s not in draining]
    if len(active) < 2:
        return []
    counts = chunk_counts(chunks, active)
    first_movable: dict[str, PolicyChunk] = {}
    for chunk in chunks:
        if chunk.shard in counts and _movable(chunk, avoid):
            first_movable.setdefault(chunk.shard, chunk)
    moves: list[Move] = []
    while True:
        free = [s for s in active if s not in busy]
        donors = sorted(
            (s for s in free if s in first_movable), key=lambda s: (-counts[s], s)
        )
        move = None
        for donor in donors:
            recipient = _emptiest(counts, free, exclude=donor)
            if recipient is not None and counts[donor] - counts[recipient] > threshold:
                move = Move(namespace, first_movable[donor].chunk_id, donor, recipient, BALANCE)
                break
        if move is None:
            return moves
        moves.append(move)
        busy.update((move.from_shard, move.to_shard))
        counts[move.from_shard] -= 1
        counts[move.to_shard] += 1


def plan_round(
    collections: Mapping[str, Sequence[PolicyChunk]],
    shards: Sequence[str],
    *,
    draining: Collection[str] = (),
    busy: Collection[str] = (),
    threshold: int = 2,
    avoid: Collection[str] = (),
) -> list[Move]:
    """The moves of one balancer round: drains first, then balancing moves.

    ``collections`` maps a namespace to its chunks (by lower bound); ``shards`` are
    the shards of the cluster; ``busy`` shards are migrating already. No two moves
    share a shard, no move involves a busy shard, none moves a jumbo chunk or a
    chunk of ``avoid``, and no draining shard receives a chunk.
    """
    if threshold < 1:
        raise ValueError("the balance threshold must be at least 1 chunk")
    taken = set(busy)
    ordered = sorted(collections)
    moves: list[Move] = []
    for ns in ordered:
        moves += _drain_moves(ns, collections[ns], shards, draining, taken, avoid)
    for ns in ordered:
        moves += _balance_moves(ns, collections[ns], shards, draining, taken, threshold, avoid)
    return moves


def apply_moves(
    collections: Mapping[str, Sequence[PolicyChunk]], moves: Iterable[Move]
) -> dict[str, list[PolicyChunk]]:
    """The chunk lists after the moves committed (order kept)."""
    owner = {(m.namespace, m.chunk_id): m.to_shard for m in moves}
    return {
        ns: [
            replace(c, shard=owner[(ns, c.chunk_id)]) if (ns, c.chunk_id) in owner else c
            for c in chunks
        ]
        for ns, chunks in collections.items()
    }


# ------------------------------------------------------------------------ auto-split


@dataclass(frozen=True)
class SplitDecisions:
    split: list[str]  # chunk ids over the size: ask the owner for a split point
    unjumbo: list[str]  # jumbo chunks that fit again: clear the flag


def split_decisions(
    chunks: Iterable[PolicyChunk],
    sizes: Mapping[str, int],
    chunk_size_bytes: int,
    *,
    moving: Collection[str] = (),
) -> SplitDecisions:
    """Which chunks to split: over ``chunk_size_bytes`` (per ``sizes``, bytes by chunk
    id; chunks without a size are left alone), not jumbo, not being migrated. A jumbo
    chunk is never retried; it is unmarked once it fits within the size again."""
    split: list[str] = []
    unjumbo: list[str] = []
    for chunk in chunks:
        size = sizes.get(chunk.chunk_id)
        if size is None or chunk.chunk_id in moving:
            continue
        if chunk.jumbo:
            if size <= chunk_size_bytes:
                unjumbo.append(chunk.chunk_id)
        elif size > chunk_size_bytes:
            split.append(chunk.chunk_id)
    return SplitDecisions(split, unjumbo)
