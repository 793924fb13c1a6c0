#!/usr/bin/env bash
# Real-client tests in Python: web3.py, eth-account and vyper against `tessera dev`
# (tests/rpc), or, with TESSERA_SUITE=tests/testnet, against a 4-validator network of
# `tessera run` processes.
#
#   [TESSERA_SUITE=tests/testnet] bash scripts/rpc-tests.sh [extra pytest args]
#
# Uses the binary at $TESSERA_BIN (default: ${CARGO_TARGET_DIR:-target}/debug/tessera under the
# repository root); it does not build it. The Python packages go into a virtualenv at
# ${TESSERA_VENV:-<repo>/.venv}, made with `python3 -m venv` when missing, and are (re)installed
# from tests/rpc/requirements.txt only when that file has changed since the last install.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

VENV="${TESSERA_VENV:-$REPO/.venv}"
REQS="$REPO/tests/rpc/requirements.txt"
PYTHON="${PYTHON:-python3}"

if [[ -z "${TESSERA_BIN:-}" ]]; then
    TESSERA_BIN="${CARGO_TARGET_DIR:-target}/debug/tessera"
fi
if [[ "$TESSERA_BIN" != /* ]]; then
    TESSERA_BIN="$REPO/$TESSERA_BIN"
fi
if [[ ! -x "$TESSERA_BIN" ]]; then
    echo "rpc-tests: no executable node binary at $TESSERA_BIN" >&2
    echo "rpc-tests: build it first (cargo build) or set TESSERA_BIN" >&2
    exit 1
fi
export TESSERA_BIN

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "rpc-tests: creating virtualenv $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi

# Re-install only when requirements.txt (or the venv's Python) changed.
STAMP="$VENV/.tessera-rpc-requirements.sha256"
WANT="$( { sha256sum "$REQS" | cut -d' ' -f1; "$VENV/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
    echo "rpc-tests: installing Python packages from tests/rpc/requirements.txt" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    echo "$WANT" > "$STAMP"
fi

export PYTHONDONTWRITEBYTECODE=1
exec "$VENV/bin/python" -m pytest -x -q -c tests/rpc/pytest.ini "${TESSERA_SUITE:-tests/rpc}" "$@"
