"""Per-namespace hooks in the storage write path for chunk migrations.

Storage keeps ``write_guards: {namespace: NamespaceGuard}``, empty unless this shard
is donating (or recently donated) a chunk, so the steady-state write path pays one
dict truth test. For a guarded namespace every document write asks the guard, under
the storage write lock and inside the write's transaction:

* ``check(shard_key, owned)`` before writing: raises ``RangeBlocked`` when the key
  is in a range whose critical section is active, and STALE_CONFIG when the key is
  in a range this shard gave away (a *fence*) while the write runs with placement
  metadata from before that commit (``owned``'s epoch and version). The fence closes
  the window between a write's placement check and its storage transaction.
* ``written`` / ``deleted`` after writing: the ``_id`` goes into the transfer log of
  the migrating range that holds the key.

Guards are changed only under the storage write lock (``ShardStorage.change_guard``),
so a write transaction sees a consistent set of logs, sections and fences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lauradb.errors import ErrorCode, LauraError
from shard_stub.critical_section import CriticalSection
from shard_stub.ownership import KeyRange, OwnedRanges
from shard_stub.transfer_log import TransferLog

MAX_FENCES = 64


@dataclass(frozen=True)
class Fence:
    """A range given away at ``epoch``: placement metadata of that epoch with a shard
    version below ``threshold`` predates the commit."""

    keys: KeyRange
    epoch: str
    threshold: tuple[int, int]
    description: str = ""

    def stale(self, owned: OwnedRanges | None) -> bool:
        """Whether a write placed with ``owned`` predates the commit that moved the range."""
        if owned is None:
            return False  # unversioned (administrative) writes are not placement-checked
        return owned.epoch == self.epoch and owned.version < self.threshold


class NamespaceGuard:
    """The transfer logs, critical sections and fences of one namespace."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.logs: tuple[TransferLog, ...] = ()
        self.sections: tuple[CriticalSection, ...] = ()
        self.fences: tuple[Fence, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.logs or self.sections or self.fences)

    # ------------------------------------------------------------------ changes
    # (callers hold the storage write lock)

    def add_log(self, log: TransferLog) -> None:
        self.logs = (*self.logs, log)

    def remove_log(self, log: TransferLog) -> None:
        self.logs = tuple(x for x in self.logs if x is not log)

    def add_section(self, section: CriticalSection) -> None:
        self.sections = (*self.sections, section)

    def remove_section(self, section: CriticalSection) -> None:
        self.sections = tuple(x for x in self.sections if x is not section)

    def add_fence(self, fence: Fence) -> None:
        self.fences = (*self.fences, fence)[-MAX_FENCES:]

    def remove_fence(self, fence: Fence) -> None:
        self.fences = tuple(x for x in self.fences if x is not fence)

    # ------------------------------------------------------------------ write path

    def check(self, shard_key: bytes | None, owned: OwnedRanges | None) -> None:
        """Raise when a document with this key may not be written now."""
        if shard_key is None:
            return
        for section in self.sections:
            if section.active and section.keys.contains(shard_key):
                raise section.blocked()
        for fence in self.fences:
            if fence.keys.contains(shard_key) and fence.stale(owned):
                raise LauraError(
                    ErrorCode.STALE_CONFIG,
                    f"{self.ns}: the chunk {fence.description} was migrated away from this "
                    f"shard; refresh the routing table and retry",
                    {
                        "namespace": self.ns,
                        "shard_epoch": fence.epoch,
                        "migrated_range": fence.description,
                    },
                )

    def written(self, shard_key: bytes | None, id_key: bytes, id_value: Any) -> None:
        if shard_key is None:
            return
        for log in self.logs:
            if log.keys.contains(shard_key):
                log.written(id_key, id_value)

    def deleted(self, shard_key: bytes | None, id_key: bytes, id_value: Any) -> None:
        if shard_key is None:
            return
        for log in self.logs:
            if log.keys.contains(shard_key):
                log.deleted(id_key, id_value)
