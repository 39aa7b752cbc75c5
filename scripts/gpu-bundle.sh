#!/usr/bin/env bash
# Packs what a GPU run needs into .gpu-bundle/ (ignored by git) for the device machine, which has
# the CUDA runtime, cuBLAS, NCCL, libc and libstdc++ but no Debian packages (TOOLING.md): the
# gpu-labelled test binaries, the benchmark, and the Debian shared libraries they link.
#   scripts/gpu-bundle.sh [BUILD_DIR]      (default build/ci, which compiles CUDA when nvcc is here)
# Then, on the GPU machine, from the repository root:
#   bash .gpu-bundle/run.sh [bench]        (test logs, and bench JSON, go to $OUT or .gpu-bundle/out)
# The bench writes its random checkpoints to tmpfs (MODELS_DIR, default /dev/shm/moeserve-models):
# writing v2-lite's 31 GB to the GPU machine's disk took most of a 10-minute call, to tmpfs ~1.
# MOESERVE_CUDA_PROFILE=1 adds the CUDA backend's per-op times to bench.err.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build/ci}"
targets=(backend_parity_test backend_model_gpu_test nccl_transport_test worker_test moeserve-bench-engine)
cmake --build "$build" -j "${MOESERVE_JOBS:-$(nproc)}" --target "${targets[@]}"
out="$root/.gpu-bundle"
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
for t in "${targets[@]}"; do
  cp "$build/bin/$t" "$out/bin/"
  # Libraries the GPU machine has itself are left out: the C and C++ runtimes and CUDA's own.
  ldd "$build/bin/$t" | awk '/=> \// {print $3}' |
    grep -Ev '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|ld-linux[^/]*|libcuda|libcudart|libcublas|libcublasLt|libnccl)\.so' |
    while read -r lib; do cp -Ln "$lib" "$out/lib/" 2>/dev/null || true; done
done
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the GPU checks (and with `bench`, the GPU benchmark); written by scripts/gpu-bundle.sh.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
logs="${OUT:-$here/out}"
mkdir -p "$logs"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi -L || true
status=0
for t in backend_parity_test backend_model_gpu_test nccl_transport_test; do
  "$here/bin/$t" --gtest_color=no >"$logs/$t.txt" 2>&1
  rc=$?
  echo "$t: exit $rc; $(grep -E '^\[  (PASSED  |FAILED  |SKIPPED ) *\] [0-9]+ tests?' "$logs/$t.txt" | tr '\n' ' ')"
  grep -E 'Failure|error|dlogit' "$logs/$t.txt" | head -20
  [ $rc -eq 0 ] || status=1
done
# A worker whose steps run on the GPU, alone and with its experts on two shards over gRPC, and
# prefill and decode workers over bf16 latent caches.
MOESERVE_TEST_BACKEND=cuda "$here/bin/worker_test" --gtest_color=no \
  --gtest_filter='*OnABackend*:*Bf16Cache*' >"$logs/worker_test.txt" 2>&1
rc=$?
echo "worker_test (cuda): exit $rc; $(grep -E '^\[  (PASSED  |FAILED  ) *\]' "$logs/worker_test.txt" | tr '\n' ' ')"
grep -E 'Failure|Expected|Which is' "$logs/worker_test.txt" | head -20
[ $rc -eq 0 ] || status=1
if [ "${1:-}" = bench ]; then
  "$here/bin/moeserve-bench-engine" --backend cuda --presets "${PRESETS:-v2-lite}" \
    --models-dir "${MODELS_DIR:-/dev/shm/moeserve-models}" >"$logs/bench.json" 2>"$logs/bench.err"
  echo "bench: exit $?"; tail -c 4000 "$logs/bench.json"
fi
exit $status
RUN
chmod +x "$out/run.sh"
du -sh "$out"
