#include "engine/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "engine/cpu/linear.h"
#include "engine/cpu/linear_internal.h"
#include "gtest/gtest.h"
#include "tests/testing/kernel_scope.h"

namespace moeserve::engine::cpu {
namespace {

constexpr int kL = kAttentionLanes;

using testing::KernelScope;

// A paged key cache of `blocks` blocks in shuffled order (as a real block table is).
struct Keys {
  int64_t lat, kvr, block_tokens;
  std::vector<std::vector<float>> storage;
  std::vector<const float*> table;

  Keys(int64_t lat_, int64_t kvr_, int64_t bt, int64_t positions, std::mt19937& rng)
      : lat(lat_), kvr(kvr_), block_tokens(bt) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    const int64_t blocks = (positions + bt - 1) / bt;
    storage.resize(blocks);
    for (auto& b : storage) {
      b.resize(bt * lat);
      for (float& v : b) v = dist(rng);
    }
    std::vector<int64_t> order(blocks);
    for (int64_t i = 0; i < blocks; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t i : order) table.push_back(storage[i].data());
  }
  const float* Row(int64_t s) const { return table[s / block_tokens] + (s % block_tokens) * lat; }
};

struct Queries {
  std::vector<std::vector<float>> q;  // nq x lat
  std::vector<int64_t> len;
  std::vector<float> qt;  // transposed, zero-padded to kL lanes

  void Transpose(int64_t lat) {
    qt.assign(lat * kL, 0.0f);
    for (size_t i = 0; i < q.size(); ++i) {
      for (int64_t d = 0; d < lat; ++d) qt[d * kL + i] = q[i][d];
    }
  }
};

std::vector<float> Attend(const Keys& k, Queries& qs, float scale) {
  qs.Transpose(k.lat);
  std::vector<float> out(qs.q.size() * k.kvr, -1.0f);
  LatentAttentionTile t;
  t.qt = qs.qt.data();
  t.nq = static_cast<int>(qs.q.size());
  t.len = qs.len.data();
  t.blocks = k.table.data();
  t.block_tokens = k.block_tokens;
  t.lat = k.lat;
  t.kvr = k.kvr;
  t.scale = scale;
  t.out = out.data();
  t.out_stride = k.kvr;
  std::vector<float> scratch;
  LatentAttention(t, &scratch);
  return out;
}

// Softmax attention in double precision, written directly from the definition.
std::vector<double> Reference(const Keys& k, const std::vector<float>& q, int64_t len, double scale) {
  std::vector<double> score(len);
  double mx = -1e300;
  for (int64_t s = 0; s < len; ++s) {
    double dot = 0;
    for (int64_t d = 0; d < k.lat; ++d) dot += static_cast<double>(q[d]) * k.Row(s)[d];
    score[s] = dot * scale;
    mx = std::max(mx, score[s]);
  }
  double sum = 0;
  for (double& v : score) sum += (v = std::exp(v - mx));
  std::vector<double> out(k.kvr, 0.0);
  for (int64_t s = 0; s < len; ++s) {
    for (int64_t c = 0; c < k.kvr; ++c) out[c] += score[s] / sum * k.Row(s)[c];
  }
  return out;
}

class AttentionTest : public ::testing::TestWithParam<std::string> {};

TEST_P(AttentionTest, MatchesDoubleReferenceOnOddShapes) {
  KernelScope scope(GetParam());
  std::mt19937 rng(11);
  struct Shape { int64_t kvr, rope, bt; int nq; int64_t max_len; };
  for (const Shape& sh : {Shape{64, 16, 16, kL, 70}, Shape{20, 6, 3, 5, 41},
                          Shape{64, 16, 4, 17, 50}, Shape{80, 32, 4, 1, 9},
                          Shape{130, 2, 7, 11, 100},
                          Shape{16, 0, 1, 3, 5}, Shape{40, 8, 5, 9, 33}}) {
    Keys keys(sh.kvr + sh.rope, sh.kvr, sh.bt, sh.max_len, rng);
    Queries qs;
    std::normal_distribution<float> dist(0.0f, 0.5f);
    std::uniform_int_distribution<int64_t> len(1, sh.max_len);
    for (int i = 0; i < sh.nq; ++i) {
      qs.q.emplace_back(keys.lat);
      for (float& v : qs.q.back()) v = dist(rng);
      qs.len.push_back(i == 0 ? sh.max_len : len(rng));
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(keys.lat));
    std::vector<float> out = Attend(keys, qs, scale);
    for (int i = 0; i < sh.nq; ++i) {
      std::vector<double> ref = Reference(keys, qs.q[i], qs.len[i], scale);
      for (int64_t c = 0; c < keys.kvr; ++c) {
        // The output is a convex combination of N(0,1) values: absolute error ~1e-6.
        ASSERT_NEAR(out[i * keys.kvr + c], ref[c], 2e-5)
            << "kvr " << sh.kvr << " query " << i << " len " << qs.len[i] << " col " << c;
      }
    }
  }
}

// A query gives bit-identical results alone and in a full tile with other lengths, so batching
// never changes a sequence's output; with one visible key the output is that row exactly (every
// later position must contribute an exact zero).
TEST_P(AttentionTest, QueryIndependentOfItsTile) {
  KernelScope scope(GetParam());
  std::mt19937 rng(5);
  Keys keys(80, 64, 16, 200, rng);
  Queries all;
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int i = 0; i < kL; ++i) {
    all.q.emplace_back(keys.lat);
    for (float& v : all.q.back()) v = dist(rng);
    all.len.push_back(i == 3 ? 1 : 200 - 6 * i);
  }
  std::vector<float> together = Attend(keys, all, 0.125f);
  for (int i = 0; i < kL; ++i) {
    Queries one;
    one.q = {all.q[i]};
    one.len = {all.len[i]};
    std::vector<float> alone = Attend(keys, one, 0.125f);
    for (int64_t c = 0; c < keys.kvr; ++c) {
      ASSERT_EQ(alone[c], together[i * keys.kvr + c]) << "query " << i << " col " << c;
    }
  }
  for (int64_t c = 0; c < keys.kvr; ++c) EXPECT_EQ(together[3 * keys.kvr + c], keys.Row(0)[c]);
}

std::string KernelName(const ::testing::TestParamInfo<std::string>& p) { return p.param; }

INSTANTIATE_TEST_SUITE_P(Kernels, AttentionTest, ::testing::ValuesIn(AvailableLinearKernels()),
                         KernelName);

}  // namespace
}  // namespace moeserve::engine::cpu
