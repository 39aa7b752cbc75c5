#include "engine/cpu/linear.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/thread_pool.h"
#include "engine/cpu/linear_internal.h"
#include "engine/dtype.h"
#include "engine/weights.h"
#include "gtest/gtest.h"
#include "tests/testing/kernel_scope.h"

namespace moeserve::engine::cpu {
namespace {

// A weight matrix that owns its storage.
struct TestMatrix {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  Matrix matrix;

  float At(int64_t r, int64_t c) const {
    const int64_t i = r * matrix.cols + c;
    return matrix.dtype == DType::kF32 ? f32[i] : Bf16ToF32(bf16[i]);
  }
};

TestMatrix RandomMatrix(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  TestMatrix t;
  t.matrix.dtype = dtype;
  t.matrix.rows = rows;
  t.matrix.cols = cols;
  const size_t n = static_cast<size_t>(rows * cols);
  if (dtype == DType::kF32) {
    t.f32.resize(n);
    for (float& v : t.f32) v = dist(rng);
    t.matrix.data = t.f32.data();
  } else {
    t.bf16.resize(n);
    for (uint16_t& v : t.bf16) v = F32ToBf16(dist(rng));
    t.matrix.data = t.bf16.data();
  }
  return t;
}

// The same weights widened to float32.
TestMatrix Widened(const TestMatrix& t) {
  TestMatrix out;
  out.matrix = t.matrix;
  out.matrix.dtype = DType::kF32;
  out.f32.resize(static_cast<size_t>(t.matrix.rows * t.matrix.cols));
  for (int64_t r = 0; r < t.matrix.rows; ++r) {
    for (int64_t c = 0; c < t.matrix.cols; ++c) out.f32[r * t.matrix.cols + c] = t.At(r, c);
  }
  out.matrix.data = out.f32.data();
  return out;
}

std::vector<float> RandomActivations(int64_t m, int64_t ldx, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> x(static_cast<size_t>(m * ldx));
  for (float& v : x) v = dist(rng);
  return x;
}

using testing::KernelScope;

class LinearTest : public ::testing::TestWithParam<std::string> {};

// Every output against a double-precision reference, with a bound that scales with the sum of
// |x||w| (the worst case of float32 summation over cols terms).
TEST_P(LinearTest, MatchesDoubleReferenceOnOddShapes) {
  KernelScope scope(GetParam());
  std::mt19937 rng(7);
  ThreadPool pool(2);
  const int64_t kRows[] = {1, 5, 17, 37};
  const int64_t kCols[] = {1, 15, 16, 33, 527, 1100};
  const int64_t kMs[] = {1, 6, 7, 37, 70};
  for (DType dtype : {DType::kF32, DType::kBf16}) {
    for (int64_t rows : kRows) {
      for (int64_t cols : kCols) {
        TestMatrix w = RandomMatrix(dtype, rows, cols, rng);
        for (int64_t m : kMs) {
          const int64_t ldx = cols + 3;
          const int64_t ldy = rows + 5;
          std::vector<float> x = RandomActivations(m, ldx, rng);
          std::vector<float> y(static_cast<size_t>(m * ldy),
                               std::numeric_limits<float>::quiet_NaN());
          Linear(x.data(), m, ldx, w.matrix, y.data(), ldy, &pool);
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < rows; ++j) {
              double ref = 0.0;
              double mag = 0.0;
              for (int64_t k = 0; k < cols; ++k) {
                const double p = static_cast<double>(x[i * ldx + k]) * w.At(j, k);
                ref += p;
                mag += std::fabs(p);
              }
              const double tol = static_cast<double>(cols + 8) * 6e-8 * mag + 1e-30;
              ASSERT_NEAR(y[i * ldy + j], ref, tol)
                  << GetParam() << " " << DTypeName(dtype) << " rows " << rows << " cols "
                  << cols << " m " << m << " at (" << i << ", " << j << ")";
            }
            // Padding between output rows stays untouched.
            for (int64_t j = rows; j < ldy; ++j) ASSERT_TRUE(std::isnan(y[i * ldy + j]));
          }
        }
      }
    }
  }
}

// A row's output is bit-identical whether computed alone or inside any batch, on any thread
// count: the engine relies on this to match batched decoding with single-sequence decoding.
TEST_P(LinearTest, RowResultsIndependentOfBatchAndThreads) {
  KernelScope scope(GetParam());
  std::mt19937 rng(11);
  ThreadPool pool2(2);
  ThreadPool pool3(3);
  for (DType dtype : {DType::kF32, DType::kBf16}) {
    for (int64_t cols : {int64_t{100}, int64_t{1100}}) {
      const int64_t rows = 203;
      TestMatrix w = RandomMatrix(dtype, rows, cols, rng);
      const int64_t m = 250;
      std::vector<float> x = RandomActivations(m, cols, rng);
      // Each row alone, single-threaded.
      std::vector<float> alone(static_cast<size_t>(m * rows));
      for (int64_t i = 0; i < m; ++i) {
        Linear(x.data() + i * cols, 1, cols, w.matrix, alone.data() + i * rows, rows, nullptr);
      }
      for (int64_t batch : {int64_t{2}, int64_t{6}, int64_t{16}, int64_t{37}, int64_t{70},
                            int64_t{250}}) {
        for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2, &pool3}) {
          // Batches start at different rows so a row lands in different tile positions.
          for (int64_t start : {int64_t{0}, m - batch}) {
            std::vector<float> y(static_cast<size_t>(batch * rows));
            Linear(x.data() + start * cols, batch, cols, w.matrix, y.data(), rows, pool);
            ASSERT_EQ(std::memcmp(y.data(), alone.data() + start * rows, y.size() * sizeof(float)),
                      0)
                << GetParam() << " " << DTypeName(dtype) << " cols " << cols << " batch "
                << batch << " start " << start
                << " threads " << (pool == nullptr ? 1 : pool->num_threads());
          }
        }
      }
    }
  }
}

// bf16 weights give exactly the result of the same weights widened to float32.
TEST_P(LinearTest, Bf16EqualsWidenedF32Exactly) {
  KernelScope scope(GetParam());
  std::mt19937 rng(3);
  ThreadPool pool(2);
  for (int64_t m : {int64_t{1}, int64_t{9}, int64_t{40}}) {
    TestMatrix w = RandomMatrix(DType::kBf16, 45, 1030, rng);
    TestMatrix wide = Widened(w);
    std::vector<float> x = RandomActivations(m, 1030, rng);
    std::vector<float> y_bf16(static_cast<size_t>(m * 45));
    std::vector<float> y_f32(y_bf16.size());
    Linear(x.data(), m, 1030, w.matrix, y_bf16.data(), 45, &pool);
    Linear(x.data(), m, 1030, wide.matrix, y_f32.data(), 45, &pool);
    EXPECT_EQ(std::memcmp(y_bf16.data(), y_f32.data(), y_f32.size() * sizeof(float)), 0)
        << "m " << m;
  }
}

// The AVX-512 kernel's exact order, written out in plain float arithmetic: 16 lane sums, lane l
// taking k = l, l+16, ... by fused multiply-add, then the tree (lane i + lane i+8, + i+4, + i+2,
// + i+1). Every output of every tile shape (one row alone, row groups, k over one block with a
// masked tail, 1-4 weight rows in the last tile) must have exactly those bits.
TEST(LinearAvx512Test, OutputsAreTheLaneTreeOfFusedSums) {
  const std::vector<std::string> kernels = AvailableLinearKernels();
  if (std::find(kernels.begin(), kernels.end(), "avx512") == kernels.end()) {
    GTEST_SKIP() << "no AVX-512 here";
  }
  KernelScope scope("avx512");
  std::mt19937 rng(11);
  ThreadPool pool(2);
  for (int64_t cols : {int64_t{7}, int64_t{256}, int64_t{1030}, int64_t{2100}}) {
    for (int64_t rows : {int64_t{1}, int64_t{3}, int64_t{22}}) {
      for (int64_t m : {int64_t{1}, int64_t{5}, int64_t{13}, int64_t{31}}) {
        TestMatrix w = RandomMatrix(DType::kBf16, rows, cols, rng);
        std::vector<float> x = RandomActivations(m, cols, rng);
        std::vector<float> y(static_cast<size_t>(m * rows));
        Linear(x.data(), m, cols, w.matrix, y.data(), rows, &pool);
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < rows; ++j) {
            float lane[16] = {};
            for (int64_t k = 0; k < cols; ++k) {
              lane[k % 16] = std::fma(x[i * cols + k], w.At(j, k), lane[k % 16]);
            }
            for (int width = 8; width >= 1; width /= 2) {
              for (int l = 0; l < width; ++l) lane[l] += lane[l + width];
            }
            ASSERT_EQ(y[i * rows + j], lane[0])
                << "cols " << cols << " rows " << rows << " m " << m << " at " << i << "," << j;
          }
        }
      }
    }
  }
}

TEST_P(LinearTest, EmptyShapes) {
  KernelScope scope(GetParam());
  std::mt19937 rng(5);
  TestMatrix w = RandomMatrix(DType::kF32, 4, 0, rng);
  std::vector<float> x(3, 1.0f);
  std::vector<float> y(12, 7.0f);
  Linear(x.data(), 3, 1, w.matrix, y.data(), 4, nullptr);  // no columns: zeros
  for (float v : y) EXPECT_EQ(v, 0.0f);
  TestMatrix w2 = RandomMatrix(DType::kF32, 4, 8, rng);
  std::vector<float> y2(4, 7.0f);
  Linear(x.data(), 0, 8, w2.matrix, y2.data(), 4, nullptr);  // no rows: nothing written
  for (float v : y2) EXPECT_EQ(v, 7.0f);
}

// LinearMany and LinearManyByRows give every job exactly what Linear gives it alone: mixed dtypes,
// decode (m = 1) and batched jobs, odd shapes, empty jobs, zero-column jobs, and any thread count
// (LinearMany's columns share one parallel range, so one thread's share crosses job boundaries;
// LinearManyByRows gives each thread a block of every job's rows when all jobs are prefill-sized,
// and otherwise splits columns).
TEST_P(LinearTest, ManyEqualsEachJobAlone) {
  KernelScope scope(GetParam());
  std::mt19937 rng(13);
  ThreadPool pool2(2);
  ThreadPool pool3(3);
  struct Shape {
    DType dtype;
    int64_t m, rows, cols;
  };
  const std::vector<std::vector<Shape>> cases = {
      {{DType::kBf16, 1, 300, 1100}, {DType::kF32, 7, 33, 527}, {DType::kBf16, 16, 64, 96},
       {DType::kBf16, 0, 20, 30}, {DType::kF32, 1, 5, 15}, {DType::kBf16, 40, 203, 1030},
       {DType::kF32, 3, 17, 0}},
      {{DType::kBf16, 200, 75, 260}, {DType::kF32, 131, 33, 47}, {DType::kBf16, 97, 20, 0}}};
  using ManyFn = void (*)(absl::Span<const LinearJob>, ThreadPool*);
  for (const std::vector<Shape>& shapes : cases) {
    std::vector<TestMatrix> ws;
    std::vector<std::vector<float>> xs, alone;
    for (const Shape& sh : shapes) {
      const int64_t ldx = std::max<int64_t>(sh.cols, 1);
      ws.push_back(RandomMatrix(sh.dtype, sh.rows, sh.cols, rng));
      xs.push_back(RandomActivations(sh.m, ldx, rng));
      // Row by row, so a split of rows among threads is checked too.
      alone.emplace_back(static_cast<size_t>(sh.m * sh.rows), 7.0f);
      for (int64_t r = 0; r < sh.m; ++r) {
        Linear(xs.back().data() + r * ldx, 1, ldx, ws.back().matrix,
               alone.back().data() + r * sh.rows, sh.rows, nullptr);
      }
    }
    for (ManyFn many : {static_cast<ManyFn>(&LinearMany), static_cast<ManyFn>(&LinearManyByRows)}) {
      for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2, &pool3}) {
        std::vector<std::vector<float>> ys;
        std::vector<LinearJob> jobs;
        for (const Shape& sh : shapes) ys.emplace_back(static_cast<size_t>(sh.m * sh.rows), 7.0f);
        for (size_t i = 0; i < shapes.size(); ++i) {
          jobs.push_back({xs[i].data(), shapes[i].m, std::max<int64_t>(shapes[i].cols, 1),
                          &ws[i].matrix, ys[i].data(), shapes[i].rows});
        }
        many(jobs, pool);
        for (size_t i = 0; i < shapes.size(); ++i) {
          ASSERT_EQ(ys[i], alone[i])
              << GetParam() << (many == &LinearMany ? " LinearMany" : " LinearManyByRows")
              << " job " << i << " threads " << (pool == nullptr ? 1 : pool->num_threads());
        }
      }
    }
    // The zero-column job really was zero-filled (not left at 7).
    for (float v : alone.back()) EXPECT_EQ(v, 0.0f);
  }
}

std::string KernelParamName(const ::testing::TestParamInfo<std::string>& param_info) {
  return param_info.param;
}

INSTANTIATE_TEST_SUITE_P(Kernels, LinearTest, ::testing::ValuesIn(AvailableLinearKernels()),
                         KernelParamName);

TEST(LinearKernelTest, NamesAndErrors) {
  const std::vector<std::string> available = AvailableLinearKernels();
  ASSERT_FALSE(available.empty());
  EXPECT_EQ(available.back(), "scalar");
  EXPECT_EQ(SetLinearKernel("sse9").code(), absl::StatusCode::kInvalidArgument);
  const std::string saved = LinearKernelName();
  for (const std::string& name : available) {
    ASSERT_TRUE(SetLinearKernel(name).ok());
    EXPECT_EQ(std::string(LinearKernelName()), name);
  }
  ASSERT_TRUE(SetLinearKernel(saved).ok());
}

// Whatever path is picked by default, on an AVX-512 machine it is the AVX-512 one unless
// MOESERVE_KERNEL says otherwise.
TEST(LinearKernelTest, DefaultIsBestAvailable) {
  if (std::getenv("MOESERVE_KERNEL") != nullptr) GTEST_SKIP() << "MOESERVE_KERNEL set";
  EXPECT_EQ(std::string(LinearKernelName()), AvailableLinearKernels().front());
}

}  // namespace
}  // namespace moeserve::engine::cpu
