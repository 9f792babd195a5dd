"""``lauradb-config --port 27019 --data-dir DIR [--store sqlite|etcd://h:p,...]``: run
the config server (metadata in SQLite under DIR, or in etcd)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from config_server.app import ConfigServerApp
from config_server.balancer import (
    DEFAULT_CHUNK_SIZE_BYTES,
    DEFAULT_INTERVAL_S,
    DEFAULT_THRESHOLD_CHUNKS,
    BalancerSettings,
)
from config_server.leadership import DEFAULT_TTL, MIN_TTL
from lauradb.rpc.process import add_common_args, parse_with_sources, run_process


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lauradb-config", description="LauraDB config server (cluster metadata)"
    )
    add_common_args(parser, default_port=27019)
    parser.add_argument(
        "--data-dir", default="", help="directory of the metadata store (required with sqlite)"
    )
    parser.add_argument(
        "--store",
        default="sqlite",
        help="metadata store: sqlite (default: a file in --data-dir) or "
        "etcd://host:port[,host:port...][/name] (keys under /lauradb/<name>/, "
        "name default 'default')",
    )
    parser.add_argument(
        "--advertise-host",
        default=None,
        metavar="HOST",
        help="the host name the other config servers reach this one at (written in the "
        "leader key with --store etcd; default: --host, or the machine's host name when "
        "--host is 0.0.0.0 or ::)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=DEFAULT_TTL,
        metavar="SECONDS",
        help="with --store etcd: the leader's lease; a leader that cannot renew it stops "
        "its balancer before it expires, and another config server takes over "
        f"(whole seconds, at least {MIN_TTL}; default {DEFAULT_TTL:g})",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=5.0,
        help="seconds without heartbeat before a node is marked down (default 5)",
    )
    parser.add_argument(
        "--balancer-interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        help=f"seconds between balancer rounds (default {DEFAULT_INTERVAL_S:g})",
    )
    parser.add_argument(
        "--chunk-size-bytes",
        type=int,
        default=DEFAULT_CHUNK_SIZE_BYTES,
        help="chunks holding more data are split by the balancer (default 1 MiB)",
    )
    parser.add_argument(
        "--balance-threshold",
        type=int,
        default=DEFAULT_THRESHOLD_CHUNKS,
        help="in CHUNKS: a sharded collection is balanced when the chunk counts of its "
        "fullest and emptiest (non-draining) shards differ by at most this many "
        f"(default {DEFAULT_THRESHOLD_CHUNKS}, at least 1)",
    )
    parser.add_argument(
        "--no-balancer",
        action="store_true",
        help="start with the balancer disabled (SetBalancerState enables it again)",
    )
    args = parse_with_sources(parser, argv)
    if args.store in ("", "sqlite"):
        if not args.data_dir:
            parser.error("--data-dir is required (the sqlite metadata store lives there)")
    elif args.store.startswith("etcd://"):
        from config_server.store_etcd import parse_etcd_url
        from lauradb.errors import LauraError

        try:
            parse_etcd_url(args.store)
        except LauraError as exc:
            parser.error(f"--store: {exc.message}")
    else:
        parser.error("--store must be sqlite or etcd://host:port[,host:port...][/name]")
    if args.lease_ttl < MIN_TTL:
        parser.error(f"--lease-ttl must be at least {MIN_TTL} seconds")
    if args.advertise_host is not None and not args.advertise_host.strip():
        parser.error("--advertise-host must not be empty")
    if args.heartbeat_timeout <= 0:
        parser.error("--heartbeat-timeout must be positive")
    if args.balancer_interval <= 0:
        parser.error("--balancer-interval must be positive")
    if args.chunk_size_bytes <= 0:
        parser.error("--chunk-size-bytes must be positive")
    if args.balance_threshold < 1:
        parser.error("--balance-threshold must be at least 1 (chunk)")
    return args


async def _serve(args: argparse.Namespace) -> None:
    app = ConfigServerApp(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        store=args.store,
        advertise_host=args.advertise_host,
        lease_ttl=args.lease_ttl,
        heartbeat_timeout=args.heartbeat_timeout,
        metrics_port=args.metrics_port,
        balancer=BalancerSettings(
            interval=args.balancer_interval,
            chunk_size_bytes=args.chunk_size_bytes,
            threshold=args.balance_threshold,
            start_enabled=not args.no_balancer,
        ),
    )
    await app.run()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_process("lauradb-config", args, lambda: _serve(args))


if __name__ == "__main__":
    sys.exit(main())
