#!/usr/bin/env bash
# Build medic and the example rules, then run medic on conf/medic.toml. The first run compiles
# wasmtime and takes minutes on two cores; later runs start in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "run-demo: $*" >&2; }
scripts/setup.sh
say "building the example rules (wasm32-wasip2; minutes on the first run)"
scripts/build-rules.sh >/dev/null
# conf/medic.toml names target/demo-rules and target/demo-state; builds go to $CARGO_TARGET_DIR.
built="${CARGO_TARGET_DIR:-target}"
mkdir -p target/demo-rules target/demo-state
cp "$built/rules/threshold.wasm" "$built/rules/memory-free.wasm" target/demo-rules/
say "building medic (release; the first build compiles wasmtime, several minutes)"
cargo build --release -p medic
say "starting medic on conf/medic.toml (Ctrl-C stops it)"
exec "$built/release/medic" run --config conf/medic.toml "$@"
