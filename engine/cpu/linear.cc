#include "engine/cpu/linear.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
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
constexpr KernelSet kScalar = {"scalar", 1, 1, 1, {}, nullptr};

// k block for batches: lane sums are parked in a small buffer between blocks so the x tile
// (rows x kKBlock floats) stays in L1 while it meets every weight tile of a panel.
constexpr int64_t kKBlock = 512;
// Weight panel budget (rows x all of k), sized to stay in a 1 MiB L2 next to the x tiles.
constexpr int64_t kPanelBytes = 384 * 1024;
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

// Output columns [n0, n1) for all m rows with one ISA's tiles.
//   for each panel of weight rows (nc rows x all of k; bf16 widened once when rows reuse it)
//     for each group of <= MR activation rows
//       for each k block
//         for each NR-row tile of the panel: Tile (MR x NR outputs)
// With one row group there is nothing to reuse: the weights stream straight from memory, once,
// with each tile running the whole of k in registers.
void TiledRange(const KernelSet& ks, const float* x, int64_t m, int64_t ldx, const Matrix& w,
                float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t k_size = w.cols;
  const bool bf16 = w.dtype == DType::kBf16;
  const int64_t mr_max = ks.tile_rows;
  const int64_t nr_max = ks.tile_cols;
  const int64_t groups = (m + mr_max - 1) / mr_max;
  const bool pack = bf16 && groups > 1;
  const bool tile_bf16 = bf16 && !pack;
  const int64_t elem = tile_bf16 ? 2 : 4;
  const int64_t kc = groups > 1 ? kKBlock : k_size;
  int64_t nc = n1 - n0;
  if (groups > 1) {
    nc = std::max(nr_max, kPanelBytes / std::max<int64_t>(1, k_size * 4) / nr_max * nr_max);
    nc = std::min(nc, n1 - n0);
  }

  thread_local std::vector<float> panel;
  thread_local std::vector<float> acc;
  if (pack) panel.resize(static_cast<size_t>(nc * k_size));
  const int64_t acc_per_tile = mr_max * nr_max * ks.lanes;
  if (kc < k_size) acc.resize(static_cast<size_t>((nc + nr_max - 1) / nr_max * acc_per_tile));

  for (int64_t jc = n0; jc < n1; jc += nc) {
    const int64_t ncur = std::min(nc, n1 - jc);
    const char* wbase;
    if (pack) {
      ks.widen_bf16(w.bf16() + jc * k_size, panel.data(), ncur * k_size);
      wbase = reinterpret_cast<const char*>(panel.data());
    } else {
      wbase = static_cast<const char*>(w.data) + jc * k_size * elem;
    }
    internal::TileFn const(*tiles)[internal::kMaxTileCols] = ks.tile[tile_bf16 ? 1 : 0];
    int64_t i0 = 0;
    for (int64_t g = 0; g < groups; ++g) {
      // Balanced group sizes (m = 16 with MR 6 gives 6, 5, 5), all <= MR.
      const int64_t i1 = m * (g + 1) / groups;
      const int64_t mr = i1 - i0;
      for (int64_t pc = 0; pc < k_size; pc += kc) {
        const int64_t kn = std::min(kc, k_size - pc);
        for (int64_t jr = 0; jr < ncur; jr += nr_max) {
          const int64_t nr = std::min(nr_max, ncur - jr);
          TileArgs args;
          args.x = x + i0 * ldx + pc;
          args.ldx = ldx;
          args.w = wbase + (jr * k_size + pc) * elem;
          args.ldw = k_size;
          args.kn = kn;
          args.acc = kc < k_size ? acc.data() + jr / nr_max * acc_per_tile : nullptr;
          args.first = pc == 0;
          args.last = pc + kn >= k_size;
          args.y = y + i0 * ldy + jc + jr;
          args.ldy = ldy;
          tiles[mr - 1][nr - 1](args);
        }
      }
      i0 = i1;
    }
  }
}

}  // namespace

void Linear(const float* x, int64_t m, int64_t ldx, const Matrix& w, float* y, int64_t ldy,
            ThreadPool* pool) {
  MOESERVE_CHECK(w.dtype == DType::kF32 || w.dtype == DType::kBf16)
      << "Linear: weights must be f32 or bf16";
  MOESERVE_DCHECK(ldx >= w.cols && ldy >= w.rows);
  const int64_t n_size = w.rows;
  const int64_t k_size = w.cols;
  if (m <= 0 || n_size <= 0) return;
  if (k_size == 0) {
    for (int64_t i = 0; i < m; ++i) std::fill(y + i * ldy, y + i * ldy + n_size, 0.0f);
    return;
  }
  const KernelSet& ks = *Current().load(std::memory_order_relaxed);
  const bool scalar = ks.widen_bf16 == nullptr;

  // Threads split the output columns in units of whole tiles; any split gives the same bits.
  const int64_t unit = scalar ? 16 : ks.tile_cols * 4;
  const int64_t units = (n_size + unit - 1) / unit;
  auto run = [&](int64_t u0, int64_t u1) {
    const int64_t n0 = u0 * unit;
    const int64_t n1 = std::min(n_size, u1 * unit);
    if (scalar) {
      ScalarRange(x, m, ldx, w, y, ldy, n0, n1);
    } else {
      TiledRange(ks, x, m, ldx, w, y, ldy, n0, n1);
    }
  };
  const int64_t macs_per_unit = unit * k_size * m;
  const int64_t grain = std::max<int64_t>(1, kMinMacsPerThread / macs_per_unit);
  if (pool == nullptr || pool->num_threads() == 1 || units < 2 * grain) {
    run(0, units);
    return;
  }
  pool->ParallelFor(units, grain, run);
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
