#!/usr/bin/env bash
# Runs every test: GoogleTest unit tests (ctest), the integration tests (real
# tunneld processes, real TLS clients, PostgreSQL 15 in network namespaces, the
# packaged unit under a booted systemd), then the sanitizer and fuzzing stage
# (scripts/sanitize.sh: ASan+UBSan, TSan, libFuzzer corpus replay). Installs what
# it needs and builds first. As root nothing is skipped; as another user the
# tests that need root say so and skip. Arguments go to the integration pytest
# run; TUNNELD_SKIP_SANITIZE=1 leaves the sanitizer stage out (local iteration).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash scripts/deps.sh; fi
started=$(date +%s)
echo "== format (clang-format-14 --dry-run -Werror; fix with scripts/format.sh) [${SECONDS}s]"
git ls-files '*.cpp' '*.hpp' | xargs clang-format-14 --dry-run -Werror
echo "== build [${SECONDS}s]"
bash scripts/build.sh
echo "== layers (scripts/check_layers.py: includes and links as README.md's code layout says) [${SECONDS}s]"
python3 scripts/check_layers.py build
echo "== unit tests [${SECONDS}s]"
(cd build && ctest --output-on-failure -j2)
echo "== integration tests [${SECONDS}s]"
/usr/bin/python3 -m pytest -p no:cacheprovider -v --durations=25 tests/integration "$@"
if [ "${TUNNELD_SKIP_SANITIZE:-0}" != 1 ]; then
  bash scripts/sanitize.sh
fi
echo "== all stages passed in $(( $(date +%s) - started )) s"
