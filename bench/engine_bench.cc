// bench/engine: whole-model CPU speed, as fractions of this machine's limits measured in the same
// run. Prints one JSON object.
//
//   moeserve-bench-engine [--presets tiny,small] [--models-dir DIR] [--threads N] [--steps N]
//                         [--phases decode1,decode16,prefill,score] [--prefill-runs N]
//   moeserve-bench-engine --backend cuda [--presets v2-lite] [--compute-dtype bf16|f32]
//                         [--batches 1,8,64,256] [--context N] [--steps N]
//                         [--prefill-tokens N] [--copy-mib N] [--gemm-n N] [--compare-cpu B]
//                         [--graphs B]   (decode also replayed from graphs; default true)
//                         [--kv-cache-dtype auto|bf16|f32]
//   (the second form: BackendModel on that backend, bench/backend_bench.h)
//
// Decode figures count the unique bytes one step touches (attention-side weights, the LM head,
// the routed experts the step actually used, and the KV cache read) over the measured read
// bandwidth, from the median step (the machine is shared; the limits are best-of-many too), with
// the mean over all steps beside it. Prefill counts the multiply-adds of every matrix product and the attention over the
// measured float32 FMA peak. Peak resident memory is reported next to the checkpoint size.
// The score phase (not run unless asked) is the prefill with every prompt token scored (echo with
// logprobs: the LM head for every row, then a log-softmax and the top alternative per row),
// reported as its time over the plain prefill's, measured alternately in the same run.
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/backend_bench.h"
#include "bench/machine_limits.h"
#include "bench/model_costs.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "nlohmann/json.hpp"
#include "tools/moeserve/flags.h"
#include "tools/moeserve/mkmodel.h"

namespace moeserve::bench {
namespace {

using engine::ComputeDType;
using Json = nlohmann::json;

int64_t ResidentBytes(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::stoll(line.substr(std::strlen(field))) * 1024;
  }
  return 0;
}

int64_t DirBytes(const std::string& dir, const std::string& suffix) {
  int64_t total = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().string().size() >= suffix.size() &&
        e.path().string().compare(e.path().string().size() - suffix.size(), suffix.size(),
                                  suffix) == 0) {
      total += static_cast<int64_t>(e.file_size());
    }
  }
  return total;
}

struct Args {
  std::vector<std::string> presets = {"tiny", "small"};
  std::string models_dir = "build/bench-models";
  int threads = 0;
  int64_t steps = 32;
  int64_t prefill_runs = 5;  // timed prefills; more only to give a profiler samples
  std::set<std::string> phases = {"decode1", "decode16", "prefill"};
};

Json BenchPreset(const std::string& preset, const Args& a, double bandwidth_gbs, double peak) {
  const std::string dir = a.models_dir + "/" + preset;
  if (!std::filesystem::exists(dir + "/config.json")) {
    cli::MkmodelOptions mk;
    mk.out_dir = dir;
    mk.preset = preset;
    absl::Status st = cli::MakeModel(mk);
    if (!st.ok()) return Json{{"error", st.ToString()}};
  }
  const int64_t rss_before = ResidentBytes("VmRSS:");
  engine::ModelOptions mo;
  mo.compute = ComputeDType::kBf16;
  mo.threads = a.threads;
  absl::StatusOr<std::unique_ptr<engine::Model>> loaded = engine::Model::Load(dir, mo);
  if (!loaded.ok()) return Json{{"error", loaded.status().ToString()}};
  engine::Model& m = **loaded;
  const engine::ModelConfig& c = m.config();
  const int64_t ckpt_bytes = DirBytes(dir, ".safetensors");
  engine::EngineOptions eo;
  eo.kv_cache_tokens = 16 * 1024;
  eo.max_step_tokens = 512;
  engine::Engine eng(&m, eo);
  CountingExperts counting(m.local_experts(), nullptr);

  // Attention-side bytes read by every decode step whatever the batch (router and shared experts
  // included); routed experts are added per step from what the step used.
  int64_t moe_layers = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) moe_layers += c.IsMoeLayer(l) ? 1 : 0;
  int64_t per_step_fixed = m.weight_bytes() - ExpertBytes(m) * c.n_routed_experts * moe_layers;
  per_step_fixed -= c.vocab_size * c.hidden_size * 2;  // the embedding: one row per token
  const int64_t kv_row = c.num_hidden_layers * c.latent_dim() * 4;

  Json result = {{"preset", preset},
                 {"checkpoint_bytes", ckpt_bytes},
                 {"weight_bytes_in_compute_form", m.weight_bytes()}};

  auto decode = [&](int batch) -> Json {
    std::vector<engine::SeqId> seqs;
    const int64_t prompt_len = 64;
    for (int b = 0; b < batch; ++b) {
      std::vector<int32_t> p;
      for (int64_t i = 0; i < prompt_len; ++i) p.push_back(static_cast<int32_t>((i * 7919 + b * 104729) % 100000));
      seqs.push_back(*eng.Add(p));
    }
    while (eng.HasPending()) (void)eng.Step(&counting);
    counting.TakeCount();
    double bytes = 0;
    // Per step: seconds and read bandwidth (bytes / seconds).
    std::vector<double> step_secs, step_gbs;
    for (int64_t s = 0; s < a.steps; ++s) {
      for (engine::SeqId id : seqs) (void)eng.Append(id, static_cast<int32_t>((s * 31 + id) % 100000));
      const double t0 = NowSeconds();
      absl::StatusOr<std::vector<engine::StepOutput>> out = eng.Step(&counting);
      const double secs = NowSeconds() - t0;
      if (!out.ok()) return Json{{"error", out.status().ToString()}};
      const int64_t ctx = prompt_len + s + 1;
      const double step_bytes =
          static_cast<double>(per_step_fixed + counting.TakeCount() * ExpertBytes(m)) +
          static_cast<double>(batch) * (ctx * kv_row + c.hidden_size * 2);
      bytes += step_bytes;
      step_secs.push_back(secs);
      step_gbs.push_back(step_bytes / secs / 1e9);
    }
    double secs = 0;
    for (double t : step_secs) secs += t;
    for (engine::SeqId id : seqs) (void)eng.Free(id);
    const double gbs = bytes / secs / 1e9;
    // The machine is shared: the median step is the figure comparable with the best-of-many
    // limits; the mean over all steps is reported beside it.
    const double median_gbs = Percentile(step_gbs, 50);
    return Json{{"batch", batch},
                {"tokens_per_s", batch / Percentile(step_secs, 50)},
                {"tokens_per_s_mean", batch * a.steps / secs},
                {"bytes_per_step", bytes / a.steps},
                {"effective_read_gbs", median_gbs},
                {"fraction_of_read_bandwidth", median_gbs / bandwidth_gbs},
                {"fraction_of_read_bandwidth_mean", gbs / bandwidth_gbs}};
  };
  if (a.phases.count("decode1")) result["decode_batch1"] = decode(1);
  if (a.phases.count("decode16")) result["decode_batch16"] = decode(16);

  if (a.phases.count("prefill")) {
    const int64_t n = 512;
    std::vector<int32_t> p;
    for (int64_t i = 0; i < n; ++i) p.push_back(static_cast<int32_t>((i * 104729) % 100000));
    // Warm once (page in the weights), then time a fresh sequence.
    engine::SeqId warm = *eng.Add(p);
    while (eng.HasPending()) (void)eng.Step();
    (void)eng.Free(warm);
    // The median of the timed prefills of a fresh sequence (the machine is shared).
    std::vector<double> runs;
    for (int64_t r = 0; r < std::max<int64_t>(a.prefill_runs, 1); ++r) {
      engine::SeqId s = *eng.Add(p);
      const double t0 = NowSeconds();
      while (eng.HasPending()) (void)eng.Step();
      runs.push_back(NowSeconds() - t0);
      (void)eng.Free(s);
    }
    const double secs = Percentile(runs, 50);
    const double attn_macs = PrefillAttentionMacs(c, n);
    double flops = 2.0 * (LinearMacsPerToken(c) * n + attn_macs +
                          static_cast<double>(c.hidden_size) * c.vocab_size);
    double gflops = flops / secs / 1e9;
    // The fastest run beside the median: on a shared machine it moves least with the neighbours'
    // load, so it is the figure to compare two builds by (alternated, in one window).
    const double best = *std::min_element(runs.begin(), runs.end());
    result["prefill_512"] = {{"tokens_per_s", n / secs},
                             {"gflops", gflops},
                             {"fraction_of_f32_fma_peak", gflops / peak},
                             {"fraction_of_f32_fma_peak_best", flops / best / 1e9 / peak}};
  }
  if (a.phases.count("score")) {
    const int64_t n = 512;
    std::vector<int32_t> p;
    for (int64_t i = 0; i < n; ++i) p.push_back(static_cast<int32_t>((i * 7919) % 100000));
    double checksum = 0.0;
    engine::PositionLogitsFn score = [&](int64_t pos, absl::Span<const float> logits) {
      checksum += engine::ScoreToken(logits, p[pos + 1], 1).logprob;
    };
    auto run = [&](bool scored) {
      engine::SeqId s = *eng.Add(p, scored ? score : nullptr);
      const double t0 = NowSeconds();
      while (eng.HasPending()) (void)eng.Step();
      const double secs = NowSeconds() - t0;
      (void)eng.Free(s);
      return secs;
    };
    run(true);  // warm
    std::vector<double> plain, scored;
    for (int64_t r = 0; r < std::max<int64_t>(a.prefill_runs, 1); ++r) {
      plain.push_back(run(false));
      scored.push_back(run(true));
    }
    const double secs = Percentile(scored, 50);
    result["score_512"] = {{"tokens_per_s", n / secs},
                           {"time_over_plain_prefill", secs / Percentile(plain, 50)},
                           {"mean_logprob", checksum / static_cast<double>(
                                                           (n - 1) * (plain.size() + 1))}};
  }
  result["rss_after_load_bytes"] = ResidentBytes("VmRSS:") - rss_before;
  result["kv_pool_bytes"] = eng.cache().bytes();
  return result;
}

}  // namespace
}  // namespace moeserve::bench

int main(int argc, char** argv) {
  using moeserve::cli::Flags;
  absl::StatusOr<Flags> f =
      Flags::Parse(std::vector<std::string>(argv + 1, argv + argc),
                   {"presets", "models-dir", "threads", "steps", "phases", "prefill-runs",
                    "backend", "compute-dtype", "batches", "context", "prefill-tokens",
                    "copy-mib", "gemm-n", "compare-cpu", "kv-cache-dtype", "graphs"},
                   {});
  if (!f.ok()) {
    std::cerr << f.status() << "\n";
    return 2;
  }
  if (auto backend = f->Get("backend")) {
    moeserve::bench::BackendBenchArgs b;
    b.backend = *backend;
    b.models_dir = f->Get("models-dir").value_or(b.models_dir);
    b.compute = f->Get("compute-dtype").value_or(b.compute);
    b.kv_cache_dtype = f->Get("kv-cache-dtype").value_or(b.kv_cache_dtype);
    if (auto v = f->Get("batches")) {
      b.batches.clear();
      for (absl::string_view x : absl::StrSplit(*v, ',', absl::SkipEmpty())) {
        int64_t n = 0;
        if (!absl::SimpleAtoi(x, &n) || n < 1) {
          std::cerr << "--batches takes positive integers\n";
          return 2;
        }
        b.batches.push_back(n);
      }
      if (b.batches.empty()) b.batches.push_back(1);
    }
    b.context = f->GetInt("context", b.context).value_or(b.context);
    b.steps = f->GetInt("steps", b.steps).value_or(b.steps);
    b.prefill_tokens = f->GetInt("prefill-tokens", b.prefill_tokens).value_or(b.prefill_tokens);
    b.copy_mib = f->GetInt("copy-mib", b.copy_mib).value_or(b.copy_mib);
    b.gemm_n = f->GetInt("gemm-n", b.gemm_n).value_or(b.gemm_n);
    b.compare_cpu = f->Get("compare-cpu").value_or("true") != "false";
    b.graphs = f->Get("graphs").value_or("true") != "false";
    if (b.context < 1 || b.steps < 1 || b.prefill_tokens < 1 || b.copy_mib < 1 || b.gemm_n < 1) {
      std::cerr << "--context, --steps, --prefill-tokens, --copy-mib and --gemm-n must be >= 1\n";
      return 2;
    }
    nlohmann::json out = {{"presets", nlohmann::json::array()}};
    std::vector<std::string> presets = {"v2-lite"};
    if (auto p = f->Get("presets")) presets = absl::StrSplit(*p, ',', absl::SkipEmpty());
    for (const std::string& p : presets) {
      b.preset = p;
      out["presets"].push_back(moeserve::bench::BenchBackend(b));
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    out["peak_rss_bytes"] = static_cast<int64_t>(ru.ru_maxrss) * 1024;
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  moeserve::bench::Args a;
  if (auto p = f->Get("presets")) a.presets = absl::StrSplit(*p, ',', absl::SkipEmpty());
  if (auto p = f->Get("phases")) {
    a.phases.clear();
    for (absl::string_view ph : absl::StrSplit(*p, ',', absl::SkipEmpty())) a.phases.emplace(ph);
  }
  a.models_dir = f->Get("models-dir").value_or(a.models_dir);
  a.threads = static_cast<int>(f->GetInt("threads", 0).value_or(0));
  a.steps = f->GetInt("steps", 32).value_or(32);
  a.prefill_runs = f->GetInt("prefill-runs", 5).value_or(5);
  const int threads = a.threads > 0 ? a.threads : moeserve::DefaultThreadCount();
  const double bw = moeserve::bench::MeasureReadBandwidthGBs(threads);
  const double peak = moeserve::bench::MeasureFmaPeakGflops(threads);
  nlohmann::json out = {{"threads", threads},
                        {"measured_read_bandwidth_gbs", bw},
                        {"measured_f32_fma_peak_gflops", peak},
                        {"presets", nlohmann::json::array()}};
  for (const std::string& p : a.presets) {
    out["presets"].push_back(moeserve::bench::BenchPreset(p, a, bw, peak));
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  out["peak_rss_bytes"] = static_cast<int64_t>(ru.ru_maxrss) * 1024;
  std::cout << out.dump(2) << "\n";
  return 0;
}
