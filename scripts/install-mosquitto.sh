#!/usr/bin/env sh
# Installs Mosquitto 2.0, its plugin headers and its command-line clients (Debian/Ubuntu) for
# the end-to-end test tests/mosquitto.rs, the plugin in integrations/mosquitto and the README's
# Mosquitto demo (mosquitto_sub). Idempotent: does nothing when all three are present.
set -eu

if command -v mosquitto >/dev/null 2>&1 && [ -f /usr/include/mosquitto_plugin.h ] \
    && command -v mosquitto_sub >/dev/null 2>&1; then
    echo "mosquitto $(mosquitto -h 2>/dev/null | head -n 1 | awk '{print $3}'), headers and clients already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends mosquitto mosquitto-dev mosquitto-clients
for bin in mosquitto mosquitto_sub; do
    command -v "$bin" >/dev/null 2>&1 || { echo "install-mosquitto: $bin is still missing after apt-get install" >&2; exit 1; }
done
[ -f /usr/include/mosquitto_plugin.h ] || { echo "install-mosquitto: mosquitto_plugin.h is still missing after apt-get install" >&2; exit 1; }
