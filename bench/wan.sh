#!/usr/bin/env bash
# One command for the WAN benchmark over a lab WAN (20 and 100 ms round trip, 0% and
# 0.5% loss each way), direct TCP vs stunnel vs tunneld, interleaved, one table each.
# Run as root. Each mode takes under 15 minutes (after the build).
#   bench/wan.sh [--quick] [--rounds N] [--seconds S]   sync-commit latency (~6 min)
#   bench/wan.sh --bulk [--scale N] [--away S]          pg_basebackup and catch-up (~14 min)
#   bench/wan.sh --keepalive MINUTES                    the shipped keepalive under 1% loss, then a partition
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD_TYPE=Release bash scripts/build.sh >/dev/null
exec /usr/bin/python3 bench/wan.py "$@"
