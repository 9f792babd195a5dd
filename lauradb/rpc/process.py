"""What every process's command line shares: common flags and the run wrapper."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from lauradb.errors import LauraError
from lauradb.rpc.server import setup_logging

LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]


def add_common_args(parser: argparse.ArgumentParser, *, default_port: int) -> None:
    """--host, --port, --metrics-port, --log-level and --log-format."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=default_port, help=f"gRPC port (default {default_port})"
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus HTTP port")
    parser.add_argument(
        "--log-level", default="warning", choices=LOG_LEVELS, help="default warning (quiet)"
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])


def require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")


def run_process(prog: str, args: argparse.Namespace, serve: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Set up logging, serve until stopped; a LauraError is one line on stderr, exit 1."""
    setup_logging(args.log_level, args.log_format)
    try:
        asyncio.run(serve())
    except LauraError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
