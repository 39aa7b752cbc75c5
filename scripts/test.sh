#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test: the warnings-as-errors release build with
# all CPU tests (unit + integration), then the AddressSanitizer/UBSan build with the unit tests,
# then the ThreadSanitizer build with the tests of the concurrent services (label tsan), then the
# libFuzzer targets (clang, fuzz preset), each for a bounded time over its seed corpus.
# This is exactly what CI runs (.ci/run calls this script).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# ccache hits across checkouts in different folders (paths below the root are made relative).
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
jobs="${MOESERVE_JOBS:-$(nproc)}"

scripts/install-deps.sh

echo "== build (ci: Release, -Werror) =="
cmake --preset ci
cmake --build --preset ci -j "$jobs"
echo "== tests (ci) =="
# --repeat until-pass:3 retries a failed test twice: the sanitizer runtime has been seen to deadlock
# while reporting an intermittent double free inside gRPC 1.51's callback completion-queue teardown
# (RouterBackendDownTest); a test that fails three times still fails the run.
ctest --preset ci -j "$jobs" --label-exclude gpu --repeat until-pass:3

echo "== build (asan: AddressSanitizer + UBSan; the unit-test executables) =="
cmake --preset asan
cmake --build --preset asan -j "$jobs" --target moeserve_unit_tests
echo "== unit tests under sanitizers =="
ctest --preset asan -j "$jobs" --repeat until-pass:3

echo "== build (tsan: ThreadSanitizer; the unit tests labelled unit-tsan) =="
cmake --preset tsan
cmake --build --preset tsan -j "$jobs" --target moeserve_tsan_tests
echo "== concurrent services' tests under ThreadSanitizer =="
ctest --preset tsan -j "$jobs"

echo "== fuzz (libFuzzer targets, ${MOESERVE_FUZZ_SECONDS:-15}s each over tests/fuzz/corpus) =="
scripts/fuzz.sh
