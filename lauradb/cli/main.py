"""``lauradb``: the admin command line. ``main(argv) -> exit status``.

Exit status: 0 success, 1 a server error (``lauradb: CODE_NAME: message`` on stderr),
2 a usage error (bad arguments, unparseable JSON, unreadable TLS files). Never a traceback.

TLS: ``--tls-ca`` (the CA the router's certificate is checked against) turns TLS on;
``--tls-cert``/``--tls-key`` add a client certificate, which a router started with
``--tls-client-auth require`` demands. Unset flags come from LAURADB_TLS_CA,
LAURADB_TLS_CERT and LAURADB_TLS_KEY, the variables the processes read (so inside a
LauraDB pod of the TLS overlay the CLI uses the pod's certificate).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from lauradb.cli import commands as c
from lauradb.cli.client import Client
from lauradb.cli.extjson import UsageError
from lauradb.errors import LauraError
from lauradb.rpc.channels import TLS_ENV, TlsSettings, tls_from_args

Command = Callable[[Client, argparse.Namespace], int]

EXIT_OK = 0
EXIT_SERVER = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one ``lauradb: ...`` line, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"usage: {self.prog}: {message}")


def _sub(parent: argparse._SubParsersAction[_Parser], name: str, help: str) -> _Parser:
    return parent.add_parser(name, help=help, description=help)


def _add_tls_args(parser: _Parser, env: Mapping[str, str]) -> None:
    helps = {
        "ca": "PEM CA certificate to verify the router with; turns TLS on",
        "cert": "PEM client certificate (mutual TLS; needs --tls-key)",
        "key": "PEM private key of --tls-cert",
    }
    for name, text in helps.items():
        var = TLS_ENV[name]
        parser.add_argument(f"--tls-{name}", default=env.get(var) or None, metavar="FILE",
                            help=f"{text} [env {var}]")


def build_parser(env: Mapping[str, str] | None = None) -> _Parser:
    parser = _Parser(prog="lauradb", description="LauraDB cluster administration.")
    parser.add_argument("--router", default="127.0.0.1:27017", metavar="HOST:PORT",
                        help="the router to talk to (default 127.0.0.1:27017)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds per call (default 10)")
    _add_tls_args(parser, os.environ if env is None else env)
    top = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    top.required = True

    _sub(top, "status", "the cluster at a glance").set_defaults(func=c.cmd_status)

    shard = _sub(top, "shard", "add, remove and list shards")
    shard_cmds = shard.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    shard_cmds.required = True
    p = _sub(shard_cmds, "add", "add (or move) a shard")
    p.add_argument("id")
    p.add_argument("address", metavar="HOST:PORT")
    p.set_defaults(func=c.cmd_shard_add)
    p = _sub(shard_cmds, "remove", "drain and remove a shard")
    p.add_argument("id")
    p.set_defaults(func=c.cmd_shard_remove)
    _sub(shard_cmds, "list", "list shards").set_defaults(func=c.cmd_shard_list)

    coll = _sub(top, "collection", "collection administration")
    coll_cmds = coll.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    coll_cmds.required = True
    p = _sub(coll_cmds, "shard", "shard a collection")
    p.add_argument("namespace", metavar="DB.COLL")
    p.add_argument("--key", required=True, help="shard key fields, comma separated")
    p.add_argument("--hashed", action="store_true", help="hash the first key field")
    p.add_argument("--chunks", type=int, default=0, help="initial chunks (hashed keys)")
    p.add_argument("--unique", action="store_true", help="the shard key is unique")
    p.set_defaults(func=c.cmd_collection_shard)

    chunk = _sub(top, "chunk", "split and move chunks")
    chunk_cmds = chunk.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    chunk_cmds.required = True
    p = _sub(chunk_cmds, "split", "split the chunk containing a point at that point")
    p.add_argument("namespace", metavar="DB.COLL")
    p.add_argument("--at", required=True, help='split point (chunk space), e.g. {"k": 5}')
    p.set_defaults(func=c.cmd_chunk_split)
    p = _sub(chunk_cmds, "move", "move the chunk holding a shard key to another shard")
    p.add_argument("namespace", metavar="DB.COLL")
    p.add_argument("--find", required=True, help='a shard key, e.g. {"k": 5}')
    p.add_argument("--to", required=True, metavar="SHARD")
    p.set_defaults(func=c.cmd_chunk_move)

    p = _sub(top, "balancer", "start, stop or show the balancer")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(func=c.cmd_balancer)

    index = _sub(top, "index", "create, list and drop indexes")
    index_cmds = index.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    index_cmds.required = True
    p = _sub(index_cmds, "create", "create an index")
    p.add_argument("namespace", metavar="DB.COLL")
    p.add_argument("keys", help='index keys, e.g. {"a": 1}')
    p.add_argument("--unique", action="store_true")
    p.add_argument("--sparse", action="store_true")
    p.add_argument("--name", default="")
    p.set_defaults(func=c.cmd_index_create)
    p = _sub(index_cmds, "list", "list indexes")
    p.add_argument("namespace", metavar="DB.COLL")
    p.set_defaults(func=c.cmd_index_list)
    p = _sub(index_cmds, "drop", "drop an index by name ('*': all but _id_)")
    p.add_argument("namespace", metavar="DB.COLL")
    p.add_argument("name")
    p.set_defaults(func=c.cmd_index_drop)

    p = _sub(top, "query", "find documents (printed as relaxed extended JSON)")
    p.add_argument("namespace", metavar="DB.COLL")
    p.add_argument("filter", nargs="?", default="{}", help="filter document (default {})")
    p.add_argument("--sort", default="")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--projection", default="")
    p.set_defaults(func=c.cmd_query)

    p = _sub(top, "insert", "insert documents from a JSON Lines file ('-': stdin)")
    p.add_argument("namespace", metavar="DB.COLL")
    p.add_argument("file", metavar="FILE.jsonl")
    p.set_defaults(func=c.cmd_insert)
    return parser


def _fail(message: str, status: int) -> int:
    print(f"lauradb: {message}", file=sys.stderr)
    return status


def client_tls(args: argparse.Namespace) -> TlsSettings | None:
    """The TLS settings of the flags (None: plaintext); unreadable files or a
    certificate without its key are usage errors."""
    try:
        return tls_from_args(args)
    except LauraError as exc:
        raise UsageError(f"{exc.code_name}: {exc.message}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    func: Command = args.func
    try:
        tls = client_tls(args)
        with Client(args.router, args.timeout, tls) as client:
            return func(client, args)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except LauraError as exc:
        return _fail(f"{exc.code_name}: {exc.message}", EXIT_SERVER)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        return EXIT_SERVER
    except Exception as exc:  # never a traceback: one line naming what went wrong
        return _fail(f"{type(exc).__name__}: {exc}", EXIT_SERVER)


if __name__ == "__main__":
    sys.exit(main())
