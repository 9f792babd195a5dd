"""TESTING ONLY: the router's transaction crash points (``--test-txn-crash-at``).

Where a router armed with ``POINT[:PROBABILITY]`` exits at once (status 137, as if
killed with ``kill -9``) while running a multi-shard transaction
(``router.transactions``):

* ``after-coordinate``: the coordinator shard recorded the transaction (PREPARING);
  no Prepare sent yet;
* ``after-first-prepare``: the first participant answered its Prepare (others may
  still be preparing);
* ``after-prepares``: every participant answered its Prepare; no decision yet;
* ``after-decision``: the coordinator shard recorded the decision; nothing delivered;
* ``after-first-commit``: the first participant acknowledged its Commit.

The chaos tests (``tests/chaos/test_txn_bank.py``) use them to prove recovery at each
point; never set them in production.
"""

from __future__ import annotations

from lauradb.crashpoints import CrashPoints

__all__ = ["CRASH", "POINTS"]

POINTS = (
    "after-coordinate",
    "after-first-prepare",
    "after-prepares",
    "after-decision",
    "after-first-commit",
)

CRASH = CrashPoints("router", POINTS)
