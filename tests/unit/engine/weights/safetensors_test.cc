#include "engine/weights/safetensors.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/weights/test_util.h"

namespace moeserve::engine {
namespace {

using ::moeserve::engine::testing::MakeTensor;
using ::moeserve::engine::testing::RawSafetensors;
using ::moeserve::engine::testing::ReadFile;
using ::moeserve::engine::testing::TempDir;
using ::testing::HasSubstr;

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

absl::Status ParseRaw(const std::string& header, size_t data_bytes) {
  std::string file = RawSafetensors(header, data_bytes);
  return ParseSafetensors(Bytes(file), "x.safetensors").status();
}

TEST(SafetensorsTest, RoundTripEveryDType) {
  TempDir dir;
  std::vector<TensorToWrite> tensors;
  for (DType dtype : {DType::kF32, DType::kBf16, DType::kF16, DType::kF8E4M3}) {
    tensors.push_back(MakeTensor(absl::StrCat("t_", DTypeName(dtype)), dtype, {3, 5},
                                 [](int64_t i) { return static_cast<float>(i - 7) / 8.0f; }));
  }
  tensors.push_back(MakeTensor("scalar", DType::kF32, {}, [](int64_t) { return 2.5f; }));
  tensors.push_back(MakeTensor("empty", DType::kBf16, {0, 4}, [](int64_t) { return 0.0f; }));
  const std::string path = dir.File("a.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());

  std::string bytes = ReadFile(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) {
    header_len = (header_len << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  }
  EXPECT_EQ(header_len % 8, 0u);

  absl::StatusOr<SafetensorsFile> parsed = ParseSafetensors(Bytes(bytes), path);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->metadata.at("format"), "pt");
  ASSERT_EQ(parsed->tensors.size(), tensors.size());
  for (const TensorToWrite& t : tensors) {
    const TensorInfo* found = nullptr;
    for (const TensorInfo& info : parsed->tensors) {
      if (info.name == t.name) found = &info;
    }
    ASSERT_NE(found, nullptr) << t.name;
    EXPECT_EQ(found->dtype, t.dtype) << t.name;
    EXPECT_EQ(found->shape, t.shape) << t.name;
    EXPECT_EQ(found->file, path);
    ASSERT_EQ(found->nbytes, t.bytes.size()) << t.name;
    EXPECT_EQ(std::vector<uint8_t>(found->data, found->data + found->nbytes), t.bytes) << t.name;
  }
}

// Fraction of `path`'s pages in the page cache.
double ResidentFraction(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return -1;
  struct stat st;
  ::fstat(fd, &st);
  const size_t size = static_cast<size_t>(st.st_size);
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (addr == MAP_FAILED) return -1;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((size + page - 1) / page);
  const int rc = ::mincore(addr, size, resident.data());
  ::munmap(addr, size);
  if (rc != 0) return -1;
  size_t in = 0;
  for (unsigned char r : resident) in += r & 1;
  return static_cast<double>(in) / static_cast<double>(resident.size());
}

// A checkpoint file of 64 MiB or more leaves the page cache once written, so its first load
// reads it through the loader's MADV_HUGEPAGE mapping (2 MiB folios, docs/DESIGN-NOTES.md); a
// small file is left alone.
TEST(SafetensorsTest, LargeFilesLeaveThePageCacheOnceWritten) {
  TempDir dir;
  struct statfs fs;
  ASSERT_EQ(::statfs(dir.File("").c_str(), &fs), 0);
  if (fs.f_type == TMPFS_MAGIC) GTEST_SKIP() << "tmpfs keeps every page in memory";
  const std::string big = dir.File("big.safetensors");
  const std::string small = dir.File("small.safetensors");
  ASSERT_TRUE(WriteSafetensors(big, {{"w", DType::kBf16, {32, 1 << 20},
                                      std::vector<uint8_t>(size_t{64} << 20, 1)}})
                  .ok());
  ASSERT_TRUE(WriteSafetensors(small, {{"w", DType::kBf16, {1 << 19},
                                        std::vector<uint8_t>(size_t{1} << 20, 1)}})
                  .ok());
  EXPECT_LT(ResidentFraction(big), 0.05);
  EXPECT_GT(ResidentFraction(small), 0.95);
  EXPECT_GT(ReadFile(big).size(), size_t{64} << 20);  // and the data is all there
}

TEST(SafetensorsTest, WriterRejectsSizeMismatch) {
  TempDir dir;
  TensorToWrite t = MakeTensor("w", DType::kBf16, {2, 2}, [](int64_t) { return 1.0f; });
  t.bytes.pop_back();
  absl::Status s = WriteSafetensors(dir.File("a.safetensors"), {t});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'w'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("7 bytes"));

  TensorToWrite dup = MakeTensor("w", DType::kF32, {1}, [](int64_t) { return 1.0f; });
  s = WriteSafetensors(dir.File("b.safetensors"), {dup, dup});
  EXPECT_THAT(std::string(s.message()), HasSubstr("duplicate tensor 'w'"));

  s = WriteSafetensors(dir.File("no/such/dir/c.safetensors"), {dup});
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("c.safetensors"));
}

TEST(SafetensorsTest, AcceptsMinimalHeaders) {
  EXPECT_TRUE(ParseRaw("{}", 0).ok());
  EXPECT_TRUE(ParseRaw(R"({"__metadata__": {"a": "b"}})", 0).ok());
  EXPECT_TRUE(ParseRaw(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 8).ok());
}

struct BadHeaderCase {
  const char* label;
  std::string file;  // whole file bytes
  absl::StatusCode code;
  std::vector<std::string> substrings;
};

std::string Header(const std::string& entry, size_t data = 64) {
  return RawSafetensors(absl::StrCat(R"({"tw": )", entry, "}"), data);
}

TEST(SafetensorsTest, BadHeadersNameFileAndTensor) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  std::string long_len = RawSafetensors("{}", 0);
  long_len[0] = 100;  // header claims 100 bytes; 2 follow
  std::vector<BadHeaderCase> cases = {
      {"short", "abc", kInvalid, {"x.safetensors", "at least 8"}},
      {"length past end", long_len, kInvalid, {"x.safetensors", "length 100", "larger"}},
      {"not json", RawSafetensors("{not json", 0), kInvalid, {"x.safetensors", "not valid JSON"}},
      {"not object", RawSafetensors("[1, 2]", 0), kInvalid, {"x.safetensors", "not a JSON object"}},
      {"entry not object", Header("5"), kInvalid, {"x.safetensors", "'tw'", "not a JSON object"}},
      {"unknown dtype", Header(R"({"dtype": "I64", "shape": [1], "data_offsets": [0, 8]})"),
       kInvalid, {"x.safetensors", "'tw'", "I64"}},
      {"dtype not string", Header(R"({"dtype": 1, "shape": [1], "data_offsets": [0, 4]})"),
       kInvalid, {"'tw'", "dtype"}},
      {"shape not array", Header(R"({"dtype": "F32", "shape": 4, "data_offsets": [0, 16]})"),
       kInvalid, {"x.safetensors", "'tw'", "shape"}},
      {"negative dim", Header(R"({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]})"),
       kInvalid, {"'tw'", "non-negative"}},
      {"float dim", Header(R"({"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]})"),
       kInvalid, {"'tw'", "non-negative"}},
      {"numel overflow",
       Header(R"({"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]})"),
       kInvalid, {"'tw'", "overflows"}},
      {"offsets missing", Header(R"({"dtype": "F32", "shape": [1]})"), kInvalid,
       {"'tw'", "data_offsets"}},
      {"offsets one value", Header(R"({"dtype": "F32", "shape": [1], "data_offsets": [0]})"),
       kInvalid, {"'tw'", "data_offsets"}},
      {"offset negative", Header(R"({"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]})"),
       kInvalid, {"'tw'", "data_offsets"}},
      {"offset huge",
       Header(R"({"dtype": "F32", "shape": [1], "data_offsets": [0, 18446744073709551615]})"),
       kInvalid, {"'tw'", "data_offsets"}},
      {"end before begin", Header(R"({"dtype": "F32", "shape": [0], "data_offsets": [8, 4]})"),
       kInvalid, {"x.safetensors", "'tw'", "end before begin"}},
      {"size mismatch", Header(R"({"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]})"),
       kInvalid, {"x.safetensors", "'tw'", "20 data bytes", "[2,3]"}},
      {"truncated", Header(R"({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]})", 10),
       absl::StatusCode::kDataLoss, {"x.safetensors", "'tw'", "truncated"}},
      {"metadata not object", RawSafetensors(R"({"__metadata__": 3})", 0), kInvalid,
       {"x.safetensors", "__metadata__"}},
      {"metadata value", RawSafetensors(R"({"__metadata__": {"k": 1}})", 0), kInvalid,
       {"__metadata__", "'k'"}},
      {"overlap",
       RawSafetensors(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                      16),
       kInvalid, {"x.safetensors", "'b'", "overlaps tensor 'a'"}},
  };
  for (const BadHeaderCase& c : cases) {
    absl::Status s = ParseSafetensors(Bytes(c.file), "x.safetensors").status();
    EXPECT_EQ(s.code(), c.code) << c.label << ": " << s;
    for (const std::string& sub : c.substrings) {
      EXPECT_THAT(std::string(s.message()), HasSubstr(sub)) << c.label;
    }
  }
}

TEST(SafetensorsTest, AdjacentAndEmptyTensorsDoNotOverlap) {
  EXPECT_TRUE(ParseRaw(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                           "z": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
                           "b": {"dtype": "BF16", "shape": [2], "data_offsets": [8, 12]}})",
                       12)
                  .ok());
}

// The header parser must return an error (never crash, hang or throw) on arbitrary bytes.
TEST(SafetensorsTest, RandomAndMutatedHeadersNeverCrash) {
  std::mt19937_64 rng(12345);
  const std::string valid = RawSafetensors(
      R"({"__metadata__": {"format": "pt"}, "a": {"dtype": "F32", "shape": [2, 2], )"
      R"("data_offsets": [0, 16]}, "b": {"dtype": "F8_E4M3", "shape": [3], "data_offsets": [16, 19]}})",
      19);
  const std::string alphabet = "{}[]\",:0123456789-.eE \\u\"dtypeshapedata_offsetsF32BF16";
  int ok_count = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string file;
    switch (iter % 4) {
      case 0: {  // pure random bytes
        file.resize(rng() % 64);
        for (char& ch : file) ch = static_cast<char>(rng());
        break;
      }
      case 1: {  // valid file with a few random byte flips
        file = valid;
        int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) file[rng() % file.size()] = static_cast<char>(rng());
        break;
      }
      case 2: {  // valid length prefix, random JSON-ish header
        std::string header(rng() % 128, ' ');
        for (char& ch : header) ch = alphabet[rng() % alphabet.size()];
        file = RawSafetensors(header, rng() % 32);
        break;
      }
      default: {  // valid file truncated or extended at a random point
        file = valid.substr(0, rng() % (valid.size() + 1));
        if (rng() % 2) file.append(rng() % 16, '\x7f');
        break;
      }
    }
    absl::StatusOr<SafetensorsFile> parsed = ParseSafetensors(Bytes(file), "fuzz.safetensors");
    if (parsed.ok()) {
      ++ok_count;
      // Whatever parses must stay inside the buffer.
      for (const TensorInfo& t : parsed->tensors) {
        ASSERT_GE(t.data, Bytes(file).data());
        ASSERT_LE(t.data + t.nbytes, Bytes(file).data() + file.size());
      }
    } else {
      EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("fuzz.safetensors"));
    }
  }
  EXPECT_LT(ok_count, 4000);
}

}  // namespace
}  // namespace moeserve::engine
