#!/usr/bin/env bash
# Fuzz everything medic parses from outside, each target seeded from runtime/fuzz/seeds/, for
# RUNS executions (default 10 000 000) or MAX_SECONDS (default 1800) each, whichever ends first.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). A crash stops the
# script; its input is in runtime/fuzz/artifacts/<target>/ — make it a regression test.
# Usage: scripts/fuzz.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../runtime"
runs=${RUNS:-10000000}
seconds=${MAX_SECONDS:-1800}
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(decode putval unixsock lcm signed config types_db)
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "fuzz: $t ($runs runs or ${seconds}s)" >&2
    log="fuzz/$t.log"
    if ! cargo +nightly fuzz build -O "$t" >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz: $t does not build (see $log)" >&2
        exit 2
    fi
    if ! cargo +nightly fuzz run -O "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -runs="$runs" -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz: $t found a crash (input in runtime/fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs)" "$log"
done
