#!/usr/bin/env bash
# Configures and builds tunneld (and its unit tests and benchmark tools) in build/.
# Warnings are errors here (TUNNELD_WERROR): the tree builds without any.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" -DTUNNELD_WERROR=ON >/dev/null
cmake --build build -j2
