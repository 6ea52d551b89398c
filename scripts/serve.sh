#!/usr/bin/env bash
# Install yrelay into ./.venv (once) and run `yrelay serve` with any arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import relay, pycrdt, hypercorn" 2>/dev/null; then
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -e .
fi
exec .venv/bin/yrelay serve "$@"
