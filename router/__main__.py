"""``lauradb-router --port 27017 --config HOST:PORT[,HOST:PORT...]``: run a router."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lauradb.errors import LauraError
from lauradb.replset import DEFAULT_BUFFER_WINDOW_S
from lauradb.rpc.failover import parse_address_list
from lauradb.rpc.process import (
    add_common_args,
    parse_with_sources,
    require_positive,
    run_process,
)
from router.app import RouterApp
from router.config_client import DEFAULT_CONFIG_TIMEOUT
from router.context import DEFAULT_MEMORY_LIMIT
from router.cursors import IDLE_TIMEOUT
from router.shard_client import DEFAULT_SHARD_TIMEOUT
from router.txn_failpoints import CRASH as TXN_CRASH
from router.txn_plan import DEFAULT_MAX_OPERATIONS, DEFAULT_TIMEOUT_MS, TxnSettings


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lauradb-router", description="LauraDB router (targets, scatters and merges)"
    )
    add_common_args(parser, default_port=27017)
    parser.add_argument(
        "--config", required=True, metavar="HOST:PORT[,HOST:PORT...]",
        help="config server address; several (config servers sharing an etcd store) "
        "comma separated: calls fail over between them",
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
    parser.add_argument(
        "--failover-buffer",
        type=float,
        default=DEFAULT_BUFFER_WINDOW_S,
        metavar="SECONDS",
        help="replica-set shards: how long a request waits for a new primary (or a "
        f"member matching its read preference) before failing (default {DEFAULT_BUFFER_WINDOW_S:g})",
    )
    parser.add_argument(
        "--txn-max-operations",
        type=int,
        default=DEFAULT_MAX_OPERATIONS,
        help=f"most operations in one transaction (default {DEFAULT_MAX_OPERATIONS})",
    )
    parser.add_argument(
        "--txn-default-timeout-ms",
        type=int,
        default=DEFAULT_TIMEOUT_MS,
        help="timeout of a transaction that sets none, in milliseconds: how long "
        f"participants hold it prepared (default {DEFAULT_TIMEOUT_MS})",
    )
    parser.add_argument(
        "--test-drop-write-replies",
        action="store_true",
        help="TESTING ONLY: after a write completed on the shards, fail the call with "
        "UNAVAILABLE instead of replying (simulates a lost reply, for retry tests)",
    )
    parser.add_argument(
        "--test-txn-crash-at",
        type=TXN_CRASH.parse,
        default=None,
        metavar="POINT[:PROBABILITY]",
        help="TESTING ONLY: exit at once (status 137, like kill -9) when a multi-shard "
        "transaction reaches POINT (one of " + ", ".join(TXN_CRASH.points) + "), with "
        "PROBABILITY (default 1); see router/txn_failpoints.py",
    )
    args = parse_with_sources(parser, argv)
    try:
        args.config = ",".join(parse_address_list(args.config))
    except LauraError:
        parser.error("--config must be HOST:PORT[,HOST:PORT...]")
    require_positive(
        parser, args, "shard_timeout", "config_timeout", "cursor_timeout", "memory_limit_mb",
        "failover_buffer", "txn_max_operations", "txn_default_timeout_ms",
    )
    return args


async def _serve(args: argparse.Namespace) -> None:
    if args.test_txn_crash_at is not None:
        TXN_CRASH.arm(*args.test_txn_crash_at)
    app = RouterApp(
        host=args.host,
        port=args.port,
        config_address=args.config,
        shard_timeout=args.shard_timeout,
        config_timeout=args.config_timeout,
        cursor_timeout=args.cursor_timeout,
        memory_limit_bytes=args.memory_limit_mb * 1024 * 1024,
        metrics_port=args.metrics_port,
        drop_write_replies=args.test_drop_write_replies,
        failover_buffer=args.failover_buffer,
        txn_settings=TxnSettings(args.txn_max_operations, args.txn_default_timeout_ms),
    )
    await app.run()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_process("lauradb-router", args, lambda: _serve(args))


if __name__ == "__main__":
    sys.exit(main())
