#ifndef MOESERVE_BENCH_BACKEND_BENCH_H_
#define MOESERVE_BENCH_BACKEND_BENCH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

// bench/engine --backend SPEC: the whole model through BackendModel and BackendExpertExecutor on
// one backend (the CUDA backend on the GPU machine), against that backend's own limits measured
// in the same run: the device-to-device copy bandwidth (read + write bytes per second) for decode
// and a large BF16 Gemm for prefill. Each decode batch runs twice over the same positions: with
// the next token taken on the device (Backend::Argmax, fed back, as a greedy request runs) and
// with every row's logits copied to the host (as a sampled request runs), both in the report.
namespace moeserve::bench {

struct BackendBenchArgs {
  std::string backend = "cuda";
  std::string models_dir = "build/bench-models";
  std::string preset = "v2-lite";
  std::string compute = "bf16";
  std::string kv_cache_dtype = "auto";  // engine::ParseKvCacheDType
  std::vector<int64_t> batches = {1, 8, 64, 256};
  int64_t context = 512;          // prompt tokens of every decode sequence
  int64_t steps = 16;             // timed decode steps per batch
  int64_t prefill_tokens = 4096;  // one prefill, in one chunk
  int64_t block_tokens = 64;
  int64_t copy_mib = 2048;  // buffer of the copy-bandwidth limit
  int64_t gemm_n = 8192;    // m = n = k of the Gemm limit
  bool compare_cpu = true;  // logits of a short prompt against the CPU engine
  bool graphs = true;       // decode also replayed from graphs (BackendModelOptions::graphs)
};

nlohmann::json BenchBackend(const BackendBenchArgs& args);

}  // namespace moeserve::bench

#endif  // MOESERVE_BENCH_BACKEND_BENCH_H_
