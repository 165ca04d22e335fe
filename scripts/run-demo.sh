#!/usr/bin/env bash
# Build medic and the example rules, then run medic on conf/medic.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
scripts/build-rules.sh >/dev/null
mkdir -p target/demo-rules target/demo-state
cp target/rules/threshold.wasm target/rules/memory-free.wasm target/demo-rules/
cargo build --release -p medic
exec target/release/medic run --config conf/medic.toml "$@"
