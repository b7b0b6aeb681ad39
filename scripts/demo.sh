#!/usr/bin/env bash
# The two-node demo: PostgreSQL 15 primary and standby, each on its own "host"
# (network namespace), replicating through a tunneld pair over mutual TLS.
# Run as root on Debian 12. Installs what it needs, builds, runs, cleans up.
#   scripts/demo.sh            run, print the summary, clean up
#   scripts/demo.sh --keep     ... and keep everything running until Ctrl-C
#   scripts/demo.sh --cluster  three nodes and an app host: a promotion under load
#                              followed through routes, with the measured switch times
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (network namespaces, the postgres user)" >&2; exit 1; }
bash scripts/deps.sh
bash scripts/build.sh
for a in "$@"; do
  [ "$a" = --cluster ] && exec /usr/bin/python3 scripts/demo_cluster.py "$@"
done
exec /usr/bin/python3 scripts/demo.py "$@"
