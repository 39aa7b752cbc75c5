#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>
#include <iostream>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "engine/chat_template.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tools/moeserve/commands.h"
#include "tools/moeserve/flags.h"

namespace moeserve::cli {
namespace {

using Json = nlohmann::json;

struct GenerateRequest {
  std::string model_dir;
  std::vector<int32_t> prompt;
  std::optional<std::string> text;  // --prompt: text mode
  bool chat = false;
  std::string system;
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
                            {"model", "prompt-ids", "prompt", "system", "max-new-tokens",
                             "temperature",
                             "seed", "compute-dtype", "threads", "kv-cache-tokens",
                             "kv-cache-mb", "block-tokens", "max-step-tokens"},
                            {"json", "all-logits", "chat"}));
  GenerateRequest r;
  MOESERVE_ASSIGN_OR_RETURN(r.model_dir, f.Required("model"));
  r.text = f.Get("prompt");
  r.chat = f.Has("chat");
  r.system = f.Get("system").value_or("");
  if (r.text.has_value() == f.Has("prompt-ids")) {
    return absl::InvalidArgumentError("give exactly one of --prompt TEXT and --prompt-ids IDS");
  }
  if (r.chat && !r.text) return absl::InvalidArgumentError("--chat needs --prompt TEXT");
  MOESERVE_ASSIGN_OR_RETURN(std::vector<int64_t> ids, f.GetIntList("prompt-ids"));
  if (!r.text && ids.empty()) {
    return absl::InvalidArgumentError("--prompt-ids needs at least one id");
  }
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

// The string form of a tokenizer_config.json special token ("..." or {"content": "..."}).
std::string SpecialTokenText(const Json& config, const char* field) {
  auto it = config.find(field);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

// The prompt ids of a text request: the chat template's rendering (which writes BOS itself) or
// the plain text with BOS as tokenizer_config.json asks.
absl::StatusOr<std::vector<int32_t>> PromptIds(const GenerateRequest& r,
                                               const engine::Tokenizer& tok) {
  if (!r.chat) return tok.Encode(*r.text, engine::EncodeOptions{});
  MOESERVE_ASSIGN_OR_RETURN(std::string source, engine::LoadChatTemplate(r.model_dir));
  MOESERVE_ASSIGN_OR_RETURN(engine::ChatTemplate tmpl, engine::ChatTemplate::Parse(source));
  std::ifstream in(r.model_dir + "/tokenizer_config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  Json config = Json::parse(ss.str(), nullptr, false);
  engine::ChatTemplateInputs inputs;
  if (!config.is_discarded()) {
    inputs.bos_token = SpecialTokenText(config, "bos_token");
    inputs.eos_token = SpecialTokenText(config, "eos_token");
  }
  if (!r.system.empty()) inputs.messages.push_back({{"role", "system"}, {"content", r.system}});
  inputs.messages.push_back({{"role", "user"}, {"content", *r.text}});
  inputs.add_generation_prompt = true;
  MOESERVE_ASSIGN_OR_RETURN(std::string rendered, engine::ApplyChatTemplate(tmpl, inputs));
  engine::EncodeOptions opts;
  opts.add_special_tokens = false;  // the template wrote BOS
  return tok.Encode(rendered, opts);
}

absl::Status GenerateText(const GenerateRequest& r) {
  MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::Tokenizer> tok,
                            engine::Tokenizer::Load(r.model_dir));
  MOESERVE_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, PromptIds(r, *tok));
  MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::Model> model,
                            engine::Model::Load(r.model_dir, r.model_options));
  const std::optional<int64_t> eos = model->config().eos_token_id;
  engine::Engine eng(model.get(), r.engine_options);
  MOESERVE_ASSIGN_OR_RETURN(engine::SeqId seq, eng.Add(prompt));
  std::mt19937_64 rng(r.seed);
  engine::StreamDecoder decoder(*tok);
  std::vector<int32_t> generated;
  std::string text;
  while (static_cast<int64_t>(generated.size()) < r.max_new_tokens) {
    MOESERVE_ASSIGN_OR_RETURN(std::vector<engine::StepOutput> out, eng.Step());
    if (out.empty()) continue;
    int32_t next = Choose(out[0].logits, r.temperature, &rng);
    if (eos && next == *eos) break;
    generated.push_back(next);
    MOESERVE_ASSIGN_OR_RETURN(std::string delta, decoder.Add(next));
    text += delta;
    if (!r.json) std::cout << delta << std::flush;
    if (static_cast<int64_t>(generated.size()) >= r.max_new_tokens) break;
    MOESERVE_RETURN_IF_ERROR(eng.Append(seq, next));
  }
  std::string rest = decoder.Flush();
  text += rest;
  if (r.json) {
    Json j = {{"prompt_tokens", prompt.size()}, {"tokens", generated}, {"text", text}};
    std::cout << j.dump() << "\n";
  } else {
    std::cout << rest << "\n";
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
  absl::Status st = r->text ? GenerateText(*r) : Generate(*r);
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
