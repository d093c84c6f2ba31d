#!/usr/bin/env bash
# Builds every native addon of meshid (each folder under agent/, bpf/ or server/ with a binding.gyp)
# with npm's own node-gyp, against this Node's headers. Skips an addon already built
# from sources no newer than its .node file.
set -euo pipefail
cd "$(dirname "$0")/.."
gyp="$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js"
nodedir="$(npm config get nodedir 2>/dev/null || true)"
while IFS= read -r gypfile; do
  dir=$(dirname "$gypfile")
  out=$(find "$dir/build/Release" -maxdepth 1 -name '*.node' 2>/dev/null | head -1 || true)
  if [ -n "$out" ] && [ -z "$(find "$dir" -path "$dir/build" -prune -o -newer "$out" -type f -print | head -1)" ]; then
    continue
  fi
  echo "build-native: $dir" >&2
  (cd "$dir" && node "$gyp" rebuild --release ${nodedir:+--nodedir="$nodedir"} >/dev/null)
done < <(find agent bpf server -name binding.gyp -not -path '*/node_modules/*' 2>/dev/null)
