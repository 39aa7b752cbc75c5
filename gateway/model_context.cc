#include "gateway/model_context.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/config.h"
#include "nlohmann/json.hpp"

namespace moeserve::gateway {
namespace {

// The string form of a tokenizer_config.json special token ("..." or {"content": "..."}).
std::string SpecialTokenText(const nlohmann::json& config, const char* field) {
  auto it = config.find(field);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelContext>> ModelContext::Load(const std::string& model_dir,
                                                                 const std::string& name,
                                                                 int32_t default_max_tokens) {
  auto m = std::make_unique<ModelContext>();
  m->name = name;
  m->default_max_tokens = default_max_tokens;
  MOESERVE_ASSIGN_OR_RETURN(engine::ModelConfig config, engine::LoadModelConfig(model_dir));
  m->context_length = config.max_position_embeddings;
  MOESERVE_ASSIGN_OR_RETURN(m->tokenizer, engine::Tokenizer::Load(model_dir));
  m->vocab_size = m->tokenizer->vocab_size();

  if (absl::StatusOr<std::string> source = engine::LoadChatTemplate(model_dir); source.ok()) {
    MOESERVE_ASSIGN_OR_RETURN(engine::ChatTemplate tmpl, engine::ChatTemplate::Parse(*source));
    m->chat_template.emplace(std::move(tmpl));
  }
  std::ifstream in(model_dir + "/tokenizer_config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json tc = nlohmann::json::parse(ss.str(), nullptr, false);
  if (!tc.is_discarded() && tc.is_object()) {
    m->bos_token = SpecialTokenText(tc, "bos_token");
    m->eos_token = SpecialTokenText(tc, "eos_token");
  }
  if (m->tokenizer->TokenToId("</think>").has_value()) {
    engine::EncodeOptions opts;
    opts.add_special_tokens = false;
    MOESERVE_ASSIGN_OR_RETURN(m->think_close_ids, m->tokenizer->Encode("</think>\n\n", opts));
  }
  // Control tokens: every added token but R1's <think> pair. DeepSeek marks its chat markers
  // (<｜User｜>, <｜Assistant｜>) special=false, so IsSpecial alone would miss them.
  std::ifstream tok_in(model_dir + "/tokenizer.json");
  std::stringstream tok_ss;
  tok_ss << tok_in.rdbuf();
  nlohmann::json tok = nlohmann::json::parse(tok_ss.str(), nullptr, false);
  if (!tok.is_discarded() && tok.is_object() && tok.contains("added_tokens") &&
      tok["added_tokens"].is_array()) {
    for (const nlohmann::json& t : tok["added_tokens"]) {
      if (!t.is_object() || !t.contains("content") || !t["content"].is_string()) continue;
      std::string content = t["content"].get<std::string>();
      if (content.empty() || content == "<think>" || content == "</think>") continue;
      m->special_token_texts.push_back(std::move(content));
    }
  }
  if (m->context_length <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_dir, "/config.json: max_position_embeddings must be > 0"));
  }
  return m;
}

}  // namespace moeserve::gateway
