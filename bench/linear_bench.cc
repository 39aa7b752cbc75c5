// moeserve-bench-linear: engine::cpu::Linear throughput against this machine's measured limits.
//   moeserve-bench-linear [--threads=N] [--kernel=avx512|avx2|scalar] [--quick]
// Prints one JSON object: the limits, then per case GFLOP/s, GB/s of weights streamed, and their
// ratios to the measured FMA peak and read bandwidth (all from the same run).

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "bench/machine_limits.h"
#include "common/thread_pool.h"
#include "engine/cpu/linear.h"
#include "engine/cpu/linear_internal.h"
#include "engine/dtype.h"
#include "engine/weights.h"

namespace moeserve::bench {
namespace {

using engine::DType;

struct Case {
  DType dtype;
  int64_t m;
  int64_t rows;
  int64_t cols;
};

struct Weights {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  engine::Matrix matrix;
};

Weights MakeWeights(DType dtype, int64_t rows, int64_t cols) {
  Weights w;
  w.matrix.dtype = dtype;
  w.matrix.rows = rows;
  w.matrix.cols = cols;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-0.05f, 0.05f);
  const size_t n = static_cast<size_t>(rows * cols);
  // Random values in a short repeating pattern: filling 256 MiB with mt19937 is slow.
  std::vector<float> pattern(4099);
  for (float& v : pattern) v = dist(rng);
  if (dtype == DType::kF32) {
    w.f32.resize(n);
    for (size_t i = 0; i < n; ++i) w.f32[i] = pattern[i % pattern.size()];
    w.matrix.data = w.f32.data();
  } else {
    w.bf16.resize(n);
    for (size_t i = 0; i < n; ++i) w.bf16[i] = engine::F32ToBf16(pattern[i % pattern.size()]);
    w.matrix.data = w.bf16.data();
  }
  return w;
}

std::string RunCase(const Case& c, ThreadPool* pool, double bandwidth_gbs, double peak_gflops,
                    double min_seconds) {
  Weights w = MakeWeights(c.dtype, c.rows, c.cols);
  std::vector<float> x(static_cast<size_t>(c.m * c.cols));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 97) * 0.01f - 0.5f;
  std::vector<float> y(static_cast<size_t>(c.m * c.rows));
  engine::cpu::Linear(x.data(), c.m, c.cols, w.matrix, y.data(), c.rows, pool);  // warm up
  double best = 1e30;
  double total = 0.0;
  int reps = 0;
  while (reps < 3 || total < min_seconds) {
    const double start = NowSeconds();
    engine::cpu::Linear(x.data(), c.m, c.cols, w.matrix, y.data(), c.rows, pool);
    const double seconds = NowSeconds() - start;
    best = std::min(best, seconds);
    total += seconds;
    ++reps;
  }
  const double flops = 2.0 * static_cast<double>(c.m) * static_cast<double>(c.rows) *
                       static_cast<double>(c.cols);
  const double gflops = flops / best / 1e9;
  const double gbs = static_cast<double>(w.matrix.bytes()) / best / 1e9;
  return absl::StrFormat(
      R"({"dtype": "%s", "m": %d, "rows": %d, "cols": %d, "reps": %d, "best_ms": %.3f, )"
      R"("gflops": %.1f, "weight_gbs": %.1f, "bandwidth_ratio": %.3f, "fma_peak_ratio": %.3f})",
      engine::DTypeName(c.dtype), c.m, c.rows, c.cols, reps, best * 1e3, gflops, gbs,
      gbs / bandwidth_gbs, gflops / peak_gflops);
}

int Main(int argc, char** argv) {
  int threads = DefaultThreadCount();
  bool quick = false;
  std::vector<Case> cases;  // --case; the default set when none
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--threads=") && absl::SimpleAtoi(arg, &threads) &&
        threads > 0) {
      continue;
    }
    if (absl::ConsumePrefix(&arg, "--kernel=")) {
      absl::Status status = engine::cpu::SetLinearKernel(arg);
      if (!status.ok()) {
        std::fprintf(stderr, "%s\n", status.ToString().c_str());
        return 2;
      }
      continue;
    }
    if (arg == "--quick") {
      quick = true;
      continue;
    }
    if (absl::ConsumePrefix(&arg, "--case=")) {
      // DTYPE:M:ROWS:COLS, e.g. bf16:48:512:1024 (a routed expert's gate in a 512-token prefill).
      std::vector<std::string> f = absl::StrSplit(arg, ':');
      Case c{DType::kBf16, 0, 0, 0};
      if (f.size() == 4 && (f[0] == "bf16" || f[0] == "f32") && absl::SimpleAtoi(f[1], &c.m) &&
          absl::SimpleAtoi(f[2], &c.rows) && absl::SimpleAtoi(f[3], &c.cols) && c.m > 0 &&
          c.rows > 0 && c.cols > 0) {
        c.dtype = f[0] == "f32" ? DType::kF32 : DType::kBf16;
        cases.push_back(c);
        continue;
      }
    }
    std::fprintf(stderr,
                 "usage: %s [--threads=N] [--kernel=avx512|avx2|scalar] [--quick] "
                 "[--case=bf16|f32:M:ROWS:COLS ...]\n",
                 argv[0]);
    return 2;
  }
  ThreadPool pool(threads);
  const double bandwidth = MeasureReadBandwidthGBs(threads);
  const double peak = MeasureFmaPeakGflops(threads);
  const int64_t big = quick ? 4096 : 8192;
  const int64_t prefill = quick ? 2048 : 4096;
  if (cases.empty()) {
    for (DType dtype : {DType::kBf16, DType::kF32}) {
      for (const Case& c : {Case{dtype, 1, big, big}, Case{dtype, 16, big, big},
                            Case{dtype, 512, prefill, prefill}}) {
        cases.push_back(c);
      }
    }
  }
  std::vector<std::string> results;
  for (const Case& c : cases) results.push_back(RunCase(c, &pool, bandwidth, peak, quick ? 0.1 : 0.5));
  std::printf("{\"kernel\": \"%s\", \"threads\": %d, \"read_bandwidth_gbs\": %.1f, "
              "\"fma_peak_gflops\": %.1f, \"results\": [\n  %s\n]}\n",
              engine::cpu::LinearKernelName(), threads, bandwidth, peak,
              absl::StrJoin(results, ",\n  ").c_str());
  return 0;
}

}  // namespace
}  // namespace moeserve::bench

int main(int argc, char** argv) { return moeserve::bench::Main(argc, argv); }
