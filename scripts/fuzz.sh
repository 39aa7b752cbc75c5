#!/usr/bin/env bash
# Builds the libFuzzer targets (the `fuzz` preset: clang-14, -fsanitize=fuzzer,address,undefined)
# and runs each over its committed seed corpus (tests/fuzz/corpus/<target>/) for a bounded time.
# New inputs found go to a temporary folder, never into the committed corpus. A crash, a leak, a
# timeout or a violated property fails the run; the input is printed (hex) and kept under
# $MOESERVE_FUZZ_ARTIFACTS (default build/fuzz/artifacts) to become a regression test.
#   MOESERVE_FUZZ_SECONDS  seconds per target (default 15)
#   MOESERVE_FUZZ_TARGETS  space-separated subset of targets (default: all)
#   MOESERVE_FUZZ_BUILD=0  skip the build (run what build/fuzz holds)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
jobs="${MOESERVE_JOBS:-$(nproc)}"
seconds="${MOESERVE_FUZZ_SECONDS:-15}"
artifacts="${MOESERVE_FUZZ_ARTIFACTS:-$root/build/fuzz/artifacts}"
all_targets=(http_request_fuzzer request_mapping_fuzzer chat_template_fuzzer tokenizer_fuzzer
             safetensors_fuzzer model_config_fuzzer inference_grpc_fuzzer kvcache_grpc_fuzzer router_grpc_fuzzer
             worker_grpc_fuzzer expert_shard_grpc_fuzzer)
read -r -a targets <<< "${MOESERVE_FUZZ_TARGETS:-${all_targets[*]}}"

if [ "${MOESERVE_FUZZ_BUILD:-1}" != 0 ]; then
  cmake --preset fuzz
  cmake --build --preset fuzz -j "$jobs"
fi

work="$(mktemp -d /tmp/moeserve_fuzz.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$artifacts"
# Leaks are checked at exit only (LeakSanitizer at the end of the run): the services' own threads
# allocate and free concurrently with each input, which libFuzzer's per-input check would misread.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
failed=()
for t in "${targets[@]}"; do
  bin="build/fuzz/bin/$t"
  seeds="tests/fuzz/corpus/$t"
  [ -x "$bin" ] || { echo "fuzz: $bin was not built" >&2; failed+=("$t"); continue; }
  [ -d "$seeds" ] || { echo "fuzz: no seed corpus $seeds" >&2; failed+=("$t"); continue; }
  mkdir -p "$work/$t"
  echo "== fuzz $t: ${seconds}s over $(ls "$seeds" | wc -l) seeds =="
  # -timeout: one input running this long is a hang; -rss_limit_mb bounds memory per process.
  if "$bin" "$work/$t" "$seeds" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 \
       -detect_leaks=0 -print_final_stats=1 -artifact_prefix="$artifacts/$t-" \
       > "$work/$t.log" 2>&1; then
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb|Done)" \
      "$work/$t.log" | tr '\n' ' '; echo
  else
    echo "fuzz: $t FAILED; the last lines of its log:"
    tail -n 60 "$work/$t.log"
    for a in "$artifacts/$t-"*; do
      [ -f "$a" ] || continue
      echo "fuzz: input $a (first 512 bytes, hex):"
      head -c 512 "$a" | od -A d -t x1 | head -n 40
    done
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ok (${#targets[@]} targets, ${seconds}s each)"
