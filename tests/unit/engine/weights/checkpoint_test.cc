#include "engine/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/weights/test_util.h"

namespace moeserve::engine {
namespace {

using ::moeserve::engine::testing::MakeCheckpointTensors;
using ::moeserve::engine::testing::MakeTensor;
using ::moeserve::engine::testing::SmallConfig;
using ::moeserve::engine::testing::TempDir;
using ::moeserve::engine::testing::WriteCheckpoint;
using ::moeserve::engine::testing::WriteFile;
using ::testing::HasSubstr;

const ExpectedTensor* FindExpected(const std::vector<ExpectedTensor>& list,
                                   const std::string& name) {
  for (const ExpectedTensor& e : list) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

TEST(ExpectedTensorsTest, NamesShapesAndFlags) {
  ModelConfig c = SmallConfig();
  std::vector<ExpectedTensor> list = ExpectedTensors(c);
  // embed, norm, lm_head; layer 0: 2 norms + 7 attention + 3 dense; layer 1: 2 norms +
  // 7 attention + gate + bias + 4*3 experts + 3 shared.
  EXPECT_EQ(list.size(), 3u + 12u + 26u);
  EXPECT_EQ(list.front().name, "model.embed_tokens.weight");

  struct Want {
    const char* name;
    std::vector<int64_t> shape;
    bool quantizable;
    int64_t layer;
    std::optional<int64_t> expert;
  };
  std::vector<Want> wants = {
      {"model.embed_tokens.weight", {16, 8}, false, -1, std::nullopt},
      {"lm_head.weight", {16, 8}, false, -1, std::nullopt},
      {"model.norm.weight", {8}, false, -1, std::nullopt},
      {"model.layers.0.input_layernorm.weight", {8}, false, 0, std::nullopt},
      {"model.layers.0.self_attn.q_a_proj.weight", {6, 8}, true, 0, std::nullopt},
      {"model.layers.0.self_attn.q_a_layernorm.weight", {6}, false, 0, std::nullopt},
      {"model.layers.0.self_attn.q_b_proj.weight", {8, 6}, true, 0, std::nullopt},
      {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight", {6, 8}, true, 0, std::nullopt},
      {"model.layers.0.self_attn.kv_a_layernorm.weight", {4}, false, 0, std::nullopt},
      {"model.layers.0.self_attn.kv_b_proj.weight", {8, 4}, true, 0, std::nullopt},
      {"model.layers.0.self_attn.o_proj.weight", {8, 4}, true, 0, std::nullopt},
      {"model.layers.0.mlp.gate_proj.weight", {12, 8}, true, 0, std::nullopt},
      {"model.layers.0.mlp.down_proj.weight", {8, 12}, true, 0, std::nullopt},
      {"model.layers.1.mlp.gate.weight", {4, 8}, false, 1, std::nullopt},
      {"model.layers.1.mlp.gate.e_score_correction_bias", {4}, false, 1, std::nullopt},
      {"model.layers.1.mlp.experts.3.up_proj.weight", {4, 8}, true, 1, 3},
      {"model.layers.1.mlp.experts.0.down_proj.weight", {8, 4}, true, 1, 0},
      {"model.layers.1.mlp.shared_experts.gate_proj.weight", {4, 8}, true, 1, std::nullopt},
      {"model.layers.1.mlp.shared_experts.down_proj.weight", {8, 4}, true, 1, std::nullopt},
  };
  for (const Want& w : wants) {
    const ExpectedTensor* e = FindExpected(list, w.name);
    ASSERT_NE(e, nullptr) << w.name;
    EXPECT_EQ(e->shape, w.shape) << w.name;
    EXPECT_EQ(e->quantizable, w.quantizable) << w.name;
    EXPECT_EQ(e->layer, w.layer) << w.name;
    EXPECT_EQ(e->expert, w.expert) << w.name;
  }
  EXPECT_EQ(FindExpected(list, "model.layers.1.mlp.gate_proj.weight"), nullptr);
  EXPECT_EQ(FindExpected(list, "model.layers.0.mlp.gate.weight"), nullptr);
  EXPECT_EQ(FindExpected(list, "model.layers.0.self_attn.q_proj.weight"), nullptr);

  std::vector<ExpectedTensor> plain = ExpectedTensors(SmallConfig(/*q_lora=*/false, /*tie=*/true));
  EXPECT_EQ(FindExpected(plain, "lm_head.weight"), nullptr);
  EXPECT_EQ(FindExpected(plain, "model.layers.0.self_attn.q_a_proj.weight"), nullptr);
  const ExpectedTensor* q = FindExpected(plain, "model.layers.1.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{8, 8}));
}

TEST(CheckpointTest, SingleFileOpensAndValidates) {
  for (bool fp8 : {false, true}) {
    TempDir dir;
    ModelConfig c = SmallConfig();
    std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, fp8);
    // An MTP layer (index 2 >= num_hidden_layers) as in real V3 checkpoints: ignored.
    tensors.push_back(MakeTensor("model.layers.2.eh_proj.weight", DType::kBf16, {8, 16},
                                 [](int64_t) { return 0.0f; }));
    ASSERT_TRUE(WriteCheckpoint(dir.path(), tensors).ok());
    absl::StatusOr<std::unique_ptr<Checkpoint>> cp = Checkpoint::Open(dir.path(), &c);
    ASSERT_TRUE(cp.ok()) << cp.status();
    EXPECT_EQ((*cp)->dir(), dir.path());
    EXPECT_EQ((*cp)->Names().size(), tensors.size());
    EXPECT_EQ((*cp)->MappedFiles(), std::vector<std::string>{dir.File("model.safetensors")});
    const TensorInfo* t = (*cp)->Find("model.layers.0.self_attn.o_proj.weight");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, fp8 ? DType::kF8E4M3 : DType::kBf16);
    EXPECT_EQ(t->file, dir.File("model.safetensors"));
    EXPECT_EQ((*cp)->Find("nope"), nullptr);
    absl::Status s = ValidateCheckpoint(**cp, c, TensorFilter());
    EXPECT_TRUE(s.ok()) << s;
  }
}

TEST(CheckpointTest, OpenErrors) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<Checkpoint>> cp = Checkpoint::Open(dir.File("absent"));
  EXPECT_EQ(cp.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(cp.status().message()), HasSubstr("absent"));

  cp = Checkpoint::Open(dir.path());
  EXPECT_EQ(cp.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(cp.status().message()), HasSubstr("model.safetensors"));

  WriteFile(dir.File("model.safetensors"), "\x10\0\0\0\0\0\0\0{}");
  cp = Checkpoint::Open(dir.path());
  EXPECT_EQ(cp.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(cp.status().message()), HasSubstr(dir.File("model.safetensors")));

  WriteFile(dir.File("model.safetensors.index.json"), "[]");
  cp = Checkpoint::Open(dir.path());
  EXPECT_THAT(std::string(cp.status().message()), HasSubstr("model.safetensors.index.json"));

  WriteFile(dir.File("model.safetensors.index.json"), R"({"weight_map": {"a": "../evil"}})");
  cp = Checkpoint::Open(dir.path());
  EXPECT_THAT(std::string(cp.status().message()), HasSubstr("invalid shard file '../evil'"));

  WriteFile(dir.File("model.safetensors.index.json"),
            R"({"weight_map": {"w": "model-00009.safetensors"}})");
  cp = Checkpoint::Open(dir.path());
  EXPECT_EQ(cp.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(cp.status().message()), HasSubstr("model-00009.safetensors"));
  EXPECT_THAT(std::string(cp.status().message()), HasSubstr("'w'"));
}

TEST(CheckpointTest, IndexMustMatchShards) {
  TempDir dir;
  TensorToWrite a = MakeTensor("a", DType::kF32, {2}, [](int64_t) { return 1.0f; });
  TensorToWrite b = MakeTensor("b", DType::kF32, {2}, [](int64_t) { return 1.0f; });
  ASSERT_TRUE(WriteSafetensors(dir.File("s1.safetensors"), {a, b}).ok());
  // The shard holds 'b' but the index does not list it.
  WriteFile(dir.File("model.safetensors.index.json"), R"({"weight_map": {"a": "s1.safetensors"}})");
  absl::StatusOr<std::unique_ptr<Checkpoint>> cp = Checkpoint::Open(dir.path());
  EXPECT_EQ(cp.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(cp.status().message()), HasSubstr("s1.safetensors: tensor 'b'"));

  // The index lists 'c' in a shard that lacks it.
  WriteFile(dir.File("model.safetensors.index.json"),
            R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s1.safetensors"}})");
  cp = Checkpoint::Open(dir.path());
  EXPECT_THAT(std::string(cp.status().message()), HasSubstr("tensor 'c'"));
  EXPECT_THAT(std::string(cp.status().message()), HasSubstr("does not contain it"));
}

std::string ShardOf(const std::string& name) {
  const std::string key = "mlp.experts.";
  size_t pos = name.find(key);
  if (pos == std::string::npos) return "model-attn.safetensors";
  size_t begin = pos + key.size();
  return absl::StrCat("model-expert", name.substr(begin, name.find('.', begin) - begin),
                      ".safetensors");
}

TEST(CheckpointTest, ShardedOpensEverythingWithoutFilter) {
  TempDir dir;
  ModelConfig c = SmallConfig();
  std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, /*fp8=*/true);
  ASSERT_TRUE(WriteCheckpoint(dir.path(), tensors, ShardOf).ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> cp = Checkpoint::Open(dir.path(), &c);
  ASSERT_TRUE(cp.ok()) << cp.status();
  EXPECT_EQ((*cp)->MappedFiles().size(), 5u);  // attention + 4 experts
  EXPECT_EQ((*cp)->Names().size(), tensors.size());
  const TensorInfo* t = (*cp)->Find("model.layers.1.mlp.experts.2.up_proj.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->file, dir.File("model-expert2.safetensors"));
  absl::Status s = ValidateCheckpoint(**cp, c, TensorFilter());
  EXPECT_TRUE(s.ok()) << s;
}

TEST(CheckpointTest, FilterMapsOnlyNeededShards) {
  TempDir dir;
  ModelConfig c = SmallConfig();
  std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, /*fp8=*/true);
  // An MTP layer in its own shard, which no filter needs.
  tensors.push_back(MakeTensor("model.layers.2.eh_proj.weight", DType::kBf16, {8, 16},
                               [](int64_t) { return 0.0f; }));
  auto shard_of = [](const std::string& name) {
    return absl::StartsWith(name, "model.layers.2.") ? std::string("model-mtp.safetensors")
                                                     : ShardOf(name);
  };
  ASSERT_TRUE(WriteCheckpoint(dir.path(), tensors, shard_of).ok());
  // Unneeded shards need not even exist locally.
  std::remove(dir.File("model-mtp.safetensors").c_str());

  TensorFilter attention;
  attention.want_expert = [](int64_t, int64_t) { return false; };
  absl::StatusOr<std::unique_ptr<Checkpoint>> cp = Checkpoint::Open(dir.path(), &c, &attention);
  ASSERT_TRUE(cp.ok()) << cp.status();
  EXPECT_EQ((*cp)->MappedFiles(), std::vector<std::string>{dir.File("model-attn.safetensors")});
  EXPECT_EQ((*cp)->Find("model.layers.1.mlp.experts.0.up_proj.weight"), nullptr);
  EXPECT_NE((*cp)->Find("model.layers.1.mlp.shared_experts.up_proj.weight"), nullptr);
  EXPECT_EQ((*cp)->Names().size(), tensors.size());
  EXPECT_EQ((*cp)->FileOf("model.layers.1.mlp.experts.0.up_proj.weight"),
            dir.File("model-expert0.safetensors"));
  absl::Status s = ValidateCheckpoint(**cp, c, attention);
  EXPECT_TRUE(s.ok()) << s;
  // Validating for everything finds the unmapped experts missing.
  s = ValidateCheckpoint(**cp, c, TensorFilter());
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.layers.1.mlp.experts.0.gate_proj.weight' is missing"));

  TensorFilter experts;
  experts.attention_side = false;
  experts.want_expert = [](int64_t layer, int64_t expert) { return layer == 1 && expert % 2 == 1; };
  cp = Checkpoint::Open(dir.path(), &c, &experts);
  ASSERT_TRUE(cp.ok()) << cp.status();
  EXPECT_EQ((*cp)->MappedFiles(),
            (std::vector<std::string>{dir.File("model-expert1.safetensors"),
                                      dir.File("model-expert3.safetensors")}));
  EXPECT_EQ((*cp)->Find("model.embed_tokens.weight"), nullptr);
  EXPECT_NE((*cp)->Find("model.layers.1.mlp.experts.3.down_proj.weight_scale_inv"), nullptr);
  s = ValidateCheckpoint(**cp, c, experts);
  EXPECT_TRUE(s.ok()) << s;
}

// Writes `tensors` (single file), opens and validates; returns the validation (or open) status.
absl::Status OpenAndValidate(const TempDir& dir, const ModelConfig& c,
                             const std::vector<TensorToWrite>& tensors) {
  absl::Status s = WriteCheckpoint(dir.path(), tensors);
  if (!s.ok()) return s;
  absl::StatusOr<std::unique_ptr<Checkpoint>> cp = Checkpoint::Open(dir.path(), &c);
  if (!cp.ok()) return cp.status();
  return ValidateCheckpoint(**cp, c, TensorFilter());
}

TensorToWrite* Named(std::vector<TensorToWrite>& tensors, const std::string& name) {
  for (TensorToWrite& t : tensors) {
    if (t.name == name) return &t;
  }
  ADD_FAILURE() << "no tensor " << name;
  static TensorToWrite dummy;
  return &dummy;
}

void Erase(std::vector<TensorToWrite>& tensors, const std::string& name) {
  tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                               [&](const TensorToWrite& t) { return t.name == name; }),
                tensors.end());
}

TEST(ValidateCheckpointTest, WrongShape) {
  TempDir dir;
  ModelConfig c = SmallConfig();
  std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, false);
  const std::string name = "model.layers.0.self_attn.o_proj.weight";
  *Named(tensors, name) = MakeTensor(name, DType::kBf16, {4, 8}, [](int64_t) { return 0.0f; });
  absl::Status s = OpenAndValidate(dir, c, tensors);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("model.safetensors: tensor 'model.layers.0.self_attn.o_proj.weight' has "
                        "shape [4,8], expected [8,4]"));
}

TEST(ValidateCheckpointTest, Missing) {
  TempDir dir;
  ModelConfig c = SmallConfig();
  std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, false);
  Erase(tensors, "model.layers.1.mlp.gate.e_score_correction_bias");
  absl::Status s = OpenAndValidate(dir, c, tensors);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr(absl::StrCat("tensor 'model.layers.1.mlp.gate.e_score_correction_bias' is "
                                     "missing (checkpoint ",
                                     dir.path(), ")")));
}

TEST(ValidateCheckpointTest, Unexpected) {
  ModelConfig c = SmallConfig();
  {
    TempDir dir;
    std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, false);
    tensors.push_back(MakeTensor("model.layers.0.mlp.bias", DType::kF32, {8},
                                 [](int64_t) { return 0.0f; }));
    absl::Status s = OpenAndValidate(dir, c, tensors);
    EXPECT_THAT(std::string(s.message()),
                HasSubstr("model.safetensors: unexpected tensor 'model.layers.0.mlp.bias'"));
  }
  {
    // Layers past num_hidden_layers are only tolerated when the config declares MTP layers.
    TempDir dir;
    ModelConfig no_mtp = c;
    no_mtp.num_nextn_predict_layers = 0;
    std::vector<TensorToWrite> tensors = MakeCheckpointTensors(no_mtp, false);
    tensors.push_back(MakeTensor("model.layers.2.eh_proj.weight", DType::kBf16, {8, 16},
                                 [](int64_t) { return 0.0f; }));
    absl::Status s = OpenAndValidate(dir, no_mtp, tensors);
    EXPECT_THAT(std::string(s.message()), HasSubstr("unexpected tensor 'model.layers.2.eh_proj.weight'"));
  }
}

TEST(ValidateCheckpointTest, DTypes) {
  ModelConfig c = SmallConfig();
  const std::string gate = "model.layers.1.mlp.gate.weight";
  const std::string o = "model.layers.0.self_attn.o_proj.weight";
  {
    // Every non-FP8 dtype loads.
    TempDir dir;
    std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, false);
    *Named(tensors, o) = MakeTensor(o, DType::kF16, {8, 4}, [](int64_t) { return 0.5f; });
    *Named(tensors, gate) = MakeTensor(gate, DType::kF32, {4, 8}, [](int64_t) { return 0.5f; });
    absl::Status s = OpenAndValidate(dir, c, tensors);
    EXPECT_TRUE(s.ok()) << s;
  }
  {
    // The router never comes as FP8.
    TempDir dir;
    std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, false);
    *Named(tensors, gate) = MakeTensor(gate, DType::kF8E4M3, {4, 8}, [](int64_t) { return 0.5f; });
    tensors.push_back(MakeTensor(gate + "_scale_inv", DType::kF32, {1, 1},
                                 [](int64_t) { return 1.0f; }));
    absl::Status s = OpenAndValidate(dir, c, tensors);
    EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrCat("tensor '", gate, "' has dtype F8_E4M3")));
  }
}

TEST(ValidateCheckpointTest, ScaleInv) {
  ModelConfig c = SmallConfig();
  const std::string w = "model.layers.1.mlp.experts.2.down_proj.weight";
  const std::string scale = w + "_scale_inv";
  {
    TempDir dir;
    std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, true);
    Erase(tensors, scale);
    absl::Status s = OpenAndValidate(dir, c, tensors);
    EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrCat("tensor '", scale, "' is missing")));
    EXPECT_THAT(std::string(s.message()), HasSubstr(w));
  }
  {
    TempDir dir;
    std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, true);
    *Named(tensors, scale) = MakeTensor(scale, DType::kF32, {1, 2}, [](int64_t) { return 1.0f; });
    absl::Status s = OpenAndValidate(dir, c, tensors);
    EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrCat("model.safetensors: tensor '", scale,
                                                    "' has shape [1,2], expected [1,1]")));
  }
  {
    TempDir dir;
    std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, true);
    *Named(tensors, scale) = MakeTensor(scale, DType::kBf16, {1, 1}, [](int64_t) { return 1.0f; });
    absl::Status s = OpenAndValidate(dir, c, tensors);
    EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrCat("tensor '", scale, "' has dtype BF16")));
  }
  {
    // A scale next to a BF16 weight.
    TempDir dir;
    std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, false);
    tensors.push_back(MakeTensor(scale, DType::kF32, {1, 1}, [](int64_t) { return 1.0f; }));
    absl::Status s = OpenAndValidate(dir, c, tensors);
    EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrCat("tensor '", scale, "' is unexpected")));
  }
  {
    // A scale for a tensor that is never quantised.
    TempDir dir;
    std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, false);
    tensors.push_back(MakeTensor("model.norm.weight_scale_inv", DType::kF32, {1, 1},
                                 [](int64_t) { return 1.0f; }));
    absl::Status s = OpenAndValidate(dir, c, tensors);
    EXPECT_THAT(std::string(s.message()), HasSubstr("tensor 'model.norm.weight_scale_inv' is unexpected"));
  }
}

TEST(ValidateCheckpointTest, UnexpectedTensorInUnmappedShardNamesItsFile) {
  TempDir dir;
  ModelConfig c = SmallConfig();
  std::vector<TensorToWrite> tensors = MakeCheckpointTensors(c, false);
  tensors.push_back(MakeTensor("model.layers.1.mlp.experts.9.up_proj.weight", DType::kBf16,
                               {4, 8}, [](int64_t) { return 0.0f; }));
  ASSERT_TRUE(WriteCheckpoint(dir.path(), tensors, ShardOf).ok());
  TensorFilter attention;
  attention.want_expert = [](int64_t, int64_t) { return false; };
  absl::StatusOr<std::unique_ptr<Checkpoint>> cp = Checkpoint::Open(dir.path(), &c, &attention);
  ASSERT_TRUE(cp.ok()) << cp.status();
  absl::Status s = ValidateCheckpoint(**cp, c, attention);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model-expert9.safetensors: unexpected tensor "
                                     "'model.layers.1.mlp.experts.9.up_proj.weight'"));
}

}  // namespace
}  // namespace moeserve::engine
