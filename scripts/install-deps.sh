#!/usr/bin/env bash
# Installs everything the build and the tests need on a fresh Debian 12 machine. Idempotent.
# Debian packages through apt-get; npm packages into tools/node/node_modules (ignored by git).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

apt_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libabsl-dev nlohmann-json3-dev libpcre2-dev libopenblas-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libhiredis-dev prometheus-cpp-dev redis-server redis-tools
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-numpy clang-format
  libboost-dev
  # the fuzz preset: clang 14 and its compiler-rt (libFuzzer, ASan, UBSan runtimes)
  clang-14 libclang-rt-14-dev
  # operations checks (promtool, a real Prometheus, YAML lint), the browser (Chromium and Firefox)
  # and terminal UI tests
  prometheus yamllint chromium firefox-esr tmux
)
# Node.js: the image ships Node 20 with npm 11 (nodesource); Debian's nodejs conflicts with that npm,
# so Debian's packages are used only when no node is present.
command -v node >/dev/null 2>&1 || apt_packages+=(nodejs npm)

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    --no-install-recommends "${missing[@]}"
fi

# npm tools (reference tokenizer etc.), pinned by tools/node/package-lock.json.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "install-deps: node/npm missing after apt" >&2; exit 1
fi
cd "$root/tools/node"
if [ ! -f node_modules/.moeserve-installed ] || [ package-lock.json -nt node_modules/.moeserve-installed ]; then
  # The lock file pins every package, @bufbuild/buf's optional binaries for other platforms
  # included (the registry answered 404 for those until 2026-11-24, when a lock without them made
  # npm 11's `npm ci` refuse it). `npm install` stays as the fallback: it installs the same locked
  # versions when `npm ci` refuses a lock.
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error 2>/dev/null || npm install --no-audit --no-fund --loglevel=error
  else
    npm install --no-audit --no-fund --loglevel=error
  fi
  touch node_modules/.moeserve-installed
fi
echo "install-deps: ok"
