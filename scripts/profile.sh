#!/usr/bin/env bash
# Profiles the server under test while the benchmark runs, so a change to the hot paths starts
# from what the CPU really does (docs/benchmarks.md, "Where the time goes").
#
#   scripts/profile.sh [bench flags]          e.g. scripts/profile.sh --quick --only apply
#
# Runs scripts/bench.sh with those flags and attaches `perf record -e cpu-clock -g` (this VM
# has no hardware counters) to every `mqtt-tokend serve` the bench starts. For each server it
# writes target/profile/serve-<pid>.data and two reports beside it: serve-<pid>.self.txt (the
# hottest functions by their own time) and serve-<pid>.children.txt (by time including their
# callees, which shows whole paths such as the sled write or the HTTP/2 send). The release
# profile keeps line tables (`debug = 1` in Cargo.toml), so the frames carry names.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v perf >/dev/null 2>&1 || { echo "profile.sh: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
out=target/profile
mkdir -p "$out"

bash scripts/bench.sh "$@" &
bench=$!

declare -A watched=()
perfs=()
# The bench starts its servers one after another; attach to each as it appears.
while kill -0 "$bench" 2>/dev/null; do
  # Only this checkout's servers: other checkouts on the machine may be benchmarking too.
  for pid in $(pgrep -f "$PWD/target/release/mqtt-tokend serve" || true); do
    if [ -z "${watched[$pid]:-}" ]; then
      watched[$pid]=1
      perf record -q -e cpu-clock -g -p "$pid" -o "$out/serve-$pid.data" >/dev/null 2>&1 &
      perfs+=($!)
      echo "profile.sh: recording mqtt-tokend serve (pid $pid) into $out/serve-$pid.data" >&2
    fi
  done
  sleep 0.2
done
wait "$bench" || status=$?
# Each perf ends when its server exits; the bench stops every server before it ends.
for p in "${perfs[@]}"; do wait "$p" 2>/dev/null || true; done

for pid in "${!watched[@]}"; do
  data="$out/serve-$pid.data"
  [ -s "$data" ] || continue
  perf report -i "$data" --no-children --sort symbol --stdio 2>/dev/null | grep -v '^$' | head -120 >"$out/serve-$pid.self.txt" || true
  perf report -i "$data" --children --sort symbol --stdio -g none 2>/dev/null | grep -v '^$' | head -160 >"$out/serve-$pid.children.txt" || true
  echo "profile.sh: $out/serve-$pid.self.txt, $out/serve-$pid.children.txt" >&2
done
exit "${status:-0}"
