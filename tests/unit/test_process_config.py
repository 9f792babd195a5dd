"""Configuration sources of every process: flags > LAURADB_* env > TOML file > defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import config_server.__main__ as config_main
import router.__main__ as router_main
import shard_stub.__main__ as shard_main
from lauradb.rpc.process import add_common_args, env_var_name, parse_with_sources


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return number


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lauradb-test")
    add_common_args(parser, default_port=1000)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--timeout", type=float, default=2.5)
    parser.add_argument("--batch", type=_positive, default=10)
    parser.add_argument("--no-balancer", action="store_true")
    return parser


def parse(
    argv: list[str], env: dict[str, str] | None = None, toml: str | None = None,
    tmp_path: Path | None = None,
) -> argparse.Namespace:
    env = dict(env or {})
    if toml is not None:
        assert tmp_path is not None
        path = tmp_path / "lauradb.toml"
        path.write_text(toml)
        env.setdefault("LAURADB_CONFIG_FILE", str(path))
    return parse_with_sources(make_parser(), argv, env)


# (dest, flag argv, env value, toml line, default, flag value, env value, file value)
CASES = [
    ("port", ["--port", "1"], "2", "port = 3", 1000, 1, 2, 3),
    ("timeout", ["--timeout=1.5"], "2.5e0", "timeout = 3.5", 2.5, 1.5, 2.5, 3.5),
    ("log_level", ["--log-level", "debug"], "info", 'log-level = "error"', "warning",
     "debug", "info", "error"),
    ("host", ["--host", "a"], "b", 'host = "c"', "127.0.0.1", "a", "b", "c"),
    ("batch", ["--batch", "4"], "5", "batch = 6", 10, 4, 5, 6),
    ("metrics_port", ["--metrics-port", "1"], "2", "metrics_port = 3", None, 1, 2, 3),
    ("health_port", ["--health-port", "1"], "2", "health-port = 3", None, 1, 2, 3),
    ("tls_client_auth", ["--tls-client-auth=require"], "none", 'tls_client_auth = "require"',
     "none", "require", "none", "require"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_precedence_flag_env_file_default(case: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    dest, flag, env_value, toml, default, from_flag, from_env, from_file = case
    env = {env_var_name(dest): env_value}
    base = ["--data-dir", "d"]
    assert getattr(parse(base), dest) == default
    assert getattr(parse(base, toml=toml, tmp_path=tmp_path), dest) == from_file
    assert getattr(parse(base, env, toml=toml, tmp_path=tmp_path), dest) == from_env
    assert getattr(parse(base + flag, env, toml=toml, tmp_path=tmp_path), dest) == from_flag
    assert getattr(parse(base + flag, env), dest) == from_flag


def test_switches_from_env_and_file(tmp_path: Path) -> None:
    base = ["--data-dir", "d"]
    assert parse(base).no_balancer is False
    assert parse(base, {"LAURADB_NO_BALANCER": "true"}).no_balancer is True
    assert parse(base, {"LAURADB_NO_BALANCER": "0"}).no_balancer is False
    assert parse(base, toml="no_balancer = true", tmp_path=tmp_path).no_balancer is True
    # env false beats file true; the flag beats env false
    env = {"LAURADB_NO_BALANCER": "no"}
    assert parse(base, env, toml="no-balancer = true", tmp_path=tmp_path).no_balancer is False
    assert parse([*base, "--no-balancer"], env).no_balancer is True


def test_required_argument_from_env_or_file(tmp_path: Path) -> None:
    assert parse([], {"LAURADB_DATA_DIR": "/env"}).data_dir == "/env"
    assert parse([], toml='data_dir = "/file"', tmp_path=tmp_path).data_dir == "/file"
    assert parse(["--data-dir", "/flag"], {"LAURADB_DATA_DIR": "/env"}).data_dir == "/flag"


def test_required_argument_missing_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse([])
    assert "--data-dir" in capsys.readouterr().err


def test_empty_env_and_unrelated_variables_are_ignored() -> None:
    env = {"LAURADB_PORT": "", "LAURADB_TLS_CERT_FILE": "/x", "LAURADB_SHARDS": "a=b:1"}
    assert parse(["--data-dir", "d"], env).port == 1000


def test_config_file_from_flag_beats_env(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("port = 11")
    (tmp_path / "b.toml").write_text("port = 22")
    env = {"LAURADB_CONFIG_FILE": str(tmp_path / "b.toml"), "LAURADB_DATA_DIR": "d"}
    assert parse([], env).port == 22
    assert parse(["--config-file", str(tmp_path / "a.toml")], env).port == 11


def test_unknown_toml_keys_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(["--data-dir", "d"], toml='prot = 1\nlog_levle = "info"', tmp_path=tmp_path)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown setting(s) log_levle, prot" in err and "lauradb.toml" in err


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LAURADB_PORT": "abc"}, "LAURADB_PORT"),
        ({"LAURADB_LOG_LEVEL": "loud"}, "LAURADB_LOG_LEVEL"),
        ({"LAURADB_BATCH": "-3"}, "must be positive"),
        ({"LAURADB_NO_BALANCER": "maybe"}, "LAURADB_NO_BALANCER"),
        ({"LAURADB_TLS_CLIENT_AUTH": "optional"}, "'optional' is not supported"),
        ({"LAURADB_TLS_CLIENT_AUTH": "sometimes"}, "choose from none, require"),
    ],
)
def test_bad_env_value_is_an_error_naming_the_variable(
    env: dict[str, str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(["--data-dir", "d"], env)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "environment variable" in err


@pytest.mark.parametrize(
    "toml", ['port = "x"', "port = 1.5", "port = true", "port = [1]", 'no_balancer = "x"']
)
def test_bad_file_value_is_an_error_naming_the_file(
    toml: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(["--data-dir", "d"], toml=toml, tmp_path=tmp_path)
    err = capsys.readouterr().err
    assert "config file" in err and "bad value for" in err


def test_tls_client_auth_optional_is_refused_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(["--data-dir", "d", "--tls-client-auth", "optional"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'optional' is not supported" in err and "use none or require" in err


def test_unreadable_or_invalid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--data-dir", "d", "--config-file", str(tmp_path / "missing.toml")])
    assert "cannot read config file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--data-dir", "d"], toml="port = = 1", tmp_path=tmp_path)
    assert "not valid TOML" in capsys.readouterr().err


@pytest.mark.parametrize("module", [router_main, config_main, shard_main])
def test_help_lists_flags_env_and_file(
    module: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", ["prog"])
    with pytest.raises(SystemExit) as exc:
        module.parse_args(["--help"])  # type: ignore[attr-defined]
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("--host", "--port", "--health-port", "--log-level", "--config-file",
                 "--tls-cert", "--tls-key", "--tls-ca", "--tls-client-auth {none,require}"):
        assert flag in out
    assert "LAURADB_HEALTH_PORT" in out and "LAURADB_TLS_CERT" in out
    assert "LAURADB_PORT" in out and "LAURADB_CONFIG_FILE" in out and "TOML" in out
    assert "Precedence: command-line flags, then environment variables" in out


def test_real_parsers_take_required_values_from_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LAURADB_CONFIG", "cfg:27019")
    monkeypatch.setenv("LAURADB_SHARD_ID", "shard7")
    monkeypatch.setenv("LAURADB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LAURADB_LOG_LEVEL", "info")
    monkeypatch.setenv("LAURADB_ADVERTISE_HOST", "lauradb-shard7-0.lauradb-shard7")
    shard = shard_main.parse_args([])
    assert (shard.shard_id, shard.config, shard.data_dir) == ("shard7", "cfg:27019", str(tmp_path))
    assert shard.advertise_host == "lauradb-shard7-0.lauradb-shard7"
    assert shard.log_level == "info" and shard.port == 27018
    router = router_main.parse_args(["--port", "1234"])
    assert (router.config, router.port, router.log_level) == ("cfg:27019", 1234, "info")
    (tmp_path / "c.toml").write_text("heartbeat-timeout = 7\nno_balancer = true\n")
    monkeypatch.setenv("LAURADB_CONFIG_FILE", str(tmp_path / "c.toml"))
    config = config_main.parse_args([])
    assert (config.data_dir, config.heartbeat_timeout, config.no_balancer) == (
        str(tmp_path), 7.0, True
    )


def test_shard_config_address_from_env_is_validated(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAURADB_CONFIG", "no-port")
    with pytest.raises(SystemExit):
        shard_main.parse_args(["--shard-id", "s", "--data-dir", "d"])
    assert "LAURADB_CONFIG" in capsys.readouterr().err


def test_shard_advertise_host_default_and_override() -> None:
    from shard_stub.app import advertised_host

    assert advertised_host("10.0.0.5") == "10.0.0.5"
    assert advertised_host("0.0.0.0") not in ("0.0.0.0", "")
    assert advertised_host("0.0.0.0", "db-0.svc") == "db-0.svc"
    args = shard_main.parse_args(["--shard-id", "s", "--data-dir", "d", "--config", "c:1"])
    assert args.advertise_host is None
