#!/usr/bin/env bash
# Installs what meshid needs on a fresh Debian 12 machine (as root) and builds it.
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build chatter (apt, npm, node-gyp, make) goes to a log file, shown only when a step fails.
mkdir -p build
log=build/setup.log
: > "$log"
quiet() {
  if ! "$@" >>"$log" 2>&1; then
    echo "setup: '$*' failed; the end of $log:" >&2
    tail -n 60 "$log" >&2
    exit 1
  fi
}

need_debs=()
command -v clang >/dev/null || need_debs+=(clang llvm)
command -v bpftool >/dev/null || need_debs+=(bpftool)
[ -e /usr/include/bpf/bpf_helpers.h ] || need_debs+=(libbpf-dev)
command -v wireguard-go >/dev/null || need_debs+=(wireguard-go)
command -v wg >/dev/null || need_debs+=(wireguard-tools)
command -v ip >/dev/null || need_debs+=(iproute2)
command -v iperf3 >/dev/null || need_debs+=(iperf3)
command -v tcpdump >/dev/null || need_debs+=(tcpdump)
command -v openssl >/dev/null || need_debs+=(openssl)
command -v kubectl >/dev/null || need_debs+=(kubernetes-client)
command -v make >/dev/null || need_debs+=(make)
# the web UI's end-to-end test drives Debian's Chromium (playwright-core, never a downloaded browser)
command -v chromium >/dev/null || need_debs+=(chromium)
# PostgreSQL for several servers on one database; tests start clusters of their own (initdb, pg_ctl)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_debs+=(postgresql)
command -v g++ >/dev/null || need_debs+=(g++)
# a second gRPC implementation (C-core, as py-spiffe uses) for the Workload API interop test
/usr/bin/python3 -c 'import grpc' 2>/dev/null || need_debs+=(python3-grpcio)
/usr/bin/python3 -c 'import google.protobuf' 2>/dev/null || need_debs+=(python3-protobuf)
command -v protoc >/dev/null || need_debs+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/struct.proto ] || need_debs+=(libprotobuf-dev)
# and grpc-go (go-spiffe's stack), built in GOPATH mode from Debian's sources
command -v go >/dev/null || need_debs+=(golang-go)
[ -d /usr/share/gocode/src/google.golang.org/grpc ] || need_debs+=(golang-google-grpc-dev)
[ -d /usr/share/gocode/src/google.golang.org/protobuf/types/dynamicpb ] || need_debs+=(golang-google-protobuf-dev)
if [ ${#need_debs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${need_debs[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "setup: installing ${need_debs[*]}" >&2
  quiet apt-get update -qq
  quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_debs[@]}"
fi

# bpffs for pinned maps
if [ "$(id -u)" -eq 0 ] && ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
  mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
fi

# npm packages: (re)install when node_modules is missing or older than the lock file
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  quiet npm ci --no-audit --no-fund --loglevel=error
fi
# native modules must load after a clean install
node -e "new (require('better-sqlite3'))(':memory:').prepare('select 1').get()" >>"$log" 2>&1 \
  || { echo "setup: better-sqlite3 did not load; rebuilding" >&2; quiet npm rebuild better-sqlite3; }

if [ -f Makefile ]; then quiet make -s all; fi
npx tsc -p tsconfig.json
npx tsc -p ui/tsconfig.json
node scripts/build-ui.mjs
node scripts/prune-dist.mjs

# The three commands on the PATH, as links to this checkout (root only: /usr/local/bin).
if [ "$(id -u)" -eq 0 ] && [ -d /usr/local/bin ] && [ -w /usr/local/bin ]; then
  linked=()
  for cmd in meshid meshid-server meshid-agent; do
    if [ "$(readlink "/usr/local/bin/$cmd" 2>/dev/null)" != "$PWD/bin/$cmd.js" ]; then
      ln -sfn "$PWD/bin/$cmd.js" "/usr/local/bin/$cmd"
      linked+=("$cmd")
    fi
  done
  if [ ${#linked[@]} -gt 0 ]; then echo "setup: ${linked[*]} now on the PATH (links in /usr/local/bin to $PWD/bin)" >&2; fi
fi
