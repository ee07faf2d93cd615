#!/usr/bin/env bash
# Makes promtool available to tests/packaging (unit tests of the Prometheus rules) when it is
# not on PATH: takes it out of Debian's `prometheus` package into tests/packaging/.tools/,
# without installing the package (which would also install, enable and, on a machine running
# systemd, start a Prometheus server). Quiet unless it fails; bounded in time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$here/.tools"
if command -v promtool >/dev/null || [[ -x "$tools/promtool" ]]; then
  exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  echo "promtool.sh: no apt-get/dpkg-deb here; install promtool (Prometheus) yourself" >&2
  exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! timeout 300 apt-get download -qq prometheus >/dev/null 2>&1; then
  # The package lists may be missing or stale: refresh them (as root) and try once more.
  if [[ "$(id -u)" -eq 0 ]]; then
    timeout 300 apt-get update -qq >/dev/null 2>&1 || true
  fi
  if ! timeout 300 apt-get download -qq prometheus >/dev/null 2>&1; then
    echo "promtool.sh: cannot download Debian's prometheus package (apt-get download prometheus)" >&2
    exit 1
  fi
fi
dpkg-deb -x prometheus_*.deb x
mkdir -p "$tools"
install -m 0755 x/usr/bin/promtool "$tools/promtool.tmp"
mv "$tools/promtool.tmp" "$tools/promtool"
