"""TESTING ONLY: crash points — make a process die at a named point of a protocol.

A process armed with ``POINT[:PROBABILITY]`` (its ``--test-txn-crash-at`` flag) exits
at once with status 137 (``os._exit``: no cleanup, no flush of anything but the log
line announcing it, like ``kill -9``) each time execution reaches ``POINT``, with the
given probability (default 1). Unarmed (production), ``hit`` is one attribute test.

The router and the shard each declare their points in a small module of their own
(``router/txn_failpoints.py``, ``shard_stub/transactions/failpoints.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["CRASH_EXIT_CODE", "CrashPoints"]

CRASH_EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL

log = logging.getLogger("lauradb.crashpoints")


class CrashPoints:
    """The crash points of one process kind; at most one is armed."""

    def __init__(self, process: str, points: Sequence[str]) -> None:
        self.process = process
        self.points = tuple(points)
        self.point: str | None = None
        self.probability = 1.0
        self._rng = random.Random()

    def parse(self, value: str) -> tuple[str, float]:
        """``POINT[:PROBABILITY]`` (an argparse ``type``)."""
        point, sep, prob = value.partition(":")
        if point not in self.points:
            raise argparse.ArgumentTypeError(
                f"unknown crash point {point!r} (one of {', '.join(self.points)})"
            )
        probability = 1.0
        if sep:
            try:
                probability = float(prob)
            except ValueError:
                raise argparse.ArgumentTypeError(f"bad probability {prob!r}") from None
            if not 0.0 < probability <= 1.0:
                raise argparse.ArgumentTypeError("the probability must be in (0, 1]")
        return point, probability

    def arm(self, point: str | None, probability: float = 1.0) -> None:
        if point is not None and point not in self.points:
            raise ValueError(f"unknown crash point {point!r}")
        self.point = point
        self.probability = probability
        if point is not None:
            log.warning(
                "TESTING ONLY: this %s exits (status %d) at crash point %s with "
                "probability %g", self.process, CRASH_EXIT_CODE, point, probability,
            )  # fmt: skip

    def hit(self, point: str, what: str = "") -> None:
        """Execution reached ``point``: die here if armed for it (and the dice say so)."""
        if self.point != point:
            return
        if self.probability < 1.0 and self._rng.random() >= self.probability:
            return
        log.critical("TESTING ONLY: crash point %s reached (%s): exiting with status %d",
                     point, what or "-", CRASH_EXIT_CODE)  # fmt: skip
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)

    def first(self, point: str, what: str = "") -> Callable[[Any], None]:
        """A callback that hits ``point`` on its first call only (e.g. the first of
        several parallel answers); a no-op callable when ``point`` is not armed."""
        if self.point != point:
            return _ignore
        called = False

        def once(_: Any) -> None:
            nonlocal called
            if not called:
                called = True
                self.hit(point, what)

        return once


def _ignore(_: Any) -> None:
    return None
