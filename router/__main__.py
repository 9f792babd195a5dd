"""``lauradb-router --port 27017 --config HOST:PORT``: run a router."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from lauradb.errors import LauraError
from lauradb.rpc.server import setup_logging
from router.app import RouterApp
from router.config_client import DEFAULT_CONFIG_TIMEOUT
from router.context import DEFAULT_MEMORY_LIMIT
from router.cursors import IDLE_TIMEOUT
from router.shard_client import DEFAULT_SHARD_TIMEOUT


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lauradb-router", description="LauraDB router (targets, scatters and merges)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=27017, help="gRPC port (default 27017)")
    parser.add_argument(
        "--config", required=True, metavar="HOST:PORT", help="config server address"
    )
    parser.add_argument(
        "--shard-timeout",
        type=float,
        default=DEFAULT_SHARD_TIMEOUT,
        help=f"deadline of router->shard calls in seconds (default {DEFAULT_SHARD_TIMEOUT:g})",
    )
    parser.add_argument(
        "--config-timeout",
        type=float,
        default=DEFAULT_CONFIG_TIMEOUT,
        help=f"deadline of router->config calls in seconds (default {DEFAULT_CONFIG_TIMEOUT:g})",
    )
    parser.add_argument(
        "--cursor-timeout",
        type=float,
        default=IDLE_TIMEOUT,
        help=f"seconds before an idle cursor is closed (default {IDLE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--memory-limit-mb",
        type=int,
        default=DEFAULT_MEMORY_LIMIT // (1024 * 1024),
        help="memory limit of a blocking aggregation stage at the router, in MiB",
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus HTTP port")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error", "critical"],
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    args = parser.parse_args(argv)
    if ":" not in args.config:
        parser.error("--config must be HOST:PORT")
    for name in ("shard_timeout", "config_timeout", "cursor_timeout", "memory_limit_mb"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


async def _serve(args: argparse.Namespace) -> None:
    app = RouterApp(
        host=args.host,
        port=args.port,
        config_address=args.config,
        shard_timeout=args.shard_timeout,
        config_timeout=args.config_timeout,
        cursor_timeout=args.cursor_timeout,
        memory_limit_bytes=args.memory_limit_mb * 1024 * 1024,
        metrics_port=args.metrics_port,
    )
    await app.run()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        asyncio.run(_serve(args))
    except LauraError as err:
        print(f"lauradb-router: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
