#include "engine/model/scratch.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace moeserve::engine {
namespace {

// One step's pieces: 64-byte aligned, disjoint (each filled with its own byte and checked after
// all are written), including pieces that overflow the first block.
std::vector<uint8_t*> Step(ScratchArena* arena, const std::vector<int64_t>& sizes) {
  arena->Reset();
  std::vector<uint8_t*> pieces;
  for (int64_t n : sizes) {
    uint8_t* p = arena->Alloc<uint8_t>(n);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
    pieces.push_back(p);
  }
  for (size_t i = 0; i < pieces.size(); ++i) std::memset(pieces[i], static_cast<int>(i + 1), sizes[i]);
  for (size_t i = 0; i < pieces.size(); ++i) {
    for (int64_t b = 0; b < sizes[i]; ++b) {
      if (pieces[i][b] != static_cast<uint8_t>(i + 1)) {
        ADD_FAILURE() << "piece " << i << " byte " << b << " was overwritten";
        return pieces;
      }
    }
  }
  return pieces;
}

TEST(ScratchArenaTest, PiecesAreAlignedAndDisjoint) {
  ScratchArena arena;
  Step(&arena, {1, 100, 64, 4096, 3});
  Step(&arena, {5000, 1, 70000, 17});  // larger than the block so far: extra blocks
  Step(&arena, {0, 0, 8});             // empty requests still get a distinct piece
}

// A steady workload allocates nothing after its first step: the same sizes get the same
// addresses, from one block.
TEST(ScratchArenaTest, SteadyStepsReuseOneBlock) {
  ScratchArena arena;
  const std::vector<int64_t> sizes = {1000, 250000, 33, 70000};
  Step(&arena, sizes);  // grows
  const std::vector<uint8_t*> second = Step(&arena, sizes);
  const std::vector<uint8_t*> third = Step(&arena, sizes);
  EXPECT_EQ(second, third);
  // One block: every piece lies after the first, within the step's total.
  int64_t total = 0;
  for (int64_t n : sizes) total += (n + 63) / 64 * 64;
  for (uint8_t* p : second) {
    EXPECT_GE(p, second[0]);
    EXPECT_LT(p - second[0], total);
  }
  // A smaller step fits in the same block.
  const std::vector<uint8_t*> small = Step(&arena, {10, 20});
  EXPECT_EQ(small[0], second[0]);
}

}  // namespace
}  // namespace moeserve::engine
