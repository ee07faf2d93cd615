#!/usr/bin/env bash
# Creates tests/gateway/.venv with the pinned packages of tests/gateway/requirements.txt
# (reinstalled only when that file changes). The integration tests use its python for the
# Flask upstream; MCPGATE_TEST_PYTHON overrides it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
  if ! "$python" -m venv "$venv"; then
    rm -rf "$venv"
    echo "venv.sh: cannot create a Python venv (on Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  fi
fi
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" > "$stamp"
fi
"$venv/bin/python" -c 'import flask, jsonschema, yaml'
