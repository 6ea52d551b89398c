#!/usr/bin/env bash
# Install yrelay with its test dependencies into ./.venv, install the npm
# clients the interop tests drive, and run the whole test suite with pytest.
# Arguments are passed to pytest, for example `scripts/test.sh -k awareness`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/pip install --quiet -e '.[test]'
if command -v npm >/dev/null 2>&1; then
    (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
else
    echo "npm not found: the interop tests with real Yjs clients will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
