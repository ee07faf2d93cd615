#!/usr/bin/env bash
# Packaging checks: Helm chart (lint, render, Kubernetes schema validation, `mcpgate check` of
# the rendered config), the monitoring kit (Grafana dashboard and Prometheus rules: promtool,
# metric names against a live scrape of the gateway) and static Dockerfile checks. No helm
# binary, no Docker engine.
#
#   tests/packaging/run.sh            # uses target/debug/mcpgate (run `cargo build` first)
#   MCPGATE_BIN=/path/to/mcpgate tests/packaging/run.sh
#   KUBE_VERSION=1.30 tests/packaging/run.sh
#
# The first run creates tests/packaging/.venv and installs the pinned tools from
# requirements.txt (about 350 MB: the Helm library and the Kubernetes schemas).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
  if ! "$python" -m venv "$venv"; then
    rm -rf "$venv"
    echo "run.sh: cannot create a Python venv (on Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  fi
fi
# Reinstall only when requirements.txt changed since the last successful install.
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" > "$stamp"
fi

# promtool unit-tests the Prometheus rules: from PATH, else from tests/packaging/.tools (taken
# out of Debian's prometheus package when missing; the rule checks fail without it).
"$here/promtool.sh" || true

export MCPGATE_BIN="${MCPGATE_BIN:-$repo/target/debug/mcpgate}"
cd "$repo"
exec "$venv/bin/python" "$here/check_chart.py" "$@"
