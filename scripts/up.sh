#!/usr/bin/env bash
# Installs dependencies, builds, and starts the whole cluster on loopback with the embedded default
# model (made on first use): a private redis-server, the KV-cache service, an expert shard, prefill
# and decode workers, the router and the OpenAI-compatible gateway on http://127.0.0.1:8000/v1.
# Ctrl-C stops every process. Extra arguments go to `moeserve up` (e.g. --port 9000 --decode 2).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# ccache hits across checkouts in different folders (paths below the root are made relative).
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1

scripts/install-deps.sh
cmake --preset release
# Only what `moeserve up` starts (and the moeserve tool itself): the tests and benchmarks would
# more than double a first start on a small machine (`cmake --build --preset release` builds all).
cmake --build --preset release -j "$(nproc)" --target moeserve moeserve-gateway moeserve-router \
  moeserve-worker moeserve-expert-shard moeserve-kvcache
exec build/release/bin/moeserve up --model models/tiny --shards 1 "$@"
