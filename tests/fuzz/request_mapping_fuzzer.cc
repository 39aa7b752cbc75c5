// libFuzzer target: the gateway's JSON request mapping (gateway/request_mapping.h) with the
// gateway's test model. The first byte picks the endpoint (even: chat, odd: completion); the rest
// is the request body. Properties: no crash; every error is InvalidArgument or NotFound (HTTP 400
// / 404) with a message; an accepted request is 1..kMaxBatchPrompts generations (prompts × n),
// each with a non-empty prompt of in-vocabulary ids, at most the context length, a positive
// token budget, and 1..kMaxChoices choices, each of which derives a request with the same prompt.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gateway/request_mapping.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/unit/gateway/test_model.h"

namespace {

using moeserve::gateway::ApiRequest;
using moeserve::gateway::Endpoint;
using moeserve::gateway::ModelContext;
using moeserve::gateway::PreparedRequest;

const ModelContext& Model() {
  static const ModelContext* model = moeserve::gateway::testing::LoadTestModel().release();
  if (model == nullptr) {
    std::fprintf(stderr, "request_mapping_fuzzer: cannot load the test model\n");
    std::abort();
  }
  return *model;
}

bool ClientError(const absl::Status& s) {
  return (s.code() == absl::StatusCode::kInvalidArgument ||
          s.code() == absl::StatusCode::kNotFound) &&
         !s.message().empty();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ModelContext& model = Model();
  uint8_t mode = 0;
  if (!moeserve::fuzz::TakeSelector(&data, &size, &mode)) return 0;
  const absl::string_view body = moeserve::fuzz::AsText(data, size);
  const bool chat = mode % 2 == 0;
  absl::StatusOr<ApiRequest> api = chat ? moeserve::gateway::ParseChatCompletionRequest(body)
                                        : moeserve::gateway::ParseCompletionRequest(body);
  if (!api.ok()) {
    MOESERVE_FUZZ_ASSERT(ClientError(api.status()), api.status().ToString());
    return 0;
  }
  MOESERVE_FUZZ_ASSERT(api->endpoint == (chat ? Endpoint::kChat : Endpoint::kCompletion), "");
  absl::StatusOr<std::vector<PreparedRequest>> batch =
      moeserve::gateway::PrepareBatch(*api, model, "fuzz-1");
  if (!batch.ok()) {
    MOESERVE_FUZZ_ASSERT(ClientError(batch.status()), batch.status().ToString());
    return 0;
  }
  MOESERVE_FUZZ_ASSERT(!batch->empty() &&
                           batch->size() * static_cast<size_t>(batch->front().n) <=
                               static_cast<size_t>(moeserve::gateway::kMaxBatchPrompts),
                       absl::StrCat(batch->size(), " prompts"));
  for (const PreparedRequest& p : *batch) {
    const std::vector<int32_t>& prompt = p.generation.prompt_ids;
    MOESERVE_FUZZ_ASSERT(!prompt.empty(), "an accepted request with an empty prompt");
    MOESERVE_FUZZ_ASSERT(p.prompt_tokens == static_cast<int32_t>(prompt.size()),
                         absl::StrCat(p.prompt_tokens, " != ", prompt.size()));
    for (int32_t id : prompt) {
      MOESERVE_FUZZ_ASSERT(model.tokenizer->TokenBytes(id).has_value(), absl::StrCat("id ", id));
    }
    MOESERVE_FUZZ_ASSERT(p.generation.max_new_tokens > 0,
                         absl::StrCat("max_new_tokens ", p.generation.max_new_tokens));
    MOESERVE_FUZZ_ASSERT(static_cast<int64_t>(prompt.size()) + p.generation.max_new_tokens <=
                             model.context_length,
                         absl::StrCat(prompt.size(), " + ", p.generation.max_new_tokens, " > ",
                                      model.context_length));
    MOESERVE_FUZZ_ASSERT(p.n >= 1 && p.n <= moeserve::gateway::kMaxChoices,
                         absl::StrCat("n ", p.n));
    for (int i = 0; i < p.n; ++i) {
      moeserve::gateway::GenerationRequest choice =
          moeserve::gateway::ChoiceRequest(p.generation, i);
      MOESERVE_FUZZ_ASSERT(choice.prompt_ids == prompt, "a choice changed the prompt");
    }
  }
  return 0;
}
