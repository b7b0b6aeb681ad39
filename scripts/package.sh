#!/usr/bin/env bash
# Builds tunneld (the same build the tests use) and makes both packages from it:
#   dist/tunneld_<version>_<arch>.deb  and  dist/tunneld-<version>.<arch>.rpm
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash scripts/deps.sh; fi
bash scripts/build.sh
rm -rf dist
(cd build && cpack -G "DEB;RPM" -B "$PWD/../dist" >/dev/null)
rm -rf dist/_CPack_Packages
ls -1 dist/*.deb dist/*.rpm
