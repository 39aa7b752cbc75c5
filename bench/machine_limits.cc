#include "bench/machine_limits.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/thread_pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MOESERVE_BENCH_X86 1
#endif

namespace moeserve::bench {
namespace {

// 1 GiB read in slices of 128 MiB (each far beyond the caches), 32 timed slices.
constexpr int64_t kBandwidthBytes = int64_t{1} << 30;
constexpr int64_t kBandwidthSlices = 8;
constexpr int kBandwidthRuns = 32;
// About 10 ms per run.
constexpr int kFmaRuns = 20;
constexpr int64_t kFmaIterations = 2'000'000;

// Keeps results alive so the compiler cannot drop the work.
std::atomic<float> g_sink{0.0f};

#ifdef MOESERVE_BENCH_X86
__attribute__((target("avx512f"))) float Total16(__m512 v) {
  float lanes[16];
  _mm512_storeu_ps(lanes, v);
  float s = 0.0f;
  for (float f : lanes) s += f;
  return s;
}

__attribute__((target("avx512f"))) float SumAvx512(const float* p, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
  }
  return Total16(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

__attribute__((target("avx2"))) float SumAvx2(const float* p, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float s = 0.0f;
  for (float v : lanes) s += v;
  return s;
}

// 16 independent chains: enough to cover FMA latency times FMA ports on current cores.
__attribute__((target("avx512f"))) float FmaAvx512(int64_t iterations) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999999f);
  const __m512 b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  return Total16(s);
}

__attribute__((target("avx2,fma"))) float FmaAvx2(int64_t iterations) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999999f);
  const __m256 b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  float lanes[8];
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  _mm256_storeu_ps(lanes, s);
  return lanes[0] + lanes[7];
}
#endif

float SumScalar(const float* p, int64_t n) {
  float s[8] = {};
  for (int64_t i = 0; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) s[j] += p[i + j];
  }
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

float FmaScalar(int64_t iterations) {
  float acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = static_cast<float>(i);
  for (int64_t it = 0; it < iterations; ++it) {
    for (float& v : acc) v = v * 0.999999f + 1e-7f;
  }
  return acc[0] + acc[7];
}

enum class Simd { kScalar, kAvx2, kAvx512 };

Simd BestSimd() {
#ifdef MOESERVE_BENCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Simd::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Simd::kAvx2;
#endif
  return Simd::kScalar;
}

float Sum(Simd simd, const float* p, int64_t n) {
#ifdef MOESERVE_BENCH_X86
  if (simd == Simd::kAvx512) return SumAvx512(p, n);
  if (simd == Simd::kAvx2) return SumAvx2(p, n);
#endif
  return SumScalar(p, n);
}

// Returns FMA flops done.
double Fma(Simd simd, int64_t iterations, float* out) {
#ifdef MOESERVE_BENCH_X86
  if (simd == Simd::kAvx512) {
    *out = FmaAvx512(iterations);
    return 2.0 * 16 * 16 * static_cast<double>(iterations);
  }
  if (simd == Simd::kAvx2) {
    *out = FmaAvx2(iterations);
    return 2.0 * 12 * 8 * static_cast<double>(iterations);
  }
#endif
  *out = FmaScalar(iterations);
  return 2.0 * 8 * static_cast<double>(iterations);
}

}  // namespace

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double MeasureReadBandwidthGBs(int threads) {
  threads = std::max(1, threads);
  const int64_t n = kBandwidthBytes / static_cast<int64_t>(sizeof(float));
  std::vector<float> buffer(static_cast<size_t>(n));
  ThreadPool pool(threads);
  // Each thread writes the part it later reads (first touch places pages near it).
  pool.RunOnAll([&](int t) {
    const int64_t begin = n * t / threads;
    const int64_t end = n * (t + 1) / threads;
    for (int64_t i = begin; i < end; ++i) buffer[i] = static_cast<float>(i & 1023) * 1e-3f;
  });
  const Simd simd = BestSimd();
  // Many short timed reads, each of the next slice of the buffer: short runs are what a kernel
  // benchmark times too, and on a shared machine the best of many finds the quiet moments.
  const int64_t slice = n / kBandwidthSlices;
  double best = 0.0;
  for (int run = 0; run < kBandwidthRuns; ++run) {
    const float* base = buffer.data() + (run % kBandwidthSlices) * slice;
    std::vector<float> sums(static_cast<size_t>(threads));
    const double start = NowSeconds();
    pool.RunOnAll([&](int t) {
      const int64_t begin = slice * t / threads / 64 * 64;
      const int64_t end = t + 1 == threads ? slice : slice * (t + 1) / threads / 64 * 64;
      sums[t] = Sum(simd, base + begin, end - begin);
    });
    const double seconds = NowSeconds() - start;
    float total = 0.0f;
    for (float s : sums) total += s;
    g_sink.store(total, std::memory_order_relaxed);
    best = std::max(best, static_cast<double>(slice) * sizeof(float) / seconds / 1e9);
  }
  return best;
}

double MeasureFmaPeakGflops(int threads) {
  threads = std::max(1, threads);
  ThreadPool pool(threads);
  const Simd simd = BestSimd();
  double best = 0.0;
  for (int run = 0; run < kFmaRuns; ++run) {
    std::vector<double> flops(static_cast<size_t>(threads));
    std::vector<float> outs(static_cast<size_t>(threads));
    const double start = NowSeconds();
    pool.RunOnAll([&](int t) { flops[t] = Fma(simd, kFmaIterations, &outs[t]); });
    const double seconds = NowSeconds() - start;
    double total = 0.0;
    for (int t = 0; t < threads; ++t) {
      total += flops[t];
      g_sink.store(outs[t], std::memory_order_relaxed);
    }
    best = std::max(best, total / seconds / 1e9);
  }
  return best;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

}  // namespace moeserve::bench
