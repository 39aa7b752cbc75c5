// Every op of every registered non-CPU backend against the CPU backend (the reference) on the
// same random inputs, with a per-op bound on the normalised mean squared error
// NMSE = sum (a - b)^2 / sum b^2 (ggml's test-backend-ops). Ids (argmax, gate, sampling) must
// match exactly: the inputs are built so that no choice sits within rounding of a tie.
// Without a device (or without the CUDA build) every test is skipped.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/backend_registry.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"

namespace moeserve::engine {
namespace {

double Nmse(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return den == 0 ? num : num / den;
}

std::vector<float> Random(size_t n, std::mt19937* rng, float lo = -1, float hi = 1) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(*rng);
  return v;
}

// Host bytes mirrored into one backend's memory.
class Mirror {
 public:
  Mirror(Backend* backend, const void* host, size_t bytes) : backend_(backend), bytes_(bytes) {
    absl::StatusOr<BufferPtr> b =
        backend->Allocate(static_cast<int64_t>(bytes), MemoryType::kDevice);
    EXPECT_TRUE(b.ok()) << b.status();
    if (!b.ok()) return;
    buffer_ = std::move(*b);
    if (bytes > 0) {
      absl::Status s = backend->CopyToBackend(buffer_->data(), host, static_cast<int64_t>(bytes));
      EXPECT_TRUE(s.ok()) << s;
    }
  }
  template <typename T>
  Mirror(Backend* backend, const std::vector<T>& v)
      : Mirror(backend, v.data(), v.size() * sizeof(T)) {}

  template <typename T>
  T* as() const {
    return buffer_ ? static_cast<T*>(buffer_->data()) : nullptr;
  }
  template <typename T>
  std::vector<T> Read() const {
    std::vector<T> v(bytes_ / sizeof(T));
    if (buffer_ == nullptr) return v;
    absl::Status s = backend_->CopyToHost(v.data(), buffer_->data(), static_cast<int64_t>(bytes_));
    EXPECT_TRUE(s.ok()) << s;
    return v;
  }

 private:
  Backend* backend_;
  size_t bytes_;
  BufferPtr buffer_;
};

// A weight in host memory (for the CPU reference) with its bytes and scales.
struct HostWeight {
  DType dtype;
  int64_t rows, cols;
  std::vector<uint8_t> bytes;
  std::vector<float> scales;
  WeightView View(const void* data, const float* scale) const {
    return {dtype, rows, cols, data, dtype == DType::kF8E4M3 ? scale : nullptr};
  }
};

HostWeight MakeWeight(DType dtype, int64_t rows, int64_t cols, std::mt19937* rng) {
  HostWeight w{dtype, rows, cols, {}, {}};
  std::vector<float> v = Random(rows * cols, rng);
  if (dtype == DType::kF32) {
    w.bytes.resize(v.size() * 4);
    std::memcpy(w.bytes.data(), v.data(), w.bytes.size());
  } else if (dtype == DType::kBf16) {
    w.bytes.resize(v.size() * 2);
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t b = F32ToBf16(v[i]);
      std::memcpy(&w.bytes[2 * i], &b, 2);
    }
  } else {
    w.bytes.resize(v.size());
    for (size_t i = 0; i < v.size(); ++i) w.bytes[i] = F32ToF8E4M3(v[i] * 448.0f);
    w.scales = Random(((rows + 127) / 128) * ((cols + 127) / 128), rng, 1e-3f, 4e-3f);
  }
  return w;
}

// The weight mirrored on a backend.
struct DeviceWeight {
  Mirror data, scales;
  WeightView view;
  DeviceWeight(Backend* b, const HostWeight& w)
      : data(b, w.bytes), scales(b, w.scales), view(w.View(data.as<void>(), scales.as<float>())) {}
};

class BackendParityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<BackendPtr> cpu = CreateBackend("cpu");
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    cpu_ = std::move(*cpu);
    std::string why;
    for (const std::string& name : RegisteredBackends()) {
      if (name == "cpu") continue;
      absl::StatusOr<BackendPtr> b = CreateBackend(name);
      if (b.ok()) {
        backends_.push_back(std::move(*b));
      } else {
        why += std::string(b.status().message()) + "; ";
      }
    }
    if (backends_.empty()) GTEST_SKIP() << "no non-CPU backend to compare: " << why;
  }

  BackendPtr cpu_;
  std::vector<BackendPtr> backends_;
  std::mt19937 rng_{20261124};
};

TEST_F(BackendParityTest, CopyWithin2D) {
  std::vector<float> src = Random(37 * 29, &rng_);
  std::vector<float> want(37 * 11, 0.0f);
  ASSERT_TRUE(cpu_->CopyWithin2D(want.data(), 11 * 4, src.data() + 5, 29 * 4, 37, 9 * 4).ok());
  for (auto& b : backends_) {
    Mirror ds(b.get(), src), dd(b.get(), std::vector<float>(37 * 11, 0.0f));
    ASSERT_TRUE(b->CopyWithin2D(dd.as<float>(), 11 * 4, ds.as<float>() + 5, 29 * 4, 37, 9 * 4).ok());
    EXPECT_EQ(dd.Read<float>(), want) << b->name();
  }
}

TEST_F(BackendParityTest, Gemm) {
  struct Case {
    DType dtype;
    int64_t m, n, k;
    double bound;
  };
  // bf16: the CPU may or may not round x to bf16 (per ISA); the device always does.
  const Case cases[] = {
      {DType::kF32, 1, 300, 520, 1e-6},     {DType::kF32, 33, 257, 130, 1e-6},
      {DType::kBf16, 1, 512, 1024, 1e-4},   {DType::kBf16, 70, 384, 256, 1e-4},
      {DType::kBf16, 3, 130, 257, 1e-4},    {DType::kF8E4M3, 1, 384, 520, 1e-6},
      {DType::kF8E4M3, 65, 200, 300, 1e-6}, {DType::kF8E4M3, 300, 256, 128, 1e-6}};
  for (const Case& c : cases) {
    HostWeight w = MakeWeight(c.dtype, c.n, c.k, &rng_);
    const int64_t ldx = c.k + 4, ldy = c.n + 8;
    std::vector<float> x = Random(c.m * ldx, &rng_), want(c.m * ldy, 0.0f);
    ASSERT_TRUE(
        cpu_->Gemm({x.data(), c.m, ldx, w.View(w.bytes.data(), w.scales.data()), want.data(), ldy})
            .ok());
    for (auto& b : backends_) {
      DeviceWeight dw(b.get(), w);
      Mirror dx(b.get(), x), dy(b.get(), std::vector<float>(c.m * ldy, 0.0f));
      ASSERT_TRUE(b->Gemm({dx.as<float>(), c.m, ldx, dw.view, dy.as<float>(), ldy}).ok());
      EXPECT_LT(Nmse(dy.Read<float>(), want), c.bound)
          << b->name() << " " << DTypeName(c.dtype) << " m=" << c.m << " n=" << c.n << " k=" << c.k;
    }
  }
}

// Batched products (the heads of MLA's absorbed projections): m 1, 3, 8 (the device's skinny
// kernel, with and without 16-byte loads) and 12 (one cuBLASLt call per product).
TEST_F(BackendParityTest, BatchedGemm) {
  const int64_t heads = 5, n = 96;
  for (int64_t k : {128, 130}) {
    for (int64_t m : {1, 3, 8, 12}) {
      for (DType dtype : {DType::kF32, DType::kBf16}) {
        HostWeight w = MakeWeight(dtype, heads * n, k, &rng_);  // head i: rows [i*n, (i+1)*n)
        const int64_t ldx = heads * k, ldy = heads * n + 3;
        std::vector<float> x = Random(m * ldx, &rng_), want(m * ldy, 0.0f);
        GemmArgs g{x.data(), m, ldx, w.View(w.bytes.data(), nullptr), want.data(), ldy};
        g.w.rows = n;
        g.batch = heads;
        g.stride_x = k;
        g.stride_w = n * k;
        g.stride_y = n;
        ASSERT_TRUE(cpu_->Gemm(g).ok());
        for (auto& b : backends_) {
          DeviceWeight dw(b.get(), w);
          Mirror dx(b.get(), x), dy(b.get(), std::vector<float>(m * ldy, 0.0f));
          GemmArgs d = g;
          d.x = dx.as<float>();
          d.w = dw.view;
          d.w.rows = n;
          d.y = dy.as<float>();
          ASSERT_TRUE(b->Gemm(d).ok());
          EXPECT_LT(Nmse(dy.Read<float>(), want), dtype == DType::kF32 ? 1e-6 : 1e-4)
              << b->name() << " " << DTypeName(dtype) << " m=" << m << " k=" << k;
        }
      }
    }
  }
}

TEST_F(BackendParityTest, ScatterRows) {
  const int64_t n = 5, width = 37, ld_src = 40, ld_dst = 41, dst_rows = 12;
  std::vector<float> src = Random(n * ld_src, &rng_), want = Random(dst_rows * ld_dst, &rng_);
  const std::vector<int64_t> rows = {7, 0, -1, 3, 4};  // -1: a padding row, skipped
  const std::vector<float> before = want;
  ASSERT_TRUE(cpu_->ScatterRows({src.data(), ld_src, n, width, rows.data(), want.data(), ld_dst})
                  .ok());
  for (auto& b : backends_) {
    Mirror ds(b.get(), src), dr(b.get(), rows), dd(b.get(), before);
    ASSERT_TRUE(
        b->ScatterRows({ds.as<float>(), ld_src, n, width, dr.as<int64_t>(), dd.as<float>(), ld_dst})
            .ok());
    EXPECT_EQ(dd.Read<float>(), want) << b->name();
  }
  // Into a bf16 destination: the host's rounding bit for bit (ties to even, NaN kept a NaN).
  src[3] = std::numeric_limits<float>::quiet_NaN();
  src[4] = 1.0f + 1.0f / 256;
  std::vector<uint16_t> want16(dst_rows * ld_dst, 0x1234);
  const std::vector<uint16_t> before16 = want16;
  ASSERT_TRUE(cpu_->ScatterRows({src.data(), ld_src, n, width, rows.data(), want16.data(), ld_dst,
                                 DType::kBf16})
                  .ok());
  for (auto& b : backends_) {
    Mirror ds(b.get(), src), dr(b.get(), rows), dd(b.get(), before16);
    ASSERT_TRUE(b->ScatterRows({ds.as<float>(), ld_src, n, width, dr.as<int64_t>(),
                                dd.as<uint16_t>(), ld_dst, DType::kBf16})
                    .ok());
    EXPECT_EQ(dd.Read<uint16_t>(), want16) << b->name();
  }
}

// A graph of a few ops (a skinny bf16 product, a norm, an add, a scatter with a padding row)
// replayed after new inputs are copied into its buffers: the same bits as the ops run directly
// over those inputs (the same kernels). While capturing, host copies are refused.
TEST_F(BackendParityTest, GraphReplaysEqualTheOpsRunDirectly) {
  const int64_t m = 4, n = 256, k = 384;
  HostWeight w = MakeWeight(DType::kBf16, n, k, &rng_);
  const std::vector<float> norm = Random(n, &rng_, 0.5f, 1.5f);
  const std::vector<int64_t> rows = {2, -1, 0, 5};
  for (auto& b : backends_) {
    SCOPED_TRACE(b->name());
    DeviceWeight dw(b.get(), w);
    Mirror dx(b.get(), Random(m * k, &rng_)), dnorm(b.get(), norm), drows(b.get(), rows);
    Mirror dy(b.get(), std::vector<float>(m * n)), dz(b.get(), std::vector<float>(m * n));
    Mirror dd(b.get(), std::vector<float>(6 * n));
    auto ops = [&]() -> absl::Status {
      absl::Status s = b->Gemm({dx.as<float>(), m, k, dw.view, dy.as<float>(), n});
      if (s.ok()) s = b->RmsNorm({dy.as<float>(), n, dnorm.as<float>(), dz.as<float>(), n, m, n});
      if (s.ok()) s = b->Add(dz.as<float>(), dy.as<float>(), m * n);
      if (s.ok()) {
        s = b->ScatterRows({dz.as<float>(), n, m, n, drows.as<int64_t>(), dd.as<float>(), n});
      }
      return s;
    };
    auto reset = [&] {
      const std::vector<float> zeros(6 * n, 0.0f);
      ASSERT_TRUE(b->CopyToBackend(dd.as<float>(), zeros.data(), 6 * n * 4).ok());
    };
    ASSERT_TRUE(ops().ok());  // sizes the workspaces, as BackendModel does before capturing
    ASSERT_TRUE(b->BeginCapture().ok());
    ASSERT_TRUE(ops().ok());
    std::vector<float> host(4);
    EXPECT_EQ(b->CopyToHost(host.data(), dx.as<float>(), 16).code(),
              absl::StatusCode::kFailedPrecondition);
    absl::StatusOr<GraphPtr> graph = b->EndCapture();
    ASSERT_TRUE(graph.ok()) << graph.status();
    for (int round = 0; round < 2; ++round) {
      const std::vector<float> x = Random(m * k, &rng_);
      ASSERT_TRUE(b->CopyToBackend(dx.as<float>(), x.data(), m * k * 4).ok());
      reset();
      ASSERT_TRUE(ops().ok());
      const std::vector<float> want = dd.Read<float>();
      reset();
      ASSERT_TRUE(b->Replay(**graph).ok());
      EXPECT_EQ(dd.Read<float>(), want) << "round " << round;
      // The padding row's destination (row 1) and the rows not named stay zero.
      for (int64_t c = 0; c < n; ++c) EXPECT_EQ(want[1 * n + c], 0.0f);
    }
  }
}

TEST_F(BackendParityTest, RmsNormRopeSiluMulAddEmbedding) {
  const int64_t rows = 9, dim = 7168, ld = 7200;
  std::vector<float> x = Random(rows * ld, &rng_, -3, 3), w = Random(dim, &rng_);
  std::vector<float> norm_want = x;
  ASSERT_TRUE(
      cpu_->RmsNorm({norm_want.data(), ld, w.data(), norm_want.data(), ld, rows, dim, 1e-6}).ok());

  const int64_t rope_rows = 12, rope_ld = 192, offset = 128, rope_dim = 64, per = 4;
  std::vector<int32_t> positions = {0, 17, 163839};
  std::vector<float> inv_freq(rope_dim / 2);
  for (int64_t i = 0; i < rope_dim / 2; ++i)
    inv_freq[i] = std::pow(10000.0f, -2.0f * i / rope_dim) / 40;
  std::vector<float> q = Random(rope_rows * rope_ld, &rng_), rope_want = q;
  RopeArgs rope{rope_want.data(), rope_rows, rope_ld,         offset, rope_dim,
                positions.data(), per,       inv_freq.data(), 1.2};
  ASSERT_TRUE(cpu_->Rope(rope).ok());

  const int64_t n = 100003;
  std::vector<float> g = Random(n, &rng_, -10, 10), u = Random(n, &rng_), silu_want(n),
                     add_want = g;
  ASSERT_TRUE(cpu_->SiluMul(g.data(), u.data(), n, silu_want.data()).ok());
  ASSERT_TRUE(cpu_->Add(add_want.data(), u.data(), n).ok());

  const int64_t vocab = 1000, edim = 96;
  std::vector<float> table = Random(vocab * edim, &rng_);
  std::vector<uint16_t> table16(table.size());
  for (size_t i = 0; i < table.size(); ++i) table16[i] = F32ToBf16(table[i]);
  std::vector<int32_t> ids = {5, 999, 0, -3, 1000, 42};
  std::vector<float> emb_want(ids.size() * edim), emb16_want(ids.size() * edim);
  const int64_t nid = static_cast<int64_t>(ids.size());
  ASSERT_TRUE(
      cpu_->Embedding({table.data(), DType::kF32, vocab, edim, ids.data(), nid, emb_want.data()})
          .ok());
  ASSERT_TRUE(cpu_->Embedding({table16.data(), DType::kBf16, vocab, edim, ids.data(), nid,
                               emb16_want.data()})
                  .ok());

  for (auto& b : backends_) {
    Mirror dx(b.get(), x), dw(b.get(), w);
    ASSERT_TRUE(
        b->RmsNorm({dx.as<float>(), ld, dw.as<float>(), dx.as<float>(), ld, rows, dim, 1e-6}).ok());
    EXPECT_LT(Nmse(dx.Read<float>(), norm_want), 1e-6) << b->name() << " RmsNorm";

    Mirror dq(b.get(), q), dpos(b.get(), positions), dinv(b.get(), inv_freq);
    RopeArgs r = rope;
    r.x = dq.as<float>();
    r.positions = dpos.as<int32_t>();
    r.inv_freq = dinv.as<float>();
    ASSERT_TRUE(b->Rope(r).ok());
    EXPECT_LT(Nmse(dq.Read<float>(), rope_want), 1e-6) << b->name() << " Rope";

    Mirror dg(b.get(), g), du(b.get(), u), dout(b.get(), std::vector<float>(n));
    ASSERT_TRUE(b->SiluMul(dg.as<float>(), du.as<float>(), n, dout.as<float>()).ok());
    EXPECT_LT(Nmse(dout.Read<float>(), silu_want), 1e-6) << b->name() << " SiluMul";
    ASSERT_TRUE(b->Add(dg.as<float>(), du.as<float>(), n).ok());
    EXPECT_LT(Nmse(dg.Read<float>(), add_want), 1e-12) << b->name() << " Add";

    Mirror dt(b.get(), table), dt16(b.get(), table16), dids(b.get(), ids);
    Mirror de(b.get(), std::vector<float>(emb_want.size(), 7.0f));
    ASSERT_TRUE(b->Embedding({dt.as<void>(), DType::kF32, vocab, edim, dids.as<int32_t>(), nid,
                              de.as<float>()})
                    .ok());
    EXPECT_EQ(de.Read<float>(), emb_want) << b->name() << " Embedding f32";
    ASSERT_TRUE(b->Embedding({dt16.as<void>(), DType::kBf16, vocab, edim, dids.as<int32_t>(), nid,
                              de.as<float>()})
                    .ok());
    EXPECT_EQ(de.Read<float>(), emb16_want) << b->name() << " Embedding bf16";
  }
}

TEST_F(BackendParityTest, Gate) {
  std::vector<GateConfig> configs = {
      {256, 8, 8, 4, true, 2.5, ScoringFunc::kSigmoid, TopkMethod::kNoauxTc},  // DeepSeek-V3
      {160, 6, 8, 3, false, 16.0, ScoringFunc::kSoftmax, TopkMethod::kGroupLimitedGreedy},  // V2
      {64, 6, 1, 1, false, 1.0, ScoringFunc::kSoftmax, TopkMethod::kGreedy},  // V2-Lite
  };
  const int64_t tokens = 200;
  for (const GateConfig& c : configs) {
    const int64_t e = c.n_routed_experts, k = c.num_experts_per_tok;
    std::vector<float> logits = Random(tokens * e, &rng_, -4, 4),
                       bias = Random(e, &rng_, -.1f, .1f);
    std::vector<int32_t> ids_want(tokens * k);
    std::vector<float> w_want(tokens * k);
    ASSERT_TRUE(
        cpu_->Gate({logits.data(), bias.data(), tokens, c, ids_want.data(), w_want.data()}).ok());
    for (auto& b : backends_) {
      Mirror dl(b.get(), logits), db(b.get(), bias), di(b.get(), std::vector<int32_t>(tokens * k)),
          dw(b.get(), std::vector<float>(tokens * k));
      ASSERT_TRUE(
          b->Gate({dl.as<float>(), db.as<float>(), tokens, c, di.as<int32_t>(), dw.as<float>()})
              .ok());
      EXPECT_EQ(di.Read<int32_t>(), ids_want) << b->name() << " experts " << e;
      EXPECT_LT(Nmse(dw.Read<float>(), w_want), 1e-6) << b->name() << " experts " << e;
    }
  }
}

TEST_F(BackendParityTest, GroupedExperts) {
  const int64_t hidden = 512, inter = 256;
  const int64_t counts[4] = {3, 0, 17, 1};
  std::vector<HostWeight> w;
  std::vector<ExpertGroup> groups;
  int64_t rows = 0;
  for (int e = 0; e < 4; ++e) {
    const DType d = e % 2 == 0 ? DType::kF8E4M3 : DType::kBf16;
    w.push_back(MakeWeight(d, inter, hidden, &rng_));
    w.push_back(MakeWeight(d, inter, hidden, &rng_));
    w.push_back(MakeWeight(d, hidden, inter, &rng_));
    rows += counts[e];
  }
  int64_t offset = 0;
  for (int e = 0; e < 4; ++e) {
    groups.push_back({offset, counts[e],
                      w[3 * e].View(w[3 * e].bytes.data(), w[3 * e].scales.data()),
                      w[3 * e + 1].View(w[3 * e + 1].bytes.data(), w[3 * e + 1].scales.data()),
                      w[3 * e + 2].View(w[3 * e + 2].bytes.data(), w[3 * e + 2].scales.data())});
    offset += counts[e];
  }
  std::vector<float> x = Random(rows * hidden, &rng_), want(rows * hidden);
  ASSERT_TRUE(cpu_->GroupedExperts({x.data(), hidden, groups, want.data()}).ok());
  for (auto& b : backends_) {
    std::vector<DeviceWeight> dw;
    dw.reserve(w.size());
    for (const HostWeight& hw : w) dw.emplace_back(b.get(), hw);
    std::vector<ExpertGroup> dgroups = groups;
    for (int e = 0; e < 4; ++e) {
      dgroups[e].gate = dw[3 * e].view;
      dgroups[e].up = dw[3 * e + 1].view;
      dgroups[e].down = dw[3 * e + 2].view;
    }
    Mirror dx(b.get(), x), dout(b.get(), std::vector<float>(rows * hidden));
    ASSERT_TRUE(b->GroupedExperts({dx.as<float>(), hidden, dgroups, dout.as<float>()}).ok());
    EXPECT_LT(Nmse(dout.Read<float>(), want), 5e-4) << b->name();
  }
}

// The routing on the device: 70 tokens, top-3 of 9 experts; expert 0 is every token's (70 rows,
// two tiles), expert 8 nobody's. hidden 320 and inter 196 leave partial tiles, and inter % 8 != 0
// takes the down product's unvectorised loads.
TEST_F(BackendParityTest, RoutedExperts) {
  const int64_t hidden = 320, inter = 196, n_experts = 9, n = 70, k = 3;
  std::vector<int32_t> ids(n * k);
  for (int64_t t = 0; t < n; ++t) {
    ids[t * k] = 0;
    ids[t * k + 1] = static_cast<int32_t>(1 + t % 7);
    ids[t * k + 2] = static_cast<int32_t>(1 + (t + 3) % 7);
  }
  std::vector<float> weights = Random(n * k, &rng_, 0.1f, 1.0f);
  std::vector<float> x = Random(n * hidden, &rng_);
  for (DType dtype : {DType::kBf16, DType::kF8E4M3}) {
    std::vector<HostWeight> w;
    for (int64_t e = 0; e < n_experts; ++e) {
      w.push_back(MakeWeight(dtype, inter, hidden, &rng_));
      w.push_back(MakeWeight(dtype, inter, hidden, &rng_));
      w.push_back(MakeWeight(dtype, hidden, inter, &rng_));
    }
    auto table_of = [&](const std::vector<WeightView>& v) {
      std::vector<ExpertWeightPointers> t;
      for (int64_t e = 0; e < n_experts; ++e) {
        t.push_back({v[3 * e].data, v[3 * e + 1].data, v[3 * e + 2].data, v[3 * e].scale_inv,
                     v[3 * e + 1].scale_inv, v[3 * e + 2].scale_inv});
      }
      return t;
    };
    std::vector<WeightView> host_views;
    for (const HostWeight& hw : w) host_views.push_back(hw.View(hw.bytes.data(), hw.scales.data()));
    std::vector<ExpertWeightPointers> host_table = table_of(host_views);
    std::vector<float> want(n * hidden);
    RoutedExpertsArgs a;
    a.n = n;
    a.k = k;
    a.hidden = hidden;
    a.inter = inter;
    a.n_experts = n_experts;
    a.dtype = dtype;
    a.x = x.data();
    a.experts = host_table.data();
    a.ids = ids.data();
    a.weights = weights.data();
    a.out = want.data();
    ASSERT_TRUE(cpu_->RoutedExperts(a).ok());
    for (auto& b : backends_) {
      if (!b->Supports(OpKind::kRoutedExperts, dtype)) continue;
      std::vector<DeviceWeight> dw;
      dw.reserve(w.size());
      for (const HostWeight& hw : w) dw.emplace_back(b.get(), hw);
      std::vector<WeightView> views;
      for (const DeviceWeight& d : dw) views.push_back(d.view);
      Mirror table(b.get(), table_of(views)), dx(b.get(), x), dids(b.get(), ids),
          dweights(b.get(), weights), dout(b.get(), std::vector<float>(n * hidden, 7.0f));
      RoutedExpertsArgs d = a;
      d.x = dx.as<float>();
      d.experts = table.as<ExpertWeightPointers>();
      d.ids = dids.as<int32_t>();
      d.weights = dweights.as<float>();
      d.out = dout.as<float>();
      ASSERT_TRUE(b->RoutedExperts(d).ok());
      // Twice, with the scratch then warm: the same answer.
      ASSERT_TRUE(b->RoutedExperts(d).ok());
      EXPECT_LT(Nmse(dout.Read<float>(), want), 5e-4) << b->name() << " " << DTypeName(dtype);
    }
  }
}

// LatentAttention on every backend against the CPU: query token t attends over
// token_lens[t] keys of sequence token_rows[t] with `group` heads (items t * group + h). Two
// layers (layer 1 read) of blocks shuffled across the cache; ldq and ld_out wider than needed.
// cache_dtype kBf16: the cache holds bfloat16 elements on both sides.
void CheckLatentAttention(Backend* cpu, const std::vector<BackendPtr>& backends,
                          std::mt19937* rng, int64_t lat, int64_t kvr, int64_t bt, int64_t group,
                          int64_t max_blocks, const std::vector<int32_t>& token_rows,
                          const std::vector<int32_t>& token_lens,
                          DType cache_dtype = DType::kF32) {
  const int64_t layers = 2, seqs = *std::max_element(token_rows.begin(), token_rows.end()) + 1;
  const int64_t blocks = seqs * max_blocks + 3, ldq = lat + 3, ld_out = kvr + 1;
  std::vector<float> cache = Random(blocks * layers * bt * lat, rng, -1, 1);
  std::vector<uint16_t> cache16(cache.size());
  for (size_t i = 0; i < cache.size(); ++i) cache16[i] = F32ToBf16(cache[i]);
  const bool bf16 = cache_dtype == DType::kBf16;
  std::vector<int32_t> perm(blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), *rng);
  std::vector<int32_t> tables(perm.begin(), perm.begin() + seqs * max_blocks);
  std::vector<int32_t> rows, lens;
  for (size_t t = 0; t < token_rows.size(); ++t) {
    rows.insert(rows.end(), group, token_rows[t]);
    lens.insert(lens.end(), group, token_lens[t]);
  }
  const int64_t items = static_cast<int64_t>(rows.size());
  std::vector<float> q = Random(items * ldq, rng, -0.3f, 0.3f), want(items * ld_out, 7.0f);
  LatentAttentionArgs a{
      q.data(), ldq, items, group, rows.data(), lens.data(), tables.data(), max_blocks,
      cache.data(), layers, 1, bt, lat, kvr, 0.1352f, want.data(), ld_out};
  if (bf16) {
    a.cache = cache16.data();
    a.cache_dtype = DType::kBf16;
  }
  ASSERT_TRUE(cpu->LatentAttention(a).ok());
  for (const BackendPtr& b : backends) {
    Mirror dq(b.get(), q), dr(b.get(), rows), dl(b.get(), lens), dt(b.get(), tables),
        dc = bf16 ? Mirror(b.get(), cache16) : Mirror(b.get(), cache),
        dout(b.get(), std::vector<float>(items * ld_out, 7.0f));
    LatentAttentionArgs d = a;
    d.q = dq.as<float>();
    d.table_rows = dr.as<int32_t>();
    d.lens = dl.as<int32_t>();
    d.block_tables = dt.as<int32_t>();
    d.cache = dc.as<void>();
    d.out = dout.as<float>();
    ASSERT_TRUE(b->LatentAttention(d).ok()) << b->name();
    const std::vector<float> got = dout.Read<float>();
    EXPECT_LT(Nmse(got, want), 1e-6) << b->name() << " group " << group << " lat " << lat
                                     << " cache " << DTypeName(cache_dtype);
    for (int64_t i = 0; i < items; ++i) EXPECT_EQ(got[i * ld_out + kvr], 7.0f) << "item " << i;
  }
}

TEST_F(BackendParityTest, LatentAttention) {
  // DeepSeek-V3's latent (512 + 64), 16-token blocks, one item per token and two sequences.
  std::vector<int32_t> rows, lens;
  for (int i = 0; i < 24; ++i) {
    rows.push_back(i % 2);
    lens.push_back(1 + (i * 37) % (8 * 16));
  }
  CheckLatentAttention(cpu_.get(), backends_, &rng_, 576, 512, 16, 1, 8, rows, lens);
}

TEST_F(BackendParityTest, LatentAttentionGroupedDecodeOverLongContexts) {
  // Four heads per token, one token per sequence over up to 600 keys in scattered blocks: few
  // blocks per launch, so the device splits the keys and merges the parts.
  CheckLatentAttention(cpu_.get(), backends_, &rng_, 576, 512, 16, 4, 40, {0, 1, 2},
                       {600, 1, 333});
  // DeepSeek-V3's 128 heads (several blocks per token's heads).
  CheckLatentAttention(cpu_.get(), backends_, &rng_, 576, 512, 16, 128, 20, {0, 1}, {300, 41});
  // kv_lora_rank 1024 (two column groups per thread on the device).
  CheckLatentAttention(cpu_.get(), backends_, &rng_, 1088, 1024, 16, 16, 13, {0, 1}, {200, 3});
}

TEST_F(BackendParityTest, LatentAttentionGroupedPrefill) {
  // One sequence's 40 query tokens at lengths 1..40 (so some key splits are empty), four heads.
  std::vector<int32_t> rows(40, 0), lens(40);
  std::iota(lens.begin(), lens.end(), 1);
  CheckLatentAttention(cpu_.get(), backends_, &rng_, 576, 512, 16, 4, 3, rows, lens);
  // A tiny latent (32 + 16) in 4-token blocks, two sequences interleaved.
  std::vector<int32_t> rows2, lens2;
  for (int t = 0; t < 30; ++t) {
    rows2.push_back(t % 2);
    lens2.push_back(1 + t / 2 + (t % 2) * 20);
  }
  CheckLatentAttention(cpu_.get(), backends_, &rng_, 48, 32, 4, 4, 9, rows2, lens2);
  // A latent that is no multiple of four (the device's scalar copies) and three heads.
  CheckLatentAttention(cpu_.get(), backends_, &rng_, 45, 30, 5, 3, 12, rows2, lens2);
}

TEST_F(BackendParityTest, LatentAttentionOverABf16Cache) {
  // The vectorised widening (lat % 4 == 0), with and without key splits, and the scalar one.
  std::vector<int32_t> rows, lens;
  for (int i = 0; i < 24; ++i) {
    rows.push_back(i % 2);
    lens.push_back(1 + (i * 37) % (8 * 16));
  }
  CheckLatentAttention(cpu_.get(), backends_, &rng_, 576, 512, 16, 1, 8, rows, lens,
                       DType::kBf16);
  CheckLatentAttention(cpu_.get(), backends_, &rng_, 576, 512, 16, 128, 20, {0, 1}, {300, 41},
                       DType::kBf16);
  CheckLatentAttention(cpu_.get(), backends_, &rng_, 45, 30, 5, 3, 12, {0, 1, 0}, {7, 60, 33},
                       DType::kBf16);
}

TEST_F(BackendParityTest, SampleIdsMatchAwayFromBoundaries) {
  const int64_t vocab = 5000, rows = 12;
  std::vector<float> logits = Random(rows * vocab, &rng_, -4, 4);
  // Row 1: all equal (sorted order is id order, sums are exact integers); row 0: a tie for max.
  std::fill_n(&logits[vocab], vocab, 0.5f);
  logits[17] = logits[4000] = 9.0f;
  std::vector<float> temp(rows), top_p(rows), u(rows);
  for (int64_t r = 0; r < rows; ++r) {
    temp[r] = r == 0 || r == 6 ? 0.0f : 0.5f + 0.1f * r;
    const float* l = &logits[r * vocab];
    // Choose top_p and u midway between cumulative masses (in double), so float sums agree.
    std::vector<double> p(vocab);
    const double mx = *std::max_element(l, l + vocab);
    for (int64_t i = 0; i < vocab; ++i) p[i] = std::exp((l[i] - mx) / std::max(temp[r], 1e-3f));
    std::vector<int32_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return p[x] > p[y]; });
    std::vector<double> cum(vocab);
    double run = 0;
    for (int64_t j = 0; j < vocab; ++j) cum[j] = (run += p[order[j]]);
    const int64_t kept = r % 3 == 0 ? vocab - 1 : 20 + 37 * r;  // index of the last kept token
    top_p[r] = kept == vocab - 1 ? 1.0f : static_cast<float>((cum[kept - 1] + cum[kept]) / 2 / run);
    // A token near the head, where the masses between neighbours are widest.
    const int64_t pick = (r * 7) % std::min<int64_t>(kept + 1, 40);
    const double lo = pick == 0 ? 0.0 : cum[pick - 1];
    u[r] = static_cast<float>((lo + cum[pick]) / 2 / cum[kept]);
  }
  std::vector<int32_t> want(rows, -1);
  ASSERT_TRUE(cpu_->Sample({logits.data(), vocab, rows, vocab, temp.data(), top_p.data(), u.data(),
                            want.data()})
                  .ok());
  EXPECT_EQ(want[0], 17);
  for (auto& b : backends_) {
    Mirror dl(b.get(), logits), dt(b.get(), temp), dp(b.get(), top_p), du(b.get(), u),
        di(b.get(), std::vector<int32_t>(rows, -1));
    ASSERT_TRUE(b->Sample({dl.as<float>(), vocab, rows, vocab, dt.as<float>(), dp.as<float>(),
                           du.as<float>(), di.as<int32_t>()})
                    .ok());
    EXPECT_EQ(di.Read<int32_t>(), want) << b->name();
  }
}

TEST_F(BackendParityTest, ArgmaxIdsMatchTheCpus) {
  // Rows longer than a block's threads, a vocab prefix, a stride, ties across threads' ranges
  // and an all -inf row.
  const int64_t vocab = 129280, ld = 129290, rows = 5;
  std::vector<float> logits = Random(rows * ld, &rng_, -4, 4);
  logits[0 * ld + 100000] = logits[0 * ld + 7] = 50.0f;    // tie: 7
  logits[1 * ld + 129279] = 60.0f;                          // the last id
  logits[2 * ld + 129285] = 99.0f;                          // past the vocab: ignored
  std::fill_n(&logits[3 * ld], ld, -std::numeric_limits<float>::infinity());  // 0
  std::vector<int32_t> want(rows, -1);
  ASSERT_TRUE(cpu_->Argmax({logits.data(), ld, rows, vocab, want.data()}).ok());
  EXPECT_EQ(want[0], 7);
  EXPECT_EQ(want[1], 129279);
  EXPECT_EQ(want[3], 0);
  for (auto& b : backends_) {
    Mirror dl(b.get(), logits), di(b.get(), std::vector<int32_t>(rows, -1));
    ASSERT_TRUE(b->Argmax({dl.as<float>(), ld, rows, vocab, di.as<int32_t>()}).ok());
    EXPECT_EQ(di.Read<int32_t>(), want) << b->name();
  }
}

TEST_F(BackendParityTest, SupportsAgreesWithCpuOnTheOpList) {
  for (auto& b : backends_) {
    for (DType d : {DType::kF32, DType::kBf16, DType::kF8E4M3}) {
      EXPECT_EQ(b->Supports(OpKind::kGemm, d), cpu_->Supports(OpKind::kGemm, d)) << b->name();
      EXPECT_EQ(b->Supports(OpKind::kGroupedExperts, d),
                cpu_->Supports(OpKind::kGroupedExperts, d));
    }
    EXPECT_TRUE(b->Synchronize().ok());
  }
}

}  // namespace
}  // namespace moeserve::engine
