// BackendModel over the CPU backend against Model::Forward: the same operations in the same
// order, so logits and cache rows must agree bit for bit, in f32 and in bf16 compute.
#include "engine/model/backend_model.h"

#include "engine/model/backend_experts.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status_macros.h"
#include "engine/backend_registry.h"
#include "engine/engine.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/model/small_model.h"

namespace moeserve::engine {
namespace {

using Json = nlohmann::json;

constexpr int64_t kBlockTokens = 4;
constexpr int64_t kBlocks = 16;

std::unique_ptr<Model> Load(const std::string& name, ComputeDType compute, const Json& patch) {
  return testing::LoadSmall(name, compute, patch, /*fp8=*/false, /*seed=*/11);
}

// The reference for the greedy paths: the first largest of the first `vocab` logits (all: 0).
int32_t Argmax(const std::vector<float>& v, int64_t vocab = 0) {
  const size_t n = vocab > 0 ? static_cast<size_t>(vocab) : v.size();
  return static_cast<int32_t>(std::max_element(v.begin(), v.begin() + n) - v.begin());
}

// Two sequences through the same steps on both paths: a chunked prefill of A beside B's whole
// prompt, the rest of A, then greedy decode of both; block tables are scattered on purpose.
void ExpectSameSteps(const Model& model, Backend* backend, bool experts_on_backend) {
  KvCache cache(model.config(), kBlockTokens, kBlocks);
  BackendModelOptions bo;
  bo.block_tokens = kBlockTokens;
  bo.num_blocks = kBlocks;
  absl::StatusOr<std::unique_ptr<BackendModel>> bm = BackendModel::Create(&model, backend, bo);
  ASSERT_TRUE(bm.ok()) << bm.status();
  std::unique_ptr<BackendExpertExecutor> experts;
  if (experts_on_backend) {
    absl::StatusOr<std::unique_ptr<BackendExpertExecutor>> e =
        BackendExpertExecutor::Create(&model, backend);
    ASSERT_TRUE(e.ok()) << e.status();
    experts = std::move(*e);
  }
  std::vector<int32_t> a = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5}, b = {0, 17, 33, 250, 9};
  const std::vector<int32_t> table_a = {3, 7, 1, 9, 12}, table_b = {0, 5, 14};
  std::vector<std::vector<float>> want;
  auto run = [&](const std::vector<SequenceChunk>& chunks, int step) {
    std::vector<std::vector<float>> got;
    absl::Status s = model.Forward(chunks, &cache, nullptr, &want);
    ASSERT_TRUE(s.ok()) << s;
    s = (*bm)->Forward(chunks, experts.get(), &got);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_EQ(got.size(), want.size()) << "step " << step;
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(got[i], want[i]) << "step " << step << " chunk " << i;
    }
  };
  std::vector<int32_t> a_head(a.begin(), a.begin() + 6), a_tail(a.begin() + 6, a.end());
  run({{a_head, 0, table_a, false}, {b, 0, table_b, true}}, 0);
  run({{a_tail, 6, table_a, true}}, 1);
  const int64_t vocab = model.config().vocab_size;
  for (int step = 2; step < 6; ++step) {
    // The next tokens come from the reference's own logits.
    std::vector<std::vector<float>> ref;
    std::vector<int32_t> la = {a.back()}, lb = {b.back()};
    ASSERT_TRUE(model
                    .Forward({{la, static_cast<int64_t>(a.size()) - 1, table_a, true},
                              {lb, static_cast<int64_t>(b.size()) - 1, table_b, true}},
                             &cache, nullptr, &ref)
                    .ok());
    a.push_back(Argmax(ref[0]));
    b.push_back(Argmax(ref[1]));
    std::vector<int32_t> ta = {a.back()}, tb = {b.back()};
    const int64_t pa = static_cast<int64_t>(a.size()) - 1, pb = static_cast<int64_t>(b.size()) - 1;
    run({{ta, pa, table_a, true}, {tb, pb, table_b, true}}, step);
    // The same step again (it rewrites the same latents) with greedy rows, found on the
    // backend: both (B's over its first 50 ids only), or A's beside B's whole row.
    const int64_t b_vocab = step % 2 == 0 ? 50 : 0;
    std::vector<std::vector<float>> rows;
    std::vector<int32_t> ids;
    absl::Status s = (*bm)->Forward({{ta, pa, table_a, 1, vocab}, {tb, pb, table_b, 1, b_vocab}},
                                    experts.get(), &rows, &ids);
    ASSERT_TRUE(s.ok()) << s;
    if (b_vocab > 0) {
      EXPECT_TRUE(rows.empty());
      EXPECT_EQ(ids, (std::vector<int32_t>{Argmax(want[0], vocab), Argmax(want[1], 50)}))
          << "step " << step;
    } else {
      ASSERT_EQ(rows.size(), 1u);
      EXPECT_EQ(rows[0], want[1]) << "step " << step;
      EXPECT_EQ(ids, std::vector<int32_t>{Argmax(want[0], vocab)}) << "step " << step;
    }
  }
  // Every cached row of both sequences is the same too.
  const int64_t lat = model.config().latent_dim(), layers = model.config().num_hidden_layers;
  auto check_rows = [&](const std::vector<int32_t>& table, int64_t len) {
    for (int64_t blk = 0; blk * kBlockTokens < len; ++blk) {
      absl::StatusOr<std::vector<float>> rows = (*bm)->ReadBlock(table[blk]);
      ASSERT_TRUE(rows.ok()) << rows.status();
      for (int64_t l = 0; l < layers; ++l) {
        for (int64_t slot = 0; slot < kBlockTokens && blk * kBlockTokens + slot < len; ++slot) {
          const float* host_row = cache.Row(table[blk], l, slot);
          const float* got = rows->data() + (l * kBlockTokens + slot) * lat;
          ASSERT_EQ(std::vector<float>(got, got + lat),
                    std::vector<float>(host_row, host_row + lat))
              << "block " << blk << " layer " << l << " slot " << slot;
        }
      }
    }
  };
  check_rows(table_a, static_cast<int64_t>(a.size()));
  check_rows(table_b, static_cast<int64_t>(b.size()));
}

struct Variant {
  const char* name;
  ComputeDType compute;
  Json patch;
};

class BackendModelTest : public ::testing::TestWithParam<Variant> {};

TEST_P(BackendModelTest, CpuBackendEqualsModelForwardBitForBit) {
  std::unique_ptr<Model> m = Load(GetParam().name, GetParam().compute, GetParam().patch);
  ASSERT_NE(m, nullptr);
  for (const char* spec : {"cpu", "cpu:2"}) {
    absl::StatusOr<BackendPtr> backend = CreateBackend(spec);
    ASSERT_TRUE(backend.ok()) << backend.status();
    SCOPED_TRACE(spec);
    ExpectSameSteps(*m, backend->get(), /*experts_on_backend=*/false);
    SCOPED_TRACE("routed experts on the backend too");
    ExpectSameSteps(*m, backend->get(), /*experts_on_backend=*/true);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, BackendModelTest,
    ::testing::Values(
        Variant{"f32_v3", ComputeDType::kF32, Json::object()},
        Variant{"bf16_v3", ComputeDType::kBf16, Json::object()},
        // No q_lora, softmax greedy gate without groups, no shared expert.
        Variant{"f32_v2",
                ComputeDType::kF32,
                {{"q_lora_rank", nullptr},
                 {"scoring_func", "softmax"},
                 {"topk_method", "greedy"},
                 {"n_group", 1},
                 {"topk_group", 1},
                 {"n_shared_experts", 0},
                 {"norm_topk_prob", false},
                 {"rope_scaling", nullptr}}}),
    [](const ::testing::TestParamInfo<Variant>& p) { return std::string(p.param.name); });

// A model, the CPU backend (2 threads) and a BackendModel, with the options of a host Engine
// (chunked prefill of 6 tokens) and of an Engine whose steps run on the BackendModel.
struct EnginesSetUp {
  std::unique_ptr<Model> model;
  BackendPtr backend;
  std::unique_ptr<BackendModel> runner;
  EngineOptions host, on_backend;
};

// `kv_cache_dtype` is the backend engine's (the host one's is float32).
absl::StatusOr<EnginesSetUp> SetUpEngines(const std::string& name,
                                          DType kv_cache_dtype = DType::kF32) {
  EnginesSetUp s;
  s.model = Load(name, ComputeDType::kF32, Json::object());
  if (s.model == nullptr) return absl::InternalError("the small model did not load");
  MOESERVE_ASSIGN_OR_RETURN(s.backend, CreateBackend("cpu:2"));
  s.host.block_tokens = kBlockTokens;
  s.host.kv_cache_tokens = kBlocks * kBlockTokens;
  s.host.max_step_tokens = 6;
  s.on_backend = s.host;
  s.on_backend.kv_cache_dtype = kv_cache_dtype;
  MOESERVE_ASSIGN_OR_RETURN(
      s.runner, BackendModel::Create(s.model.get(), s.backend.get(),
                                     BackendModelOptions::ForEngine(s.model->config(),
                                                                    s.on_backend)));
  s.on_backend.runner = s.runner.get();
  return s;
}

// Steps an engine until nothing is pending; each sequence's last logits.
std::map<SeqId, std::vector<float>> StepAll(Engine* e) {
  std::map<SeqId, std::vector<float>> out;
  while (e->HasPending()) {
    absl::StatusOr<std::vector<StepOutput>> o = e->Step();
    EXPECT_TRUE(o.ok()) << o.status();
    if (!o.ok()) break;
    for (StepOutput& x : *o) out[x.seq] = std::move(x.logits);
  }
  return out;
}

// An Engine whose steps run on BackendModel (the CPU backend) against the host Engine: prompts,
// chunked prefill, decode, a fork inside a block, and a prefix exported from one and imported
// into the other; every logit vector and exported block the same.
TEST(BackendModelEngineTest, EngineOverBackendModelEqualsTheHostEngine) {
  absl::StatusOr<EnginesSetUp> set_up = SetUpEngines("engine");
  ASSERT_TRUE(set_up.ok()) << set_up.status();
  Engine host(set_up->model.get(), set_up->host), dev(set_up->model.get(), set_up->on_backend);
  const std::vector<int32_t> p1 = {3, 1, 4, 1, 5, 9, 2, 6, 5}, p2 = {7, 7, 250};
  // p1 also wants every position's logits (prompt scoring): several LM-head rows a chunk.
  std::map<Engine*, std::vector<std::vector<float>>> scored;
  for (Engine* e : {&host, &dev}) {
    ASSERT_TRUE(e->Add(p1, [&scored, e](int64_t, absl::Span<const float> logits) {
                   scored[e].emplace_back(logits.begin(), logits.end());
                 }).ok());
    ASSERT_TRUE(e->Add(p2).ok());
  }
  std::map<SeqId, std::vector<float>> want = StepAll(&host), got = StepAll(&dev);
  ASSERT_EQ(want.size(), 2u);
  EXPECT_EQ(got, want);
  ASSERT_EQ(scored[&host].size(), p1.size() - 1);
  EXPECT_EQ(scored[&dev], scored[&host]);
  for (int step = 0; step < 3; ++step) {
    for (auto& [seq, logits] : want) {
      const int32_t next = Argmax(logits);
      ASSERT_TRUE(host.Append(seq, next).ok());
      ASSERT_TRUE(dev.Append(seq, next).ok());
    }
    want = StepAll(&host);
    got = StepAll(&dev);
    EXPECT_EQ(got, want) << "decode step " << step;
  }
  // A fork in the middle of a block copies that block's first slots on the backend.
  const SeqId first = want.begin()->first;
  absl::StatusOr<SeqId> fh = host.Fork(first, 6), fd = dev.Fork(first, 6);
  ASSERT_TRUE(fh.ok() && fd.ok());
  ASSERT_TRUE(host.Append(*fh, 11).ok());
  ASSERT_TRUE(dev.Append(*fd, 11).ok());
  want = StepAll(&host);
  got = StepAll(&dev);
  ASSERT_EQ(want.size(), 1u);
  EXPECT_EQ(got, want);
  // Block bytes round-trip between the two: exported from the device engine, imported by the
  // host one (and the other way), the continuation is the same.
  absl::StatusOr<std::string> bd = dev.ExportBlock(first, 0), bh = host.ExportBlock(first, 0);
  ASSERT_TRUE(bd.ok() && bh.ok());
  EXPECT_EQ(*bd, *bh);
  std::vector<int32_t> p3(p1.begin(), p1.begin() + kBlockTokens + 2);
  absl::StatusOr<SeqId> ih = host.Add(p3), id = dev.Add(p3);
  ASSERT_TRUE(ih.ok() && id.ok());
  ASSERT_EQ(*host.ImportPrefix(*ih, {*bd}), kBlockTokens);
  ASSERT_EQ(*dev.ImportPrefix(*id, {*bh}), kBlockTokens);
  want = StepAll(&host);
  got = StepAll(&dev);
  ASSERT_EQ(want.size(), 1u);
  EXPECT_EQ(got, want);
}

// Engine::SetArgmax on the host runner and over BackendModel: a greedy sequence's outputs are
// the argmax of the logits a plain engine gives (a scored one's from its last row, reduced on
// the host; one over a vocab prefix), fed back for a few decode steps beside a plain sequence.
TEST(BackendModelEngineTest, ArgmaxSequencesGiveTheArgmaxOfThePlainLogits) {
  absl::StatusOr<EnginesSetUp> set_up = SetUpEngines("argmax");
  ASSERT_TRUE(set_up.ok()) << set_up.status();
  const Model* m = set_up->model.get();
  Engine plain(m, set_up->host), host(m, set_up->host), dev(m, set_up->on_backend);
  const std::vector<std::vector<int32_t>> prompts = {{3, 1, 4, 1, 5, 9, 2}, {7, 7, 250}, {8, 9}};
  const std::vector<int64_t> argmax_vocab = {m->config().vocab_size, 60, 0};
  for (Engine* e : {&plain, &host, &dev}) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      // The first prompt is scored too: its last chunk brings several rows.
      PositionLogitsFn score;
      if (i == 0) score = [](int64_t, absl::Span<const float>) {};
      absl::StatusOr<SeqId> seq = e->Add(prompts[i], score);
      ASSERT_TRUE(seq.ok());
      if (e != &plain) {
        ASSERT_TRUE(e->SetArgmax(*seq, argmax_vocab[i]).ok());
      }
    }
  }
  EXPECT_EQ(host.SetArgmax(99, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(host.SetArgmax(1, m->config().vocab_size + 1).code(),
            absl::StatusCode::kInvalidArgument);
  auto step_all = [](Engine* e) {
    std::map<SeqId, StepOutput> out;
    while (e->HasPending()) {
      absl::StatusOr<std::vector<StepOutput>> o = e->Step();
      EXPECT_TRUE(o.ok()) << o.status();
      if (!o.ok()) break;
      for (StepOutput& x : *o) out[x.seq] = std::move(x);
    }
    return out;
  };
  for (int step = 0; step < 4; ++step) {
    std::map<SeqId, StepOutput> want = step_all(&plain), got_host = step_all(&host),
                                 got_dev = step_all(&dev);
    ASSERT_EQ(want.size(), prompts.size());
    for (auto& [seq, o] : want) {
      const size_t i = static_cast<size_t>(seq - 1);
      const int64_t v = argmax_vocab[i];
      ASSERT_EQ(o.argmax, -1);
      for (std::map<SeqId, StepOutput>* got : {&got_host, &got_dev}) {
        const StepOutput& g = (*got)[seq];
        if (v == 0) {
          EXPECT_EQ(g.argmax, -1);
          EXPECT_EQ(g.logits, o.logits) << "step " << step << " seq " << seq;
        } else {
          EXPECT_TRUE(g.logits.empty());
          EXPECT_EQ(g.argmax, Argmax(o.logits, v)) << "step " << step << " seq " << seq;
        }
      }
      const int32_t next = Argmax(o.logits, v);
      for (Engine* e : {&plain, &host, &dev}) ASSERT_TRUE(e->Append(seq, next).ok());
    }
  }
}

// A bf16 latent cache on the backend: every latent is rounded as it is written, so layer 0's
// cached rows (which depend on the embedding alone) are exactly the float32 engine's rounded,
// the logits stay close to the float32 engine's but not equal, chunking changes nothing (every
// position reads rounded rows), and its blocks (half the bytes) move between bf16 engines only.
TEST(BackendModelEngineTest, Bf16CacheRoundsEachLatentAsItIsWritten) {
  absl::StatusOr<EnginesSetUp> set_up = SetUpEngines("kvbf16", DType::kBf16);
  ASSERT_TRUE(set_up.ok()) << set_up.status();
  const Model* m = set_up->model.get();
  EngineOptions whole = set_up->on_backend;
  whole.max_step_tokens = 64;  // the prompt in one chunk, where on_backend takes 6 a step
  Engine host(m, set_up->host), dev(m, set_up->on_backend), dev_whole(m, whole);
  EXPECT_EQ(dev.BlockBytes() * 2, host.BlockBytes());
  EXPECT_EQ(KvCache::BlocksForBytes(m->config(), kBlockTokens, 1 << 20, DType::kBf16),
            2 * KvCache::BlocksForBytes(m->config(), kBlockTokens, 1 << 20));
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7};
  for (Engine* e : {&host, &dev, &dev_whole}) ASSERT_TRUE(e->Add(prompt).ok());
  std::map<SeqId, std::vector<float>> want = StepAll(&host), got = StepAll(&dev),
                                      whole_got = StepAll(&dev_whole);
  ASSERT_EQ(want.size(), 1u);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(whole_got, got);
  EXPECT_NE(got, want);  // the rounding shows in the logits
  float diff = 0, scale = 0;
  for (size_t i = 0; i < want[1].size(); ++i) {
    diff = std::max(diff, std::fabs(got[1][i] - want[1][i]));
    scale = std::max(scale, std::fabs(want[1][i]));
  }
  EXPECT_LT(diff, 0.02f * scale) << "max |d| " << diff << " of logits up to " << scale;

  const int64_t lat = m->config().latent_dim(), rows = kBlockTokens * lat;
  for (int64_t block = 0; block < 3; ++block) {
    absl::StatusOr<std::string> h = host.ExportBlock(1, block), d = dev.ExportBlock(1, block);
    ASSERT_TRUE(h.ok() && d.ok());
    ASSERT_EQ(static_cast<int64_t>(d->size()), dev.BlockBytes());
    EXPECT_EQ(*d, *dev_whole.ExportBlock(1, block));
    const float* hf = reinterpret_cast<const float*>(h->data());
    const uint16_t* db = reinterpret_cast<const uint16_t*>(d->data());
    for (int64_t i = 0; i < rows; ++i) {  // layer 0
      ASSERT_EQ(db[i], F32ToBf16(hf[i])) << "block " << block << " element " << i;
    }
  }
  // bf16 blocks continue in another bf16 engine as where they were made; float32 ones (other
  // bytes) are refused.
  std::vector<std::string> blocks;
  for (int64_t block = 0; block < 3; ++block) blocks.push_back(*dev.ExportBlock(1, block));
  absl::StatusOr<SeqId> imported = dev_whole.Add(prompt);
  ASSERT_TRUE(imported.ok());
  ASSERT_EQ(*dev_whole.ImportPrefix(*imported, blocks), 3 * kBlockTokens);
  EXPECT_EQ(StepAll(&dev_whole)[*imported], got[1]);
  absl::StatusOr<SeqId> refused = dev_whole.Add(prompt);
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(dev_whole.ImportPrefix(*refused, {*host.ExportBlock(1, 0)}).status().code(),
            absl::StatusCode::kInvalidArgument);

  // A float32 engine over this bf16 runner, and a bf16 cache on the host runner, are refused.
  EngineOptions f32_on_bf16 = set_up->on_backend;
  f32_on_bf16.kv_cache_dtype = DType::kF32;
  EngineOptions bf16_on_host = set_up->host;
  bf16_on_host.kv_cache_dtype = DType::kBf16;
  for (const EngineOptions& o : {f32_on_bf16, bf16_on_host}) {
    Engine e(m, o);
    ASSERT_TRUE(e.Add({1, 2, 3}).ok());
    absl::Status s = e.Step().status();
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  }
  BackendModelOptions f16;
  f16.cache_dtype = DType::kF16;
  EXPECT_EQ(BackendModel::Create(m, set_up->backend.get(), f16).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Decode steps from graphs (BackendModelOptions::graphs) against the same engine op by op, both
// with the experts on the backend: batches that shrink, grow and pad (3 -> 4, 5 -> 8), block
// tables that widen across buckets, greedy and plain rows; every output and exported block the
// same, and the graphs really replayed. A graph that baked in a host value (a length, a block
// table), or padding that wrote a cache row, would change a later step.
TEST(BackendModelEngineTest, DecodeGraphsReplayWhatTheStepsComputeOpByOp) {
  std::unique_ptr<Model> model = Load("graphs", ComputeDType::kF32, Json::object());
  ASSERT_NE(model, nullptr);
  absl::StatusOr<BackendPtr> backend = CreateBackend("cpu:2");
  ASSERT_TRUE(backend.ok()) << backend.status();
  absl::StatusOr<std::unique_ptr<BackendExpertExecutor>> experts =
      BackendExpertExecutor::Create(model.get(), backend->get());
  ASSERT_TRUE(experts.ok()) << experts.status();
  EngineOptions eo;
  eo.block_tokens = kBlockTokens;
  eo.kv_cache_tokens = 64 * kBlockTokens;
  eo.max_step_tokens = 6;
  BackendModelOptions bo = BackendModelOptions::ForEngine(model->config(), eo);
  absl::StatusOr<std::unique_ptr<BackendModel>> eager =
      BackendModel::Create(model.get(), backend->get(), bo);
  bo.graphs = true;
  absl::StatusOr<std::unique_ptr<BackendModel>> graphed =
      BackendModel::Create(model.get(), backend->get(), bo);
  ASSERT_TRUE(eager.ok() && graphed.ok());
  EngineOptions eager_options = eo, graph_options = eo;
  eager_options.runner = eager->get();
  graph_options.runner = graphed->get();
  Engine a(model.get(), eager_options), g(model.get(), graph_options);
  const int64_t vocab = model->config().vocab_size;
  // Steps both engines until nothing is pending; the outputs of each, which must agree.
  auto step_both = [&](ExpertExecutor* ex, const std::string& what) {
    std::map<SeqId, StepOutput> out;
    while (a.HasPending()) {
      absl::StatusOr<std::vector<StepOutput>> want = a.Step(ex), got = g.Step(ex);
      EXPECT_TRUE(want.ok() && got.ok()) << what;
      if (!want.ok() || !got.ok()) break;
      EXPECT_EQ(got->size(), want->size()) << what;
      for (size_t i = 0; i < want->size() && i < got->size(); ++i) {
        EXPECT_EQ((*got)[i].seq, (*want)[i].seq) << what;
        EXPECT_EQ((*got)[i].argmax, (*want)[i].argmax) << what;
        EXPECT_EQ((*got)[i].logits, (*want)[i].logits) << what << " seq " << (*want)[i].seq;
        out[(*want)[i].seq] = std::move((*want)[i]);
      }
    }
    EXPECT_FALSE(g.HasPending()) << what;
    return out;
  };
  auto add_both = [&](const std::vector<int32_t>& prompt, bool greedy) {
    absl::StatusOr<SeqId> x = a.Add(prompt), y = g.Add(prompt);
    ASSERT_TRUE(x.ok() && y.ok() && *x == *y);
    if (greedy) {
      ASSERT_TRUE(a.SetArgmax(*x, vocab).ok() && g.SetArgmax(*y, vocab).ok());
    }
  };
  const std::vector<std::vector<int32_t>> prompts = {
      {3, 1, 4, 1, 5, 9, 2, 6, 5}, {7, 250}, {8, 9, 10}, {11}, {12, 13, 14, 15, 16}, {2, 7}};
  for (size_t i = 0; i < prompts.size(); ++i) add_both(prompts[i], i % 2 == 0);
  std::map<SeqId, StepOutput> last = step_both(experts->get(), "prefill");
  ASSERT_EQ(last.size(), prompts.size());
  for (int step = 0; step < 16; ++step) {
    const std::string what = "decode step " + std::to_string(step);
    for (auto& [seq, o] : last) {
      const int32_t next = o.argmax >= 0 ? o.argmax : Argmax(o.logits);
      ASSERT_TRUE(a.Append(seq, next).ok() && g.Append(seq, next).ok()) << what;
    }
    // The batch shrinks (one sequence freed every third step) and grows (a new one-token
    // prompt, whose prefill is a decode-shaped step of its own).
    if (step % 3 == 2) {
      const SeqId gone = last.begin()->first;
      ASSERT_TRUE(a.Free(gone).ok() && g.Free(gone).ok());
    }
    if (step == 7) add_both({21}, false);
    last = step_both(experts->get(), what);
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_TRUE((*graphed)->graph_status().ok()) << (*graphed)->graph_status();
  EXPECT_GE((*graphed)->graphs_captured(), 3);
  EXPECT_GE((*graphed)->graph_replays(), 8);
  EXPECT_EQ((*eager)->graph_replays() + (*eager)->graphs_captured(), 0);
  // Padding wrote no cache row: every full block of the live sequences is the same.
  for (const auto& [seq, o] : last) {
    const int64_t blocks = *a.Length(seq) / kBlockTokens;
    for (int64_t i = 0; i < blocks; ++i) {
      absl::StatusOr<std::string> x = a.ExportBlock(seq, i), y = g.ExportBlock(seq, i);
      ASSERT_TRUE(x.ok() && y.ok());
      EXPECT_EQ(*y, *x) << "seq " << seq << " block " << i;
    }
  }
  // With the experts on the host the steps run op by op.
  const int64_t replays = (*graphed)->graph_replays();
  for (auto& [seq, o] : last) {
    const int32_t next = o.argmax >= 0 ? o.argmax : Argmax(o.logits);
    ASSERT_TRUE(a.Append(seq, next).ok() && g.Append(seq, next).ok());
  }
  EXPECT_EQ(step_both(nullptr, "host experts").size(), last.size());
  EXPECT_EQ((*graphed)->graph_replays(), replays);
}

TEST(BackendModelGraphTest, GraphBatchRoundsUpToItsBuckets) {
  const std::vector<std::pair<int64_t, int64_t>> cases = {
      {1, 1}, {2, 2}, {3, 4}, {5, 8}, {8, 8}, {9, 16}, {16, 16}, {17, 24}, {250, 256}};
  for (const auto& [n, want] : cases) EXPECT_EQ(BackendModel::GraphBatch(n), want) << n;
}

TEST(BackendModelEngineTest, AMismatchedPoolIsFailedPrecondition) {
  std::unique_ptr<Model> m = Load("mismatch", ComputeDType::kF32, Json::object());
  ASSERT_NE(m, nullptr);
  absl::StatusOr<BackendPtr> backend = CreateBackend("cpu");
  ASSERT_TRUE(backend.ok());
  BackendModelOptions bo;
  bo.block_tokens = kBlockTokens;
  bo.num_blocks = 2;
  absl::StatusOr<std::unique_ptr<BackendModel>> bm = BackendModel::Create(m.get(), backend->get(), bo);
  ASSERT_TRUE(bm.ok());
  EngineOptions eo;
  eo.block_tokens = kBlockTokens;
  eo.kv_cache_tokens = 8 * kBlockTokens;  // more blocks than the backend cache holds
  eo.runner = bm->get();
  Engine e(m.get(), eo);
  ASSERT_TRUE(e.Add({1, 2, 3}).ok());
  EXPECT_EQ(e.Step().status().code(), absl::StatusCode::kFailedPrecondition);
}

// The pool a memory fraction leaves: fraction x total less this process's weights and a
// step's scratch, never more than what is free less the scratch, in whole blocks.
TEST(BackendModelMemoryTest, CacheBlocksForMemoryTakesTheSmallerOfAllowedAndFree) {
  constexpr int64_t kGiB = int64_t{1} << 30, kMiB = int64_t{1} << 20;
  const MemoryInfo roomy{10 * kGiB, 16 * kGiB}, crowded{2 * kGiB, 16 * kGiB};
  EXPECT_EQ(*BackendModel::CacheBlocksForMemory(roomy, 0.5, 3 * kGiB, kGiB, kMiB), 4096);
  EXPECT_EQ(*BackendModel::CacheBlocksForMemory(crowded, 0.5, 3 * kGiB, kGiB, kMiB), 1024);
  EXPECT_EQ(*BackendModel::CacheBlocksForMemory(roomy, 0.5, 3 * kGiB, kGiB, 3 * kMiB), 1365);
  absl::StatusOr<int64_t> none = BackendModel::CacheBlocksForMemory(roomy, 0.25, 3 * kGiB, kGiB,
                                                                    kMiB);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted) << none.status();
  EXPECT_NE(none.status().message().find("no room for a KV cache"), std::string::npos);
}

// A BackendModel sized by a memory fraction takes the blocks that fraction leaves (here a
// fraction of the host's memory picked to leave room for exactly 100 of them), and an Engine
// over it computes what one over a pool of a fixed size computes.
TEST(BackendModelMemoryTest, AMemoryFractionSizesTheCacheAfterTheWeights) {
  std::unique_ptr<Model> m = Load("fraction", ComputeDType::kF32, Json::object());
  ASSERT_NE(m, nullptr);
  absl::StatusOr<BackendPtr> backend = CreateBackend("cpu");
  ASSERT_TRUE(backend.ok());
  BackendModelOptions fixed;
  fixed.block_tokens = kBlockTokens;
  fixed.num_blocks = kBlocks;
  absl::StatusOr<std::unique_ptr<BackendModel>> sized_by_hand =
      BackendModel::Create(m.get(), backend->get(), fixed);
  ASSERT_TRUE(sized_by_hand.ok()) << sized_by_hand.status();
  absl::StatusOr<MemoryInfo> memory = (*backend)->DeviceMemory();
  ASSERT_TRUE(memory.ok()) << memory.status();
  ASSERT_GT(memory->total_bytes, 0);
  const int64_t block_bytes = kBlockTokens * KvCache::BytesPerToken(m->config());
  BackendModelOptions by_fraction = fixed;
  by_fraction.num_blocks = 0;
  by_fraction.other_bytes = 1000;
  const int64_t scratch = BackendModel::StepScratchBytes(
      m->config(), by_fraction.max_step_tokens, by_fraction.max_logit_rows);
  EXPECT_GT(scratch, int64_t{256} << 20);
  EXPECT_GT(BackendModel::StepScratchBytes(m->config(), 2048, 128), scratch);
  by_fraction.memory_fraction =
      static_cast<double>((*sized_by_hand)->weight_bytes() + 1000 + scratch +
                          100 * block_bytes + block_bytes / 2) /
      static_cast<double>(memory->total_bytes);
  absl::StatusOr<std::unique_ptr<BackendModel>> bm =
      BackendModel::Create(m.get(), backend->get(), by_fraction);
  ASSERT_TRUE(bm.ok()) << bm.status();
  EXPECT_EQ((*bm)->num_blocks(), 100);

  EngineOptions eo;
  eo.block_tokens = kBlockTokens;
  eo.kv_cache_tokens = (*bm)->num_blocks() * kBlockTokens;
  eo.runner = bm->get();
  EngineOptions eo_fixed = eo;
  eo_fixed.kv_cache_tokens = kBlocks * kBlockTokens;
  eo_fixed.runner = sized_by_hand->get();
  Engine e(m.get(), eo), e_fixed(m.get(), eo_fixed);
  EXPECT_EQ(e.cache().num_blocks(), 100);
  for (Engine* x : {&e, &e_fixed}) ASSERT_TRUE(x->Add({5, 4, 3, 2, 1, 7, 8}).ok());
  EXPECT_EQ(StepAll(&e), StepAll(&e_fixed));

  by_fraction.memory_fraction = 1.5;
  EXPECT_EQ(BackendModel::Create(m.get(), backend->get(), by_fraction).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BackendModelErrorsTest, BadBlocksTokensAndSizesAreInvalidArgument) {
  std::unique_ptr<Model> m = Load("errors", ComputeDType::kF32, Json::object());
  ASSERT_NE(m, nullptr);
  absl::StatusOr<BackendPtr> backend = CreateBackend("cpu");
  ASSERT_TRUE(backend.ok());
  BackendModelOptions bo;
  bo.block_tokens = kBlockTokens;
  bo.num_blocks = 4;
  absl::StatusOr<std::unique_ptr<BackendModel>> bm =
      BackendModel::Create(m.get(), backend->get(), bo);
  ASSERT_TRUE(bm.ok()) << bm.status();
  std::vector<std::vector<float>> logits;
  std::vector<int32_t> tokens = {1, 2, 3}, table = {4};
  EXPECT_EQ((*bm)->Forward({{tokens, 0, table, true}}, nullptr, &logits).code(),
            absl::StatusCode::kInvalidArgument);  // block 4 of 4
  std::vector<int32_t> bad = {1, 100000}, ok_table = {0};
  EXPECT_EQ((*bm)->Forward({{bad, 0, ok_table, true}}, nullptr, &logits).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*bm)->ReadBlock(4).status().code(), absl::StatusCode::kInvalidArgument);
  bo.num_blocks = 0;
  EXPECT_EQ(BackendModel::Create(m.get(), backend->get(), bo).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moeserve::engine
