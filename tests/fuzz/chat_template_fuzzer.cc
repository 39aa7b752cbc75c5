// libFuzzer target: the chat-template engine (engine/chat). The first byte picks the mode:
//   even: the rest is JSON for ApplyChatTemplate's inputs with DeepSeek-R1's template (what the
//         gateway renders for every chat request): either an array of messages or an object
//         {"messages": ..., "add_generation_prompt": ..., "tools": ...}. Any JSON value may
//         appear where a string is expected.
//   odd:  the rest is a template source, parsed and rendered over a small fixed conversation.
// Properties: no crash and no runaway (the interpreter's depth, iteration and output limits);
// a successful render is UTF-8 when every input string is; errors carry a message.
#include <cstdint>
#include <string>

#include "engine/chat_template.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_util.h"

namespace {

using moeserve::engine::ChatTemplate;
using Json = nlohmann::ordered_json;

const ChatTemplate& R1() {
  static const ChatTemplate* t = [] {
    absl::StatusOr<ChatTemplate> parsed =
        ChatTemplate::Parse(moeserve::engine::DeepseekR1ChatTemplate());
    if (!parsed.ok()) std::abort();
    return new ChatTemplate(std::move(*parsed));
  }();
  return *t;
}

void RenderInputs(absl::string_view text) {
  Json doc = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return;
  moeserve::engine::ChatTemplateInputs inputs;
  inputs.bos_token = "<｜begin▁of▁sentence｜>";
  inputs.eos_token = "<｜end▁of▁sentence｜>";
  if (doc.is_object()) {
    for (auto it = doc.begin(); it != doc.end(); ++it) {
      if (it.key() == "messages") {
        inputs.messages = it.value();
      } else if (it.key() == "add_generation_prompt" && it.value().is_boolean()) {
        inputs.add_generation_prompt = it.value().get<bool>();
      } else {
        inputs.extra[it.key()] = it.value();
      }
    }
  } else {
    inputs.messages = std::move(doc);
    inputs.add_generation_prompt = true;
  }
  absl::StatusOr<std::string> out = moeserve::engine::ApplyChatTemplate(R1(), inputs);
  if (!out.ok()) {
    MOESERVE_FUZZ_ASSERT(!out.status().message().empty(), "an error without a message");
    return;
  }
  // nlohmann's parser accepts only UTF-8, so every input string was UTF-8.
  MOESERVE_FUZZ_ASSERT(moeserve::fuzz::IsUtf8(*out), "rendered text is not UTF-8");
}

void RenderSource(absl::string_view source) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source);
  if (!t.ok()) {
    MOESERVE_FUZZ_ASSERT(!t.status().message().empty(), "a parse error without a message");
    return;
  }
  static const Json* context = new Json(Json::parse(R"({
    "messages": [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": "Hi <b>there</b>"},
                 {"role": "assistant", "content": "<think>hm</think>Hello!"},
                 {"role": "user", "content": "2+2?", "name": "x"}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>",
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"a": [1, 2.5]}}}],
    "n": 3, "flag": false, "nothing": null})"));
  absl::StatusOr<std::string> out = t->Render(*context);
  if (!out.ok()) {
    MOESERVE_FUZZ_ASSERT(!out.status().message().empty(), "a render error without a message");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint8_t mode = 0;
  if (!moeserve::fuzz::TakeSelector(&data, &size, &mode)) return 0;
  const absl::string_view text = moeserve::fuzz::AsText(data, size);
  if (mode % 2 == 0) {
    RenderInputs(text);
  } else {
    RenderSource(text);
  }
  return 0;
}
