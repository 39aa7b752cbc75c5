#include <cmath>
#include <iostream>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "nlohmann/json.hpp"
#include "tools/moeserve/commands.h"
#include "tools/moeserve/flags.h"

namespace moeserve::cli {
namespace {

using Json = nlohmann::json;

struct GenerateRequest {
  std::string model_dir;
  std::vector<int32_t> prompt;
  int64_t max_new_tokens = 16;
  double temperature = 0;
  uint64_t seed = 0;
  bool json = false;
  bool all_logits = false;
  engine::ModelOptions model_options;
  engine::EngineOptions engine_options;
};

// Greedy (lowest id on exact ties) at temperature 0, else a draw from softmax(logits / T).
int32_t Choose(const std::vector<float>& logits, double temperature, std::mt19937_64* rng) {
  if (temperature <= 0) {
    int32_t best = 0;
    for (size_t i = 1; i < logits.size(); ++i) {
      if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
    }
    return best;
  }
  double mx = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp((logits[i] - mx) / temperature);
  double u = std::uniform_real_distribution<double>(0, sum)(*rng);
  for (size_t i = 0; i < p.size(); ++i) {
    if ((u -= p[i]) <= 0) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(p.size() - 1);
}

absl::StatusOr<GenerateRequest> ParseRequest(const std::vector<std::string>& args) {
  MOESERVE_ASSIGN_OR_RETURN(
      Flags f, Flags::Parse(args,
                            {"model", "prompt-ids", "prompt", "max-new-tokens", "temperature",
                             "seed", "compute-dtype", "threads", "kv-cache-tokens",
                             "kv-cache-mb", "block-tokens", "max-step-tokens"},
                            {"json", "all-logits", "chat"}));
  GenerateRequest r;
  MOESERVE_ASSIGN_OR_RETURN(r.model_dir, f.Required("model"));
  if (f.Has("prompt") || f.Has("chat")) {
    return absl::UnimplementedError("--prompt/--chat need the tokenizer, which is not built yet");
  }
  MOESERVE_ASSIGN_OR_RETURN(std::vector<int64_t> ids, f.GetIntList("prompt-ids"));
  if (ids.empty()) return absl::InvalidArgumentError("--prompt-ids needs at least one id");
  for (int64_t id : ids) {
    if (id < 0 || id > INT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat("prompt id ", id, " out of range"));
    }
    r.prompt.push_back(static_cast<int32_t>(id));
  }
  MOESERVE_ASSIGN_OR_RETURN(r.max_new_tokens, f.GetInt("max-new-tokens", 16));
  if (r.max_new_tokens < 0) return absl::InvalidArgumentError("--max-new-tokens must be >= 0");
  MOESERVE_ASSIGN_OR_RETURN(r.temperature, f.GetDouble("temperature", 0));
  if (r.temperature < 0 || !std::isfinite(r.temperature)) {
    return absl::InvalidArgumentError("--temperature must be a finite number >= 0");
  }
  MOESERVE_ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed", 0));
  r.seed = static_cast<uint64_t>(seed);
  MOESERVE_ASSIGN_OR_RETURN(r.model_options.compute,
                            engine::ParseComputeDType(f.Get("compute-dtype").value_or("bf16")));
  MOESERVE_ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads", 0));
  r.model_options.threads = static_cast<int>(threads);
  MOESERVE_ASSIGN_OR_RETURN(r.engine_options.kv_cache_tokens, f.GetInt("kv-cache-tokens", 0));
  MOESERVE_ASSIGN_OR_RETURN(int64_t kv_mb, f.GetInt("kv-cache-mb", 256));
  r.engine_options.kv_cache_bytes = kv_mb << 20;
  MOESERVE_ASSIGN_OR_RETURN(r.engine_options.block_tokens, f.GetInt("block-tokens", 64));
  MOESERVE_ASSIGN_OR_RETURN(r.engine_options.max_step_tokens, f.GetInt("max-step-tokens", 512));
  if (r.engine_options.block_tokens <= 0 || r.engine_options.max_step_tokens <= 0) {
    return absl::InvalidArgumentError("--block-tokens and --max-step-tokens must be positive");
  }
  r.json = f.Has("json");
  r.all_logits = f.Has("all-logits");
  return r;
}

absl::Status Generate(const GenerateRequest& r) {
  MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::Model> model,
                            engine::Model::Load(r.model_dir, r.model_options));
  engine::Engine eng(model.get(), r.engine_options);
  MOESERVE_ASSIGN_OR_RETURN(engine::SeqId seq, eng.Add(r.prompt));
  std::mt19937_64 rng(r.seed);
  std::vector<int32_t> generated;
  std::vector<std::vector<float>> step_logits;
  std::vector<float> first_logits;
  // Raw token mode generates exactly max_new_tokens (no stop at EOS), so outside tools and the
  // reference comparison see a fixed-length continuation.
  while (true) {
    MOESERVE_ASSIGN_OR_RETURN(std::vector<engine::StepOutput> out, eng.Step());
    if (out.empty()) continue;  // a prompt chunk that did not finish the prompt
    std::vector<float>& logits = out[0].logits;
    if (first_logits.empty()) first_logits = logits;
    if (static_cast<int64_t>(generated.size()) >= r.max_new_tokens) break;
    int32_t next = Choose(logits, r.temperature, &rng);
    generated.push_back(next);
    if (r.all_logits) step_logits.push_back(std::move(logits));
    if (static_cast<int64_t>(generated.size()) >= r.max_new_tokens) break;
    MOESERVE_RETURN_IF_ERROR(eng.Append(seq, next));
  }
  if (r.json) {
    Json j = {{"tokens", generated}, {"logits", first_logits}};
    if (r.all_logits) j["step_logits"] = step_logits;
    std::cout << j.dump() << "\n";
  } else {
    for (size_t i = 0; i < generated.size(); ++i) std::cout << (i ? "," : "") << generated[i];
    std::cout << "\n";
  }
  return absl::OkStatus();
}

}  // namespace

int RunGenerate(const std::vector<std::string>& args) {
  absl::StatusOr<GenerateRequest> r = ParseRequest(args);
  if (!r.ok()) {
    LogError(r.status());
    return 2;
  }
  absl::Status st = Generate(*r);
  if (!st.ok()) {
    LogError(st);
    return st.code() == absl::StatusCode::kInvalidArgument ||
                   st.code() == absl::StatusCode::kNotFound
               ? 2
               : 1;
  }
  return 0;
}

}  // namespace moeserve::cli
