#!/usr/bin/env bash
# The one test command: install what is missing (scripts/setup.sh), build the rules (wasm) and
# the daemon, then run every test, the layering test (tests/architecture.rs) included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "test: building the rules (wasm32-wasip2)" >&2
scripts/build-rules.sh
echo "test: building medic" >&2
cargo build -p medic --bin medic
cargo test --workspace "$@"
