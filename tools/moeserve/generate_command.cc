// moeserve generate: run the engine on a prompt of token ids (raw mode, a stable contract for
// outside tools) or of text (plain, or --chat through the model's own chat template, with the
// reasoning printed apart from the answer).
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "engine/backend_registry.h"
#include "engine/chat_template.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/model/backend_experts.h"
#include "engine/model/backend_model.h"
#include "engine/reasoning.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tools/moeserve/commands.h"
#include "tools/moeserve/flags.h"

namespace moeserve::cli {
namespace {

using Json = nlohmann::json;

struct GenerateRequest {
  std::string model_dir;
  std::vector<int32_t> prompt;      // --prompt-ids
  std::optional<std::string> text;  // --prompt
  bool chat = false;
  std::string system;
  std::optional<std::string> reasoning_effort;
  int64_t max_new_tokens = 16;
  engine::SamplingParams sampling;
  bool json = false;
  bool all_logits = false;
  std::optional<int32_t> prompt_logprobs;  // --prompt-logprobs N: score the prompt's tokens
  engine::ModelOptions model_options;
  engine::EngineOptions engine_options;
  std::string backend;  // --backend SPEC: the steps on a Backend (engine/backend_registry.h)
  bool decode_graphs = false;  // --decode-graphs: decode steps from graphs on that backend
};

absl::StatusOr<GenerateRequest> ParseRequest(const std::vector<std::string>& args) {
  MOESERVE_ASSIGN_OR_RETURN(
      Flags f, Flags::Parse(args,
                            {"model", "prompt-ids", "prompt", "system", "reasoning-effort",
                             "max-new-tokens", "temperature", "top-k", "top-p", "min-p",
                             "presence-penalty", "frequency-penalty", "repetition-penalty",
                             "seed", "compute-dtype", "threads", "kv-cache-tokens", "kv-cache-mb",
                             "block-tokens", "max-step-tokens", "backend", "prompt-logprobs",
                             "kv-cache-dtype"},
                            {"json", "all-logits", "chat", "decode-graphs"}));
  GenerateRequest r;
  MOESERVE_ASSIGN_OR_RETURN(r.model_dir, f.Required("model"));
  r.text = f.Get("prompt");
  r.chat = f.Has("chat");
  r.system = f.Get("system").value_or("");
  r.reasoning_effort = f.Get("reasoning-effort");
  if (r.text.has_value() == f.Has("prompt-ids")) {
    return absl::InvalidArgumentError("give exactly one of --prompt TEXT and --prompt-ids IDS");
  }
  if ((r.chat || r.reasoning_effort) && !r.text) {
    return absl::InvalidArgumentError("--chat and --reasoning-effort need --prompt TEXT");
  }
  if (r.reasoning_effort && !r.chat) {
    return absl::InvalidArgumentError("--reasoning-effort needs --chat");
  }
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
  engine::SamplingParams& s = r.sampling;
  MOESERVE_ASSIGN_OR_RETURN(s.temperature, f.GetDouble("temperature", r.text ? 0.6 : 0.0));
  MOESERVE_ASSIGN_OR_RETURN(s.top_k, f.GetInt("top-k", 0));
  MOESERVE_ASSIGN_OR_RETURN(s.top_p, f.GetDouble("top-p", 1.0));
  MOESERVE_ASSIGN_OR_RETURN(s.min_p, f.GetDouble("min-p", 0.0));
  MOESERVE_ASSIGN_OR_RETURN(s.presence_penalty, f.GetDouble("presence-penalty", 0.0));
  MOESERVE_ASSIGN_OR_RETURN(s.frequency_penalty, f.GetDouble("frequency-penalty", 0.0));
  MOESERVE_ASSIGN_OR_RETURN(s.repetition_penalty, f.GetDouble("repetition-penalty", 1.0));
  MOESERVE_ASSIGN_OR_RETURN(int64_t seed, f.GetInt("seed", 0));
  s.seed = static_cast<uint64_t>(seed);
  MOESERVE_ASSIGN_OR_RETURN(r.model_options.compute,
                            engine::ParseComputeDType(f.Get("compute-dtype").value_or("bf16")));
  MOESERVE_ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads", 0));
  r.model_options.threads = static_cast<int>(threads);
  MOESERVE_ASSIGN_OR_RETURN(r.engine_options.kv_cache_tokens, f.GetInt("kv-cache-tokens", 0));
  MOESERVE_ASSIGN_OR_RETURN(int64_t kv_mb, f.GetInt("kv-cache-mb", 256));
  r.engine_options.kv_cache_bytes = kv_mb << 20;
  MOESERVE_ASSIGN_OR_RETURN(r.engine_options.block_tokens, f.GetInt("block-tokens", 64));
  MOESERVE_ASSIGN_OR_RETURN(r.engine_options.max_step_tokens, f.GetInt("max-step-tokens", 512));
  if (r.engine_options.block_tokens <= 0 || r.engine_options.max_step_tokens <= 0 ||
      kv_mb <= 0) {
    return absl::InvalidArgumentError(
        "--block-tokens, --max-step-tokens and --kv-cache-mb must be positive");
  }
  r.backend = f.Get("backend").value_or("");
  MOESERVE_ASSIGN_OR_RETURN(
      r.engine_options.kv_cache_dtype,
      engine::ParseKvCacheDType(f.Get("kv-cache-dtype").value_or("auto"),
                                r.model_options.compute, !r.backend.empty()));
  r.decode_graphs = f.Has("decode-graphs");
  if (r.decode_graphs && r.backend.empty()) {
    return absl::InvalidArgumentError("--decode-graphs replays a backend's steps: it needs --backend");
  }
  r.json = f.Has("json");
  r.all_logits = f.Has("all-logits");
  if (f.Has("prompt-logprobs")) {
    MOESERVE_ASSIGN_OR_RETURN(int64_t n, f.GetInt("prompt-logprobs", 0));
    if (n < 0 || n > 20) return absl::InvalidArgumentError("--prompt-logprobs must be in [0, 20]");
    r.prompt_logprobs = static_cast<int32_t>(n);
  }
  return r;
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

// The text of a chat prompt rendered by the model's own template (which writes BOS itself).
absl::StatusOr<std::string> RenderChat(const GenerateRequest& r) {
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
  return engine::ApplyChatTemplate(tmpl, inputs);
}

// Where generated tokens go as they are produced.
class TokenSink {
 public:
  virtual ~TokenSink() = default;
  virtual absl::Status OnToken(int32_t token) = 0;
};

struct Generation {
  std::vector<int32_t> tokens;
  std::vector<float> first_logits;
  std::vector<std::vector<float>> step_logits;
  // --prompt-logprobs: entry i scores prompt token i + 1 (engine::ScoreToken).
  std::vector<engine::SampleResult> prompt_logprobs;
  std::string finish_reason = "length";
};

Json PromptLogprobsJson(const std::vector<engine::SampleResult>& scores) {
  Json out = Json::array();
  for (const engine::SampleResult& s : scores) {
    Json top = Json::array();
    for (const engine::TokenLogprob& t : s.top_logprobs) top.push_back({t.token, t.logprob});
    out.push_back({{"token", s.token}, {"logprob", s.logprob}, {"top", std::move(top)}});
  }
  return out;
}

// The decode loop shared by both modes. `stop_at_eos` ends at the model's EOS or a stop id;
// `budget` (may be null) closes the reasoning when its token budget is spent. `sample_vocab` > 0
// restricts sampling to ids below it: the ids a tokenizer can decode (DeepSeek-V3's embedding
// has 129280 rows for 128815 tokens; a trained model never emits the padding rows, a random
// one would).
absl::StatusOr<Generation> RunLoop(const GenerateRequest& r, const engine::Model& model,
                                   const std::vector<int32_t>& prompt, bool stop_at_eos,
                                   int64_t sample_vocab, engine::ThinkingBudgetEnforcer* budget,
                                   TokenSink* sink) {
  MOESERVE_RETURN_IF_ERROR(engine::ValidateSamplingParams(r.sampling, model.config().vocab_size));
  // With --backend the steps and the routed experts run there, over the same engine.
  engine::EngineOptions engine_options = r.engine_options;
  engine::BackendPtr backend;
  std::unique_ptr<engine::BackendModel> on_backend;
  std::unique_ptr<engine::BackendExpertExecutor> backend_experts;
  if (!r.backend.empty()) {
    MOESERVE_ASSIGN_OR_RETURN(backend, engine::CreateBackend(r.backend));
    engine::BackendModelOptions bo =
        engine::BackendModelOptions::ForEngine(model.config(), engine_options);
    bo.graphs = r.decode_graphs;
    MOESERVE_ASSIGN_OR_RETURN(on_backend, engine::BackendModel::Create(&model, backend.get(), bo));
    MOESERVE_ASSIGN_OR_RETURN(backend_experts,
                              engine::BackendExpertExecutor::Create(&model, backend.get()));
    engine_options.runner = on_backend.get();
  }
  engine::Engine eng(&model, engine_options);
  Generation g;
  engine::PositionLogitsFn score;
  if (r.prompt_logprobs) {
    g.prompt_logprobs.resize(prompt.size() - 1);
    score = [&](int64_t position, absl::Span<const float> logits) {
      if (sample_vocab > 0 && sample_vocab < static_cast<int64_t>(logits.size())) {
        logits = logits.subspan(0, sample_vocab);
      }
      g.prompt_logprobs[position] =
          engine::ScoreToken(logits, prompt[position + 1], *r.prompt_logprobs);
    };
  }
  MOESERVE_ASSIGN_OR_RETURN(engine::SeqId seq, eng.Add(prompt, std::move(score)));
  engine::Sampler sampler(r.sampling, 0);
  const std::optional<int64_t> eos = model.config().eos_token_id;
  auto emit = [&](int32_t t) -> absl::Status {
    g.tokens.push_back(t);
    if (sink != nullptr) MOESERVE_RETURN_IF_ERROR(sink->OnToken(t));
    return eng.Append(seq, t);
  };
  if (budget != nullptr) {
    for (int32_t t : budget->AtStart()) MOESERVE_RETURN_IF_ERROR(emit(t));
  }
  while (static_cast<int64_t>(g.tokens.size()) < r.max_new_tokens) {
    MOESERVE_ASSIGN_OR_RETURN(std::vector<engine::StepOutput> out, eng.Step(backend_experts.get()));
    if (out.empty()) continue;  // a prompt chunk that did not finish the prompt
    std::vector<float>& logits = out[0].logits;
    if (g.first_logits.empty()) g.first_logits = logits;
    absl::Span<const float> choices = logits;
    if (sample_vocab > 0 && sample_vocab < static_cast<int64_t>(logits.size())) {
      choices = choices.subspan(0, sample_vocab);
    }
    int32_t next = sampler.Sample(choices, prompt, g.tokens).token;
    if (r.all_logits) g.step_logits.push_back(std::move(logits));
    if (stop_at_eos && ((eos && next == *eos) || sampler.IsStop(next))) {
      g.finish_reason = "stop";
      break;
    }
    MOESERVE_RETURN_IF_ERROR(emit(next));
    if (budget != nullptr && !budget->done()) {
      for (int32_t t : budget->OnReasoningToken(next)) MOESERVE_RETURN_IF_ERROR(emit(t));
    }
  }
  if (g.first_logits.empty() && r.max_new_tokens == 0) {
    // Still report the prompt's logits.
    while (g.first_logits.empty()) {
      MOESERVE_ASSIGN_OR_RETURN(std::vector<engine::StepOutput> out, eng.Step(backend_experts.get()));
      if (!out.empty()) g.first_logits = std::move(out[0].logits);
    }
  }
  return g;
}

absl::Status GenerateIds(const GenerateRequest& r) {
  MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::Model> model,
                            engine::Model::Load(r.model_dir, r.model_options));
  // Raw token mode generates exactly max_new_tokens (no stop at EOS), so outside tools and the
  // reference comparison see a fixed-length continuation.
  MOESERVE_ASSIGN_OR_RETURN(Generation g,
                            RunLoop(r, *model, r.prompt, /*stop_at_eos=*/false, 0, nullptr,
                                    nullptr));
  if (r.json) {
    Json j = {{"tokens", g.tokens}, {"logits", g.first_logits}};
    if (r.all_logits) j["step_logits"] = g.step_logits;
    if (r.prompt_logprobs) j["prompt_logprobs"] = PromptLogprobsJson(g.prompt_logprobs);
    std::cout << j.dump() << "\n";
  } else {
    for (size_t i = 0; i < g.tokens.size(); ++i) std::cout << (i ? "," : "") << g.tokens[i];
    std::cout << "\n";
  }
  return absl::OkStatus();
}

// Streams text to stdout, splitting reasoning from the answer in chat mode.
class TextSink final : public TokenSink {
 public:
  TextSink(const engine::Tokenizer& tok, bool chat, bool starts_in_reasoning, bool quiet)
      : decoder_(tok), chat_(chat), splitter_(starts_in_reasoning), quiet_(quiet) {}

  absl::Status OnToken(int32_t token) override {
    MOESERVE_ASSIGN_OR_RETURN(std::string delta, decoder_.Add(token));
    Write(delta);
    return absl::OkStatus();
  }
  void Finish() {
    Write(decoder_.Flush());
    if (chat_) Print(splitter_.Flush());
    if (!quiet_) std::cout << "\n";
  }
  const std::string& text() const { return text_; }
  const std::string& reasoning() const { return reasoning_; }
  const std::string& content() const { return content_; }

 private:
  void Write(const std::string& delta) {
    text_ += delta;
    if (!chat_) {
      content_ += delta;
      if (!quiet_) std::cout << delta << std::flush;
      return;
    }
    Print(splitter_.Add(delta));
  }
  void Print(const engine::ReasoningSplitter::Delta& d) {
    reasoning_ += d.reasoning;
    content_ += d.content;
    if (quiet_) return;
    if (!d.reasoning.empty()) {
      if (!in_reasoning_header_) std::cout << "[reasoning]\n";
      in_reasoning_header_ = true;
      std::cout << d.reasoning;
    }
    if (!d.content.empty()) {
      if (!in_answer_header_) std::cout << (in_reasoning_header_ ? "\n[answer]\n" : "");
      in_answer_header_ = true;
      std::cout << d.content;
    }
    std::cout << std::flush;
  }

  engine::StreamDecoder decoder_;
  bool chat_;
  engine::ReasoningSplitter splitter_;
  bool quiet_;
  bool in_reasoning_header_ = false;
  bool in_answer_header_ = false;
  std::string text_, reasoning_, content_;
};

absl::Status GenerateText(const GenerateRequest& r) {
  MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::Tokenizer> tok,
                            engine::Tokenizer::Load(r.model_dir));
  std::vector<int32_t> prompt;
  bool starts_in_reasoning = false;
  if (r.chat) {
    MOESERVE_ASSIGN_OR_RETURN(std::string rendered, RenderChat(r));
    starts_in_reasoning = absl::EndsWith(rendered, "<think>\n");
    engine::EncodeOptions opts;
    opts.add_special_tokens = false;  // the template wrote BOS
    MOESERVE_ASSIGN_OR_RETURN(prompt, tok->Encode(rendered, opts));
  } else {
    MOESERVE_ASSIGN_OR_RETURN(prompt, tok->Encode(*r.text, engine::EncodeOptions{}));
  }
  std::optional<engine::ThinkingBudgetEnforcer> budget;
  if (r.reasoning_effort && starts_in_reasoning) {
    MOESERVE_ASSIGN_OR_RETURN(int64_t tokens,
                              engine::ThinkingBudget{}.ForEffort(*r.reasoning_effort));
    engine::EncodeOptions opts;
    opts.add_special_tokens = false;
    MOESERVE_ASSIGN_OR_RETURN(std::vector<int32_t> close, tok->Encode("</think>\n\n", opts));
    budget.emplace(tokens, std::move(close));
  } else if (r.reasoning_effort) {
    MOESERVE_RETURN_IF_ERROR(engine::ThinkingBudget{}.ForEffort(*r.reasoning_effort).status());
  }
  MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::Model> model,
                            engine::Model::Load(r.model_dir, r.model_options));
  TextSink sink(*tok, r.chat, starts_in_reasoning, /*quiet=*/r.json);
  MOESERVE_ASSIGN_OR_RETURN(Generation g,
                            RunLoop(r, *model, prompt, /*stop_at_eos=*/true, tok->vocab_size(),
                                    budget ? &*budget : nullptr, &sink));
  sink.Finish();
  if (r.json) {
    Json j = {{"prompt_tokens", prompt.size()}, {"tokens", g.tokens},
              {"text", sink.text()}, {"finish_reason", g.finish_reason}};
    if (r.chat) {
      j["reasoning_content"] = sink.reasoning();
      j["content"] = sink.content();
    }
    if (r.prompt_logprobs) {
      j["prompt_ids"] = prompt;
      j["prompt_logprobs"] = PromptLogprobsJson(g.prompt_logprobs);
    }
    if (r.all_logits) {
      // One per sampled token, plus the step that sampled EOS (tokens forced by the thinking
      // budget were not sampled and have none).
      j["logits"] = g.first_logits;
      j["step_logits"] = g.step_logits;
    }
    std::cout << j.dump() << "\n";
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
  absl::Status st = r->text ? GenerateText(*r) : GenerateIds(*r);
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
