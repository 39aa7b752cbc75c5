#!/usr/bin/env bash
# Installs dependencies, builds, makes the embedded default model (preset tiny, seed 0) and runs
# it: `moeserve generate` on a chat prompt. Extra arguments go to `moeserve generate`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/install-deps.sh
cmake --preset release
cmake --build --preset release -j "$(nproc)"
bin=build/release/bin/moeserve
model=models/tiny
if [ ! -f "$model/config.json" ]; then
  "$bin" mkmodel --out "$model" --preset tiny --seed 0
fi
if [ $# -eq 0 ]; then
  set -- --prompt "Why is the sky blue?" --chat --max-new-tokens 48
fi
"$bin" generate --model "$model" "$@"
