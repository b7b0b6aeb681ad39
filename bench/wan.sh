#!/usr/bin/env bash
# One command for the WAN benchmark: synchronous commit latency over a lab WAN
# (20 and 100 ms round trip, 0% and 0.5% loss each way) by direct TCP, stunnel and
# tunneld, interleaved, in one run. Prints one table. Run as root.
#   bench/wan.sh [--quick] [--rounds N] [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD_TYPE=Release bash scripts/build.sh >/dev/null
exec /usr/bin/python3 bench/wan.py "$@"
