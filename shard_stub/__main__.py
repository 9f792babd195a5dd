"""``lauradb-shard --shard-id ID --port 27018 --data-dir DIR --config HOST:PORT``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lauradb.errors import LauraError
from lauradb.rpc.failover import parse_address_list
from lauradb.rpc.process import add_common_args, parse_with_sources, run_process
from shard_stub.app import ReplicaSettings, ShardApp
from shard_stub.migration_settings import MigrationSettings
from shard_stub.replica.node import DEFAULT_ELECTION_TIMEOUT_MS, DEFAULT_OPLOG_MAX_ENTRIES
from shard_stub.retry_records import DEFAULT_MAX_RECORDS, DEFAULT_TTL_S
from shard_stub.transactions.failpoints import CRASH as TXN_CRASH


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def _address_list(value: str) -> str:
    try:
        return ",".join(parse_address_list(value))
    except LauraError:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT[,HOST:PORT...], got {value!r}"
        ) from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lauradb-shard", description="LauraDB shard node (documents of owned chunks)"
    )
    parser.add_argument("--shard-id", required=True, help="this shard's id (e.g. shard0)")
    add_common_args(parser, default_port=27018)
    parser.add_argument(
        "--advertise-host",
        default=None,
        metavar="HOST",
        help="the host name other processes reach this shard at, registered with the config "
        "server (default: --host, or the machine's host name when --host is 0.0.0.0 or ::)",
    )
    parser.add_argument("--data-dir", required=True, help="directory of the shard's data")
    parser.add_argument(
        "--config", required=True, type=_address_list, metavar="HOST:PORT[,HOST:PORT...]",
        help="config server address; several (config servers sharing an etcd store) "
        "comma separated: calls fail over between them"
    )
    defaults = MigrationSettings()
    parser.add_argument(
        "--migration-clone-batch", type=int, default=defaults.clone_batch,
        help=f"documents per clone page when receiving a chunk (default {defaults.clone_batch})",
    )
    parser.add_argument(
        "--migration-peer-timeout", type=float, default=defaults.recipient_unreachable_s,
        help="seconds a migration tolerates an unreachable peer shard before aborting "
        f"(default {defaults.recipient_unreachable_s:g}; the recipient waits 3x as long)",
    )
    parser.add_argument(
        "--migration-write-wait", type=float, default=defaults.write_wait_s,
        help="seconds a write blocked by a migration's critical section waits before "
        f"failing with a retryable STALE_CONFIG (default {defaults.write_wait_s:g})",
    )
    parser.add_argument(
        "--migration-txn-wait-s", type=float, default=defaults.prepared_wait_s,
        metavar="SECONDS",
        help="seconds a chunk migration or movePrimary waits for prepared transactions "
        "locking its documents to resolve before aborting with the retryable "
        f"CONFLICTING_OPERATION_IN_PROGRESS (default {defaults.prepared_wait_s:g})",
    )
    parser.add_argument(
        "--retry-history-ttl", type=float, default=DEFAULT_TTL_S, metavar="SECONDS",
        help="seconds the outcome of a retryable write (one with a request_id) is kept to "
        f"answer its retries (default {DEFAULT_TTL_S:g})",
    )
    parser.add_argument(
        "--retry-history-max-records", type=int, default=DEFAULT_MAX_RECORDS, metavar="N",
        help="at most this many retryable-write outcomes are kept, the oldest dropped first "
        f"(default {DEFAULT_MAX_RECORDS})",
    )
    parser.add_argument(
        "--txn-lock-wait-ms", type=int, default=100, metavar="MS",
        help="how long a transaction's Prepare waits for a document locked by another "
        "prepared transaction before voting no (WRITE_CONFLICT); ordinary writes wait 10x "
        "as long (default 100)",
    )
    parser.add_argument(
        "--test-txn-crash-at",
        type=TXN_CRASH.parse,
        default=None,
        metavar="POINT[:PROBABILITY]",
        help="TESTING ONLY: exit at once (status 137, like kill -9) when a transaction "
        "reaches POINT (one of " + ", ".join(TXN_CRASH.points) + "), with PROBABILITY "
        "(default 1); see shard_stub/transactions/failpoints.py",
    )
    rs = parser.add_argument_group("replica set (without --replset: a standalone shard)")
    rs.add_argument(
        "--replset", default=None, metavar="ID",
        help="this shard node is a member of replica set ID (Raft elections, oplog "
        "replication; see README 'Replica sets')",
    )
    rs.add_argument(
        "--peers", default="", metavar="HOST:PORT,...",
        help="the OTHER members of the replica set (static membership)",
    )
    rs.add_argument(
        "--priority", type=int, default=None, metavar="N",
        help="election priority (default 1; 0: never primary; higher wins ties)",
    )
    rs.add_argument(
        "--arbiter", action="store_true",
        help="vote in elections only: hold no data, never primary (needs --priority 0)",
    )
    rs.add_argument(
        "--node-id", default=None, metavar="ID",
        help="this member's id (default shard-<shard id>-<port>)",
    )
    rs.add_argument(
        "--election-timeout-ms", type=int, default=DEFAULT_ELECTION_TIMEOUT_MS, metavar="MS",
        help="base election timeout: a secondary that has not heard from the primary for a "
        f"random time in [MS, 2*MS) stands for election (default {DEFAULT_ELECTION_TIMEOUT_MS})",
    )
    rs.add_argument(
        "--oplog-max-entries", type=int, default=DEFAULT_OPLOG_MAX_ENTRIES, metavar="N",
        help="the oplog keeps at most N entries (a member that falls further behind "
        f"resyncs; default {DEFAULT_OPLOG_MAX_ENTRIES})",
    )
    args = parse_with_sources(parser, argv)
    if not args.shard_id.strip():
        parser.error("--shard-id must not be empty")
    if args.advertise_host is not None and not args.advertise_host.strip():
        parser.error("--advertise-host must not be empty")
    if not 0 <= args.port < 65536:
        parser.error("--port must be in 0..65535")
    if args.migration_clone_batch <= 0:
        parser.error("--migration-clone-batch must be positive")
    if args.migration_peer_timeout <= 0 or args.migration_write_wait <= 0:
        parser.error("--migration-peer-timeout and --migration-write-wait must be positive")
    if args.migration_txn_wait_s <= 0:
        parser.error("--migration-txn-wait-s must be positive")
    if args.retry_history_ttl <= 0 or args.retry_history_max_records <= 0:
        parser.error("--retry-history-ttl and --retry-history-max-records must be positive")
    if args.txn_lock_wait_ms < 0:
        parser.error("--txn-lock-wait-ms must be >= 0")
    _check_replset(parser, args)
    return args


def _check_replset(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if args.replset is None:
        for flag, given in (
            ("--peers", bool(peers)), ("--arbiter", args.arbiter),
            ("--node-id", args.node_id is not None),
            ("--priority", args.priority is not None),
        ):
            if given:
                parser.error(f"{flag} needs --replset")
        args.peer_list = []
        return
    if not args.replset.strip():
        parser.error("--replset must not be empty")
    for peer in peers:
        try:
            _address(peer)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"--peers: {exc}")
    if len(set(peers)) != len(peers):
        parser.error(f"--peers lists a member twice: {','.join(peers)}")
    if args.port == 0:
        parser.error("--replset needs a fixed --port (the peers list this member's address)")
    own = {f"{h}:{args.port}" for h in (args.host, args.advertise_host) if h}
    if own & set(peers) or (
        args.host in ("0.0.0.0", "::", "127.0.0.1", "localhost")
        and any(p in (f"127.0.0.1:{args.port}", f"localhost:{args.port}") for p in peers)
    ):
        parser.error("--peers must list the OTHER members, not this one")
    if args.priority is None:
        args.priority = 0 if args.arbiter else 1
    if args.priority < 0:
        parser.error("--priority must be >= 0")
    if args.arbiter and args.priority > 0:
        parser.error("an --arbiter never becomes primary: its --priority must be 0")
    if args.election_timeout_ms < 50:
        parser.error("--election-timeout-ms must be >= 50")
    if args.oplog_max_entries <= 0:
        parser.error("--oplog-max-entries must be positive")
    if args.node_id is not None and not args.node_id.strip():
        parser.error("--node-id must not be empty")
    args.peer_list = peers


async def _serve(args: argparse.Namespace) -> None:
    if args.test_txn_crash_at is not None:
        TXN_CRASH.arm(*args.test_txn_crash_at)
    app = ShardApp(
        shard_id=args.shard_id,
        host=args.host,
        advertise_host=args.advertise_host,
        port=args.port,
        data_dir=args.data_dir,
        config_address=args.config,
        metrics_port=args.metrics_port,
        migration_settings=MigrationSettings(
            clone_batch=args.migration_clone_batch,
            recipient_unreachable_s=args.migration_peer_timeout,
            donor_unreachable_s=3 * args.migration_peer_timeout,
            write_wait_s=args.migration_write_wait,
            prepared_wait_s=args.migration_txn_wait_s,
        ),
        retry_history_ttl_s=args.retry_history_ttl,
        retry_history_max_records=args.retry_history_max_records,
        txn_lock_wait_ms=args.txn_lock_wait_ms,
        replica=(
            ReplicaSettings(
                replset=args.replset,
                peers=tuple(args.peer_list),
                priority=args.priority,
                arbiter=args.arbiter,
                node_id=args.node_id or "",
                election_timeout_ms=args.election_timeout_ms,
                oplog_max_entries=args.oplog_max_entries,
            )
            if args.replset is not None
            else None
        ),
    )
    await app.run()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_process("lauradb-shard", args, lambda: _serve(args))


if __name__ == "__main__":
    sys.exit(main())
