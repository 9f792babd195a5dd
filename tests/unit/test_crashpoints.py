"""The testing-only transaction crash points: flag parsing, arming, and that an unarmed
or other point never exits (the exit itself is exercised by tests/chaos/test_txn_bank.py)."""

from __future__ import annotations

import argparse

import pytest

from lauradb.crashpoints import CrashPoints
from router.__main__ import parse_args as router_args
from router.txn_failpoints import POINTS as ROUTER_POINTS
from shard_stub.__main__ import parse_args as shard_args
from shard_stub.transactions.failpoints import POINTS as SHARD_POINTS
from shard_stub.transactions.locks import LockTable


def test_parse_point_and_probability() -> None:
    crash = CrashPoints("test", ("a", "b"))
    assert crash.parse("a") == ("a", 1.0)
    assert crash.parse("b:0.25") == ("b", 0.25)
    for bad in ("c", "a:0", "a:1.5", "a:x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            crash.parse(bad)


def test_unarmed_and_other_points_do_nothing() -> None:
    crash = CrashPoints("test", ("a", "b"))
    crash.hit("a")  # unarmed: returns
    crash.first("a")(object())
    crash.arm("b", 1.0)
    crash.hit("a")  # another point: returns
    crash.first("a")(object())
    crash.arm(None)
    crash.hit("b")
    with pytest.raises(ValueError):
        crash.arm("zzz")


def test_process_flags() -> None:
    base = ["--config", "127.0.0.1:1"]
    assert router_args(base).test_txn_crash_at is None
    for point in ROUTER_POINTS:
        args = router_args([*base, "--test-txn-crash-at", f"{point}:0.5"])
        assert args.test_txn_crash_at == (point, 0.5)
    shard = ["--shard-id", "s0", "--data-dir", "/tmp/x", *base]
    parsed = shard_args(shard)
    assert parsed.test_txn_crash_at is None and parsed.migration_txn_wait_s == 30.0
    for point in SHARD_POINTS:
        assert shard_args([*shard, "--test-txn-crash-at", point]).test_txn_crash_at == (point, 1.0)
    assert shard_args([*shard, "--migration-txn-wait-s", "2.5"]).migration_txn_wait_s == 2.5
    for argv in (
        [*shard, "--test-txn-crash-at", "after-coordinate"],  # a router point
        [*shard, "--migration-txn-wait-s", "0"],
    ):
        with pytest.raises(SystemExit):
            shard_args(argv)
    with pytest.raises(SystemExit):
        router_args([*base, "--test-txn-crash-at", "after-commit-apply"])  # a shard point


def test_lock_table_in_namespaces() -> None:
    locks = LockTable()
    assert locks.in_namespaces({"d.u"}) == set()
    locks.acquire("t1", [("d.u", b"1", None), ("d.v", b"2", None)])
    locks.acquire("t2", [("e.u", b"1", b"k")])
    assert locks.in_namespaces({"d.u"}) == {"t1"}
    assert locks.in_namespaces({"d.u", "e.u"}) == {"t1", "t2"}
    assert locks.in_namespaces({"x.y"}) == set()
    locks.release("t1")
    assert locks.in_namespaces({"d.u", "d.v"}) == set()
