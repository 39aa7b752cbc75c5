#ifndef MOESERVE_ENGINE_CPU_LINEAR_KERNELS_H_
#define MOESERVE_ENGINE_CPU_LINEAR_KERNELS_H_

// Internal to engine/cpu: the per-ISA micro-kernels behind Linear (linear.cc drives them).
//
// Numerics contract, shared by every tile shape of one ISA: output (i, j) is the dot product of
// x row i and w row j accumulated in `lanes` float32 lanes, lane l summing x[k] * w[k] for
// k = l (mod lanes) in increasing k with one fused multiply-add per term (a zero-padded final
// step covers the tail), then the lanes are reduced by one fixed tree. Blocking over k only stores
// and reloads the lane accumulators, which is exact, so a row's result depends on neither the tile
// it lands in, nor m, nor the thread split.

#include <cstdint>

namespace moeserve::engine::cpu::internal {

inline constexpr int kMaxTileRows = 6;  // MR
inline constexpr int kMaxTileCols = 4;  // NR

// Operands are addressed per step of `lanes` columns: element (row r, column s * lanes + l) is at
// base + r * row_stride + s * step_stride + l. Both operands are row-major in place
// (step_stride = lanes); columns past the row end are never read (masked loads).
struct TileArgs {
  const float* x;  // x tile origin (row 0, column k0)
  int64_t x_row;
  int64_t x_step;
  const void* w;  // weight tile origin (row 0, column k0): float or uint16_t (bf16 bits)
  int64_t w_row;
  int64_t w_step;
  int64_t kn;  // columns in this k block; a multiple of lanes unless the block ends the row
  float* acc;     // MR * NR * lanes partial sums: read unless `first`, written unless `last`
  bool first;
  bool last;
  float* y;  // output tile origin; written (reduced) when `last`
  int64_t ldy;
  // Where the weights this thread reads next begin (the next tile of a decode matrix-vector
  // product), or null. Tiles of short rows end before the hardware prefetcher ramps up on their
  // NR streams, so the tile prefetches that contiguous region line by line while it computes.
  const char* prefetch = nullptr;
};
using TileFn = void (*)(const TileArgs&);

struct KernelSet {
  const char* name;
  int lanes;      // float32 lanes per accumulator (1: the scalar path, no tiles)
  int tile_rows;  // MR used for batches (<= kMaxTileRows)
  int tile_cols;  // NR (<= kMaxTileCols)
  // tile[bf16][mr - 1][nr - 1] for mr <= tile_rows, nr <= tile_cols.
  TileFn tile[2][kMaxTileRows][kMaxTileCols];
};

// Null when the CPU (or the compiler target) lacks the instructions.
const KernelSet* Avx512Kernels();
const KernelSet* Avx2Kernels();

}  // namespace moeserve::engine::cpu::internal

#endif  // MOESERVE_ENGINE_CPU_LINEAR_KERNELS_H_
