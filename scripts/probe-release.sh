#!/usr/bin/env bash
# The hostile-input and fault tests (and every other real-part test) against a release build of
# medic, as an attacker or an unlucky operator would meet it: each sends the bad input or injects
# the fault into the running daemon and then shows values and commands still served.
# Usage: scripts/probe-release.sh [TEST...]   (default: hostile spine mqtt collectd)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-rules.sh
cargo build --release -p medic --bin medic
tests=("$@")
[ "${#tests[@]}" -gt 0 ] || tests=(hostile spine mqtt collectd)
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
MEDIC_BIN="$target/release/medic" cargo test -p medic-integration "${args[@]}"
