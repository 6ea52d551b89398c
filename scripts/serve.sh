#!/usr/bin/env bash
# Install yrelay into .venv beside this repository (once) and run
# `yrelay serve` with any arguments given. Relative paths in the arguments,
# such as --data-dir, are taken from the folder you run this from.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-python3}
if [ ! -x "$repo/.venv/bin/python" ]; then
    "$PYTHON" -m venv "$repo/.venv"
fi
if ! "$repo/.venv/bin/python" -c "import relay, auth, pycrdt, hypercorn, nats, pymongo, joserfc, authlib" 2>/dev/null; then
    "$repo/.venv/bin/pip" install --quiet -e "$repo"
fi
exec "$repo/.venv/bin/yrelay" serve "$@"
