#!/usr/bin/env bash
# Install what building and testing medic needs on a fresh Debian machine with rustup, and say
# what it does: the wasm32-wasip2 target (rules), and Debian's collectd-core (types.db and a real
# collectd for the ingest tests), collectd-utils (collectdctl, collectd-nagios and collectd-tg,
# run against medic), mosquitto + mosquitto-clients (MQTT tests), openssl (the TLS test makes
# its own CA), chromium (the status page is tested in a real headless browser), prometheus
# (its promtool checks /metrics) and victoria-metrics (the http sink delivers to it), and from
# PyPI cryptography + paho-mqtt (a second signed-command sender, written without medic's code).
# Each step is skipped when already done, so it is cheap to call always.
set -euo pipefail

say() { echo "setup: $*" >&2; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    say "adding the Rust target wasm32-wasip2 (rules compile to it)"
    rustup target add wasm32-wasip2 >&2
fi

missing=()
for pkg in collectd-core collectd-utils mosquitto mosquitto-clients openssl chromium prometheus victoria-metrics; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { say "need root (or sudo) to install: ${missing[*]}"; exit 1; }
        sudo=(sudo)
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp)
    if ! { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq \
        --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        say "installing ${missing[*]} failed (apt's output above)"
        exit 1
    fi
    rm -f "$log"
fi

if ! python3 -c "import cryptography, paho.mqtt" 2>/dev/null; then
    say "installing Python's cryptography and paho-mqtt (the second signed-command sender)"
    python3 -m pip install -q --disable-pip-version-check cryptography paho-mqtt >&2
fi
