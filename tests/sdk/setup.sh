#!/usr/bin/env bash
# Creates (idempotently) the Python virtualenv the SDK compatibility suite runs in:
# target/sdk-venv with the official Alibaba Cloud SDKs at pinned versions.
# Usage: tests/sdk/setup.sh [venv-dir]   (default: <repo>/target/sdk-venv)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$repo/target/sdk-venv}"
python="${PYTHON:-python3}"
stamp="$venv/.mqtt-tokend-sdk-ready"
requirements="$here/requirements.txt"

if [[ -f "$stamp" ]] && cmp -s "$stamp" "$requirements"; then
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$requirements"
cp "$requirements" "$stamp"
