#include "engine/weights.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/weights/test_util.h"

namespace moeserve::engine {
namespace {

using ::moeserve::engine::testing::MakeTensor;
using ::moeserve::engine::testing::TempDir;
using ::moeserve::engine::testing::WriteFile;
using ::testing::HasSubstr;

float Value(int64_t i) { return static_cast<float>((i * 5) % 23 - 11) / 8.0f; }

// Writes `tensors` as DIR/model.safetensors and opens it.
std::unique_ptr<Checkpoint> OpenTensors(const TempDir& dir,
                                        const std::vector<TensorToWrite>& tensors) {
  EXPECT_TRUE(WriteSafetensors(dir.File("model.safetensors"), tensors).ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> cp = Checkpoint::Open(dir.path());
  EXPECT_TRUE(cp.ok()) << cp.status();
  return cp.ok() ? std::move(*cp) : nullptr;
}

TEST(LoadMatrixTest, InPlaceWhenDTypeMatchesAndAligned) {
  TempDir dir;
  auto cp = OpenTensors(dir, {MakeTensor("b", DType::kBf16, {3, 4}, Value),
                              MakeTensor("f", DType::kF32, {2, 3}, Value)});
  ASSERT_NE(cp, nullptr);
  const TensorInfo* b = cp->Find("b");
  const TensorInfo* f = cp->Find("f");

  absl::StatusOr<Matrix> mb = LoadMatrix(*b, nullptr, ComputeDType::kBf16);
  ASSERT_TRUE(mb.ok()) << mb.status();
  EXPECT_EQ(mb->data, b->data);
  EXPECT_EQ(mb->owned, nullptr);
  EXPECT_EQ(mb->dtype, DType::kBf16);
  EXPECT_EQ(mb->rows, 3);
  EXPECT_EQ(mb->cols, 4);
  EXPECT_EQ(mb->bytes(), 24);
  EXPECT_EQ(mb->At(2, 3), Bf16ToF32(F32ToBf16(Value(11))));

  absl::StatusOr<Matrix> mf = LoadMatrix(*f, nullptr, ComputeDType::kF32);
  ASSERT_TRUE(mf.ok()) << mf.status();
  EXPECT_EQ(mf->data, f->data);
  EXPECT_EQ(mf->owned, nullptr);
  EXPECT_EQ(mf->f32()[4], Value(4));
}

TEST(LoadMatrixTest, CopiesWhenConverting) {
  TempDir dir;
  auto cp = OpenTensors(dir, {MakeTensor("b", DType::kBf16, {3, 4}, Value),
                              MakeTensor("f", DType::kF32, {2, 3}, Value),
                              MakeTensor("h", DType::kF16, {2, 5}, Value)});
  ASSERT_NE(cp, nullptr);

  absl::StatusOr<Matrix> m = LoadMatrix(*cp->Find("b"), nullptr, ComputeDType::kF32);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_NE(m->owned, nullptr);
  EXPECT_EQ(m->dtype, DType::kF32);
  EXPECT_EQ(m->data, m->owned->data());
  for (int64_t i = 0; i < 12; ++i) EXPECT_EQ(m->f32()[i], Bf16ToF32(F32ToBf16(Value(i))));

  m = LoadMatrix(*cp->Find("f"), nullptr, ComputeDType::kBf16);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_NE(m->owned, nullptr);
  EXPECT_EQ(m->dtype, DType::kBf16);
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(m->bf16()[i], F32ToBf16(Value(i)));

  for (ComputeDType compute : {ComputeDType::kF32, ComputeDType::kBf16}) {
    m = LoadMatrix(*cp->Find("h"), nullptr, compute);
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_NE(m->owned, nullptr);
    for (int64_t r = 0; r < 2; ++r) {
      for (int64_t c = 0; c < 5; ++c) EXPECT_EQ(m->At(r, c), Value(r * 5 + c));  // exact in bf16
    }
  }
}

TEST(LoadMatrixTest, CopiesWhenMisaligned) {
  TempDir dir;
  // 3 bytes of FP8 first put the BF16 and F32 tensors at odd offsets.
  auto cp = OpenTensors(dir, {MakeTensor("pad", DType::kF8E4M3, {3}, Value),
                              MakeTensor("b", DType::kBf16, {2, 2}, Value),
                              MakeTensor("f", DType::kF32, {1, 3}, Value)});
  ASSERT_NE(cp, nullptr);
  const TensorInfo* b = cp->Find("b");
  ASSERT_EQ(reinterpret_cast<uintptr_t>(b->data) % 2, 1u);
  absl::StatusOr<Matrix> m = LoadMatrix(*b, nullptr, ComputeDType::kBf16);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_NE(m->owned, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(m->data) % 2, 0u);
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(m->bf16()[i], F32ToBf16(Value(i)));

  const TensorInfo* f = cp->Find("f");
  ASSERT_NE(reinterpret_cast<uintptr_t>(f->data) % 4, 0u);
  m = LoadMatrix(*f, nullptr, ComputeDType::kF32);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_NE(m->owned, nullptr);
  for (int64_t i = 0; i < 3; ++i) EXPECT_EQ(m->f32()[i], Value(i));
}

TEST(LoadMatrixTest, Fp8DequantWithPartialBlocks) {
  // [130, 260]: two row blocks (128 + 2) and three column blocks (128 + 128 + 4).
  const int64_t rows = 130, cols = 260;
  TensorToWrite w = MakeTensor("w", DType::kF8E4M3, {rows, cols}, Value);
  auto set = [&](int64_t r, int64_t c, uint8_t code) {
    w.bytes[static_cast<size_t>(r * cols + c)] = code;
  };
  set(0, 0, 0xB8);      // -1.0
  set(5, 200, 0x3C);    // 1.5
  set(129, 259, 0x40);  // 2.0
  set(127, 128, 0x01);  // smallest subnormal, 2^-9
  const std::vector<float> scales = {3.0f, 10.0f, 0.125f, 0.5f, 7.0f, 0.25f};
  TensorToWrite s = MakeTensor("w_scale_inv", DType::kF32, {2, 3},
                               [&](int64_t i) { return scales[static_cast<size_t>(i)]; });
  TempDir dir;
  auto cp = OpenTensors(dir, {w, s});
  ASSERT_NE(cp, nullptr);

  absl::StatusOr<Matrix> m32 = LoadMatrix(*cp->Find("w"), cp->Find("w_scale_inv"),
                                          ComputeDType::kF32);
  ASSERT_TRUE(m32.ok()) << m32.status();
  ASSERT_NE(m32->owned, nullptr);
  EXPECT_EQ(m32->At(0, 0), -3.0f);
  EXPECT_EQ(m32->At(5, 200), 15.0f);
  EXPECT_EQ(m32->At(129, 259), 0.5f);
  EXPECT_EQ(m32->At(127, 128), 10.0f / 512.0f);

  absl::StatusOr<Matrix> m16 = LoadMatrix(*cp->Find("w"), cp->Find("w_scale_inv"),
                                          ComputeDType::kBf16);
  ASSERT_TRUE(m16.ok()) << m16.status();
  ASSERT_EQ(m16->dtype, DType::kBf16);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      float want = F8E4M3ToF32(w.bytes[static_cast<size_t>(r * cols + c)]) *
                   scales[static_cast<size_t>((r / 128) * 3 + c / 128)];
      ASSERT_EQ(m32->At(r, c), want) << r << "," << c;
      ASSERT_EQ(m16->bf16()[r * cols + c], F32ToBf16(want)) << r << "," << c;
    }
  }
}

TEST(LoadMatrixTest, Errors) {
  TempDir dir;
  auto cp = OpenTensors(dir, {MakeTensor("w8", DType::kF8E4M3, {2, 2}, Value),
                              MakeTensor("w8_scale_inv", DType::kF32, {1, 1}, Value),
                              MakeTensor("bad_scale", DType::kF32, {2, 1}, Value),
                              MakeTensor("b", DType::kBf16, {2, 2}, Value),
                              MakeTensor("v", DType::kBf16, {4}, Value)});
  ASSERT_NE(cp, nullptr);
  absl::Status st = LoadMatrix(*cp->Find("w8"), nullptr, ComputeDType::kF32).status();
  EXPECT_THAT(std::string(st.message()), HasSubstr("tensor 'w8' is F8_E4M3 but has no w8_scale_inv"));
  st = LoadMatrix(*cp->Find("b"), cp->Find("w8_scale_inv"), ComputeDType::kF32).status();
  EXPECT_THAT(std::string(st.message()), HasSubstr("'w8_scale_inv' is a block scale for 'b'"));
  st = LoadMatrix(*cp->Find("w8"), cp->Find("bad_scale"), ComputeDType::kF32).status();
  EXPECT_THAT(std::string(st.message()), HasSubstr("tensor 'bad_scale'"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("expected F32 [1,1]"));
  st = LoadMatrix(*cp->Find("v"), nullptr, ComputeDType::kF32).status();
  EXPECT_THAT(std::string(st.message()), HasSubstr("model.safetensors: tensor 'v' has shape [4]"));

  TensorInfo lying = *cp->Find("b");
  lying.nbytes = 3;
  st = LoadMatrix(lying, nullptr, ComputeDType::kF32).status();
  EXPECT_THAT(std::string(st.message()), HasSubstr("tensor 'b' has 3 bytes"));
}

TEST(LoadVectorF32Test, WidensEveryDType) {
  TempDir dir;
  auto cp = OpenTensors(dir, {MakeTensor("f", DType::kF32, {5}, Value),
                              MakeTensor("b", DType::kBf16, {5}, Value),
                              MakeTensor("h", DType::kF16, {5}, Value),
                              MakeTensor("m", DType::kF32, {2, 2}, Value),
                              MakeTensor("q", DType::kF8E4M3, {5}, Value)});
  ASSERT_NE(cp, nullptr);
  for (const char* name : {"f", "b", "h"}) {
    absl::StatusOr<std::vector<float>> v = LoadVectorF32(*cp->Find(name));
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_EQ(v->size(), 5u);
    for (int64_t i = 0; i < 5; ++i) EXPECT_EQ((*v)[static_cast<size_t>(i)], Value(i)) << name;
  }
  absl::StatusOr<std::vector<float>> m = LoadVectorF32(*cp->Find("m"));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->size(), 4u);
  absl::Status st = LoadVectorF32(*cp->Find("q")).status();
  EXPECT_THAT(std::string(st.message()), HasSubstr("tensor 'q' is F8_E4M3"));
}

TEST(LoadMatrixTest, MatrixOutlivesNothingButTheCheckpoint) {
  TempDir dir;
  auto cp = OpenTensors(dir, {MakeTensor("b", DType::kBf16, {2, 2}, Value)});
  ASSERT_NE(cp, nullptr);
  Matrix copy;
  {
    absl::StatusOr<Matrix> m = LoadMatrix(*cp->Find("b"), nullptr, ComputeDType::kF32);
    ASSERT_TRUE(m.ok());
    copy = *m;  // shares the converted buffer
  }
  cp.reset();  // the converted copy does not borrow from the mapping
  EXPECT_EQ(copy.At(1, 1), Bf16ToF32(F32ToBf16(Value(3))));
}

}  // namespace
}  // namespace moeserve::engine
