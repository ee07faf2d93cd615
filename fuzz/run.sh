#!/usr/bin/env bash
# Runs every fuzz target for a bounded time with libFuzzer (cargo-fuzz, nightly Rust).
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 10 s, every target)
# The test command runs it with 10 s per target; a campaign is the same command with a longer
# time (see fuzz/README.md). The committed corpus is read, never written: new inputs go to a
# scratch copy under fuzz/scratch/. Prints, per target, libFuzzer's execution count; exits
# non-zero on any crash or broken invariant (the input is kept in fuzz/artifacts/<target>/).
# Without a nightly toolchain it prints why and exits 0: the stable replay of every corpus
# file (`cargo test fuzzing::tests::fuzz_corpora_replay`) still runs in `cargo test`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
secs="${1:-10}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(credentials jwt dpop mcp_request list_filter path_route resource_uri config)
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: skipped: no nightly toolchain (cargo +nightly); the stable corpus replay runs in cargo test"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io"
  timeout -k 10 900 cargo install --locked cargo-fuzz
fi

# -O: optimized with debug assertions, the build the campaigns use.
# The instrumented build is bounded too (MCPGATE_FUZZ_BUILD_SECONDS, default 1200): past it
# the run is skipped with that reason; a build that fails is a failure.
budget="${MCPGATE_FUZZ_BUILD_SECONDS:-1200}"
brc=0
timeout -k 10 "$budget" nice -n 5 cargo +nightly fuzz build -O >"$here/build.log" 2>&1 || brc=$?
if [ "$brc" -eq 124 ] || [ "$brc" -eq 137 ]; then
  echo "fuzz: skipped: the instrumented build did not finish within $budget s (fuzz/build.log)"
  exit 0
elif [ "$brc" -ne 0 ]; then
  tail -40 "$here/build.log"
  echo "fuzz: the targets do not build"
  exit 1
fi
rc=0
summary=()
for t in "${targets[@]}"; do
  work="$here/scratch/$t"
  rm -rf "$work"
  mkdir -p "$work" "$here/artifacts/$t"
  log="$here/scratch/$t.log"
  # -rss_limit_mb: a leak or a blow-up is a finding too; -timeout: one input over 10 s is a hang.
  if timeout -k 10 $((secs + 120)) cargo +nightly fuzz run -O "$t" "$work" "$here/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    rc=1
    tail -40 "$log"
  fi
  runs="$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1 | awk '{print $2 " runs in " $5 " s"}' || true)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)"
  line="$t: $status, ${runs:-no count} (${cov:-cov ?}, corpus $(ls "$work" | wc -l) new inputs)"
  echo "fuzz: $line"
  summary+=("$line")
done
printf 'fuzz summary (%s s per target):\n' "$secs"
printf '  %s\n' "${summary[@]}"
exit $rc
