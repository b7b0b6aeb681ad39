#!/usr/bin/env bash
# Runs every test: GoogleTest unit tests (ctest) and the integration tests
# (real tunneld processes, real TLS clients, PostgreSQL 15 in network
# namespaces). Installs what it needs and builds first. As root nothing is
# skipped; as another user the tests that need root say so and skip.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash scripts/deps.sh; fi
bash scripts/build.sh
echo "== unit tests"
(cd build && ctest --output-on-failure -j2)
echo "== integration tests"
exec /usr/bin/python3 -m pytest -p no:cacheprovider -v tests/integration "$@"
