#!/usr/bin/env bash
# The soak (bench/soak.py): builds the release binary, then runs a bounded mixed load for
# 10 minutes (or SECONDS given) on loopback and writes bench/work/soak.json. Not part of the
# test command. Results of a run are in bench/README.md ("Soak").
#   bench/soak.sh [SECONDS] [soak.py options, e.g. --caches 5000,20000]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import cryptography' 2>/dev/null || {
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq python3-cryptography
}
cargo build --release --locked --bin mcpgate
mkdir -p bench/work
secs="${1:-600}"
shift || true
timeout -k 30 $(( secs + 120 )) \
  python3 bench/soak.py --seconds "$secs" --bin target/release/mcpgate --out bench/work/soak.json "$@"
