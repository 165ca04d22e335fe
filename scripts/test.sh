#!/usr/bin/env bash
# The one test command: build the rules (wasm) and the daemon, then run every test.
# Needs: the wasm32-wasip2 target, and Debian's collectd-core and mosquitto (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-rules.sh
cargo build -p medic --bin medic
cargo test --workspace "$@"
