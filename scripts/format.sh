#!/usr/bin/env bash
# Formats every C++ file in place with the tree's .clang-format (CI checks it:
# scripts/test.sh fails on any difference).
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files --cached --others --exclude-standard '*.cpp' '*.hpp' | xargs clang-format-14 -i
