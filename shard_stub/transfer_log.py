"""The donor's transfer log: which documents of a migrating range were written.

While a chunk migrates, every write to a document whose shard key lies in the range
records the document's ``_id`` here, from the same storage code path that writes it
(under the storage write lock, see ``write_guard``), so nothing is missed: inserted
and updated ``_id`` keys in one set, deleted ones in another (a later write of the
same ``_id`` moves it from one set to the other).

``MigrateTransferMods`` drains the log: for each recorded ``_id`` it sends the
document's CURRENT version (or a deletion when it no longer exists in the range).
The log only says "look at this ``_id`` again", so recording a write whose
transaction later rolls back is harmless, and sending the current version makes the
order of drains irrelevant. Draining happens under the storage write lock, so every
recorded write has committed (or rolled back) by then.
"""

from __future__ import annotations

import threading
from typing import Any

from shard_stub.ownership import KeyRange


class TransferLog:
    """The ``_id`` keys (with their values) written and deleted since the last drain."""

    def __init__(self, keys: KeyRange) -> None:
        self.keys = keys
        self._written: dict[bytes, Any] = {}
        self._deleted: dict[bytes, Any] = {}
        self._lock = threading.Lock()
        self.recorded = 0  # writes recorded since the log was created

    def __len__(self) -> int:
        return len(self._written) + len(self._deleted)

    def written(self, id_key: bytes, id_value: Any) -> None:
        """A document of the range was inserted or updated."""
        with self._lock:
            self._deleted.pop(id_key, None)
            self._written[id_key] = id_value
            self.recorded += 1

    def deleted(self, id_key: bytes, id_value: Any) -> None:
        """A document of the range was deleted."""
        with self._lock:
            self._written.pop(id_key, None)
            self._deleted[id_key] = id_value
            self.recorded += 1

    def take(self, limit: int) -> tuple[list[tuple[bytes, Any]], list[tuple[bytes, Any]]]:
        """Remove and return up to ``limit`` entries: (written, deleted) ``(id_key, _id)``."""
        with self._lock:
            deleted = _pop_some(self._deleted, limit)
            written = _pop_some(self._written, limit - len(deleted))
        return written, deleted

    def put_back(self, written: list[tuple[bytes, Any]]) -> None:
        """Entries taken but not sent (a response got too big): record them again."""
        with self._lock:
            for id_key, value in written:
                if id_key not in self._deleted:
                    self._written.setdefault(id_key, value)

    def clear(self) -> None:
        with self._lock:
            self._written.clear()
            self._deleted.clear()


def _pop_some(entries: dict[bytes, Any], limit: int) -> list[tuple[bytes, Any]]:
    if limit <= 0 or not entries:
        return []
    if limit >= len(entries):
        out = list(entries.items())
        entries.clear()
        return out
    out = []
    for key in list(entries)[:limit]:
        out.append((key, entries.pop(key)))
    return out
