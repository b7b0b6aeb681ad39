#!/usr/bin/env bash
# One command for the benchmark: tunneld vs direct TCP vs stunnel and HAProxy mTLS pairs,
# all on loopback, in one run. Prints a table with ratios. Run as root.
#   bench/run.sh [--quick] [--baseline OLD_TUNNELD_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# The build the packages ship (RelWithDebInfo: -O2, line tables). A Release
# (-O3) build does not even compile with warnings as errors: GCC 12 reports
# std::string copies as overlapping there (-Wrestrict, a known false positive).
bash scripts/build.sh >/dev/null
exec /usr/bin/python3 bench/run.py "$@"
