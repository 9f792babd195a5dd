"""TESTING ONLY: the shard's transaction crash points (``--test-txn-crash-at``).

Where a shard armed with ``POINT[:PROBABILITY]`` exits at once (status 137, as if
killed with ``kill -9``):

* ``after-prepare-record``: a participant's prepared record is durable (majority-
  committed on a replica set) and its documents are locked; the vote not sent;
* ``after-commit-apply``: a Commit's effects are applied (and durable); the
  acknowledgement not sent;
* ``after-decision-record``: the coordinator shard recorded a decision
  (DecideTransaction); the answer not sent.

The chaos tests (``tests/chaos/test_txn_bank.py``) use them to prove recovery at each
point; never set them in production.
"""

from __future__ import annotations

from lauradb.crashpoints import CrashPoints

__all__ = ["CRASH", "POINTS"]

POINTS = ("after-prepare-record", "after-commit-apply", "after-decision-record")

CRASH = CrashPoints("shard", POINTS)
