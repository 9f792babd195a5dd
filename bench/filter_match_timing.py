"""Hand-run timing (not a test): a 3-clause filter over 100,000 ~1 KB documents.

    .venv/bin/python bench/filter_match_timing.py

Prints the compiled matcher's time next to a hand-written Python if-chain doing the
same checks, plus the positional matcher and a few other filter shapes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import bson

from lauradb.query.filter import compile_filter

N = 100_000


def make_docs(n: int) -> list[dict[str, Any]]:
    rng = random.Random(42)
    statuses = ["active", "inactive", "pending", "banned"]
    docs = []
    for i in range(n):
        docs.append(
            {
                "_id": bson.ObjectId(),
                "seq": i,
                "status": rng.choice(statuses),
                "age": rng.randint(18, 90),
                "score": rng.random() * 100,
                "name": f"user-{i:08d}",
                "email": f"user{i}@example.com",
                "tags": rng.sample(["a", "b", "c", "d", "e", "f", "g"], 3),
                "address": {
                    "street": f"{rng.randint(1, 999)} Main Street",
                    "city": rng.choice(["Paris", "Lyon", "Nantes", "Lille"]),
                    "zip": f"{rng.randint(10000, 99999)}",
                },
                "history": [
                    {"at": i * 1000 + k, "event": "login", "ok": bool(k % 2)} for k in range(6)
                ],
                "bio": "x" * 520,
            }
        )
    return decode_roundtrip(docs)


def decode_roundtrip(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [bson.decode(bson.encode(d)) for d in docs]


def timed(label: str, fn: Callable[[dict[str, Any]], bool], docs: list[dict[str, Any]]) -> float:
    best = float("inf")
    count = 0
    for _ in range(5):
        t0 = time.perf_counter()
        count = sum(1 for d in docs if fn(d))
        best = min(best, time.perf_counter() - t0)
    print(f"{label:<48} {best * 1000:8.1f} ms  ({count} matches)")
    return best


def main() -> None:
    docs = make_docs(N)
    size = sum(len(bson.encode(d)) for d in docs[:1000]) / 1000
    print(f"{N} docs, ~{size:.0f} bytes each")

    spec = {"status": "active", "age": {"$gte": 30}, "score": {"$lt": 50}}
    matcher = compile_filter(spec)

    def hand(d: dict[str, Any]) -> bool:
        age = d.get("age")
        score = d.get("score")
        return (
            d.get("status") == "active"
            and age is not None
            and age >= 30
            and score is not None
            and score < 50
        )

    t_hand = timed("hand-written if-chain", hand, docs)
    t_match = timed("compile_filter(...).match", matcher.match, docs)
    t_call = timed("compile_filter(...)(doc)", matcher, docs)
    timed("match_with_position", lambda d: matcher.match_with_position(d)[0], docs)
    print(f"ratio match/hand = {t_match / t_hand:.2f}x, call/hand = {t_call / t_hand:.2f}x")

    # The same clauses, least selective first: all three are evaluated more often.
    spec2 = {"age": {"$gte": 30}, "score": {"$lt": 50}, "status": "active"}
    matcher2 = compile_filter(spec2)

    def hand2(d: dict[str, Any]) -> bool:
        age = d.get("age")
        score = d.get("score")
        return (
            age is not None
            and age >= 30
            and score is not None
            and score < 50
            and d.get("status") == "active"
        )

    t_hand2 = timed("hand-written if-chain (reordered)", hand2, docs)
    t_match2 = timed("compile_filter(reordered).match", matcher2.match, docs)
    t_call2 = timed("compile_filter(reordered)(doc)", matcher2, docs)
    print(f"ratio match/hand = {t_match2 / t_hand2:.2f}x, call/hand = {t_call2 / t_hand2:.2f}x")

    others: list[dict[str, Any]] = [
        {"address.city": "Paris", "age": {"$lt": 40}},
        {"tags": "a", "status": {"$in": ["active", "pending"]}},
        {"history.at": {"$gte": 50_000_000}},
        {"history": {"$elemMatch": {"event": "login", "ok": True, "at": {"$mod": [7, 0]}}}},
        {"$or": [{"status": "banned"}, {"age": {"$gt": 85}}]},
        {"name": {"$regex": "^user-0000"}},
    ]
    for other in others:
        timed(str(other)[:48], compile_filter(other).match, docs)


if __name__ == "__main__":
    main()
