"""Run every benchmark scenario: ``python -m bench [--json FILE] [scenario ...]``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from bench import engine, indexes, migration

SCENARIOS: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {
    "engine": engine.run,
    "indexes": indexes.run,
    "migration": migration.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], default=[])
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--docs", type=int, default=100_000, help="documents per data set")
    ns = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    for name in ns.scenarios or list(SCENARIOS):
        results.extend(SCENARIOS[name](ns))
    if ns.json:
        with open(ns.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
