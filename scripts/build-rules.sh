#!/usr/bin/env bash
# Build every rule (examples and test-only ones) for wasm32-wasip2 and collect the components in
# $CARGO_TARGET_DIR/rules/ (target/rules/ by default): <name>.wasm, plus counter-v2.wasm (the same rule, another version) for the
# hot-reload tests.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
out="$target/rules"
mkdir -p "$out"
wasm="$target/wasm32-wasip2/wasm-rules"
build() { cargo build --quiet --profile wasm-rules --target wasm32-wasip2 "$@"; }

build -p counter --features v2
cp "$wasm/counter.wasm" "$out/counter-v2.wasm"
build -p threshold -p memory-free -p mqtt-watchdog -p service-health -p disk-fill -p influx-forward -p notify-webhook -p lcm-lua -p counter -p faulty -p detectors
for r in threshold memory_free mqtt_watchdog service_health disk_fill influx_forward notify_webhook lcm_lua counter faulty detectors; do
    cp "$wasm/$r.wasm" "$out/${r//_/-}.wasm"
done
ls -l "$out"
