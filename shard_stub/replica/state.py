"""The durable election state of one member: current term and the vote cast in it.

Kept in its own small file in the data directory (``replset_state.json``), written to a
temporary file, fsync'd, renamed over the old one and the directory fsync'd, before a
vote is answered or a new term is used (Raft's persistence rule). It survives a resync
(the documents and oplog are wiped, the term is not).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from lauradb.errors import ErrorCode, LauraError

STATE_FILENAME = "replset_state.json"


@dataclass(frozen=True)
class ElectionState:
    term: int = 0
    voted_for: str | None = None


class DurableState:
    """Load/save of the election state (thread-safe; saves are synchronous and fsync'd)."""

    def __init__(self, data_dir: str | Path, replset: str) -> None:
        self.path = Path(data_dir) / STATE_FILENAME
        self.replset = replset
        self._lock = threading.Lock()
        self.state = ElectionState()

    def load(self) -> ElectionState:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            self.state = ElectionState()
            return self.state
        except (OSError, ValueError) as exc:
            raise LauraError(
                ErrorCode.OPERATION_FAILED, f"cannot read the election state {self.path}: {exc}"
            ) from None
        stored = raw.get("replset", self.replset)
        if stored != self.replset:
            raise LauraError(
                ErrorCode.BAD_VALUE,
                f"data directory belongs to replica set {stored!r}, not {self.replset!r}",
            )
        voted = raw.get("voted_for")
        self.state = ElectionState(int(raw.get("term", 0)), str(voted) if voted else None)
        return self.state

    def save(self, term: int, voted_for: str | None) -> ElectionState:
        """Make (term, voted_for) durable; terms never go back."""
        with self._lock:
            if term < self.state.term:
                raise LauraError(
                    ErrorCode.ILLEGAL_OPERATION,
                    f"term cannot go back from {self.state.term} to {term}",
                )
            new = ElectionState(term, voted_for)
            if new == self.state:
                return new
            data = json.dumps({"replset": self.replset, "term": term, "voted_for": voted_for})
            tmp = self.path.with_suffix(".tmp")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            self.state = new
            return new
