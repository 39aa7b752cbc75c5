#include "engine/cpu/linear.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "engine/cpu/linear_internal.h"
#include "engine/cpu/linear_kernels.h"

namespace moeserve::engine::cpu {
namespace {

using internal::KernelSet;
using internal::TileArgs;

// The scalar path is a KernelSet without tiles.
constexpr KernelSet kScalar = {"scalar", 1, 1, 1, {}};

// k block for batches: lane sums are parked in a small buffer between blocks so the x block
// (MR x kKBlock floats, 24 KiB) stays in L1 while it meets every weight tile of a panel.
constexpr int64_t kKBlock = 1024;
// Weight panel budget (rows x all of k, stored dtype), to stay in a 1 MiB L2. Bigger panels
// reuse each x block more; tuned on Zen 5 (bf16 prefill gains most from the larger panels).
constexpr int64_t kPanelBytes = 768 * 1024;
// Less work than this (multiply-adds) per thread is not worth waking the pool.
constexpr int64_t kMinMacsPerThread = int64_t{1} << 18;

const KernelSet* KernelByName(absl::string_view name) {
  if (name == "scalar") return &kScalar;
  if (name == "avx2") return internal::Avx2Kernels();
  if (name == "avx512") return internal::Avx512Kernels();
  return nullptr;
}

const KernelSet* BestKernels() {
  if (const KernelSet* ks = internal::Avx512Kernels()) return ks;
  if (const KernelSet* ks = internal::Avx2Kernels()) return ks;
  return &kScalar;
}

const KernelSet* DefaultKernels() {
  const char* env = std::getenv("MOESERVE_KERNEL");
  if (env == nullptr || *env == '\0') return BestKernels();
  if (const KernelSet* ks = KernelByName(env)) return ks;
  LogInfo(absl::StrCat("MOESERVE_KERNEL=", env, " is unknown or unsupported here; using ",
                       BestKernels()->name));
  return BestKernels();
}

std::atomic<const KernelSet*>& Current() {
  static std::atomic<const KernelSet*> current{DefaultKernels()};
  return current;
}

// Sequential float sum per output: the scalar path's fixed order.
void ScalarRange(const float* x, int64_t m, int64_t ldx, const Matrix& w, float* y, int64_t ldy,
                 int64_t n0, int64_t n1) {
  const int64_t k_size = w.cols;
  const bool bf16 = w.dtype == DType::kBf16;
  std::vector<float> row(static_cast<size_t>(k_size));
  for (int64_t j = n0; j < n1; ++j) {
    const float* wr;
    if (bf16) {
      const uint16_t* src = w.bf16() + j * k_size;
      for (int64_t k = 0; k < k_size; ++k) row[k] = Bf16ToF32(src[k]);
      wr = row.data();
    } else {
      wr = w.f32() + j * k_size;
    }
    for (int64_t i = 0; i < m; ++i) {
      const float* xr = x + i * ldx;
      float sum = 0.0f;
      for (int64_t k = 0; k < k_size; ++k) sum += xr[k] * wr[k];
      y[i * ldy + j] = sum;
    }
  }
}

// Output columns [n0, n1) for all m rows with one ISA's tiles. Weights are read in place (bf16
// is widened in registers), never copied.
//
// One group of <= MR activation rows (decode): nothing to reuse, so every NR-row weight tile
// streams straight from memory, once, each tile running the whole of k in registers.
//
// Several groups (batches, prefill):
//   for each panel of nc weight rows (sized to stay in L2)
//     for each group of <= MR activation rows
//       for each k block of kKBlock (the group's x block, MR x kKBlock floats, stays in L1)
//         for each NR-row tile of the panel: Tile (MR x NR outputs), lane sums parked between
//         k blocks in a small buffer
// so weights come from memory once and from L2 once per group, and x from L3 once per panel.
// x is read in place, MR row streams at a time: copying it into tile order first (tried until
// 2026-11) cost more than it saved, most of all with k of a few hundred.
void TiledRange(const KernelSet& ks, const float* x, int64_t m, int64_t ldx, const Matrix& w,
                float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t k_size = w.cols;
  const bool bf16 = w.dtype == DType::kBf16;
  const int lanes = ks.lanes;
  const int64_t mr_max = ks.tile_rows;
  const int64_t nr_max = ks.tile_cols;
  const int64_t groups = (m + mr_max - 1) / mr_max;

  if (groups == 1) {
    const int64_t elem = bf16 ? 2 : 4;
    internal::TileFn const* tiles = ks.tile[bf16 ? 1 : 0][m - 1];
    for (int64_t j = n0; j < n1; j += nr_max) {
      const int64_t nr = std::min(nr_max, n1 - j);
      TileArgs args;
      args.x = x;
      args.x_row = ldx;
      args.x_step = lanes;
      args.w = static_cast<const char*>(w.data) + j * k_size * elem;
      args.w_row = k_size;
      args.w_step = lanes;
      args.kn = k_size;
      args.acc = nullptr;
      args.first = true;
      args.last = true;
      args.y = y + j;
      args.ldy = ldy;
      // The tile after next: one tile ahead is too close to hide the memory latency.
      const int64_t ahead = j + 2 * nr_max;
      args.prefetch = ahead < n1 ? static_cast<const char*>(w.data) + ahead * k_size * elem : nullptr;
      tiles[nr - 1](args);
    }
    return;
  }

  const int64_t elem = bf16 ? 2 : 4;
  int64_t nc = std::max(nr_max, kPanelBytes / (k_size * elem) / nr_max * nr_max);
  nc = std::min(nc, n1 - n0);
  const int64_t kc = std::min(kKBlock, k_size);  // the same blocks: kKBlock is whole steps
  const int64_t acc_per_tile = mr_max * nr_max * lanes;

  thread_local std::vector<float> acc;
  acc.resize(static_cast<size_t>((nc + nr_max - 1) / nr_max * acc_per_tile));
  internal::TileFn const(*tiles)[internal::kMaxTileCols] = ks.tile[bf16 ? 1 : 0];

  const char* const w_bytes = static_cast<const char*>(w.data);
  for (int64_t jc = n0; jc < n1; jc += nc) {
    const int64_t ncur = std::min(nc, n1 - jc);
    int64_t i0 = 0;
    for (int64_t g = 0; g < groups; ++g) {
      // Balanced group sizes (m = 16 with MR 6 gives 5, 5, 6), all <= MR.
      const int64_t i1 = m * (g + 1) / groups;
      const int64_t mr = i1 - i0;
      for (int64_t pc = 0; pc < k_size; pc += kc) {
        const int64_t kn = std::min(kc, k_size - pc);
        for (int64_t jr = 0; jr < ncur; jr += nr_max) {
          const int64_t nr = std::min(nr_max, ncur - jr);
          TileArgs args;
          args.x = x + i0 * ldx + pc;
          args.x_row = ldx;
          args.x_step = lanes;
          args.w = w_bytes + ((jc + jr) * k_size + pc) * elem;
          args.w_row = k_size;
          args.w_step = lanes;
          args.kn = kn;
          args.acc = acc.data() + jr / nr_max * acc_per_tile;
          args.first = pc == 0;
          args.last = pc + kn >= k_size;
          args.y = y + i0 * ldy + jc + jr;
          args.ldy = ldy;
          // The first group meets each weight tile first, most often from memory (a prefill's
          // weights are evicted by the steps between their uses): as in decode, it prefetches
          // the tile after next, whose rows follow on where a k block is all of k.
          const int64_t ahead = jc + jr + 2 * nr_max;
          args.prefetch = g == 0 && kn == k_size && ahead < n1 ? w_bytes + ahead * k_size * elem
                                                              : nullptr;
          tiles[mr - 1][nr - 1](args);
        }
      }
      i0 = i1;
    }
  }
}

}  // namespace

// The checks every product of LinearMany and LinearManyByRows gets before any runs.
void CheckJob(const LinearJob& j) {
  MOESERVE_CHECK(j.w->dtype == DType::kF32 || j.w->dtype == DType::kBf16)
      << "Linear: weights must be f32 or bf16";
  MOESERVE_DCHECK(j.ldx >= j.w->cols && j.ldy >= j.w->rows);
}

// Rows [r0, r1) and output columns [n0, n1) of one job, on this thread.
void JobRange(const KernelSet& ks, const LinearJob& j, int64_t r0, int64_t r1, int64_t n0,
              int64_t n1) {
  const float* x = j.x + r0 * j.ldx;
  float* y = j.y + r0 * j.ldy;
  if (j.w->cols == 0) {
    for (int64_t r = 0; r < r1 - r0; ++r) std::fill(y + r * j.ldy + n0, y + r * j.ldy + n1, 0.0f);
  } else if (ks.lanes == 1) {
    ScalarRange(x, r1 - r0, j.ldx, *j.w, y, j.ldy, n0, n1);
  } else {
    TiledRange(ks, x, r1 - r0, j.ldx, *j.w, y, j.ldy, n0, n1);
  }
}

void LinearMany(absl::Span<const LinearJob> jobs, ThreadPool* pool) {
  const KernelSet& ks = *Current().load(std::memory_order_relaxed);
  const bool scalar = ks.lanes == 1;
  // Threads split the output columns of every job in units of whole tiles; any split gives the
  // same bits.
  const int64_t unit = scalar ? 16 : ks.tile_cols * 4;

  struct Prepared {
    const LinearJob* job;
    int64_t first_unit;  // global index of the job's first unit
  };
  // Reused from call to call (a decode step makes ~80). The lambdas below must reach the
  // caller's buffer through this reference: a thread_local named inside them is the worker's.
  thread_local std::vector<Prepared> prepared_buffer;
  std::vector<Prepared>& prepared = prepared_buffer;
  prepared.clear();
  int64_t total_units = 0, total_macs = 0;
  for (const LinearJob& j : jobs) {
    const Matrix& w = *j.w;
    CheckJob(j);
    if (j.m <= 0 || w.rows <= 0) continue;
    if (w.cols == 0) {
      JobRange(ks, j, 0, j.m, 0, w.rows);
      continue;
    }
    prepared.push_back({&j, total_units});
    const int64_t units = (w.rows + unit - 1) / unit;
    total_units += units;
    total_macs += units * unit * w.cols * j.m;
  }
  if (total_units == 0) return;

  auto run = [&](int64_t u0, int64_t u1) {
    // The first job that ends after u0, then every job that starts before u1.
    size_t pi = static_cast<size_t>(
        std::upper_bound(prepared.begin(), prepared.end(), u0,
                         [](int64_t u, const Prepared& p) { return u < p.first_unit; }) -
        prepared.begin() - 1);
    for (; pi < prepared.size() && prepared[pi].first_unit < u1; ++pi) {
      const Prepared& p = prepared[pi];
      const LinearJob& j = *p.job;
      const int64_t n_size = j.w->rows;
      const int64_t n0 = std::max<int64_t>(0, u0 - p.first_unit) * unit;
      const int64_t n1 = std::min(n_size, (u1 - p.first_unit) * unit);
      if (n0 < n1) JobRange(ks, j, 0, j.m, n0, n1);
    }
  };
  const int64_t macs_per_unit = std::max<int64_t>(1, total_macs / total_units);
  const int64_t grain = std::max<int64_t>(1, kMinMacsPerThread / macs_per_unit);
  if (pool == nullptr || pool->num_threads() == 1 || total_units < 2 * grain) {
    run(0, total_units);
    return;
  }
  pool->ParallelFor(total_units, grain, run);
}

void LinearManyByRows(absl::Span<const LinearJob> jobs, ThreadPool* pool) {
  const int threads = pool == nullptr ? 1 : pool->num_threads();
  int64_t min_m = std::numeric_limits<int64_t>::max();
  for (const LinearJob& j : jobs) min_m = std::min(min_m, j.m);
  if (threads == 1 || jobs.empty() || min_m < kMinRowsPerThread * threads) {
    LinearMany(jobs, pool);
    return;
  }
  const KernelSet& ks = *Current().load(std::memory_order_relaxed);
  for (const LinearJob& j : jobs) CheckJob(j);
  pool->RunOnAll([&](int i) {
    for (const LinearJob& j : jobs) {
      const int64_t r0 = RowsBefore(j.m, i, threads), r1 = RowsBefore(j.m, i + 1, threads);
      if (r0 < r1 && j.w->rows > 0) JobRange(ks, j, r0, r1, 0, j.w->rows);
    }
  });
}

void Linear(const float* x, int64_t m, int64_t ldx, const Matrix& w, float* y, int64_t ldy,
            ThreadPool* pool) {
  const LinearJob job{x, m, ldx, &w, y, ldy};
  LinearMany(absl::MakeConstSpan(&job, 1), pool);
}

const char* LinearKernelName() { return Current().load(std::memory_order_relaxed)->name; }

std::vector<std::string> AvailableLinearKernels() {
  std::vector<std::string> names;
  if (internal::Avx512Kernels() != nullptr) names.push_back("avx512");
  if (internal::Avx2Kernels() != nullptr) names.push_back("avx2");
  names.push_back("scalar");
  return names;
}

absl::Status SetLinearKernel(absl::string_view name) {
  if (name != "scalar" && name != "avx2" && name != "avx512") {
    return absl::InvalidArgumentError(absl::StrCat("unknown linear kernel '", name, "'"));
  }
  const KernelSet* ks = KernelByName(name);
  if (ks == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("this CPU cannot run the ", name, " kernel"));
  }
  Current().store(ks, std::memory_order_relaxed);
  return absl::OkStatus();
}

}  // namespace moeserve::engine::cpu
