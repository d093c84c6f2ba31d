#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and brings up the demo.
#   npm run demo            bring it up
#   npm run demo -- down    remove everything it made
#   npm run demo -- status  show it
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec node bin/meshid.js demo "${1:-up}" "${@:2}"
