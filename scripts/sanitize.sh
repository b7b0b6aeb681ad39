#!/usr/bin/env bash
# The sanitizer and fuzzing stage of the test command:
#   1. clang-14 build with ASan+UBSan (+ libFuzzer coverage) in build-fuzz/:
#      the unit tests, the relay/rejection/admission integration tests against
#      that tunneld, and every fuzzer's corpus replayed plus FUZZ_SECONDS of fuzzing;
#   2. a ThreadSanitizer build in build-tsan/: the unit tests and the relay
#      integration tests against that tunneld.
# A sanitizer report anywhere (a daemon's log included) fails the stage.
set -euo pipefail
cd "$(dirname "$0")/.."
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp"

echo "== ASan+UBSan build (clang-14) [${SECONDS}s]"
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTUNNELD_FUZZ=ON \
  -DTUNNELD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j2 --target unit_tests tunneld fuzzers
echo "== unit tests under ASan+UBSan [${SECONDS}s]"
build-fuzz/tests/unit/unit_tests --gtest_brief=1
echo "== relay, rejection, admission, hardening and session integration tests under ASan+UBSan [${SECONDS}s]"
TUNNELD_BIN="$PWD/build-fuzz/tunneld" TUNNELD_SANITIZED=1 /usr/bin/python3 -m pytest -p no:cacheprovider -q \
  tests/integration/test_relay.py tests/integration/test_rejections.py tests/integration/test_services.py \
  tests/integration/test_lifecycle.py tests/integration/test_startup_and_check.py tests/integration/test_hardening.py tests/integration/test_admission.py \
  tests/integration/test_chain_and_sessions.py -k "not ipv6 and not group_readable"
echo "== routes (promotion, split brain, reads) under ASan+UBSan [${SECONDS}s]"
TUNNELD_BIN="$PWD/build-fuzz/tunneld" TUNNELD_SANITIZED=1 /usr/bin/python3 -m pytest -p no:cacheprovider -q \
  tests/integration/test_cluster.py -k "promotion or reads"
echo "== Patroni API parity (walsenders by peer, sync state in pongs, HAProxy) under ASan+UBSan [${SECONDS}s]"
TUNNELD_BIN="$PWD/build-fuzz/tunneld" TUNNELD_SANITIZED=1 /usr/bin/python3 -m pytest -p no:cacheprovider -q \
  tests/integration/test_patroni_api.py
# The test command replays every corpus and fuzzes briefly; long runs are local
# (FUZZ_SECONDS=600 bash scripts/fuzz.sh).
export FUZZ_SECONDS="${FUZZ_SECONDS:-5}"
echo "== fuzzers: corpus replay + ${FUZZ_SECONDS}s each [${SECONDS}s]"
bash scripts/fuzz.sh

echo "== TSan build [${SECONDS}s]"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTUNNELD_TSAN=ON -DTUNNELD_BENCH=OFF >/dev/null
cmake --build build-tsan -j2 --target unit_tests tunneld
echo "== unit tests under TSan [${SECONDS}s]"
build-tsan/tests/unit/unit_tests --gtest_brief=1
echo "== relay and route integration tests under TSan [${SECONDS}s]"
TUNNELD_BIN="$PWD/build-tsan/tunneld" TUNNELD_SANITIZED=1 /usr/bin/python3 -m pytest -p no:cacheprovider -q \
  tests/integration/test_relay.py tests/integration/test_cluster.py -k "not cluster or promotion"
