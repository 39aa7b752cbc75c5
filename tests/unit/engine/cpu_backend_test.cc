// The CPU backend against definitions written out plainly here (double precision, no shared
// code with engine/): each op's numbers, and the registry.
#include "engine/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/backend_registry.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"

namespace moeserve::engine {
namespace {

std::vector<float> Random(size_t n, std::mt19937* rng, float lo = -1, float hi = 1) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(*rng);
  return v;
}

// sum (a-b)^2 / sum b^2 over n values.
double Nmse(const float* a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return num / den;
}

// A weight in the given dtype plus its real values as doubles.
struct TestWeight {
  WeightView view;
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
  std::vector<double> real;  // [rows, cols]
};

TestWeight MakeWeight(DType dtype, int64_t rows, int64_t cols, std::mt19937* rng) {
  TestWeight w;
  std::vector<float> v = Random(rows * cols, rng);
  w.real.resize(rows * cols);
  if (dtype == DType::kF32) {
    w.bytes.resize(rows * cols * 4);
    std::memcpy(w.bytes.data(), v.data(), w.bytes.size());
    for (int64_t i = 0; i < rows * cols; ++i) w.real[i] = v[i];
  } else if (dtype == DType::kBf16) {
    w.bytes.resize(rows * cols * 2);
    uint16_t* p = reinterpret_cast<uint16_t*>(w.bytes.data());
    for (int64_t i = 0; i < rows * cols; ++i) {
      p[i] = F32ToBf16(v[i]);
      w.real[i] = Bf16ToF32(p[i]);
    }
  } else {
    const int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
    w.scales = Random(sr * sc, rng, 0.001f, 0.01f);
    w.bytes.resize(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t i = r * cols + c;
        w.bytes[i] = F32ToF8E4M3(v[i] * 400.0f);
        // The definition: W_real = W * scale_inv[r / 128][c / 128].
        w.real[i] =
            static_cast<double>(F8E4M3ToF32(w.bytes[i])) * w.scales[(r / 128) * sc + c / 128];
      }
    }
    w.view.scale_inv = w.scales.data();
  }
  w.view.dtype = dtype;
  w.view.rows = rows;
  w.view.cols = cols;
  w.view.data = w.bytes.data();
  return w;
}

// The definition of one expert in doubles: down(silu(gate x) * up x) for one row x of hidden.
std::vector<double> SwigluReference(const float* x, const TestWeight& gate, const TestWeight& up,
                                    const TestWeight& down, int64_t hidden, int64_t inter) {
  std::vector<double> h(inter), y(hidden);
  for (int64_t i = 0; i < inter; ++i) {
    double g = 0, u = 0;
    for (int64_t c = 0; c < hidden; ++c) {
      g += x[c] * gate.real[i * hidden + c];
      u += x[c] * up.real[i * hidden + c];
    }
    h[i] = g / (1 + std::exp(-g)) * u;
  }
  for (int64_t o = 0; o < hidden; ++o) {
    double s = 0;
    for (int64_t i = 0; i < inter; ++i) s += h[i] * down.real[o * inter + i];
    y[o] = s;
  }
  return y;
}

class CpuBackendTest : public ::testing::Test {
 protected:
  cpu::CpuBackend backend_;
  std::mt19937 rng_{1234};
};

// A capture records calls without running them; each replay runs them again over what the
// buffers hold then. Calls that need the host or new memory are refused while capturing, a bad
// call fails at once and is not recorded, and a graph replays only on the backend that made it.
TEST_F(CpuBackendTest, CaptureRecordsCallsThatEachReplayRunsOverTheCurrentContents) {
  const int64_t n = 6;
  std::vector<float> x = Random(n, &rng_), y = Random(n, &rng_), g = Random(n, &rng_);
  std::vector<float> out(n, 0.0f), copy(n, 0.0f);
  ASSERT_TRUE(backend_.BeginCapture().ok());
  ASSERT_TRUE(backend_.SiluMul(g.data(), y.data(), n, out.data()).ok());
  ASSERT_TRUE(backend_.Add(out.data(), x.data(), n).ok());
  ASSERT_TRUE(backend_.CopyWithin(copy.data(), out.data(), n * 4).ok());
  // Refused while capturing, and not recorded.
  EXPECT_EQ(backend_.Add(out.data(), x.data(), -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_.Allocate(8, MemoryType::kDevice).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(backend_.CopyToBackend(x.data(), y.data(), 4).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(backend_.CopyToHost(x.data(), y.data(), 4).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(backend_.Synchronize().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(backend_.BeginCapture().code(), absl::StatusCode::kFailedPrecondition);
  const ExpertGroup group;
  EXPECT_EQ(backend_.GroupedExperts({x.data(), 1, {&group, 1}, out.data()}).code(),
            absl::StatusCode::kFailedPrecondition);
  // Nothing ran yet.
  EXPECT_EQ(out, std::vector<float>(n, 0.0f));
  absl::StatusOr<GraphPtr> graph = backend_.EndCapture();
  ASSERT_TRUE(graph.ok()) << graph.status();
  EXPECT_EQ(backend_.EndCapture().status().code(), absl::StatusCode::kFailedPrecondition);
  for (int round = 0; round < 2; ++round) {
    // New inputs in the same buffers between replays.
    const std::vector<float> nx = Random(n, &rng_), ng = Random(n, &rng_, -4, 4);
    std::copy(nx.begin(), nx.end(), x.begin());
    std::copy(ng.begin(), ng.end(), g.begin());
    ASSERT_TRUE(backend_.Replay(**graph).ok());
    for (int64_t i = 0; i < n; ++i) {
      const float silu = g[i] / (1.0f + std::exp(-g[i])) * y[i];
      EXPECT_NEAR(out[i], silu + x[i], 1e-5) << "round " << round << " i " << i;
      EXPECT_EQ(copy[i], out[i]);
    }
  }
  // Once the capture is over the calls run again.
  EXPECT_TRUE(backend_.Synchronize().ok());
  cpu::CpuBackend other;
  EXPECT_EQ(other.Replay(**graph).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(CpuBackendTest, AllocatesAlignedHostMemory) {
  absl::StatusOr<BufferPtr> b = backend_.Allocate(1000, MemoryType::kDevice);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->bytes(), 1000);
  EXPECT_EQ((*b)->type(), MemoryType::kDevice);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*b)->data()) % 64, 0u);
  std::vector<uint8_t> src(1000, 7), dst(1000, 0);
  ASSERT_TRUE(backend_.CopyToBackend((*b)->data(), src.data(), 1000).ok());
  ASSERT_TRUE(backend_.CopyToHost(dst.data(), (*b)->data(), 1000).ok());
  EXPECT_EQ(src, dst);
  EXPECT_EQ(backend_.Allocate(-1, MemoryType::kHost).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CpuBackendTest, CopyWithin2DMovesStridedRuns) {
  std::vector<uint8_t> src(5 * 12), dst(4 * 9, 0xee);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i);
  ASSERT_TRUE(backend_.CopyWithin2D(dst.data(), 9, src.data() + 2, 12, 4, 7).ok());
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 9; ++c) {
      EXPECT_EQ(dst[r * 9 + c], c < 7 ? src[r * 12 + 2 + c] : 0xee) << r << "," << c;
    }
  }
  EXPECT_EQ(backend_.CopyWithin2D(dst.data(), 6, src.data(), 12, 2, 7).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_.CopyWithin2D(dst.data(), 9, src.data(), 12, -1, 7).code(),
            absl::StatusCode::kInvalidArgument);
}

void CheckGemm(Backend* backend, DType dtype, int64_t m, int64_t n, int64_t k, double bound,
               std::mt19937* rng) {
  TestWeight w = MakeWeight(dtype, n, k, rng);
  const int64_t ldx = k + 3, ldy = n + 5;
  std::vector<float> x = Random(m * ldx, rng), y(m * ldy, -7.0f);
  ASSERT_TRUE(backend->Gemm({x.data(), m, ldx, w.view, y.data(), ldy}).ok());
  std::vector<double> want(m * n);
  std::vector<float> got(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t c = 0; c < k; ++c) s += static_cast<double>(x[i * ldx + c]) * w.real[j * k + c];
      want[i * n + j] = s;
      got[i * n + j] = y[i * ldy + j];
    }
    EXPECT_EQ(y[i * ldy + n], -7.0f) << "wrote past the row";
  }
  EXPECT_LT(Nmse(got.data(), want), bound) << DTypeName(dtype) << " m=" << m;
}

TEST_F(CpuBackendTest, GemmMatchesDefinitionForEveryDtype) {
  for (int64_t m : {1, 7}) {
    CheckGemm(&backend_, DType::kF32, m, 70, 90, 1e-10, &rng_);
    // cpu::Linear may round x to bf16 for bf16 weights (the avx512bf16 kernel).
    CheckGemm(&backend_, DType::kBf16, m, 70, 90, 1e-4, &rng_);
    // 200 x 300: partial 128-blocks in both directions, six distinct scales.
    CheckGemm(&backend_, DType::kF8E4M3, m, 200, 300, 1e-10, &rng_);
  }
}

// A batched product equals its products one by one; FP8 weights and bad strides are refused.
TEST_F(CpuBackendTest, BatchedGemmEqualsEachProductAlone) {
  const int64_t heads = 3, m = 2, n = 8, k = 16;
  TestWeight w = MakeWeight(DType::kBf16, heads * n, k, &rng_);
  std::vector<float> x = Random(m * heads * k, &rng_), got(m * heads * n), want(m * heads * n);
  GemmArgs g{x.data(), m, heads * k, w.view, got.data(), heads * n};
  g.w.rows = n;
  g.batch = heads;
  g.stride_x = k;
  g.stride_w = n * k;
  g.stride_y = n;
  ASSERT_TRUE(backend_.Gemm(g).ok());
  for (int64_t i = 0; i < heads; ++i) {
    GemmArgs one{x.data() + i * k, m, heads * k, g.w, want.data() + i * n, heads * n};
    one.w.data = w.bytes.data() + i * n * k * 2;
    ASSERT_TRUE(backend_.Gemm(one).ok());
  }
  EXPECT_EQ(got, want);
  g.stride_x = -1;
  EXPECT_EQ(backend_.Gemm(g).code(), absl::StatusCode::kInvalidArgument);
  TestWeight f8 = MakeWeight(DType::kF8E4M3, n, k, &rng_);
  GemmArgs f{x.data(), m, heads * k, f8.view, got.data(), heads * n};
  f.batch = 2;
  EXPECT_EQ(backend_.Gemm(f).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CpuBackendTest, GemmRejectsBadArgs) {
  TestWeight w = MakeWeight(DType::kF8E4M3, 4, 4, &rng_);
  std::vector<float> x(16), y(16);
  w.view.scale_inv = nullptr;
  EXPECT_EQ(backend_.Gemm({x.data(), 1, 4, w.view, y.data(), 4}).code(),
            absl::StatusCode::kInvalidArgument);
  w.view.dtype = DType::kF16;
  EXPECT_EQ(backend_.Gemm({x.data(), 1, 4, w.view, y.data(), 4}).code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_FALSE(backend_.Supports(OpKind::kGemm, DType::kF16));
  EXPECT_TRUE(backend_.Supports(OpKind::kGemm, DType::kF8E4M3));
}

TEST_F(CpuBackendTest, RmsNormMatchesDefinitionStridedAndInPlace) {
  const int64_t rows = 3, dim = 100, ld = 110;
  std::vector<float> x = Random(rows * ld, &rng_), w = Random(dim, &rng_), out(rows * ld);
  std::vector<double> want(rows * dim);
  std::vector<float> got(rows * dim);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[r * ld + i]) * x[r * ld + i];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-6);
    for (int64_t i = 0; i < dim; ++i) want[r * dim + i] = x[r * ld + i] * inv * w[i];
  }
  ASSERT_TRUE(backend_.RmsNorm({x.data(), ld, w.data(), out.data(), ld, rows, dim, 1e-6}).ok());
  for (int64_t r = 0; r < rows; ++r) std::copy_n(&out[r * ld], dim, &got[r * dim]);
  EXPECT_LT(Nmse(got.data(), want), 1e-12);
  ASSERT_TRUE(backend_.RmsNorm({x.data(), ld, w.data(), x.data(), ld, rows, dim, 1e-6}).ok());
  for (int64_t r = 0; r < rows; ++r) std::copy_n(&x[r * ld], dim, &got[r * dim]);
  EXPECT_LT(Nmse(got.data(), want), 1e-12);
}

TEST_F(CpuBackendTest, RopeRotatesPairsByPosition) {
  const int64_t rows = 6, ld = 24, offset = 8, dim = 16, per = 2;
  const std::vector<int32_t> positions = {0, 5, 70000};
  std::vector<float> inv_freq(dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / dim);
  const double mscale = 1.3;
  std::vector<float> x = Random(rows * ld, &rng_), orig = x;
  RopeArgs a;
  a.x = x.data();
  a.rows = rows;
  a.ld = ld;
  a.offset = offset;
  a.dim = dim;
  a.positions = positions.data();
  a.rows_per_position = per;
  a.inv_freq = inv_freq.data();
  a.mscale = mscale;
  ASSERT_TRUE(backend_.Rope(a).ok());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < ld; ++c) {
      if (c < offset || c >= offset + dim) {
        EXPECT_EQ(x[r * ld + c], orig[r * ld + c]);
      }
    }
    for (int64_t i = 0; i < dim / 2; ++i) {
      const double angle = static_cast<double>(positions[r / per]) * inv_freq[i];
      const double c = std::cos(angle) * mscale, s = std::sin(angle) * mscale;
      const double x0 = orig[r * ld + offset + 2 * i], x1 = orig[r * ld + offset + 2 * i + 1];
      EXPECT_NEAR(x[r * ld + offset + 2 * i], x0 * c - x1 * s, 1e-5);
      EXPECT_NEAR(x[r * ld + offset + 2 * i + 1], x1 * c + x0 * s, 1e-5);
    }
  }
}

// The router written out: scores, bias for the choice, group pruning, top-k, weights.
void RouteDefinition(const GateConfig& c, const float* logits, const float* bias,
                     std::vector<int32_t>* ids, std::vector<double>* weights) {
  const int64_t e = c.n_routed_experts;
  std::vector<double> score(e), choice(e);
  double mx = -INFINITY, z = 0;
  for (int64_t i = 0; i < e; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  for (int64_t i = 0; i < e; ++i) z += std::exp(logits[i] - mx);
  for (int64_t i = 0; i < e; ++i) {
    score[i] = c.scoring_func == ScoringFunc::kSigmoid ? 1.0 / (1.0 + std::exp(-logits[i]))
                                                       : std::exp(logits[i] - mx) / z;
    choice[i] = score[i] + (c.topk_method == TopkMethod::kNoauxTc && bias ? bias[i] : 0.0);
  }
  auto by_value = [](const std::vector<double>& v) {
    std::vector<int32_t> idx(v.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return v[a] > v[b]; });
    return idx;
  };
  if (c.topk_method != TopkMethod::kGreedy && c.n_group > 1) {
    const int64_t per = e / c.n_group;
    std::vector<double> group(c.n_group);
    for (int64_t g = 0; g < c.n_group; ++g) {
      std::vector<double> members(choice.begin() + g * per, choice.begin() + (g + 1) * per);
      std::sort(members.rbegin(), members.rend());
      group[g] = c.topk_method == TopkMethod::kNoauxTc ? members[0] + members[1] : members[0];
    }
    std::vector<int32_t> order = by_value(group);
    for (int64_t g = c.topk_group; g < c.n_group; ++g) {
      for (int64_t i = 0; i < per; ++i) choice[order[g] * per + i] = -INFINITY;
    }
  }
  std::vector<int32_t> order = by_value(choice);
  ids->assign(order.begin(), order.begin() + c.num_experts_per_tok);
  weights->clear();
  double sum = 0;
  for (int32_t id : *ids) sum += score[id];
  for (int32_t id : *ids) {
    const double w = c.norm_topk_prob && ids->size() > 1 ? score[id] / sum : score[id];
    weights->push_back(w * c.routed_scaling_factor);
  }
}

TEST_F(CpuBackendTest, GateMatchesDefinitionOnSeveralConfigs) {
  std::vector<GateConfig> configs(4);
  configs[0] = {16, 4, 4, 2, true, 2.5, ScoringFunc::kSigmoid, TopkMethod::kNoauxTc};
  configs[1] = {8, 2, 1, 1, false, 1.0, ScoringFunc::kSoftmax, TopkMethod::kGreedy};
  configs[2] = {12, 3, 3, 1, false, 1.0, ScoringFunc::kSoftmax, TopkMethod::kGroupLimitedGreedy};
  configs[3] = {64, 8, 8, 4, true, 2.5, ScoringFunc::kSigmoid, TopkMethod::kNoauxTc};
  const int64_t tokens = 9;
  for (const GateConfig& c : configs) {
    const int64_t e = c.n_routed_experts, k = c.num_experts_per_tok;
    std::vector<float> logits = Random(tokens * e, &rng_, -3, 3),
                       bias = Random(e, &rng_, -.2f, .2f);
    std::vector<int32_t> ids(tokens * k);
    std::vector<float> weights(tokens * k);
    ASSERT_TRUE(
        backend_.Gate({logits.data(), bias.data(), tokens, c, ids.data(), weights.data()}).ok());
    for (int64_t t = 0; t < tokens; ++t) {
      std::vector<int32_t> want_ids;
      std::vector<double> want_w;
      RouteDefinition(c, &logits[t * e], bias.data(), &want_ids, &want_w);
      for (int64_t j = 0; j < k; ++j) {
        EXPECT_EQ(ids[t * k + j], want_ids[j])
            << "experts " << e << " token " << t << " rank " << j;
        EXPECT_NEAR(weights[t * k + j], want_w[j], 1e-5 * std::abs(want_w[j]) + 1e-7);
      }
    }
  }
  GateConfig bad = configs[0];
  bad.n_group = 5;
  EXPECT_EQ(backend_.Gate({nullptr, nullptr, 0, bad, nullptr, nullptr}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CpuBackendTest, SiluMulAddAndEmbedding) {
  const int64_t n = 37;
  std::vector<float> g = Random(n, &rng_, -8, 8), u = Random(n, &rng_), out(n);
  ASSERT_TRUE(backend_.SiluMul(g.data(), u.data(), n, out.data()).ok());
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_NEAR(out[i], g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i], 1e-5);
  }
  std::vector<float> x = g;
  ASSERT_TRUE(backend_.Add(x.data(), u.data(), n).ok());
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(x[i], g[i] + u[i]);

  const int64_t vocab = 10, dim = 6;
  std::vector<float> table = Random(vocab * dim, &rng_);
  std::vector<uint16_t> table_bf16(vocab * dim);
  for (size_t i = 0; i < table.size(); ++i) table_bf16[i] = F32ToBf16(table[i]);
  const std::vector<int32_t> ids = {3, 0, 9, 10, -1, 3};
  for (DType dtype : {DType::kF32, DType::kBf16}) {
    std::vector<float> emb(ids.size() * dim, 5.0f);
    const void* t =
        dtype == DType::kF32 ? static_cast<const void*>(table.data()) : table_bf16.data();
    ASSERT_TRUE(backend_.Embedding({t, dtype, vocab, dim, ids.data(), 6, emb.data()}).ok());
    for (size_t r = 0; r < ids.size(); ++r) {
      for (int64_t c = 0; c < dim; ++c) {
        const bool valid = ids[r] >= 0 && ids[r] < vocab;
        const float want = !valid                 ? 0.0f
                           : dtype == DType::kF32 ? table[ids[r] * dim + c]
                                                  : Bf16ToF32(table_bf16[ids[r] * dim + c]);
        EXPECT_EQ(emb[r * dim + c], want) << r;
      }
    }
  }
}

TEST_F(CpuBackendTest, GroupedExpertsMatchDefinitionPerGroup) {
  const int64_t hidden = 40, inter = 24, rows = 7;
  std::vector<TestWeight> weights;
  const DType dtypes[3][3] = {{DType::kBf16, DType::kF32, DType::kF8E4M3},
                              {DType::kF32, DType::kF32, DType::kF32},
                              {DType::kF8E4M3, DType::kF8E4M3, DType::kBf16}};
  for (auto& d : dtypes) {
    weights.push_back(MakeWeight(d[0], inter, hidden, &rng_));
    weights.push_back(MakeWeight(d[1], inter, hidden, &rng_));
    weights.push_back(MakeWeight(d[2], hidden, inter, &rng_));
  }
  // Expert 1 has no rows; row 6 belongs to no group and must stay as it was.
  const int64_t offsets[3] = {0, 2, 2}, counts[3] = {2, 0, 4};
  std::vector<ExpertGroup> groups;
  for (int e = 0; e < 3; ++e) {
    groups.push_back({offsets[e], counts[e], weights[3 * e].view, weights[3 * e + 1].view,
                      weights[3 * e + 2].view});
  }
  std::vector<float> x = Random(rows * hidden, &rng_), out(rows * hidden, 9.0f);
  ASSERT_TRUE(backend_.GroupedExperts({x.data(), hidden, groups, out.data()}).ok());
  std::vector<double> want;
  std::vector<float> got;
  for (int e = 0; e < 3; ++e) {
    for (int64_t r = offsets[e]; r < offsets[e] + counts[e]; ++r) {
      const std::vector<double> y = SwigluReference(&x[r * hidden], weights[3 * e],
                                                    weights[3 * e + 1], weights[3 * e + 2],
                                                    hidden, inter);
      want.insert(want.end(), y.begin(), y.end());
      got.insert(got.end(), out.begin() + r * hidden, out.begin() + (r + 1) * hidden);
    }
  }
  EXPECT_LT(Nmse(got.data(), want), 1e-4);  // bf16 weights may round x to bf16
  for (int64_t c = 0; c < hidden; ++c) EXPECT_EQ(out[6 * hidden + c], 9.0f);
}

// RoutedExperts: each token's top-k experts' SwiGLU outputs, weighted and summed, against the
// definition in doubles; a bad id is refused.
TEST_F(CpuBackendTest, RoutedExpertsMatchDefinitionAndRefuseBadIds) {
  const int64_t hidden = 48, inter = 32, n_experts = 4, n = 5, k = 2;
  for (DType dtype : {DType::kF32, DType::kBf16, DType::kF8E4M3}) {
    SCOPED_TRACE(DTypeName(dtype));
    std::vector<TestWeight> w;
    std::vector<ExpertWeightPointers> table;
    for (int64_t e = 0; e < n_experts; ++e) {
      w.push_back(MakeWeight(dtype, inter, hidden, &rng_));
      w.push_back(MakeWeight(dtype, inter, hidden, &rng_));
      w.push_back(MakeWeight(dtype, hidden, inter, &rng_));
    }
    for (int64_t e = 0; e < n_experts; ++e) {
      table.push_back({w[3 * e].view.data, w[3 * e + 1].view.data, w[3 * e + 2].view.data,
                       w[3 * e].view.scale_inv, w[3 * e + 1].view.scale_inv,
                       w[3 * e + 2].view.scale_inv});
    }
    // Expert 1 is nobody's; expert 3 is everybody's.
    std::vector<int32_t> ids = {3, 0, 2, 3, 3, 2, 0, 3, 3, 0};
    std::vector<float> weights = Random(n * k, &rng_, 0.1f, 1.0f);
    std::vector<float> x = Random(n * hidden, &rng_), out(n * hidden, 9.0f);
    RoutedExpertsArgs a;
    a.x = x.data();
    a.n = n;
    a.k = k;
    a.hidden = hidden;
    a.inter = inter;
    a.n_experts = n_experts;
    a.dtype = dtype;
    a.experts = table.data();
    a.ids = ids.data();
    a.weights = weights.data();
    a.out = out.data();
    ASSERT_TRUE(backend_.RoutedExperts(a).ok());
    std::vector<double> want(n * hidden, 0.0);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = ids[t * k + j];
        const std::vector<double> y =
            SwigluReference(&x[t * hidden], w[3 * e], w[3 * e + 1], w[3 * e + 2], hidden, inter);
        for (int64_t o = 0; o < hidden; ++o) want[t * hidden + o] += weights[t * k + j] * y[o];
      }
    }
    EXPECT_LT(Nmse(out.data(), want), 1e-4);
    ids[3] = static_cast<int32_t>(n_experts);
    absl::Status bad = backend_.RoutedExperts(a);
    EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
    a.experts = nullptr;
    EXPECT_EQ(backend_.RoutedExperts(a).code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(CpuBackendTest, LatentAttentionOverSeveralBlocks) {
  const int64_t layers = 2, layer = 1, bt = 4, lat = 12, kvr = 8, blocks = 8, max_blocks = 4;
  std::vector<float> cache = Random(blocks * layers * bt * lat, &rng_);
  // Two sequences with shuffled block tables; items of each at several causal lengths.
  const std::vector<int32_t> tables = {5, 2, 7, 0, 1, 6, 3, 4};
  const std::vector<int32_t> rows = {0, 0, 1, 1, 0};
  const std::vector<int32_t> lens = {1, 11, 16, 5, 4};
  const int64_t items = 5, ldq = 14, ld_out = 9;
  std::vector<float> q = Random(items * ldq, &rng_), out(items * ld_out, 3.0f);
  const float scale = 0.37f;
  LatentAttentionArgs a;
  a.q = q.data();
  a.ldq = ldq;
  a.items = items;
  a.table_rows = rows.data();
  a.lens = lens.data();
  a.block_tables = tables.data();
  a.max_blocks = max_blocks;
  a.cache = cache.data();
  a.num_layers = layers;
  a.layer = layer;
  a.block_tokens = bt;
  a.lat = lat;
  a.kvr = kvr;
  a.scale = scale;
  a.out = out.data();
  a.ld_out = ld_out;
  ASSERT_TRUE(backend_.LatentAttention(a).ok());
  for (int64_t i = 0; i < items; ++i) {
    auto row = [&](int64_t s) {
      const int64_t block = tables[rows[i] * max_blocks + s / bt];
      return &cache[((block * layers + layer) * bt + s % bt) * lat];
    };
    std::vector<double> score(lens[i]);
    double mx = -INFINITY, z = 0;
    for (int64_t s = 0; s < lens[i]; ++s) {
      double d = 0;
      for (int64_t c = 0; c < lat; ++c) d += static_cast<double>(q[i * ldq + c]) * row(s)[c];
      score[s] = d * scale;
      mx = std::max(mx, score[s]);
    }
    for (double& s : score) z += (s = std::exp(s - mx));
    for (int64_t c = 0; c < kvr; ++c) {
      double want = 0;
      for (int64_t s = 0; s < lens[i]; ++s) want += score[s] / z * row(s)[c];
      EXPECT_NEAR(out[i * ld_out + c], want, 1e-5) << "item " << i;
    }
    EXPECT_EQ(out[i * ld_out + kvr], 3.0f);
  }
  std::vector<int32_t> too_long = {17, 1, 1, 1, 1};
  a.lens = too_long.data();
  EXPECT_EQ(backend_.LatentAttention(a).code(), absl::StatusCode::kInvalidArgument);
}

// A BF16 cache is read as its values widened to float32: the same outputs, bit for bit, as a
// float32 cache holding those values, grouped or not.
TEST_F(CpuBackendTest, LatentAttentionOverABf16CacheEqualsTheWidenedFloatCache) {
  const int64_t layers = 2, bt = 4, lat = 12, kvr = 8, max_blocks = 4, items = 6;
  std::vector<float> values = Random(8 * layers * bt * lat, &rng_), widened(values.size());
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    bits[i] = F32ToBf16(values[i]);
    widened[i] = Bf16ToF32(bits[i]);
  }
  const std::vector<int32_t> tables = {5, 2, 7, 0, 1, 6, 3, 4};
  // Two query tokens of three heads each: items of a group share their row and length.
  const std::vector<int32_t> rows = {0, 0, 0, 1, 1, 1}, lens = {11, 11, 11, 5, 5, 5};
  std::vector<float> q = Random(items * lat, &rng_), want(items * kvr), got(items * kvr);
  // Layer 1 of two; the float32 cache first.
  LatentAttentionArgs a{q.data(), lat, items, 1, rows.data(), lens.data(), tables.data(),
                        max_blocks, widened.data(), layers, 1, bt, lat, kvr, 0.3f, want.data(),
                        kvr};
  ASSERT_TRUE(backend_.LatentAttention(a).ok());
  a.cache = bits.data();
  a.cache_dtype = DType::kBf16;
  a.out = got.data();
  for (int64_t group : {1, 3}) {
    a.group = group;
    std::fill(got.begin(), got.end(), -1.0f);
    ASSERT_TRUE(backend_.LatentAttention(a).ok()) << group;
    EXPECT_EQ(got, want) << "group " << group;
  }
  a.cache_dtype = DType::kF16;
  absl::Status s = backend_.LatentAttention(a);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

// Rows scattered into a BF16 destination are rounded to nearest even (F32ToBf16, NaN kept a
// NaN); rows not named stay as they were, and a source row sent to row -1 (padding) is skipped.
TEST_F(CpuBackendTest, ScatterRowsRoundsIntoABf16Destination) {
  const int64_t n = 3, width = 5, ld_src = 6, ld_dst = 7, dst_rows = 5;
  std::vector<float> src = Random(n * ld_src, &rng_);
  src[1] = std::numeric_limits<float>::quiet_NaN();
  src[2] = 1.0f + 1.0f / 256;  // a tie: rounds to the even 1.0
  const std::vector<int64_t> rows = {4, -1, 2};
  std::vector<uint16_t> dst(dst_rows * ld_dst, 0x1234);
  ScatterRowsArgs a{src.data(), ld_src, n, width, rows.data(), dst.data(), ld_dst, DType::kBf16};
  ASSERT_TRUE(backend_.ScatterRows(a).ok());
  for (int64_t r = 0; r < dst_rows; ++r) {
    const auto it = std::find(rows.begin(), rows.end(), r);
    for (int64_t c = 0; c < ld_dst; ++c) {
      const uint16_t want = it == rows.end() || c >= width
                                ? uint16_t{0x1234}
                                : F32ToBf16(src[(it - rows.begin()) * ld_src + c]);
      EXPECT_EQ(dst[r * ld_dst + c], want) << r << "," << c;
    }
  }
  EXPECT_EQ(dst[4 * ld_dst + 2], 0x3f80);
  EXPECT_TRUE(std::isnan(Bf16ToF32(dst[4 * ld_dst + 1])));
  a.dst_dtype = DType::kF8E4M3;
  EXPECT_EQ(backend_.ScatterRows(a).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CpuBackendTest, LatentAttentionGroupMustDivideItems) {
  const int64_t bt = 4, lat = 12, kvr = 8, items = 6;
  std::vector<float> cache = Random(2 * bt * lat, &rng_), q = Random(items * lat, &rng_);
  std::vector<float> out(items * kvr);
  const std::vector<int32_t> tables = {1, 0}, rows(items, 0), lens(items, 5);
  LatentAttentionArgs a;
  a.q = q.data();
  a.ldq = lat;
  a.items = items;
  a.table_rows = rows.data();
  a.lens = lens.data();
  a.block_tables = tables.data();
  a.max_blocks = 2;
  a.cache = cache.data();
  a.num_layers = 1;
  a.block_tokens = bt;
  a.lat = lat;
  a.kvr = kvr;
  a.out = out.data();
  a.ld_out = kvr;
  ASSERT_TRUE(backend_.LatentAttention(a).ok());
  const std::vector<float> one = out;
  for (int64_t group : {2, 3, 6}) {
    a.group = group;
    ASSERT_TRUE(backend_.LatentAttention(a).ok()) << group;
    EXPECT_EQ(out, one) << group;  // the CPU result does not depend on the grouping
  }
  for (int64_t group : {0, -1, 4, 7}) {
    a.group = group;
    absl::Status s = backend_.LatentAttention(a);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << group;
    EXPECT_NE(s.message().find("group"), std::string::npos) << s;
  }
  // The items of a group share their row and length (they are read once for the group).
  a.group = 3;
  std::vector<int32_t> longer = lens, other_row = rows;
  longer[4] = 8;
  other_row[1] = 1;
  for (const std::vector<int32_t>* v : {&longer, &other_row}) {
    a.lens = v == &longer ? longer.data() : lens.data();
    a.table_rows = v == &other_row ? other_row.data() : rows.data();
    absl::Status s = backend_.LatentAttention(a);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("group"), std::string::npos) << s;
  }
}

// The sampling definition in double: order by p descending (lower id first), keep the
// shortest prefix reaching top_p, pick where the running mass first exceeds u * kept mass.
int32_t SampleDefinition(const float* logits, int64_t vocab, double t, double top_p, double u) {
  int32_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
  }
  if (t == 0) return best;
  std::vector<double> p(vocab);
  for (int64_t i = 0; i < vocab; ++i) p[i] = std::exp((logits[i] - logits[best]) / t);
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  double run = 0;
  int64_t kept = 0;
  while (kept < vocab && run < top_p * total) run += p[order[kept++]];
  double acc = 0;
  for (int64_t j = 0; j < kept; ++j) {
    acc += p[order[j]];
    if (acc > u * run) return order[j];
  }
  return order[kept - 1];
}

TEST_F(CpuBackendTest, SampleGreedyTopPAndDraws) {
  // Hand-checked rows: a tie (greedy picks the lower id); p = softmax(3,2,1,0) ~ .64 .24 .09
  // .03, so top_p 0.5 keeps only id 0 whatever the draw and u = 0.99 without top-p reaches id 3.
  const int64_t vocab = 4;
  std::vector<float> logits = {1, 5, 5, 0, 3, 2, 1, 0, 3, 2, 1, 0, 3, 2, 1, 0};
  std::vector<float> temp = {0, 1, 1, 1}, top_p = {1, 0.5f, 1, 1}, u = {0.5f, 0.99f, 0.99f, 0.7f};
  std::vector<int32_t> ids(4, -1);
  ASSERT_TRUE(
      backend_
          .Sample({logits.data(), vocab, 4, vocab, temp.data(), top_p.data(), u.data(), ids.data()})
          .ok());
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 0, 3, 1}));

  // Random rows against the definition.
  const int64_t rows = 40, v = 300, ld = 310;
  logits = Random(rows * ld, &rng_, -4, 4);
  temp.clear();
  top_p.clear();
  u.clear();
  for (int64_t r = 0; r < rows; ++r) {
    temp.push_back(r % 5 == 0 ? 0.0f : 0.3f + 0.1f * (r % 7));
    top_p.push_back(r % 3 == 0 ? 1.0f : 0.2f + 0.1f * (r % 8));
    u.push_back(static_cast<float>((r * 0.618034) - std::floor(r * 0.618034)));
  }
  ids.assign(rows, -1);
  ASSERT_TRUE(
      backend_.Sample({logits.data(), ld, rows, v, temp.data(), top_p.data(), u.data(), ids.data()})
          .ok());
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_EQ(ids[r], SampleDefinition(&logits[r * ld], v, temp[r], top_p[r], u[r])) << r;
  }
}

TEST_F(CpuBackendTest, ArgmaxTakesTheFirstLargestOfTheVocabPrefix) {
  // Row 0: a tie (the lower id); row 1: the largest past the prefix is ignored; row 2: all -inf
  // (id 0, as Sample's greedy row); the stride skips a padding column.
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> logits = {1, 5, 5, 0, 9, 3, 2, 1, 7, 9, -inf, -inf, -inf, -inf, 9};
  std::vector<int32_t> ids(3, -1);
  ASSERT_TRUE(backend_.Argmax({logits.data(), 5, 3, 4, ids.data()}).ok());
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 3, 0}));
  // Random rows: Sample's greedy rows.
  const int64_t rows = 16, v = 300, ld = 310;
  logits = Random(rows * ld, &rng_, -4, 4);
  std::vector<float> zeros(rows, 0.0f), ones(rows, 1.0f);
  std::vector<int32_t> greedy(rows, -1);
  ids.assign(rows, -1);
  ASSERT_TRUE(backend_.Argmax({logits.data(), ld, rows, v, ids.data()}).ok());
  ASSERT_TRUE(backend_
                  .Sample({logits.data(), ld, rows, v, zeros.data(), ones.data(), zeros.data(),
                           greedy.data()})
                  .ok());
  EXPECT_EQ(ids, greedy);
  EXPECT_EQ(backend_.Argmax({logits.data(), 10, 1, 11, ids.data()}).code(),
            absl::StatusCode::kInvalidArgument);  // ld < vocab
  EXPECT_EQ(backend_.Argmax({nullptr, ld, 1, v, ids.data()}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BackendRegistryTest, CreatesCpuAndExplainsCuda) {
  absl::StatusOr<BackendPtr> cpu = CreateBackend("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ((*cpu)->name(), "cpu");
  EXPECT_TRUE(CreateBackend("cpu:2").ok());
  EXPECT_EQ(CreateBackend("tpu").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateBackend("cuda:x").status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<BackendPtr> cuda = CreateBackend("cuda");
  if (!cuda.ok()) {
    EXPECT_TRUE(cuda.status().code() == absl::StatusCode::kFailedPrecondition ||
                cuda.status().code() == absl::StatusCode::kUnavailable)
        << cuda.status();
    EXPECT_NE(cuda.status().message().find("cuda"), std::string::npos) << cuda.status();
  }
  std::vector<std::string> names = RegisteredBackends();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names[0], "cpu");
}

}  // namespace
}  // namespace moeserve::engine
