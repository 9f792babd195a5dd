"""What every process's command line shares: common flags, configuration sources and
the run wrapper.

Every flag can be given four ways; the first one found wins:

1. on the command line (``--port 27017``);
2. in an environment variable ``LAURADB_<FLAG>`` (``LAURADB_PORT=27017``,
   ``LAURADB_DATA_DIR``, ``LAURADB_SHARD_ID``; empty variables are ignored);
3. in a TOML file named by ``--config-file PATH`` or ``LAURADB_CONFIG_FILE`` whose keys
   are flag names with ``_`` or ``-`` (``port = 27017``, ``log_level = "info"``);
4. the built-in default.

``parse_with_sources`` implements this once for every process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tomllib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from lauradb.errors import ErrorCode, LauraError
from lauradb.rpc.channels import (
    CLIENT_AUTH_MODES,
    client_auth_mode,
    set_current_tls,
    tls_from_args,
)
from lauradb.rpc.server import set_process_health_port, setup_logging

LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]
ENV_PREFIX = "LAURADB_"
CONFIG_FILE_DEST = "config_file"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

SOURCES_EPILOG = (
    "Every flag can also be set with an environment variable LAURADB_<FLAG> (upper case, "
    "'-' as '_': LAURADB_PORT, LAURADB_DATA_DIR, LAURADB_LOG_LEVEL, ...) or as a key of a "
    "TOML file given by --config-file PATH or LAURADB_CONFIG_FILE (keys are flag names "
    "with '_' or '-': port = 27017, log_level = \"info\"). Precedence: command-line flags, "
    "then environment variables, then the file, then the defaults."
)


def add_common_args(parser: argparse.ArgumentParser, *, default_port: int) -> None:
    """--host, --port, --health-port, --metrics-port, --log-level, --log-format, --tls-*
    and --config-file."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=default_port, help=f"gRPC port (default {default_port})"
    )
    parser.add_argument(
        "--health-port", type=int, default=None, metavar="PORT",
        help="extra gRPC port serving only grpc.health.v1, always plaintext (for "
        "Kubernetes probes when --port requires mutual TLS); default none",
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus HTTP port")
    parser.add_argument(
        "--log-level", default="warning", choices=LOG_LEVELS, help="default warning (quiet)"
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    add_tls_args(parser)
    _add_config_file_arg(parser)


def add_tls_args(parser: argparse.ArgumentParser) -> None:
    """TLS of the listener and of every channel to other members; none given: plaintext.
    (The launcher takes the same flags and passes them to every process.)"""
    parser.add_argument(
        "--tls-cert", default=None, metavar="FILE",
        help="PEM certificate (chain) of this node: server cert and mTLS client cert",
    )
    parser.add_argument("--tls-key", default=None, metavar="FILE", help="PEM private key")
    parser.add_argument(
        "--tls-ca", default=None, metavar="FILE",
        help="PEM cluster CA: verifies peers' certificates (trust root of client channels)",
    )
    parser.add_argument(
        "--tls-client-auth", default="none", type=client_auth_mode,
        metavar="{" + ",".join(CLIENT_AUTH_MODES) + "}",
        help="client certificates on the listener: none (not asked for) or require (a "
        "certificate signed by --tls-ca is required: mutual TLS); default none",
    )


def _add_config_file_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-file",
        default=None,
        metavar="PATH",
        help="TOML file of settings (keys are flag names); flags and LAURADB_* win over it",
    )


def env_var_name(dest: str) -> str:
    """``data_dir`` -> ``LAURADB_DATA_DIR``."""
    return ENV_PREFIX + dest.upper()


def _flag(action: argparse.Action) -> str:
    longs = [s for s in action.option_strings if s.startswith("--")]
    return (longs or action.option_strings)[0]


def _settable_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """dest -> action of every option that env/file may set (not --help, --config-file)."""
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest == CONFIG_FILE_DEST:
            continue
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        actions[action.dest] = action
    return actions


def _is_switch(action: argparse.Action) -> bool:
    return isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)


def _convert(action: argparse.Action, value: object) -> Any:
    """One env/file value as the parser would produce it; ValueError when bad."""
    if _is_switch(action):
        if isinstance(value, str):
            word = value.strip().lower()
            if word not in TRUE_WORDS | FALSE_WORDS:
                raise ValueError(f"expected true or false, got {value!r}")
            value = word in TRUE_WORDS
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return action.const if value else action.default
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a string or a number, got {value!r}")
    text = value if isinstance(value, str) else str(value)
    convert = action.type if callable(action.type) else None
    try:
        result = convert(text) if convert is not None else text
    except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
        raise ValueError(str(exc) or f"invalid value {value!r}") from None
    if action.choices is not None and result not in action.choices:
        choices = ", ".join(repr(c) for c in action.choices)
        raise ValueError(f"invalid choice {result!r} (choose from {choices})")
    return result


def _config_file_path(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _add_config_file_arg(pre)
    known, _ = pre.parse_known_args(list(argv))
    path: str | None = known.config_file or env.get(env_var_name(CONFIG_FILE_DEST)) or None
    return path


def _read_config_file(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        parser.error(f"cannot read config file {path}: {exc.strerror or exc}")
    except tomllib.TOMLDecodeError as exc:
        parser.error(f"config file {path} is not valid TOML: {exc}")
    return data


def parse_with_sources(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> argparse.Namespace:
    """Parse ``argv`` with LAURADB_* variables of ``env`` and the TOML config file as
    defaults (flags > env > file > defaults). Values from env/file are converted with
    each option's ``type`` and checked against its ``choices``; a required option they
    provide is no longer required. Errors (unknown file keys, bad values) go through
    ``parser.error`` naming where the value came from. Adjusts ``parser`` (defaults,
    help texts): use a fresh parser per call."""
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    actions = _settable_actions(parser)
    if CONFIG_FILE_DEST not in {a.dest for a in parser._actions}:
        _add_config_file_arg(parser)
    for dest, action in actions.items():
        note = f"env {env_var_name(dest)}"
        if action.help != argparse.SUPPRESS:
            action.help = f"{action.help} [{note}]" if action.help else f"[{note}]"
    parser.epilog = f"{parser.epilog}\n\n{SOURCES_EPILOG}" if parser.epilog else SOURCES_EPILOG

    values: dict[str, Any] = {}
    path = _config_file_path(argv, env)
    if path is not None:
        data = _read_config_file(parser, path)
        normalized: dict[str, tuple[str, object]] = {}
        for key, value in data.items():
            normalized[key.replace("-", "_")] = (key, value)
        unknown = sorted(key for dest, (key, _) in normalized.items() if dest not in actions)
        if unknown:
            known = ", ".join(sorted(actions))
            parser.error(
                f"config file {path}: unknown setting(s) {', '.join(unknown)} "
                f"(known: {known})"
            )
        for dest, (key, value) in normalized.items():
            try:
                values[dest] = _convert(actions[dest], value)
            except ValueError as exc:
                parser.error(f"config file {path}: bad value for {key}: {exc}")
    for dest, action in actions.items():
        name = env_var_name(dest)
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        try:
            values[dest] = _convert(action, raw)
        except ValueError as exc:
            parser.error(f"environment variable {name}: bad value for {_flag(action)}: {exc}")
    for dest, value in values.items():
        actions[dest].default = value
        actions[dest].required = False
    return parser.parse_args(argv)


def require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")


EVENT_LOOP_ENV = "LAURADB_EVENT_LOOP"
EVENT_LOOPS = ("uvloop", "asyncio")


def event_loop_name(environ: Mapping[str, str] | None = None) -> str:
    """The event loop the processes run on: uvloop unless ``LAURADB_EVENT_LOOP=asyncio``
    (uvloop measured ~40 µs less CPU per call through a router, ~10%, in bench/)."""
    env = os.environ if environ is None else environ
    name = env.get(EVENT_LOOP_ENV, "").strip().lower() or "uvloop"
    if name not in EVENT_LOOPS:
        raise LauraError(
            ErrorCode.BAD_VALUE,
            f"{EVENT_LOOP_ENV}={name!r}: expected one of {', '.join(EVENT_LOOPS)}",
        )
    return name


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """``main`` on the process's event loop (``event_loop_name``)."""
    try:
        name = event_loop_name()
    except LauraError:
        main.close()
        raise
    if name == "uvloop":
        import uvloop

        uvloop.run(main)
        return
    asyncio.run(main)


def run_process(prog: str, args: argparse.Namespace, serve: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Set up logging, serve until stopped; a LauraError is one line on stderr, exit 1."""
    setup_logging(args.log_level, args.log_format)
    try:
        set_current_tls(tls_from_args(args))
        set_process_health_port(getattr(args, "health_port", None))
        run_event_loop(serve())
    except LauraError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
