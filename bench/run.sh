#!/usr/bin/env bash
# One command for the benchmark: tunneld vs direct TCP vs stunnel and HAProxy mTLS pairs,
# all on loopback, in one run. Prints a table with ratios. Run as root.
#   bench/run.sh [--quick] [--baseline OLD_TUNNELD_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD_TYPE=Release bash scripts/build.sh >/dev/null
exec /usr/bin/python3 bench/run.py "$@"
