"""Tunables of chunk migrations on a shard (defaults suit production; tests shrink them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MigrationSettings:
    # Donor.
    status_poll_s: float = 0.05  # RecvChunkStatus polling while the recipient catches up
    recipient_unreachable_s: float = 5.0  # abort when the recipient does not answer this long
    stall_timeout_s: float = 120.0  # abort when the recipient makes no progress this long
    max_duration_s: float = 3600.0  # abort a migration that never reaches "steady"
    recv_commit_timeout_s: float = 30.0
    commit_resolve_s: float = 60.0  # MoveRange gives up waiting for an uncertain commit
    write_wait_s: float = 5.0  # blocked writers wait this long for a critical section
    # before the critical section: wait this long for prepared transactions locking
    # documents of the range to resolve, else abort (the balancer retries later)
    prepared_wait_s: float = 30.0
    log_every_docs: int = 1000  # an INFO line every N documents cloned
    # Recipient.
    clone_batch: int = 1000  # documents per MigrateClone page
    max_mods: int = 1000  # entries per MigrateTransferMods call
    steady_mods: int = 100  # catch-up is "steady" once a drain returns fewer than this
    mods_poll_s: float = 0.02  # TransferMods polling while steady
    donor_unreachable_s: float = 15.0  # give up when the donor does not answer this long
    # Both.
    call_timeout_s: float = 5.0
    range_delete_batch: int = 1000
    range_delete_poll_s: float = 0.1
