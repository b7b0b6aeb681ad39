#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, ASan+UBSan) in build-fuzz/, replays
# each seed corpus, then fuzzes each target for FUZZ_SECONDS (default 20; CI)
# into a scratch copy of its corpus. Exits non-zero on any crash, leak or UB.
# A long local run: FUZZ_SECONDS=600 bash scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTUNNELD_FUZZ=ON \
  -DTUNNELD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j2 --target fuzzers
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
for target in fuzz_config fuzz_probe fuzz_http fuzz_pem fuzz_nft_events; do
  seeds="tests/fuzz/corpus/$target"
  echo "== $target: replay $(ls "$seeds" | wc -l) seed(s), then fuzz ${seconds}s"
  "build-fuzz/tests/fuzz/$target" -runs=0 "$seeds" 2>"$scratch/$target.replay" || {
    cat "$scratch/$target.replay"; exit 1; }
  mkdir -p "$scratch/$target"
  cp "$seeds"/* "$scratch/$target/"
  if ! "build-fuzz/tests/fuzz/$target" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="$scratch/$target-" -print_final_stats=1 "$scratch/$target" 2>"$scratch/$target.log"; then
    tail -60 "$scratch/$target.log"
    echo "fuzz: $target found a problem; the input is in $scratch (kept)"; trap - EXIT; exit 1
  fi
  grep -E "stat::number_of_executed_units|cov:" "$scratch/$target.log" | tail -2 | tr '\n' ' '; echo
done
echo "fuzz: 5 targets, no crash"
