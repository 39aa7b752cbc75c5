#include "bench/backend_bench.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>

#include "bench/machine_limits.h"
#include "bench/model_costs.h"
#include "common/status_macros.h"
#include "engine/backend_registry.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/model/backend_experts.h"
#include "engine/model/backend_model.h"
#include "tools/moeserve/mkmodel.h"

namespace moeserve::bench {
namespace {

using Json = nlohmann::json;
using engine::Backend;
using engine::BufferPtr;

#define BENCH_ASSIGN(lhs, expr)                                   \
  auto lhs##_or = (expr);                                         \
  if (!lhs##_or.ok()) return Json{{"error", lhs##_or.status().ToString()}}; \
  auto lhs = std::move(*lhs##_or)

// Device-to-device copies of `mib` MiB: best of 5 timed rounds of 4 copies, in GB/s of bytes
// read plus bytes written.
Json CopyLimit(Backend* b, int64_t mib) {
  const int64_t bytes = mib << 20;
  BENCH_ASSIGN(src, b->Allocate(bytes, engine::MemoryType::kDevice));
  BENCH_ASSIGN(dst, b->Allocate(bytes, engine::MemoryType::kDevice));
  double best = 1e30;
  for (int round = 0; round < 6; ++round) {
    const double t0 = NowSeconds();
    for (int i = 0; i < 4; ++i) (void)b->CopyWithin(dst->data(), src->data(), bytes);
    if (absl::Status s = b->Synchronize(); !s.ok()) return Json{{"error", s.ToString()}};
    if (round > 0) best = std::min(best, (NowSeconds() - t0) / 4);
  }
  return Json{{"bytes", bytes}, {"gbs_read_plus_write", 2.0 * bytes / best / 1e9}};
}

// y[n, n] = x[n, n] * W^T with BF16 W: the median of 5 runs, in TFLOP/s.
Json GemmLimit(Backend* b, int64_t n) {
  std::vector<float> x(n * n);
  std::vector<uint16_t> w(n * n);
  for (int64_t i = 0; i < n * n; ++i) {
    x[i] = static_cast<float>((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    w[i] = static_cast<uint16_t>(0x3c00 + (i * 40503u) % 256);  // bf16 in [2^-7, 2^-6)
  }
  BENCH_ASSIGN(dx, b->Allocate(n * n * 4, engine::MemoryType::kDevice));
  BENCH_ASSIGN(dw, b->Allocate(n * n * 2, engine::MemoryType::kDevice));
  BENCH_ASSIGN(dy, b->Allocate(n * n * 4, engine::MemoryType::kDevice));
  (void)b->CopyToBackend(dx->data(), x.data(), n * n * 4);
  (void)b->CopyToBackend(dw->data(), w.data(), n * n * 2);
  engine::GemmArgs g;
  g.x = static_cast<const float*>(dx->data());
  g.m = n;
  g.ldx = n;
  g.w = {engine::DType::kBf16, n, n, dw->data(), nullptr};
  g.y = static_cast<float*>(dy->data());
  g.ldy = n;
  std::vector<double> runs;
  for (int r = 0; r < 6; ++r) {
    const double t0 = NowSeconds();
    if (absl::Status s = b->Gemm(g); !s.ok()) return Json{{"error", s.ToString()}};
    if (absl::Status s = b->Synchronize(); !s.ok()) return Json{{"error", s.ToString()}};
    if (r > 0) runs.push_back(NowSeconds() - t0);
  }
  const double secs = Percentile(runs, 50);
  return Json{{"n", n}, {"tflops", 2.0 * n * n * n / secs / 1e12}};
}

std::vector<int32_t> Tokens(int64_t n, int64_t salt, int64_t vocab) {
  std::vector<int32_t> t;
  for (int64_t i = 0; i < n; ++i) {
    t.push_back(static_cast<int32_t>((i * 7919 + salt * 104729) % std::min<int64_t>(vocab, 100000)));
  }
  return t;
}

}  // namespace

Json BenchBackend(const BackendBenchArgs& a) {
  BENCH_ASSIGN(backend, engine::CreateBackend(a.backend));
  Json out = {{"backend", backend->name()}, {"preset", a.preset}, {"compute", a.compute}};
  out["copy_limit"] = CopyLimit(backend.get(), a.copy_mib);
  out["gemm_limit"] = GemmLimit(backend.get(), a.gemm_n);
  if (out["copy_limit"].contains("error") || out["gemm_limit"].contains("error")) return out;
  const double copy_gbs = out["copy_limit"]["gbs_read_plus_write"];
  const double gemm_tflops = out["gemm_limit"]["tflops"];

  const std::string dir = a.models_dir + "/" + a.preset;
  if (!std::filesystem::exists(dir + "/config.json")) {
    // Weights only: the GPU machine has no npm packages, and the bench needs no tokenizer.
    BENCH_ASSIGN(config, cli::PresetConfig(a.preset));
    if (absl::Status s = cli::WriteRandomCheckpoint(config, dir, 0, false); !s.ok()) {
      return Json{{"error", s.ToString()}};
    }
  }
  engine::ModelOptions mo;
  BENCH_ASSIGN(compute, engine::ParseComputeDType(a.compute));
  mo.compute = compute;
  BENCH_ASSIGN(model, engine::Model::Load(dir, mo));
  const engine::ModelConfig& c = model->config();
  const int64_t bt = a.block_tokens;
  const int64_t max_batch = *std::max_element(a.batches.begin(), a.batches.end());
  const int64_t seq_blocks = (a.context + a.steps + 1 + bt - 1) / bt;
  const int64_t prefill_blocks = (a.prefill_tokens + bt - 1) / bt;
  engine::BackendModelOptions bo;
  bo.block_tokens = bt;
  bo.num_blocks = std::max(max_batch * seq_blocks, prefill_blocks);
  BENCH_ASSIGN(cache_dtype, engine::ParseKvCacheDType(a.kv_cache_dtype, compute, true));
  bo.cache_dtype = cache_dtype;
  BENCH_ASSIGN(bm, engine::BackendModel::Create(model.get(), backend.get(), bo));
  BENCH_ASSIGN(experts, engine::BackendExpertExecutor::Create(model.get(), backend.get()));
  CountingExperts counting(experts.get(), backend.get());
  const int64_t kv_token_bytes = engine::KvCache::BytesPerToken(c, cache_dtype);
  out["backend_bytes"] = bm->backend_bytes() + experts->backend_bytes();
  out["kv_cache_dtype"] = engine::DTypeName(cache_dtype);
  out["kv_cache_bytes_per_token"] = kv_token_bytes;
  {
    // What a worker's pool would hold on this device at the default --gpu-memory-utilization
    // (0.9): the tokens of this bench's pool plus what the fraction leaves beside it.
    const int64_t pool_bytes = bo.num_blocks * bt * kv_token_bytes;
    BENCH_ASSIGN(memory, backend->DeviceMemory());
    const absl::StatusOr<int64_t> more = engine::BackendModel::CacheBlocksForMemory(
        memory, 0.9, bm->backend_bytes() + experts->backend_bytes(),
        engine::BackendModel::StepScratchBytes(c, engine::EngineOptions{}.max_step_tokens,
                                               engine::EngineOptions{}.max_logit_rows),
        bt * kv_token_bytes);
    const int64_t tokens = pool_bytes / kv_token_bytes + (more.ok() ? *more * bt : 0);
    out["kv_capacity"] = {{"device_total_bytes", memory.total_bytes},
                          {"tokens_at_0.9", tokens},
                          {"sequences_of_4k", tokens / 4096}};
  }

  // Bytes every decode step reads whatever the batch: the attention side (router, shared
  // experts and LM head included) less the embedding, of which a step reads one row per token.
  const int64_t fixed = bm->weight_bytes() - model->embed().bytes();
  std::vector<std::vector<float>> logits;
  Json decode = Json::array();
  for (int64_t batch : a.batches) {
    std::vector<std::vector<int32_t>> toks(batch), tables(batch);
    for (int64_t s = 0; s < batch; ++s) {
      toks[s] = Tokens(a.context, s, c.vocab_size);
      for (int64_t b = 0; b < seq_blocks; ++b) tables[s].push_back(static_cast<int32_t>(s * seq_blocks + b));
      if (absl::Status st = bm->Forward({{toks[s], 0, tables[s], false}}, &counting, &logits);
          !st.ok()) {
        return Json{{"error", st.ToString()}};
      }
    }
    counting.TakeCount();
    // The same steps over the same positions: the next token as a greedy worker takes it (the
    // argmax on the device, fed back), with every row's logits back on the host, and greedy
    // again with the steps replayed from graphs (BackendModelOptions::graphs; the first step
    // of the shape runs op by op and is captured). A replayed step runs no host code, so it
    // cannot count the experts it reads: its bytes are the op-by-op greedy run's, step for step
    // (the same tokens, unless a near-tie flips an argmax).
    std::vector<double> greedy_bytes;
    auto measure = [&](bool logits_back, bool graphs) -> absl::StatusOr<Json> {
      std::vector<double> secs, gbs;
      std::vector<int32_t> argmax;
      bm->SetGraphs(graphs);
      const int64_t replays = bm->graph_replays();
      for (int64_t step = 0; step < a.steps; ++step) {
        std::vector<std::vector<int32_t>> next(batch);
        std::vector<engine::SequenceChunk> chunks;
        for (int64_t s = 0; s < batch; ++s) {
          const bool fed_back = !logits_back && step > 0;
          next[s] = {fed_back ? argmax[s] : static_cast<int32_t>((step * 31 + s) % 1000)};
          chunks.push_back(
              {next[s], a.context + step, tables[s], 1, logits_back ? 0 : c.vocab_size});
        }
        const double t0 = NowSeconds();
        MOESERVE_RETURN_IF_ERROR(bm->Forward(chunks, graphs ? static_cast<engine::ExpertExecutor*>(
                                                                  experts.get())
                                                            : &counting,
                                             &logits, &argmax));
        const double t = NowSeconds() - t0;
        double bytes = 0;
        if (graphs) {
          bytes = greedy_bytes[step];
        } else {
          bytes = static_cast<double>(fixed + counting.TakeCount() * ExpertBytes(*model)) +
                  static_cast<double>(batch) * (a.context + step + 1) * kv_token_bytes;
          if (!logits_back) greedy_bytes.push_back(bytes);
        }
        secs.push_back(t);
        gbs.push_back(bytes / t / 1e9);
      }
      bm->SetGraphs(false);
      Json r = {{"tokens_per_s", batch / Percentile(secs, 50)},
                {"effective_read_gbs", Percentile(gbs, 50)},
                {"fraction_of_copy_bandwidth", Percentile(gbs, 50) / copy_gbs}};
      if (graphs) {
        r["replayed_steps"] = bm->graph_replays() - replays;
        if (!bm->graph_status().ok()) r["graph_error"] = bm->graph_status().ToString();
      }
      return r;
    };
    greedy_bytes.clear();
    absl::StatusOr<Json> greedy = measure(false, false);
    if (!greedy.ok()) return Json{{"error", greedy.status().ToString()}};
    absl::StatusOr<Json> logits_back = measure(true, false);
    if (!logits_back.ok()) return Json{{"error", logits_back.status().ToString()}};
    Json row = *greedy;
    row["batch"] = batch;
    row["next_token"] = "device argmax";
    row["logits_to_host"] = *logits_back;
    row["argmax_speedup"] =
        (*greedy)["tokens_per_s"].get<double>() / (*logits_back)["tokens_per_s"].get<double>();
    if (a.graphs) {
      absl::StatusOr<Json> graphed = measure(false, true);
      if (!graphed.ok()) return Json{{"error", graphed.status().ToString()}};
      row["graphs"] = *graphed;
      row["graph_speedup"] =
          (*graphed)["tokens_per_s"].get<double>() / (*greedy)["tokens_per_s"].get<double>();
    }
    decode.push_back(std::move(row));
  }
  out["decode"] = decode;

  std::vector<int32_t> p = Tokens(a.prefill_tokens, 7, c.vocab_size), table;
  for (int64_t b = 0; b < prefill_blocks; ++b) table.push_back(static_cast<int32_t>(b));
  std::vector<double> runs;
  for (int r = 0; r < 3; ++r) {
    const double t0 = NowSeconds();
    if (absl::Status st = bm->Forward({{p, 0, table, true}}, experts.get(), &logits); !st.ok()) {
      return Json{{"error", st.ToString()}};
    }
    if (r > 0) runs.push_back(NowSeconds() - t0);
  }
  const double secs = Percentile(runs, 50);
  const double flops = 2.0 * (LinearMacsPerToken(c) * a.prefill_tokens +
                              PrefillAttentionMacs(c, a.prefill_tokens) +
                              static_cast<double>(c.hidden_size) * c.vocab_size);
  out["prefill"] = {{"tokens", a.prefill_tokens},
                    {"tokens_per_s", a.prefill_tokens / secs},
                    {"tflops", flops / secs / 1e12},
                    {"fraction_of_gemm_limit", flops / secs / 1e12 / gemm_tflops}};

  if (a.compare_cpu) {
    // A short prompt through the CPU engine and through the backend: the largest logit gap.
    std::vector<int32_t> q = Tokens(32, 3, c.vocab_size), qt;
    for (int64_t b = 0; b * bt < 32; ++b) qt.push_back(static_cast<int32_t>(b));
    engine::KvCache cache(c, bt, static_cast<int64_t>(qt.size()));
    std::vector<std::vector<float>> want, got;
    if (absl::Status st = model->Forward({{q, 0, qt, true}}, &cache, nullptr, &want); !st.ok()) {
      return Json{{"error", st.ToString()}};
    }
    if (absl::Status st = bm->Forward({{q, 0, qt, true}}, experts.get(), &got); !st.ok()) {
      return Json{{"error", st.ToString()}};
    }
    float gap = 0;
    for (size_t i = 0; i < want[0].size(); ++i) gap = std::max(gap, std::fabs(want[0][i] - got[0][i]));
    const auto argmax = [](const std::vector<float>& v) {
      return std::max_element(v.begin(), v.end()) - v.begin();
    };
    out["cpu_comparison"] = {{"max_abs_logit_diff", gap},
                             {"same_argmax", argmax(want[0]) == argmax(got[0])}};
  }
  return out;
}

}  // namespace moeserve::bench
