#!/usr/bin/env bash
# The test command of the README: installs what is missing, builds, runs every tap test,
# and ends with the line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
mapfile -t files < <(find dist/test -name '*.test.js' | sort)
if [ $# -gt 0 ]; then files=("$@"); fi
out=$(mktemp)
node_modules/.bin/tap --reporter=tap --disable-coverage --allow-empty-coverage \
  --node-arg=--enable-source-maps "${files[@]}" | tee "$out"
node scripts/tap-summary.mjs "$out"
rc=$?
rm -f "$out"
exit $rc
