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

// LinearManyByRows gives each thread at least this many rows of every job, or splits columns.
inline constexpr int64_t kMinRowsPerThread = 32;

// Rows [RowsBefore(m, i, threads), RowsBefore(m, i + 1, threads)) are thread i's share of m rows
// in LinearManyByRows (and in the per-token work the model splits the same way).
inline int64_t RowsBefore(int64_t m, int64_t i, int64_t threads) { return m * i / threads; }

// LinearMany for prefill-sized batches: thread i of the pool computes rows
// [RowsBefore(m, i, T), RowsBefore(m, i + 1, T)) of every job, all columns, instead of a share of
// the columns of all rows. When the work before and after a product is split over tokens the same
// way, each core then reads only activations it wrote itself: with columns shared out, half of
// every row came from the other core's cache, and a `tiny` prefill's short products did not get
// faster with a second thread. Each thread reads all the weights, so jobs with fewer than 32 rows
// per thread (decode batches, most routed experts) take LinearMany. Same bits as LinearMany.
void LinearManyByRows(absl::Span<const LinearJob> jobs, ThreadPool* pool);

// Which SIMD path Linear uses on this CPU ("avx512", "avx2", "scalar").
const char* LinearKernelName();

}  // namespace moeserve::engine::cpu

#endif  // MOESERVE_ENGINE_CPU_LINEAR_H_
