"""Durable transaction records: rows of the shard's ``txn_rows`` table.

``txn_rows (tbl, key, doc)`` lives in the shard's own SQLite file (``ShardStorage``), so a
record commits atomically with the document writes it goes with (a Commit applies the
effects, deletes the prepared record and writes the outcome row in one transaction). On
a replica set every row change is an oplog entry of kind ``txn_row`` (document
``{t: table, k: key, d: BSON or null}``) that followers apply into the same table, and an
initial sync copies the whole table; so a new primary has the prepared records, outcome
rows and coordinator records of the old one (up to what was majority-acknowledged).

Tables used:

* ``participant``: a prepared transaction on this shard (``txn_id`` -> the prepared
  record: coordinator, participants, fingerprint, effects, locks, results, deadline);
* ``outcome``: a participant's finished transaction (``txn_id`` -> {state, results,
  error, at}), for idempotent answers to late or resent calls; pruned after an hour;
* ``coordinator``: the coordinator record (``shard_stub.transactions.coordinator``).

Calls block (SQLite): run them in a worker thread (``asyncio.to_thread``); on a replica
set a ``put`` must run as a primary write (``ReplicaNode.run_write``) and its op id be
waited on for majority before it is relied upon.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import bson

from shard_stub.storage import ShardStorage, TxnRowChange

__all__ = ["COORDINATOR", "OUTCOME", "PARTICIPANT", "TxnRecords", "encode_row"]

PARTICIPANT = "participant"
OUTCOME = "outcome"
COORDINATOR = "coordinator"


def encode_row(table: str, key: str, doc: Mapping[str, Any] | None) -> TxnRowChange:
    """A row change for ``ShardStorage`` (``put_many``, or with a Commit's effects)."""
    return (table, key, bson.encode(doc) if doc is not None else None)


class TxnRecords:
    """Transaction record rows over a shard's storage (blocking calls)."""

    def __init__(self, storage: ShardStorage) -> None:
        self.storage = storage

    def put(self, table: str, key: str, doc: Mapping[str, Any] | None) -> int:
        """Write (``None``: delete) one row in one storage transaction; the op id of its
        oplog entry (0 without an oplog). Replicated as a ``txn_row`` entry."""
        return self.storage.txn_rows_write([encode_row(table, key, doc)])

    def put_many(self, rows: Sequence[tuple[str, str, Mapping[str, Any] | None]]) -> int:
        """Several row changes in one storage transaction; the last op id (0: no oplog)."""
        return self.storage.txn_rows_write([encode_row(t, k, d) for t, k, d in rows])

    def get(self, table: str, key: str) -> dict[str, Any] | None:
        raw = self.storage.txn_row_get(table, key)
        return bson.decode(raw) if raw is not None else None

    def scan(self, table: str) -> list[tuple[str, dict[str, Any]]]:
        """Every row of ``table`` in key order."""
        return [(k, bson.decode(raw)) for k, raw in self.storage.txn_row_scan(table)]
