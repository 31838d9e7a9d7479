#!/usr/bin/env bash
# Runs the benchmark (benches/tokend/) side by side with etcd and prints a markdown table.
#
#   scripts/bench.sh [--quick] [--only NAME[,NAME...]] [--big] [--devices N]
#   scripts/bench.sh --store etcd [--replicas 1,3]   # the servers store in this etcd
#   (every flag goes to the bench: `cargo bench --bench tokend -- --help` lists them)
#
# Installs etcd (Debian's etcd-server) if it is missing, starts it on loopback with a temporary
# data directory and free ports, runs `cargo bench --bench tokend` with ETCD_ENDPOINT set, stops
# etcd and prints the table (also saved to target/bench-results.md). With --store etcd the
# mqtt-tokend replicas store in that same etcd (a fresh key prefix per replica set), so their
# rows sit beside the raw etcd Range and Put rows of the backend they depend on.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v etcd >/dev/null 2>&1; then
  echo "installing etcd-server ..." >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y etcd-server >&2 || { $SUDO apt-get update >&2 && $SUDO apt-get install -y etcd-server >&2; }
fi

# 10,000 watch streams need file descriptors on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -n 65536 2>/dev/null || true

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

ETCD_DIR="$(mktemp -d)"
CLIENT_PORT="$(free_port)"
PEER_PORT="$(free_port)"
while [ "$PEER_PORT" = "$CLIENT_PORT" ]; do PEER_PORT="$(free_port)"; done

etcd --name bench --data-dir "$ETCD_DIR" \
  --listen-client-urls "http://127.0.0.1:$CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "bench=http://127.0.0.1:$PEER_PORT" --log-level warn \
  >"$ETCD_DIR.log" 2>&1 &
ETCD_PID=$!
cleanup() {
  kill "$ETCD_PID" 2>/dev/null || true
  wait "$ETCD_PID" 2>/dev/null || true
  rm -rf "$ETCD_DIR" "$ETCD_DIR.log"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$CLIENT_PORT/health" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$CLIENT_PORT/health" >/dev/null || { echo "etcd did not start:" >&2; cat "$ETCD_DIR.log" >&2; exit 1; }
echo "etcd $(etcd --version | head -1 | awk '{print $3}') on 127.0.0.1:$CLIENT_PORT (data in $ETCD_DIR)" >&2

mkdir -p target
ETCD_ENDPOINT="127.0.0.1:$CLIENT_PORT" ETCD_PID="$ETCD_PID" cargo bench --bench tokend -- "$@" | tee target/bench-results.md
