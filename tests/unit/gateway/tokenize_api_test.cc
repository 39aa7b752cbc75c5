#include "gateway/tokenize_api.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/http_status.h"
#include "gateway/request_mapping.h"
#include "gtest/gtest.h"
#include "tests/unit/gateway/test_model.h"

namespace moeserve::gateway {
namespace {

using Json = nlohmann::ordered_json;

class TokenizeApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = testing::LoadTestModel().release(); }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  static ModelContext* model_;
};
ModelContext* TokenizeApiTest::model_ = nullptr;

std::vector<int32_t> Tokens(const Json& j) { return j["tokens"].get<std::vector<int32_t>>(); }

// The "param" a status names (WithErrorParam), or "".
std::string ErrorParam(const absl::Status& s) {
  const auto p = s.GetPayload(kErrorParamPayload);
  return p ? std::string(*p) : "";
}

// A prompt: BOS (id 0 in DeepSeek-V3's tokenizer_config.json) then the text's byte-level BPE
// pieces ("Ġ" marks a leading space, as Hugging Face writes them); without special tokens the
// same pieces without BOS.
TEST_F(TokenizeApiTest, APromptIsTheTokenizersEncodingWithOrWithoutBos) {
  ASSERT_NE(model_, nullptr);
  absl::StatusOr<Json> with =
      TokenizeResponse(R"({"prompt":"Hello world","return_token_strs":true})", *model_);
  ASSERT_TRUE(with.ok()) << with.status();
  absl::StatusOr<Json> without =
      TokenizeResponse(R"({"prompt":"Hello world","add_special_tokens":false})", *model_);
  ASSERT_TRUE(without.ok()) << without.status();
  const std::vector<int32_t> a = Tokens(*with), b = Tokens(*without);
  ASSERT_EQ(a.size(), b.size() + 1);
  EXPECT_EQ(a[0], 0);
  EXPECT_EQ(std::vector<int32_t>(a.begin() + 1, a.end()), b);
  EXPECT_EQ((*with)["count"], a.size());
  EXPECT_EQ((*with)["max_model_len"], model_->context_length);
  EXPECT_EQ((*with)["token_strs"],
            Json::array({"<｜begin▁of▁sentence｜>", "Hello", "Ġworld"}));
  EXPECT_TRUE((*without)["token_strs"].is_null());
  // /detokenize brings the text back.
  absl::StatusOr<Json> text =
      DetokenizeResponse(Json({{"tokens", b}}).dump(), *model_);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ((*text)["prompt"], "Hello world");
}

// Messages: the R1 template's rendering with the generation prompt (the thought opened), the
// same ids /v1/chat/completions prepares for the same messages.
TEST_F(TokenizeApiTest, MessagesAreTheChatRequestsPrompt) {
  ASSERT_NE(model_, nullptr);
  const std::string messages = R"("messages":[{"role":"user","content":"hi"}])";
  absl::StatusOr<Json> t = TokenizeResponse("{" + messages + "}", *model_);
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<ApiRequest> api =
      ParseChatCompletionRequest(R"({"model":"tiny-r1",)" + messages + "}");
  ASSERT_TRUE(api.ok());
  absl::StatusOr<PreparedRequest> p = PrepareRequest(*api, *model_, "x");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Tokens(*t), p->generation.prompt_ids);
  absl::StatusOr<std::string> text = model_->tokenizer->Decode(Tokens(*t));
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>\n");
}

TEST_F(TokenizeApiTest, BadInputIsAClearError) {
  ASSERT_NE(model_, nullptr);
  struct Case {
    std::string body;
    absl::StatusCode code;
    std::string param;
  };
  const std::vector<Case> cases = {
      {"[1]", absl::StatusCode::kInvalidArgument, ""},
      {"{}", absl::StatusCode::kInvalidArgument, "prompt"},
      {R"({"prompt":5})", absl::StatusCode::kInvalidArgument, "prompt"},
      {R"({"prompt":"x","add_special_tokens":"yes"})", absl::StatusCode::kInvalidArgument,
       "add_special_tokens"},
      {R"({"prompt":"x","messages":[]})", absl::StatusCode::kInvalidArgument, "prompt"},
      {R"({"messages":[{"role":"user","content":"hi"}],"add_generation_prompt":false})",
       absl::StatusCode::kInvalidArgument, "add_generation_prompt"},
      {R"({"messages":[]})", absl::StatusCode::kInvalidArgument, "messages"},
      {R"({"model":"gpt-4","prompt":"x"})", absl::StatusCode::kNotFound, "model"},
  };
  for (const Case& k : cases) {
    absl::StatusOr<Json> r = TokenizeResponse(k.body, *model_);
    EXPECT_EQ(r.status().code(), k.code) << k.body << " " << r.status();
    if (!k.param.empty()) {
      EXPECT_EQ(ErrorParam(r.status()), k.param) << k.body;
    }
  }
  for (const std::string& body :
       {std::string(R"({"tokens":"1,2"})"), std::string(R"({"tokens":[1,1e3]})"),
        std::string(R"({"tokens":[1,2000000]})"), std::string(R"({"tokens":[-4]})")}) {
    absl::StatusOr<Json> r = DetokenizeResponse(body, *model_);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << body;
    EXPECT_TRUE(absl::StartsWith(ErrorParam(r.status()), "tokens")) << body << r.status();
  }
}

}  // namespace
}  // namespace moeserve::gateway
