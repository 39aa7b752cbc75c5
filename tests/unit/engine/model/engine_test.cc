#include "engine/engine.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "gtest/gtest.h"
#include "tests/testing/tiny_model.h"
#include "tests/unit/engine/model/small_model.h"
#include "tools/moeserve/mkmodel.h"

namespace moeserve::engine {
namespace {

using Json = nlohmann::json;

using testing::LoadSmall;

int32_t Argmax(const std::vector<float>& v) {
  int32_t best = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] > v[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

// Steps until `seq` reports logits (prompts may take several chunked steps).
std::vector<float> StepUntil(Engine* e, SeqId seq) {
  for (int guard = 0; guard < 1000; ++guard) {
    absl::StatusOr<std::vector<StepOutput>> out = e->Step();
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return {};
    for (StepOutput& o : *out) {
      if (o.seq == seq) return std::move(o.logits);
    }
  }
  ADD_FAILURE() << "sequence never finished";
  return {};
}

// Logits after every prefix of `tokens`, each computed from scratch in a fresh engine.
std::vector<float> Recompute(const Model& m, const std::vector<int32_t>& tokens) {
  EngineOptions o;
  o.kv_cache_tokens = 1024;
  Engine e(&m, o);
  SeqId s = *e.Add(tokens);
  return StepUntil(&e, s);
}

class EngineTest : public ::testing::TestWithParam<ComputeDType> {};

TEST_P(EngineTest, DecodeWithCacheEqualsFullRecomputation) {
  std::unique_ptr<Model> m = LoadSmall("decode", GetParam());
  ASSERT_NE(m, nullptr);
  EngineOptions o;
  o.block_tokens = 4;  // many block boundaries
  Engine e(m.get(), o);
  std::vector<int32_t> tokens = {0, 17, 33, 250, 9};
  SeqId s = *e.Add(tokens);
  std::vector<float> logits = StepUntil(&e, s);
  for (int step = 0; step < 12; ++step) {
    std::vector<float> fresh = Recompute(*m, tokens);
    ASSERT_EQ(logits.size(), fresh.size());
    for (size_t i = 0; i < logits.size(); ++i) {
      ASSERT_EQ(logits[i], fresh[i]) << "step " << step << " logit " << i;
    }
    int32_t next = Argmax(logits);
    tokens.push_back(next);
    ASSERT_TRUE(e.Append(s, next).ok());
    logits = StepUntil(&e, s);
  }
}

TEST_P(EngineTest, BatchOfMixedLengthsEqualsEachSequenceAlone) {
  std::unique_ptr<Model> m = LoadSmall("batch", GetParam());
  ASSERT_NE(m, nullptr);
  std::vector<std::vector<int32_t>> prompts = {
      {5}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {300, 200, 100, 50, 25}};
  EngineOptions o;
  o.block_tokens = 8;
  Engine batch(m.get(), o);
  std::vector<SeqId> ids;
  for (const auto& p : prompts) ids.push_back(*batch.Add(p));
  absl::StatusOr<std::vector<StepOutput>> out = batch.Step();
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), prompts.size());
  // Then a decode step with all three together.
  for (size_t i = 0; i < prompts.size(); ++i) {
    int32_t next = Argmax((*out)[i].logits);
    prompts[i].push_back(next);
    ASSERT_TRUE(batch.Append(ids[i], next).ok());
  }
  absl::StatusOr<std::vector<StepOutput>> out2 = batch.Step();
  ASSERT_TRUE(out2.ok()) << out2.status();
  ASSERT_EQ(out2->size(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<float> alone = Recompute(*m, prompts[i]);
    EXPECT_EQ((*out2)[i].seq, ids[i]);
    EXPECT_EQ((*out2)[i].logits, alone) << "sequence " << i;
  }
}

TEST_P(EngineTest, ChunkedPrefillEqualsOneChunk) {
  std::unique_ptr<Model> m = LoadSmall("chunked", GetParam());
  ASSERT_NE(m, nullptr);
  // 150 tokens: in one chunk, a prefill large enough that threads split the tokens (and the
  // routed experts) between them; in chunks of 7, the decode-sized split of columns.
  std::vector<int32_t> prompt;
  for (int i = 0; i < 150; ++i) prompt.push_back((i * 37) % 384);
  EngineOptions o;
  o.max_step_tokens = 7;
  o.block_tokens = 5;
  Engine e(m.get(), o);
  SeqId s = *e.Add(prompt);
  int steps = 0;
  std::vector<float> logits;
  while (logits.empty()) {
    absl::StatusOr<std::vector<StepOutput>> out = e.Step();
    ASSERT_TRUE(out.ok()) << out.status();
    ++steps;
    if (!out->empty()) logits = (*out)[0].logits;
  }
  EXPECT_EQ(steps, 22);  // ceil(150 / 7)
  EXPECT_EQ(logits, Recompute(*m, prompt));
  (void)s;
}

TEST_P(EngineTest, PositionLogitsEqualEachPrefixsNextTokenLogits) {
  std::unique_ptr<Model> m = LoadSmall("positions", GetParam());
  ASSERT_NE(m, nullptr);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back((i * 53 + 11) % 384);
  EngineOptions o;
  o.max_step_tokens = 16;
  o.max_logit_rows = 5;  // the scored prompt runs 5 tokens a step, beside a decoding sequence
  o.block_tokens = 4;
  Engine e(m.get(), o);
  std::vector<int32_t> other = {7, 8, 9};
  SeqId decoding = *e.Add(other);
  StepUntil(&e, decoding);
  std::vector<int64_t> positions;
  std::vector<std::vector<float>> scored;
  SeqId s = *e.Add(prompt, [&](int64_t position, absl::Span<const float> logits) {
    positions.push_back(position);
    scored.emplace_back(logits.begin(), logits.end());
  });
  EXPECT_EQ(e.ImportPrefix(s, {}).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> last;
  int steps = 0;
  while (last.empty()) {
    ASSERT_TRUE(e.Append(decoding, 100 + steps).ok());
    absl::StatusOr<std::vector<StepOutput>> out = e.Step();
    ASSERT_TRUE(out.ok()) << out.status();
    ++steps;
    for (StepOutput& so : *out) {
      if (so.seq == s) last = std::move(so.logits);
    }
  }
  EXPECT_EQ(steps, 8);  // ceil(40 / 5)
  ASSERT_EQ(positions.size(), prompt.size() - 1);
  for (size_t p = 0; p + 1 < prompt.size(); ++p) {
    ASSERT_EQ(positions[p], static_cast<int64_t>(p));
    std::vector<int32_t> prefix(prompt.begin(), prompt.begin() + p + 1);
    EXPECT_EQ(scored[p], Recompute(*m, prefix)) << "position " << p;
  }
  EXPECT_EQ(last, Recompute(*m, prompt));
}

TEST_P(EngineTest, ForkSharesPrefixBlocksAndContinuesIndependently) {
  std::unique_ptr<Model> m = LoadSmall("fork", GetParam());
  ASSERT_NE(m, nullptr);
  EngineOptions o;
  o.block_tokens = 4;
  o.kv_cache_tokens = 64;
  Engine e(m.get(), o);
  std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  SeqId a = *e.Add(prompt);
  StepUntil(&e, a);
  const int64_t free_before = e.cache().free_blocks();
  absl::StatusOr<SeqId> b = e.Fork(a, 6);  // one full shared block + a copied partial one
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(e.cache().free_blocks(), free_before - 1);
  ASSERT_TRUE(e.Append(*b, 99).ok());
  std::vector<float> forked = StepUntil(&e, *b);
  EXPECT_EQ(forked, Recompute(*m, {1, 2, 3, 4, 5, 6, 99}));
  // The original continues unaffected.
  ASSERT_TRUE(e.Append(a, 42).ok());
  std::vector<int32_t> longer = prompt;
  longer.push_back(42);
  EXPECT_EQ(StepUntil(&e, a), Recompute(*m, longer));
  ASSERT_TRUE(e.Free(*b).ok());
  ASSERT_TRUE(e.Free(a).ok());
  EXPECT_EQ(e.cache().free_blocks(), e.cache().num_blocks());
  EXPECT_FALSE(e.Fork(a, 1).ok());
}

INSTANTIATE_TEST_SUITE_P(ComputeDTypes, EngineTest,
                         ::testing::Values(ComputeDType::kF32, ComputeDType::kBf16));

TEST(EngineLimitsTest, FullKvPoolMakesSequencesWaitThenErrorsWhenNoneCanProceed) {
  std::unique_ptr<Model> m = LoadSmall("kvfull", ComputeDType::kF32);
  ASSERT_NE(m, nullptr);
  EngineOptions o;
  o.block_tokens = 4;
  o.kv_cache_tokens = 16;  // 4 blocks
  Engine e(m.get(), o);
  // Longer than the whole pool: refused up front.
  std::vector<int32_t> huge(17, 3);
  absl::StatusOr<SeqId> refused = e.Add(huge);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("KV cache"), std::string::npos);
  // Two sequences of 12 tokens: the first gets 3 blocks, the second can only get 1 and waits.
  SeqId a = *e.Add(std::vector<int32_t>(12, 5));
  SeqId b = *e.Add(std::vector<int32_t>(12, 6));
  absl::StatusOr<std::vector<StepOutput>> out = e.Step();
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 1u);
  EXPECT_EQ((*out)[0].seq, a);
  // `a` now needs a 4th block for its next token; b holds it. Nobody can proceed.
  ASSERT_TRUE(e.Append(a, 1).ok());
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(e.Append(a, 1).ok());
  }
  absl::StatusOr<std::vector<StepOutput>> stuck = e.Step();
  EXPECT_EQ(stuck.status().code(), absl::StatusCode::kResourceExhausted) << stuck.status();
  // Freeing `a` lets `b` finish.
  ASSERT_TRUE(e.Free(a).ok());
  EXPECT_EQ(StepUntil(&e, b), Recompute(*m, std::vector<int32_t>(12, 6)));
}

TEST(EngineLimitsTest, BadInputsAreInvalidArgument) {
  std::unique_ptr<Model> m = LoadSmall("badinput", ComputeDType::kF32);
  ASSERT_NE(m, nullptr);
  Engine e(m.get(), EngineOptions{});
  EXPECT_EQ(e.Add({}).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<SeqId> oov = e.Add({1, 384});
  EXPECT_EQ(oov.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(oov.status().message().find("384"), std::string::npos);
  EXPECT_EQ(e.Add({-1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e.Add(std::vector<int32_t>(513, 1)).status().code(),
            absl::StatusCode::kInvalidArgument);  // beyond max_position_embeddings
  EXPECT_EQ(e.Append(12345, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e.Free(12345).code(), absl::StatusCode::kInvalidArgument);
  // A chunk asking for logits of more tokens than it holds.
  KvCache cache(m->config(), 4, 4);
  std::vector<int32_t> tokens = {1, 2}, blocks = {0};
  SequenceChunk ch;
  ch.tokens = tokens;
  ch.block_table = blocks;
  ch.logits_tokens = 3;
  std::vector<std::vector<float>> logits;
  absl::Status st = m->Forward({ch}, &cache, nullptr, &logits);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("logits_tokens"), std::string::npos) << st;
  // Greedy argmax needs exactly one row, over a vocab prefix that exists.
  for (auto [rows, vocab] : {std::pair<int64_t, int64_t>{2, 10}, {1, -1}, {1, 100000}}) {
    ch.logits_tokens = rows;
    ch.argmax_vocab = vocab;
    st = m->Forward({ch}, &cache, nullptr, &logits);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << rows << " " << vocab;
    EXPECT_NE(st.message().find("argmax_vocab"), std::string::npos) << st;
  }
}

// Generates `n` sampled tokens for each prompt, all sequences stepped together in one engine.
std::vector<std::vector<int32_t>> SampleTogether(const Model& m,
                                                 const std::vector<std::vector<int32_t>>& prompts,
                                                 const std::vector<SamplingParams>& params,
                                                 int n) {
  EngineOptions o;
  o.kv_cache_tokens = 1024;
  Engine e(&m, o);
  std::vector<SeqId> ids;
  std::vector<Sampler> samplers;
  std::vector<std::vector<int32_t>> out(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    ids.push_back(*e.Add(prompts[i]));
    samplers.emplace_back(params[i], 0);
  }
  for (int step = 0; step < n; ++step) {
    absl::StatusOr<std::vector<StepOutput>> r = e.Step();
    EXPECT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->size(), prompts.size());
    for (StepOutput& so : *r) {
      size_t i = std::find(ids.begin(), ids.end(), so.seq) - ids.begin();
      int32_t t = samplers[i].Sample(so.logits, prompts[i], out[i]).token;
      out[i].push_back(t);
      EXPECT_TRUE(e.Append(so.seq, t).ok());
    }
  }
  return out;
}

TEST(SeededSamplingTest, SameSeedGivesSameTokensAloneAndInABatch) {
  std::unique_ptr<Model> m = LoadSmall("seeded", ComputeDType::kBf16);
  ASSERT_NE(m, nullptr);
  std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {7, 7, 7, 7, 7, 7}, {100}};
  std::vector<SamplingParams> params(3);
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].temperature = 1.0;
    params[i].top_p = 0.95;
    params[i].seed = 1000 + i;
  }
  std::vector<std::vector<int32_t>> batch = SampleTogether(*m, prompts, params, 10);
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<std::vector<int32_t>> alone = SampleTogether(*m, {prompts[i]}, {params[i]}, 10);
    EXPECT_EQ(batch[i], alone[0]) << "sequence " << i;
  }
  // Another seed changes the draws (so the equality above is not vacuous).
  params[0].seed = 5;
  EXPECT_NE(SampleTogether(*m, {prompts[0]}, {params[0]}, 10)[0], batch[0]);
}

// Forwards to another model's experts and counts calls: stands in for the expert-shard client.
class ForwardingExperts final : public ExpertExecutor {
 public:
  explicit ForwardingExperts(ExpertExecutor* inner) : inner_(inner) {}
  absl::Status Run(int64_t layer, const float* x, int64_t n, int64_t k, const int32_t* ids,
                   const float* weights, float* out) override {
    ++calls;
    return inner_->Run(layer, x, n, k, ids, weights, out);
  }
  int calls = 0;

 private:
  ExpertExecutor* inner_;
};

TEST(SplitLoadingTest, AttentionSideAndExpertSideTogetherEqualTheWholeModel) {
  std::string dir = testing::TempDir("split");
  ASSERT_TRUE(cli::WriteRandomCheckpoint(testing::SmallConfig(), dir, 11, false).ok());
  ModelOptions whole_opts;
  whole_opts.compute = ComputeDType::kF32;
  std::unique_ptr<Model> whole = std::move(*Model::Load(dir, whole_opts));

  ModelOptions attn_opts = whole_opts;
  attn_opts.filter.want_expert = [](int64_t, int64_t) { return false; };
  absl::StatusOr<std::unique_ptr<Model>> attn = Model::Load(dir, attn_opts);
  ASSERT_TRUE(attn.ok()) << attn.status();
  ModelOptions expert_opts = whole_opts;
  expert_opts.filter.attention_side = false;
  absl::StatusOr<std::unique_ptr<Model>> experts = Model::Load(dir, expert_opts);
  ASSERT_TRUE(experts.ok()) << experts.status();
  // Each side holds only its part.
  EXPECT_LT((*attn)->weight_bytes(), whole->weight_bytes());
  EXPECT_LT((*experts)->weight_bytes(), whole->weight_bytes());
  EXPECT_NEAR((*attn)->weight_bytes() + (*experts)->weight_bytes(), whole->weight_bytes(),
              0.01 * whole->weight_bytes());

  std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6};
  EngineOptions eo;
  eo.kv_cache_tokens = 256;
  {
    // Without experts the attention side cannot run a MoE layer by itself.
    Engine e(attn->get(), eo);
    ASSERT_TRUE(e.Add(prompt).ok());
    absl::StatusOr<std::vector<StepOutput>> out = e.Step();
    EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition) << out.status();
  }
  Engine e(attn->get(), eo);
  SeqId s = *e.Add(prompt);
  ForwardingExperts remote((*experts)->local_experts());
  absl::StatusOr<std::vector<StepOutput>> out = e.Step(&remote);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 1u);
  EXPECT_EQ((*out)[0].seq, s);
  EXPECT_EQ(remote.calls, 2);  // two MoE layers
  EXPECT_EQ((*out)[0].logits, Recompute(*whole, prompt));
  // The expert side alone has no attention weights.
  Engine e2(experts->get(), eo);
  ASSERT_TRUE(e2.Add(prompt).ok());
  EXPECT_EQ(e2.Step().status().code(), absl::StatusCode::kFailedPrecondition);
}

// FP8 block-scaled weights must compute exactly what their dequantised values compute.
TEST(Fp8Test, Fp8CheckpointEqualsItsDequantisedEquivalent) {
  // hidden 160 and widths that are not multiples of 128: partial edge blocks.
  Json patch = {{"hidden_size", 160}, {"moe_intermediate_size", 136}, {"intermediate_size", 200}};
  std::string dir8 = testing::TempDir("fp8");
  ASSERT_TRUE(cli::WriteRandomCheckpoint(testing::SmallConfig(patch), dir8, 3, true).ok());
  // Write the dequantised twin: every FP8 tensor as F32 weight * block scale.
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir8);
  ASSERT_TRUE(config.ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> ck = Checkpoint::Open(dir8);
  ASSERT_TRUE(ck.ok()) << ck.status();
  std::vector<TensorToWrite> twin;
  int fp8_tensors = 0;
  for (const std::string& name : (*ck)->Names()) {
    if (name.size() > 10 && name.substr(name.size() - 10) == "_scale_inv") continue;
    const TensorInfo* t = (*ck)->Find(name);
    TensorToWrite w{name, t->dtype, t->shape, {}};
    if (t->dtype == DType::kF8E4M3) {
      ++fp8_tensors;
      const TensorInfo* s = (*ck)->Find(name + "_scale_inv");
      ASSERT_NE(s, nullptr);
      const int64_t rows = t->shape[0], cols = t->shape[1], bc = s->shape[1];
      std::vector<float> v(rows * cols);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          float scale;
          std::memcpy(&scale, s->data + 4 * ((r / 128) * bc + c / 128), 4);
          v[r * cols + c] = F8E4M3ToF32(t->data[r * cols + c]) * scale;
        }
      }
      w.dtype = DType::kF32;
      w.bytes.resize(v.size() * 4);
      std::memcpy(w.bytes.data(), v.data(), w.bytes.size());
    } else {
      w.bytes.assign(t->data, t->data + t->nbytes);
    }
    twin.push_back(std::move(w));
  }
  EXPECT_GT(fp8_tensors, 10);
  std::string dir32 = testing::TempDir("fp8twin");
  std::filesystem::copy_file(dir8 + "/config.json", dir32 + "/config.json");
  ASSERT_TRUE(WriteSafetensors(dir32 + "/model.safetensors", twin).ok());

  for (ComputeDType compute : {ComputeDType::kF32, ComputeDType::kBf16}) {
    ModelOptions o;
    o.compute = compute;
    std::unique_ptr<Model> m8 = std::move(*Model::Load(dir8, o));
    absl::StatusOr<std::unique_ptr<Model>> m32 = Model::Load(dir32, o);
    ASSERT_TRUE(m32.ok()) << m32.status();
    std::vector<int32_t> prompt = {0, 10, 20, 30, 40, 50, 60};
    // bf16 compute rounds both to bf16 the same way; f32 compute must be identical too.
    EXPECT_EQ(Recompute(*m8, prompt), Recompute(**m32, prompt));
  }
}

}  // namespace
}  // namespace moeserve::engine

namespace moeserve::engine {
namespace {

TEST(PrefixImportTest, ImportedBlocksGiveTheSameLogitsAsComputingThem) {
  std::unique_ptr<Model> m = LoadSmall("import", ComputeDType::kF32);
  ASSERT_NE(m, nullptr);
  EngineOptions o;
  o.block_tokens = 4;
  o.kv_cache_tokens = 256;
  std::vector<int32_t> tokens;
  for (int i = 0; i < 14; ++i) tokens.push_back(3 * i + 1);
  // Producer: compute the sequence and export its full blocks.
  Engine producer(m.get(), o);
  SeqId p = *producer.Add(tokens);
  std::vector<float> expected = StepUntil(&producer, p);
  std::vector<std::string> blocks;
  for (int64_t b = 0; b < 3; ++b) blocks.push_back(*producer.ExportBlock(p, b));
  EXPECT_FALSE(producer.ExportBlock(p, 3).ok());  // the partial block
  // Consumer: import them and compute only the rest.
  Engine consumer(m.get(), o);
  SeqId c = *consumer.Add(tokens);
  absl::StatusOr<int64_t> imported = consumer.ImportPrefix(c, blocks);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(*imported, 12);
  EXPECT_EQ(StepUntil(&consumer, c), expected);
  // A sequence that is exactly the cached blocks still computes its last token.
  std::vector<int32_t> twelve(tokens.begin(), tokens.begin() + 12);
  SeqId d = *consumer.Add(twelve);
  EXPECT_EQ(*consumer.ImportPrefix(d, blocks), 8);
  EXPECT_EQ(StepUntil(&consumer, d), Recompute(*m, twelve));
  // Wrong sizes are rejected.
  SeqId e = *consumer.Add(tokens);
  EXPECT_EQ(consumer.ImportPrefix(e, {std::string("short")}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moeserve::engine
