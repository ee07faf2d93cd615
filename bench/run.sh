#!/usr/bin/env bash
# mcpgate benchmarks, one command: installs what it needs (wrk, nginx, haproxy, taskset
# from Debian's packages), builds the release binaries (mcpgate, and bench/tools: the
# pingora pass-through, the token generator, the cache filler) and the criterion bench,
# then runs bench/harness.py: correctness checks, every scenario interleaved, memory per
# cached token, micro-benchmarks. Writes bench/work/results.{md,json}; a full run also
# updates bench/results/latest.* and the results block of bench/README.md.
#
#   bench/run.sh                  full run (~14 min after the build)
#   bench/run.sh --smoke          every scenario for 1-2 s: exercises the checks quickly
#   bench/run.sh --wait-quiet 1200   wait up to 20 min for idle CPUs before timing
#   bench/run.sh --only plain jwt-cached --no-memory --no-micro
#
# Every process the run starts is stopped at the end, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work="$root/bench/work"

need=()
for tool in wrk:wrk nginx:nginx haproxy:haproxy taskset:util-linux python3:python3 \
            cmake:cmake cc:build-essential; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Our nginx and haproxy run from configs in bench/work on 127.0.0.1:181xx; the packaged
# system services (if the installation started them) use other ports and stay idle.

# One cargo invocation for the binaries and the criterion bench: one feature resolution,
# so no dependency is compiled twice (a separate `cargo bench` would rebuild most of them
# with the dev-dependencies' features: 3.5 more minutes on a fresh machine). The harness
# runs the bench executable this build reports.
echo "building release binaries (mcpgate, bench/tools) and the criterion bench"
artifacts=$(cargo build --release --locked -p mcpgate -p mcpgate-bench --bins --benches \
  --message-format=json-render-diagnostics)
MCPGATE_BENCH_MICRO=$(printf '%s\n' "$artifacts" | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "micro" and m.get("executable"):
        print(m["executable"])')
export MCPGATE_BENCH_MICRO

mkdir -p "$work"
pids_file="$work/pids"
harness_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$harness_pid" ] && kill -0 "$harness_pid" 2>/dev/null; then
    kill -TERM "$harness_pid" 2>/dev/null || true
    wait "$harness_pid" 2>/dev/null || true
  fi
  # Anything the harness started and did not stop (it was killed, say): by pid only.
  if [ -f "$pids_file" ]; then
    while read -r pid; do
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null || true
    done <"$pids_file"
    sleep 1
    while read -r pid; do
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    done <"$pids_file"
  fi
  exit $rc
}
trap cleanup EXIT INT TERM

python3 "$root/bench/harness.py" --work "$work" "$@" &
harness_pid=$!
wait "$harness_pid"
