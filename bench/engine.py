"""Document-engine benchmark: filter, update, sort and $group over ~1 KB documents.

Prints each figure next to a hand-written Python reference doing the same work, and
the ratio between them. ``python -m bench engine [--docs N]``.
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from collections.abc import Callable
from typing import Any

from lauradb.query.filter import compile_filter
from lauradb.query.pipeline import compile_pipeline
from lauradb.query.sort import sort_documents
from lauradb.query.update import compile_update


def make_docs(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    cities = ["Lyon", "Oslo", "Lima", "Pune", "Kobe", "Graz", "Baku", "Cork"]
    docs = []
    for i in range(n):
        docs.append(
            {
                "_id": i,
                "age": rnd.randint(18, 90),
                "city": rnd.choice(cities),
                "score": rnd.random() * 100,
                "active": rnd.random() < 0.5,
                "tags": [rnd.choice("abcdefgh") for _ in range(3)],
                "profile": {"name": f"user{i}", "bio": "x" * 700, "level": rnd.randint(1, 5)},
                "payload": "y" * 120,
            }
        )
    return docs


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    best = float("inf")
    out: Any = None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def row(name: str, ours: float, ref: float | None, note: str = "") -> dict[str, Any]:
    ratio = f"{ours / ref:5.2f}x" if ref else "   - "
    ref_s = f"{ref:8.3f}" if ref else "       -"
    print(f"{name:<34} {ours:8.3f} {ref_s} {ratio}  {note}")
    return {"scenario": "engine", "name": name, "seconds": ours, "reference_seconds": ref,
            "ratio": (ours / ref) if ref else None, "note": note}


def run(ns: argparse.Namespace) -> list[dict[str, Any]]:
    n = ns.docs
    docs = make_docs(n)
    print(f"engine benchmark: {n} documents of ~1 KB, Python {platform.python_version()}, "
          f"{platform.machine()}")
    print(f"{'operation':<34} {'engine s':>8} {'hand s':>8} {'ratio':>6}")
    out = []

    spec = {"age": {"$gte": 30, "$lt": 60}, "city": "Oslo", "active": True}
    match = compile_filter(spec).match  # the compiled closure, as shards call it
    t_ours, hits = timed(lambda: sum(1 for d in docs if match(d)))

    def hand() -> int:
        c = 0
        for d in docs:
            a = d.get("age")
            if (isinstance(a, (int, float)) and 30 <= a < 60 and d.get("city") == "Oslo"
                    and d.get("active") is True):
                c += 1
        return c

    t_ref, hits_ref = timed(hand)
    assert hits == hits_ref, (hits, hits_ref)
    out.append(row("filter, 3 clauses", t_ours, t_ref, f"{hits} matches; target <= 0.15 s"))

    upd = compile_update({"$inc": {"profile.level": 1}, "$set": {"city": "Rome"},
                          "$push": {"tags": "z"}})
    t_upd, _ = timed(lambda: [upd.apply(d) for d in docs], repeat=1)

    def hand_update() -> list[dict[str, Any]]:
        res = []
        for d in docs:
            nd = dict(d)
            nd["profile"] = dict(d["profile"], level=d["profile"]["level"] + 1)
            nd["city"] = "Rome"
            nd["tags"] = [*d["tags"], "z"]
            res.append(nd)
        return res

    t_upd_ref, _ = timed(hand_update, repeat=1)
    out.append(row("update ($inc,$set,$push)", t_upd, t_upd_ref, f"{n / t_upd:,.0f} docs/s"))

    t_sort, _ = timed(lambda: sort_documents(docs, {"city": 1, "score": -1}), repeat=1)
    t_sort_ref, _ = timed(lambda: sorted(docs, key=lambda d: (d["city"], -d["score"])), repeat=1)
    out.append(row("sort by two keys", t_sort, t_sort_ref))

    pipe = compile_pipeline([
        {"$match": {"active": True}},
        {"$group": {"_id": "$city", "n": {"$sum": 1}, "avg": {"$avg": "$score"},
                    "max": {"$max": "$age"}}},
        {"$sort": {"n": -1}},
    ])
    t_grp, _ = timed(lambda: list(pipe.run(docs)), repeat=1)

    def hand_group() -> list[tuple[str, int]]:
        acc: dict[str, list[float]] = {}
        for d in docs:
            if d["active"] is True:
                s = acc.setdefault(d["city"], [0, 0.0, 0])
                s[0] += 1
                s[1] += d["score"]
                s[2] = max(s[2], d["age"])
        return sorted(((k, int(v[0])) for k, v in acc.items()), key=lambda kv: -kv[1])

    t_grp_ref, _ = timed(hand_group, repeat=1)
    out.append(row("$match+$group+$sort pipeline", t_grp, t_grp_ref))
    return out
