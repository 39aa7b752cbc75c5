#ifndef MOESERVE_ENGINE_CPU_LINEAR_H_
#define MOESERVE_ENGINE_CPU_LINEAR_H_

#include <cstdint>

#include "absl/types/span.h"
#include "common/thread_pool.h"
#include "engine/weights.h"

namespace moeserve::engine::cpu {

// y[m, w.rows] = x[m, w.cols] * w^T  (a Linear layer without bias), float32 accumulation.
// x and y are row-major float32 with row strides ldx and ldy (in elements). Works for any m
// (1 = decode matrix-vector, large = prefill GEMM) and any weight dtype Matrix allows.
// Runs on `pool` (may be null: single-threaded). y must not alias x.
void Linear(const float* x, int64_t m, int64_t ldx, const Matrix& w, float* y, int64_t ldy,
            ThreadPool* pool);

// One product of LinearMany: y[m, w->rows] = x[m, w->cols] * w^T.
struct LinearJob {
  const float* x;
  int64_t m;
  int64_t ldx;
  const Matrix* w;
  float* y;
  int64_t ldy;
};

// Runs independent products in one parallel region, their output columns shared out among the
// threads as one range: a decode step's many small products (per-head absorption, each routed
// expert) then pay for one pool round trip instead of one each. Results are bit-identical to
// calling Linear on each job. No job's y may alias any job's x.
void LinearMany(absl::Span<const LinearJob> jobs, ThreadPool* pool);

// Which SIMD path Linear uses on this CPU ("avx512bf16", "avx512", "avx2", "scalar").
const char* LinearKernelName();

}  // namespace moeserve::engine::cpu

#endif  // MOESERVE_ENGINE_CPU_LINEAR_H_
