#!/usr/bin/env sh
# Installs Mosquitto 2.0 and its plugin headers (Debian/Ubuntu) for the end-to-end test
# tests/mosquitto.rs and the plugin in integrations/mosquitto. Idempotent: does nothing when
# both are present.
set -eu

if command -v mosquitto >/dev/null 2>&1 && [ -f /usr/include/mosquitto_plugin.h ]; then
    echo "mosquitto $(mosquitto -h 2>/dev/null | head -n 1 | awk '{print $3}') and headers already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends mosquitto mosquitto-dev
mosquitto -h 2>/dev/null | head -n 1 || true
