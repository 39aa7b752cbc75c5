#ifndef MOESERVE_TESTS_UNIT_ENGINE_WEIGHTS_TEST_UTIL_H_
#define MOESERVE_TESTS_UNIT_ENGINE_WEIGHTS_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/dtype.h"
#include "gtest/gtest.h"

namespace moeserve::engine::testing {

// A fresh directory under $TMPDIR, removed on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "moeserve_weights_XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    const char* made = ::mkdtemp(buf.data());
    path_ = made != nullptr ? std::string(made) : std::string();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A safetensors file from a raw header string (not padded) and `data_bytes` zero bytes.
inline std::string RawSafetensors(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i));
  out += header;
  out.append(data_bytes, '\0');
  return out;
}

// A tiny DeepSeek-V3-shaped config: layer 0 dense, layer 1 MoE with 4 routed experts and one
// shared expert, noaux_tc routing, one MTP layer.
inline std::string SmallConfigJson(bool q_lora = true, bool tie = false) {
  return absl::StrCat(R"({
    "model_type": "deepseek_v3", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 12,
    "moe_intermediate_size": 4, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_nextn_predict_layers": 1, "q_lora_rank": )", q_lora ? 6 : 0, R"(,
    "kv_lora_rank": 4, "qk_nope_head_dim": 2, "qk_rope_head_dim": 2, "v_head_dim": 2,
    "n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1, "n_group": 2,
    "topk_group": 1, "first_k_dense_replace": 1, "moe_layer_freq": 1, "scoring_func": "sigmoid",
    "topk_method": "noaux_tc", "tie_word_embeddings": )", tie ? "true" : "false", "}");
}

inline ModelConfig SmallConfig(bool q_lora = true, bool tie = false) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(SmallConfigJson(q_lora, tie));
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig();
}

inline int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// A tensor of `dtype` whose element i holds `value(i)` (rounded to the dtype).
inline TensorToWrite MakeTensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                const std::function<float(int64_t)>& value) {
  TensorToWrite t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  const int64_t n = Numel(t.shape);
  t.bytes.resize(static_cast<size_t>(n * DTypeSize(dtype)));
  for (int64_t i = 0; i < n; ++i) {
    float f = value(i);
    uint8_t* p = t.bytes.data() + i * DTypeSize(dtype);
    switch (dtype) {
      case DType::kF32:
        std::memcpy(p, &f, 4);
        break;
      case DType::kBf16: {
        uint16_t v = F32ToBf16(f);
        std::memcpy(p, &v, 2);
        break;
      }
      case DType::kF16: {
        // Test values are small multiples of 1/64, exactly representable in f16: build by hand.
        uint16_t v = 0;
        if (f != 0.0f) {
          int e = 0;
          float m = std::frexp(std::fabs(f), &e);  // f = m * 2^e, m in [0.5, 1)
          uint16_t mant = static_cast<uint16_t>(std::lround((m * 2.0f - 1.0f) * 1024.0f));
          v = static_cast<uint16_t>(((e - 1 + 15) << 10) | mant);
          if (f < 0) v |= 0x8000;
        }
        std::memcpy(p, &v, 2);
        break;
      }
      case DType::kF8E4M3:
        *p = F32ToF8E4M3(f);
        break;
    }
  }
  return t;
}

// A deterministic value for element i of tensor number k.
inline float TestValue(int64_t k, int64_t i) {
  return static_cast<float>(((k * 7 + i * 3) % 17) - 8) / 16.0f;
}

// Every expected tensor of `config`, BF16 (norms F32), quantizable ones F8 with scales when `fp8`.
inline std::vector<TensorToWrite> MakeCheckpointTensors(const ModelConfig& config, bool fp8) {
  std::vector<TensorToWrite> out;
  int64_t k = 0;
  for (const ExpectedTensor& e : ExpectedTensors(config)) {
    ++k;
    auto value = [k](int64_t i) { return TestValue(k, i); };
    if (fp8 && e.quantizable) {
      out.push_back(MakeTensor(e.name, DType::kF8E4M3, e.shape, value));
      std::vector<int64_t> s = {(e.shape[0] + 127) / 128, (e.shape[1] + 127) / 128};
      out.push_back(MakeTensor(e.name + "_scale_inv", DType::kF32, s,
                               [](int64_t i) { return 0.5f + static_cast<float>(i); }));
    } else {
      out.push_back(MakeTensor(e.name, e.shape.size() == 1 ? DType::kF32 : DType::kBf16, e.shape,
                               value));
    }
  }
  return out;
}

// Writes `tensors` as a checkpoint in `dir`: one model.safetensors when `shard_of` is empty,
// else shards named by shard_of(name) plus model.safetensors.index.json.
inline absl::Status WriteCheckpoint(
    const std::string& dir, const std::vector<TensorToWrite>& tensors,
    const std::function<std::string(const std::string&)>& shard_of = nullptr) {
  if (!shard_of) return WriteSafetensors(dir + "/model.safetensors", tensors);
  std::map<std::string, std::vector<TensorToWrite>> shards;
  std::string index = R"({"metadata": {"total_size": 0}, "weight_map": {)";
  bool first = true;
  for (const TensorToWrite& t : tensors) {
    std::string shard = shard_of(t.name);
    shards[shard].push_back(t);
    absl::StrAppend(&index, first ? "" : ",", "\"", t.name, "\": \"", shard, "\"");
    first = false;
  }
  index += "}}";
  for (const auto& [name, list] : shards) {
    absl::Status s = WriteSafetensors(dir + "/" + name, list);
    if (!s.ok()) return s;
  }
  WriteFile(dir + "/model.safetensors.index.json", index);
  return absl::OkStatus();
}

}  // namespace moeserve::engine::testing

#endif  // MOESERVE_TESTS_UNIT_ENGINE_WEIGHTS_TEST_UTIL_H_
