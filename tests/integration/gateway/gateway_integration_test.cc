// The gateway in-process on 127.0.0.1 (ports 0) over a fake backend serving a fixed token
// script, driven by the official OpenAI Node SDK, a raw HTTP client (Beast) and a gRPC client.
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/strings/str_cat.h"
#include "boost/asio/connect.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/write.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "gateway/gateway_server.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "moeserve/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/integration/gateway/fake_generation_backend.h"
#include "tests/unit/gateway/test_model.h"

namespace moeserve::gateway {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Json = nlohmann::json;
using testing::FakeGenerationBackend;

constexpr int32_t kThinkClose = 128799;
constexpr char kReasoning[] = "Let me think about it.";
constexpr char kAnswer[] = "Hello from moeserve!";
constexpr int32_t kCached = 3;

std::vector<int32_t> Encode(const engine::Tokenizer& tok, const std::string& text) {
  engine::EncodeOptions opts;
  opts.add_special_tokens = false;
  absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(text, opts);
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

class GatewayIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::unique_ptr<ModelContext> model = testing::LoadTestModel();
    ASSERT_NE(model, nullptr);
    script_ = Encode(*model->tokenizer, kReasoning);
    reasoning_tokens_ = static_cast<int32_t>(script_.size()) + 1;  // + </think>
    script_.push_back(kThinkClose);
    for (int32_t id : Encode(*model->tokenizer, absl::StrCat("\n\n", kAnswer))) {
      script_.push_back(id);
    }
    backend_ = std::make_unique<FakeGenerationBackend>(script_, kCached);
    GatewayConfig config;
    config.model_dir = testing::TestModelDir();
    config.model_name = "tiny-r1";
    config.host = "127.0.0.1";
    config.backend = backend_.get();
    config.max_tokens_default = 100;
    config.metrics_port = 0;
    // Streams stay resumable for a second after their client leaves; then they are cancelled,
    // which the tests of clients walking away wait for.
    config.stream_resume.grace = absl::Seconds(1);
    absl::StatusOr<std::unique_ptr<GatewayServer>> server = GatewayServer::Create(config);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_GT(server_->HttpPort(), 0);
    ASSERT_GT(server_->GrpcPort(), 0);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  std::vector<int32_t> script_;
  int32_t reasoning_tokens_ = 0;
  std::unique_ptr<FakeGenerationBackend> backend_;
  std::unique_ptr<GatewayServer> server_;
};

// ---- the OpenAI Node SDK ----

std::string NodeDir() { return std::string(MOESERVE_SOURCE_DIR) + "/tools/node"; }

// Runs `command`, returning its stdout and exit status.
std::pair<std::string, int> RunCommand(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {"", -1};
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  const int status = pclose(pipe);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

TEST_F(GatewayIntegrationTest, OpenAiNodeSdkEndToEnd) {
  if (!std::filesystem::exists(NodeDir() + "/node_modules/openai/package.json") ||
      RunCommand("node --version").second != 0) {
    GTEST_SKIP() << "node or the openai package (tools/node) is missing";
  }
  const std::string script =
      std::string(MOESERVE_SOURCE_DIR) + "/tests/integration/gateway/openai_client.mjs";
  auto [output, rc] = RunCommand(absl::StrCat("cd ", NodeDir(), " && node ", script, " ",
                                              server_->HttpPort(), " tiny-r1 ", NodeDir()));
  ASSERT_EQ(rc, 0) << output;
  Json j = Json::parse(output, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << output;
  SCOPED_TRACE(j.dump(2));

  EXPECT_EQ(j["models"], Json::array({"tiny-r1"}));
  EXPECT_EQ(j["retrieved"], Json({{"id", "tiny-r1"}, {"object", "model"}}));
  EXPECT_EQ(j["retrieve_unknown"],
            Json({{"thrown", true}, {"is_not_found", true}, {"code", "model_not_found"}}));

  const Json& chat = j["chat"];
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["content"], kAnswer);
  EXPECT_EQ(chat["reasoning_content"], kReasoning);
  EXPECT_EQ(chat["finish_reason"], "stop");
  const Json& u = chat["usage"];
  const int prompt_tokens = u["prompt_tokens"].get<int>();
  EXPECT_GT(prompt_tokens, 5);
  EXPECT_EQ(u["completion_tokens"], script_.size());
  EXPECT_EQ(u["total_tokens"], prompt_tokens + static_cast<int>(script_.size()));
  EXPECT_EQ(u["completion_tokens_details"]["reasoning_tokens"], reasoning_tokens_);
  EXPECT_EQ(u["prompt_cache_hit_tokens"], kCached);
  EXPECT_EQ(u["prompt_cache_miss_tokens"], prompt_tokens - kCached);
  EXPECT_EQ(u["prompt_tokens_details"]["cached_tokens"], kCached);

  const Json& s = j["stream"];
  EXPECT_EQ(s["role"], "assistant");
  EXPECT_EQ(s["reasoning"], kReasoning);
  EXPECT_EQ(s["content"], kAnswer);
  EXPECT_EQ(s["finish_reason"], "stop");
  EXPECT_GT(s["chunks"].get<int>(), 4);
  EXPECT_EQ(s["usage"], u);

  EXPECT_EQ(j["stop"]["content"], "Hello from ");
  EXPECT_EQ(j["stop"]["finish_reason"], "stop");

  EXPECT_EQ(j["completion"]["object"], "text_completion");
  EXPECT_EQ(j["completion"]["usage"]["prompt_tokens"], 3);
  // Completions are not split: the reasoning text and the tag come through as text.
  EXPECT_TRUE(absl::StrContains(j["completion"]["text"].get<std::string>(), "</think>"));

  const Json& bad = j["bad_request"];
  EXPECT_EQ(bad["thrown"], true);
  EXPECT_EQ(bad["is_bad_request"], true);
  EXPECT_EQ(bad["status"], 400);
  EXPECT_EQ(bad["param"], "max_tokens");
  EXPECT_TRUE(absl::StrContains(bad["message"].get<std::string>(), "must be at least 1"));
  EXPECT_EQ(j["not_found"]["is_not_found"], true);
  EXPECT_EQ(j["not_found"]["status"], 404);

  // The client went away mid-stream: the gateway cancelled the backend call.
  EXPECT_GE(j["disconnect"]["received"].get<int>(), 1);
  EXPECT_TRUE(backend_->WaitForCancels(1, absl::Seconds(30)));

  // What reached the backend: R1 prompt ids, the tokenizer's vocab as sample_vocab.
  std::vector<GenerationRequest> requests = backend_->requests();
  ASSERT_FALSE(requests.empty());
  EXPECT_EQ(requests[0].max_new_tokens, 64);
  EXPECT_EQ(requests[0].sample_vocab, server_->model().vocab_size);
  EXPECT_EQ(static_cast<int>(requests[0].prompt_ids.size()), prompt_tokens);
}

// ---- raw HTTP ----

struct RawResponse {
  int status = 0;
  std::string body;
  std::string allow;
  bool keep_alive = false;
  http::fields headers;
};

class RawClient {
 public:
  explicit RawClient(int port) : stream_(ioc_) {
    asio::ip::tcp::resolver resolver(ioc_);
    stream_.connect(resolver.resolve("127.0.0.1", std::to_string(port)));
  }
  RawResponse Send(http::verb method, const std::string& target, const std::string& body = "") {
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();
    beast::error_code ec;
    http::write(stream_, req, ec);
    if (ec) return RawResponse();
    return Read();
  }
  // Writes `bytes` as they are, then reads one response.
  RawResponse SendRaw(const std::string& bytes) {
    beast::error_code ec;
    asio::write(stream_, asio::buffer(bytes), ec);
    if (ec) return RawResponse();
    return Read();
  }
  void WriteRaw(const std::string& bytes) {
    beast::error_code ec;
    asio::write(stream_, asio::buffer(bytes), ec);
  }
  RawResponse Read() {
    beast::error_code ec;
    RawResponse out;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    http::read(stream_, buffer_, parser, ec);
    if (ec) return out;
    out.status = static_cast<int>(parser.get().result_int());
    out.body = parser.get().body();
    out.allow = std::string(parser.get()[http::field::allow]);
    out.keep_alive = parser.get().keep_alive();
    out.headers = parser.get().base();
    return out;
  }

  asio::io_context ioc_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
};

std::string ErrorMessage(const RawResponse& r) {
  Json j = Json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.contains("error")) return "<not an error body: " + r.body + ">";
  return j["error"]["message"].get<std::string>();
}

TEST_F(GatewayIntegrationTest, RoutesMethodsAndLimitsOverOneKeepAliveConnection) {
  RawClient c(server_->HttpPort());
  RawResponse r = c.Send(http::verb::get, "/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.keep_alive);
  r = c.Send(http::verb::get, "/v1/models");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(absl::StrContains(r.body, "tiny-r1"));
  r = c.Send(http::verb::get, "/v1/nope");
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(absl::StrContains(ErrorMessage(r), "no route")) << r.body;
  r = c.Send(http::verb::get, "/v1/chat/completions");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.allow, "POST");
  r = c.Send(http::verb::post, "/v1/chat/completions", "{oops");
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(absl::StrContains(ErrorMessage(r), "not valid JSON"));
  // Still the same connection: a generation after the errors.
  r = c.Send(http::verb::post, "/v1/chat/completions",
             R"({"model":"tiny-r1","messages":[{"role":"user","content":"hi"}]})");
  EXPECT_EQ(r.status, 200);
  Json j = Json::parse(r.body, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.body;
  EXPECT_EQ(j["choices"][0]["message"]["content"], kAnswer);
  EXPECT_EQ(backend_->requests().back().max_new_tokens, 100);  // --max-tokens-default
  // A streamed answer, then another request on the same connection.
  r = c.Send(http::verb::post, "/v1/completions",
             R"({"model":"tiny-r1","prompt":"hi","stream":true})");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(absl::StrContains(r.body, "data: [DONE]\n\n")) << r.body;
  EXPECT_TRUE(absl::StartsWith(r.body, "id: 1\ndata: {")) << r.body;
  r = c.Send(http::verb::get, "/health");
  EXPECT_EQ(r.status, 200);
}

// vLLM's /tokenize and /detokenize: a chat's tokens are exactly the prompt a chat completion
// sends the backend, a text's decode back to it, and bad input is a 400 naming the field.
TEST_F(GatewayIntegrationTest, TokenizeCountsWhatAChatRequestSends) {
  RawClient c(server_->HttpPort());
  const std::string messages =
      R"("messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Why is the sky blue?"}])";
  RawResponse r = c.Send(http::verb::post, "/tokenize", absl::StrCat("{", messages, "}"));
  ASSERT_EQ(r.status, 200) << r.body;
  Json t = Json::parse(r.body, nullptr, false);
  ASSERT_FALSE(t.is_discarded()) << r.body;
  r = c.Send(http::verb::post, "/v1/chat/completions",
             absl::StrCat(R"({"model":"tiny-r1",)", messages, "}"));
  ASSERT_EQ(r.status, 200) << r.body;
  const Json chat = Json::parse(r.body, nullptr, false);
  EXPECT_EQ(t["tokens"], Json(backend_->requests().back().prompt_ids));
  EXPECT_EQ(t["count"], chat["usage"]["prompt_tokens"]);
  EXPECT_EQ(t["max_model_len"], server_->model().context_length);
  // Text without BOS round-trips through /detokenize.
  r = c.Send(http::verb::post, "/tokenize",
             R"({"model":"tiny-r1","prompt":"naïve café, 東京","add_special_tokens":false})");
  ASSERT_EQ(r.status, 200) << r.body;
  t = Json::parse(r.body, nullptr, false);
  r = c.Send(http::verb::post, "/detokenize", Json({{"tokens", t["tokens"]}}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body, nullptr, false)["prompt"], "naïve café, 東京");
  r = c.Send(http::verb::post, "/detokenize", R"({"tokens":[5,-1]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json::parse(r.body, nullptr, false)["error"]["param"], "tokens[1]") << r.body;
  r = c.Send(http::verb::get, "/tokenize");
  EXPECT_EQ(r.status, 405);
  r = c.Send(http::verb::post, "/tokenize", R"({"model":"other","prompt":"x"})");
  EXPECT_EQ(r.status, 404);
}

// echo with logprobs and n > 1: only choice 0 asks the backend to score the prompt (the others
// may then take the prefix cache), and every choice shows those scores.
TEST_F(GatewayIntegrationTest, ChoicesShareTheirPromptsScores) {
  RawClient c(server_->HttpPort());
  const std::vector<int32_t> prompt = {0, 100, 200, 300};
  const size_t before = backend_->requests().size();
  RawResponse r = c.Send(http::verb::post, "/v1/completions",
                         R"({"model":"tiny-r1","prompt":[0,100,200,300],"echo":true,"n":3,)"
                         R"("logprobs":1,"max_tokens":4})");
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<GenerationRequest> requests = backend_->requests();
  ASSERT_EQ(requests.size(), before + 3);
  int scored = 0;
  for (size_t i = before; i < requests.size(); ++i) scored += requests[i].prompt_logprobs ? 1 : 0;
  EXPECT_EQ(scored, 1);
  const Json j = Json::parse(r.body, nullptr, false);
  ASSERT_EQ(j["choices"].size(), 3u) << r.body;
  for (const Json& choice : j["choices"]) {
    const Json& lp = choice["logprobs"]["token_logprobs"];
    ASSERT_GE(lp.size(), prompt.size()) << choice.dump();
    EXPECT_TRUE(lp[0].is_null());
    for (size_t i = 1; i < prompt.size(); ++i) {
      EXPECT_EQ(lp[i].get<float>(), FakeGenerationBackend::FakePromptLogprob(i))
          << "choice " << choice["index"] << " token " << i;
    }
  }
}

TEST_F(GatewayIntegrationTest, PricesListTheServedModelAtTheDefaultTable) {
  RawClient c(server_->HttpPort());
  RawResponse r = c.Send(http::verb::get, "/v1/prices");
  ASSERT_EQ(r.status, 200) << r.body;
  // Exactly this shape and key order (clients may compare the text).
  EXPECT_EQ(r.body, R"({"object":"list","currency":"USD","data":[{"model":"tiny-r1",)"
                    R"("input_cache_hit_per_million":0.14,"input_cache_miss_per_million":0.55,)"
                    R"("output_per_million":2.19}]})");
  r = c.Send(http::verb::post, "/v1/prices", "{}");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.allow, "GET");
}

TEST(GatewayPriceTableTest, ServesTheTableFromThePriceTableFile) {
  const std::string path = ::testing::TempDir() + "/gateway_prices.json";
  {
    std::ofstream out(path);
    out << R"({"currency":"EUR","models":{"*":{"input_cache_hit_per_million":1,)"
           R"("input_cache_miss_per_million":2,"output_per_million":3},)"
           R"("tiny-r1":{"input_cache_hit_per_million":0.5,"input_cache_miss_per_million":0.25,)"
           R"("output_per_million":8}}})";
  }
  testing::FakeGenerationBackend backend({1}, 0);
  GatewayConfig config;
  config.model_dir = testing::TestModelDir();
  config.model_name = "tiny-r1";
  config.host = "127.0.0.1";
  config.backend = &backend;
  config.price_table_file = path;
  absl::StatusOr<std::unique_ptr<GatewayServer>> server = GatewayServer::Create(config);
  ASSERT_TRUE(server.ok()) << server.status();
  RawClient c((*server)->HttpPort());
  RawResponse r = c.Send(http::verb::get, "/v1/prices");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Json::parse(r.body, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.body;
  EXPECT_EQ(j["currency"], "EUR");
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["model"], "tiny-r1");
  EXPECT_EQ(j["data"][0]["input_cache_hit_per_million"], 0.5);
  EXPECT_EQ(j["data"][0]["input_cache_miss_per_million"], 0.25);
  EXPECT_EQ(j["data"][0]["output_per_million"], 8);

  // A bad file stops the gateway from starting, with the path in the message.
  {
    std::ofstream out(path);
    out << R"({"models":{"tiny-r1":{"input_cache_hit_per_million":1,)"
           R"("input_cache_miss_per_million":2,"output_per_million":3}}})";
  }
  absl::StatusOr<std::unique_ptr<GatewayServer>> bad = GatewayServer::Create(config);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), path)) << bad.status();
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "\"*\"")) << bad.status();
}

TEST_F(GatewayIntegrationTest, OversizedBodyIs413) {
  RawClient c(server_->HttpPort());
  // Only the header is sent: the server must refuse by the declared length.
  RawResponse r = c.SendRaw(absl::StrCat(
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Content-Length: ",
      kMaxBodyBytes + 1, "\r\n\r\n"));
  EXPECT_EQ(r.status, 413);
  EXPECT_TRUE(absl::StrContains(ErrorMessage(r), "exceeds")) << r.body;
}

TEST_F(GatewayIntegrationTest, AnswersExpectContinue) {
  RawClient c(server_->HttpPort());
  const std::string body = R"({"model":"tiny-r1","messages":[{"role":"user","content":"hi"}]})";
  RawResponse r = c.SendRaw(absl::StrCat(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
      "Content-Type: application/json\r\nContent-Length: ",
      body.size(), "\r\n\r\n"));
  EXPECT_EQ(r.status, 100);
  c.WriteRaw(body);
  r = c.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(absl::StrContains(r.body, kAnswer)) << r.body;
}

TEST_F(GatewayIntegrationTest, ServesThePlaygroundWithRevalidationAndSecurityHeaders) {
  RawClient c(server_->HttpPort());
  RawResponse r = c.Send(http::verb::get, "/");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers[http::field::content_type], "text/html; charset=utf-8");
  EXPECT_TRUE(absl::StrContains(r.body, "<script src=\"playground.js\" defer></script>"));
  EXPECT_TRUE(
      absl::StrContains(std::string(r.headers["Content-Security-Policy"]), "connect-src 'self'"));
  EXPECT_EQ(r.headers["X-Content-Type-Options"], "nosniff");
  const std::string etag(r.headers[http::field::etag]);
  ASSERT_FALSE(etag.empty());
  // Same connection: the script, then a revalidation that costs no body.
  r = c.Send(http::verb::get, "/playground.js?v=1");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers[http::field::content_type], "text/javascript; charset=utf-8");
  EXPECT_TRUE(absl::StrContains(r.body, "v1/chat/completions"));
  EXPECT_NE(std::string(r.headers[http::field::etag]), etag);
  RawResponse again =
      c.SendRaw(absl::StrCat("GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: ", etag, "\r\n\r\n"));
  EXPECT_EQ(again.status, 304);
  EXPECT_EQ(again.body, "");
  RawResponse stale = c.SendRaw("GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"old\"\r\n\r\n");
  EXPECT_EQ(stale.status, 200);
  EXPECT_FALSE(stale.body.empty());
  r = c.Send(http::verb::post, "/", "{}");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.allow, "GET, HEAD");
  r = c.Send(http::verb::get, "/../CMakeLists.txt");
  EXPECT_EQ(r.status, 404);
  r = c.Send(http::verb::get, "/health");
  EXPECT_EQ(r.status, 200);
}

// ---- gRPC Inference ----

TEST_F(GatewayIntegrationTest, GrpcInferenceStreamsReasoningAnswerAndUsage) {
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->GrpcPort()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::Inference::NewStub(channel);
  {
    grpc::ClientContext ctx;
    v1::ListModelsResponse models;
    ASSERT_TRUE(stub->ListModels(&ctx, v1::ListModelsRequest(), &models).ok());
    ASSERT_EQ(models.models_size(), 1);
    EXPECT_EQ(models.models(0).id(), "tiny-r1");
  }
  v1::InferenceRequest req;
  req.set_model("tiny-r1");
  v1::ChatMessage* m = req.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("Say hello.");
  req.set_max_tokens(32);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, req);
  std::string reasoning, content;
  std::vector<int32_t> ids;
  v1::InferenceResponse resp, last;
  int messages = 0;
  while (reader->Read(&resp)) {
    ++messages;
    reasoning += resp.reasoning_delta();
    content += resp.content_delta();
    ids.insert(ids.end(), resp.token_ids().begin(), resp.token_ids().end());
    last = resp;
  }
  grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GE(messages, 1);
  EXPECT_EQ(reasoning, kReasoning);
  EXPECT_EQ(content, kAnswer);
  EXPECT_EQ(ids, script_);
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(last.usage().completion_tokens(), static_cast<int32_t>(script_.size()));
  EXPECT_EQ(last.usage().reasoning_tokens(), reasoning_tokens_);
  EXPECT_EQ(last.usage().prompt_cache_hit_tokens(), kCached);
  EXPECT_EQ(last.usage().prompt_cache_miss_tokens(), last.usage().prompt_tokens() - kCached);
  EXPECT_EQ(backend_->requests().back().max_new_tokens, 32);
}

TEST_F(GatewayIntegrationTest, GrpcInferenceCarriesLogprobs) {
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", server_->GrpcPort()), grpc::InsecureChannelCredentials()));
  v1::InferenceRequest req;
  req.set_model("tiny-r1");
  req.set_prompt("Hello");
  req.mutable_sampling()->set_logprobs(true);
  req.mutable_sampling()->set_top_logprobs(2);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, req);
  std::vector<v1::TokenLogprob> logprobs;
  v1::InferenceResponse resp;
  while (reader->Read(&resp)) {
    logprobs.insert(logprobs.end(), resp.logprobs().begin(), resp.logprobs().end());
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(logprobs.size(), script_.size());
  for (size_t i = 0; i < logprobs.size(); ++i) {
    EXPECT_EQ(logprobs[i].token_id(), script_[i]);
    EXPECT_FLOAT_EQ(logprobs[i].logprob(), FakeGenerationBackend::FakeLogprob(i));
    ASSERT_EQ(logprobs[i].top_ids_size(), 2);
    EXPECT_EQ(logprobs[i].top_ids(1), script_[i] + 1);
  }
}

// n = 2 over one connection: both choices stream with their index; the client leaving cancels
// both generations (the fake backend holds each after its first chunk).
TEST_F(GatewayIntegrationTest, ClientLeavingCancelsEveryChoice) {
  asio::io_context ioc;
  asio::ip::tcp::socket sock(ioc);
  asio::ip::tcp::resolver resolver(ioc);
  asio::connect(sock, resolver.resolve("127.0.0.1", std::to_string(server_->HttpPort())));
  // A read that waits past this fails instead of hanging the test.
  timeval timeout{60, 0};
  setsockopt(sock.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  const std::string body =
      R"({"model":"tiny-r1","messages":[{"role":"user","content":"hi"}],"n":2,"stream":true,)"
      R"("max_tokens":77})";
  asio::write(sock, asio::buffer(absl::StrCat(
                        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                        "application/json\r\nContent-Length: ",
                        body.size(), "\r\n\r\n", body)));
  std::string got;
  char buf[4096];
  // Each choice sends one chunk of reasoning text, then its generation holds.
  auto deltas = [&got] {
    int n = 0;
    for (size_t at = got.find(R"("delta":{"reasoning_content")"); at != std::string::npos;
         at = got.find(R"("delta":{"reasoning_content")", at + 1)) {
      ++n;
    }
    return n;
  };
  while (deltas() < 2) {
    beast::error_code ec;
    const size_t n = sock.read_some(asio::buffer(buf), ec);
    if (ec) break;
    got.append(buf, n);
  }
  EXPECT_EQ(deltas(), 2) << got;
  EXPECT_TRUE(absl::StrContains(got, R"("finish_reason":null,"index":0,"logprobs":null)")) << got;
  EXPECT_TRUE(absl::StrContains(got, R"("finish_reason":null,"index":1,"logprobs":null)")) << got;
  sock.close();
  EXPECT_TRUE(backend_->WaitForCancels(2, absl::Seconds(30)));
  std::vector<GenerationRequest> requests = backend_->requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].request_id, requests[0].request_id + "-1");
}

// FIM (suffix), chat prefix completion (prefix, reasoning_content) and response_format over
// gRPC reach the backend exactly as the same request over HTTP does.
TEST_F(GatewayIntegrationTest, GrpcInferenceTakesSuffixPrefixAndResponseFormatAsHttpDoes) {
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", server_->GrpcPort()), grpc::InsecureChannelCredentials()));
  auto generate = [&](const v1::InferenceRequest& req) {
    grpc::ClientContext ctx;
    auto reader = stub->Generate(&ctx, req);
    v1::InferenceResponse resp;
    while (reader->Read(&resp)) {
    }
    return reader->Finish();
  };
  RawClient c(server_->HttpPort());
  auto http_request = [&](const char* path, const std::string& body) {
    RawResponse r = c.Send(http::verb::post, path, body);
    EXPECT_EQ(r.status, 200) << r.body;
    return backend_->requests().back();
  };

  // Fill in the middle.
  const GenerationRequest plain =
      http_request("/v1/completions", R"({"model":"tiny-r1","prompt":"def f(","max_tokens":4})");
  const GenerationRequest fim = http_request(
      "/v1/completions",
      R"({"model":"tiny-r1","prompt":"def f(","suffix":"\n  return 1","max_tokens":4})");
  ASSERT_NE(fim.prompt_ids, plain.prompt_ids);
  v1::InferenceRequest req;
  req.set_model("tiny-r1");
  req.set_prompt("def f(");
  req.set_suffix("\n  return 1");
  req.set_max_tokens(4);
  grpc::Status status = generate(req);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(backend_->requests().back().prompt_ids, fim.prompt_ids);

  // Chat prefix completion with the start of a thought.
  const GenerationRequest prefix = http_request(
      "/v1/chat/completions",
      R"({"model":"tiny-r1","max_tokens":4,"messages":[{"role":"user","content":"hi"},)"
      R"({"role":"assistant","content":"","prefix":true,"reasoning_content":"Let me see"}]})");
  req = v1::InferenceRequest();
  req.set_model("tiny-r1");
  req.set_max_tokens(4);
  v1::ChatMessage* m = req.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("hi");
  m = req.mutable_chat()->add_messages();
  m->set_role("assistant");
  m->set_prefix(true);
  m->set_reasoning_content("Let me see");
  status = generate(req);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(backend_->requests().back().prompt_ids, prefix.prompt_ids);

  // Structured output.
  const std::string schema =
      R"({"name":"answer","schema":{"type":"object","properties":{"n":{"type":"integer"}},)"
      R"("required":["n"]}})";
  const GenerationRequest structured = http_request(
      "/v1/chat/completions",
      absl::StrCat(R"({"model":"tiny-r1","max_tokens":4,"messages":[{"role":"user","content":)"
                   R"("hi"}],"response_format":{"type":"json_schema","json_schema":)",
                   schema, "}}"));
  ASSERT_FALSE(structured.response_schema.empty());
  req = v1::InferenceRequest();
  req.set_model("tiny-r1");
  req.set_max_tokens(4);
  m = req.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("hi");
  req.mutable_response_format()->set_type("json_schema");
  req.mutable_response_format()->set_json_schema(schema);
  status = generate(req);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(backend_->requests().back().response_schema, structured.response_schema);
  EXPECT_EQ(backend_->requests().back().constraint_after_token, structured.constraint_after_token);

  // logit_bias, sorted by token id as the HTTP API leaves it; out of the vocabulary, refused.
  const GenerationRequest biased = http_request(
      "/v1/completions",
      R"({"model":"tiny-r1","prompt":"hi","max_tokens":4,"logit_bias":{"300":-100,"7":2.5}})");
  ASSERT_EQ(biased.sampling.logit_bias.size(), 2u);
  req = v1::InferenceRequest();
  req.set_model("tiny-r1");
  req.set_prompt("hi");
  req.set_max_tokens(4);
  (*req.mutable_sampling()->mutable_logit_bias())[300] = -100;
  (*req.mutable_sampling()->mutable_logit_bias())[7] = 2.5;
  req.mutable_sampling()->set_temperature(1);
  status = generate(req);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(backend_->requests().back().sampling.logit_bias, biased.sampling.logit_bias);
  (*req.mutable_sampling()->mutable_logit_bias())[1 << 30] = 1;
  status = generate(req);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "logit_bias")) << status.error_message();

  // Bad input: the HTTP API's rules, as INVALID_ARGUMENT.
  const size_t before = backend_->requests().size();
  req.mutable_response_format()->set_json_schema("{not json");
  status = generate(req);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "json_schema")) << status.error_message();
  req.mutable_response_format()->set_type("xml");
  req.mutable_response_format()->clear_json_schema();
  status = generate(req);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req = v1::InferenceRequest();
  req.set_model("tiny-r1");
  req.mutable_prompt_ids()->add_ids(5);
  req.set_suffix("x");
  status = generate(req);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "suffix")) << status.error_message();
  req = v1::InferenceRequest();
  req.set_model("tiny-r1");
  m = req.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("hi");
  m->set_prefix(true);  // only an assistant's last message may be a prefix
  status = generate(req);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "prefix")) << status.error_message();
  EXPECT_EQ(backend_->requests().size(), before);  // none of them reached the backend
}

TEST_F(GatewayIntegrationTest, GrpcInferenceRejectsBadRequests) {
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", server_->GrpcPort()), grpc::InsecureChannelCredentials()));
  v1::InferenceRequest req;
  req.set_model("tiny-r1");
  req.mutable_prompt_ids()->add_ids(999999);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, req);
  v1::InferenceResponse resp;
  EXPECT_FALSE(reader->Read(&resp));
  grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "outside the vocabulary"));

  v1::InferenceRequest other;
  other.set_model("gpt-4");
  other.set_prompt("hi");
  grpc::ClientContext ctx2;
  auto reader2 = stub->Generate(&ctx2, other);
  EXPECT_FALSE(reader2->Read(&resp));
  EXPECT_EQ(reader2->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

// The sum of the samples of `name` whose labels include every one of `labels` (k="v" text), or
// -1 when there is none, from Prometheus text exposition.
double SampleValue(const std::string& text, const std::string& name,
                   const std::vector<std::string>& labels = {}) {
  double sum = 0;
  bool found = false;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, name + "{") && !absl::StartsWith(line, name + " ")) continue;
    bool all = true;
    for (const std::string& l : labels) all = all && absl::StrContains(line, l);
    if (!all) continue;
    double v = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) {
      sum += v;
      found = true;
    }
  }
  return found ? sum : -1;
}

std::string Scrape(int port) {
  RawClient c(port);
  return c.Send(http::verb::get, "/metrics").body;
}

TEST_F(GatewayIntegrationTest, MetricsCountTokensLatenciesCostAndCancellations) {
  ASSERT_GT(server_->MetricsPort(), 0);
  const std::string chat_body =
      R"({"model":"tiny-r1","messages":[{"role":"user","content":"hi"}]})";
  RawClient c(server_->HttpPort());
  RawResponse r = c.SendRaw(absl::StrCat(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Authorization: Bearer sk-secret-1\r\nContent-Length: ",
      std::string(chat_body).size(), "\r\n\r\n", chat_body));
  ASSERT_EQ(r.status, 200) << r.body;
  Json usage = Json::parse(r.body, nullptr, false)["usage"];
  r = c.Send(http::verb::post, "/v1/completions",
             R"({"model":"tiny-r1","prompt":"a prompt longer than the cached tokens","stream":true})");
  ASSERT_EQ(r.status, 200);
  r = c.Send(http::verb::get, "/v1/nope");
  ASSERT_EQ(r.status, 404);

  // A stream the client walks away from.
  {
    RawClient gone(server_->HttpPort());
    gone.WriteRaw(absl::StrCat(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
        "application/json\r\nContent-Length: ",
        std::string(R"({"model":"tiny-r1","stream":true,"max_tokens":77,"messages":[{"role":"user","content":"hold"}]})")
            .size(),
        "\r\n\r\n",
        R"({"model":"tiny-r1","stream":true,"max_tokens":77,"messages":[{"role":"user","content":"hold"}]})"));
    ASSERT_TRUE(backend_->WaitForCancels(0, absl::Seconds(1)));
    // Wait (bounded) until the stream is open, then close the connection.
    std::string text;
    for (int i = 0; i < 600; ++i) {
      text = Scrape(server_->MetricsPort());
      if (SampleValue(text, "moeserve_gateway_open_streams") == 1) break;
      absl::SleepFor(absl::Milliseconds(50));
    }
    ASSERT_EQ(SampleValue(text, "moeserve_gateway_open_streams"), 1) << text;
  }
  ASSERT_TRUE(backend_->WaitForCancels(1, absl::Seconds(30)));
  std::string text;
  for (int i = 0; i < 600; ++i) {
    text = Scrape(server_->MetricsPort());
    if (SampleValue(text, "moeserve_gateway_requests_cancelled_total") == 1) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  SCOPED_TRACE(text);
  EXPECT_EQ(SampleValue(text, "moeserve_gateway_requests_cancelled_total",
                        {"route=\"/v1/chat/completions\""}),
            1);
  EXPECT_EQ(SampleValue(text, "moeserve_gateway_open_streams"), 0);
  EXPECT_EQ(SampleValue(text, "moeserve_gateway_requests_total",
                        {"route=\"/v1/chat/completions\"", "code=\"200\"", "model=\"tiny-r1\""}),
            1);
  EXPECT_EQ(SampleValue(text, "moeserve_gateway_requests_total",
                        {"route=\"/v1/chat/completions\"", "code=\"499\""}),
            1);
  EXPECT_EQ(SampleValue(text, "moeserve_gateway_requests_total",
                        {"route=\"/v1/completions\"", "code=\"200\""}),
            1);
  EXPECT_EQ(SampleValue(text, "moeserve_gateway_requests_total",
                        {"route=\"other\"", "code=\"404\""}),
            1);
  // Reasoning tokens come only from the chat request (completions do not split); answer tokens
  // are the rest of both scripts, plus the held stream's first chunk (2 reasoning tokens).
  const int script = static_cast<int>(script_.size());
  EXPECT_EQ(SampleValue(text, "moeserve_gateway_reasoning_tokens_total"), reasoning_tokens_ + 2);
  EXPECT_EQ(SampleValue(text, "moeserve_gateway_answer_tokens_total"),
            (script - reasoning_tokens_) + script);
  EXPECT_EQ(SampleValue(text, "moeserve_gateway_prompt_cache_hit_tokens_total"), 3 * kCached);
  // Three generations saw a first token; two reached the answer.
  EXPECT_EQ(SampleValue(text, "moeserve_gateway_time_to_first_token_seconds_count"), 3);
  EXPECT_EQ(SampleValue(text, "moeserve_gateway_time_to_first_answer_token_seconds_count"), 2);
  EXPECT_GT(SampleValue(text, "moeserve_gateway_inter_token_latency_seconds_count"), 0);
  EXPECT_EQ(SampleValue(text, "moeserve_gateway_request_duration_seconds_count",
                        {"route=\"/v1/completions\""}),
            1);
  // Cost per hashed key, at the default prices: 0.14 hit, 0.55 miss, 2.19 output per million.
  const double prompt = usage["prompt_tokens"].get<double>();
  const double expected = (kCached * 0.14 + (prompt - kCached) * 0.55 + script * 2.19) / 1e6;
  const double cost = SampleValue(
      text, "moeserve_gateway_cost_total",
      {"api_key=\"sha256:07fd32658335c174\"", "currency=\"USD\"", "model=\"tiny-r1\""});
  EXPECT_NEAR(cost, expected, 1e-12);
  EXPECT_GT(SampleValue(text, "moeserve_gateway_cost_total", {"api_key=\"anonymous\""}), 0);
  EXPECT_FALSE(absl::StrContains(text, "sk-secret-1"));
}

TEST_F(GatewayIntegrationTest, GrpcClientCancelCancelsTheBackend) {
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", server_->GrpcPort()), grpc::InsecureChannelCredentials()));
  v1::InferenceRequest req;
  req.set_model("tiny-r1");
  req.set_prompt("hold on");
  req.set_max_tokens(FakeGenerationBackend::kHoldMaxTokens);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, req);
  v1::InferenceResponse resp;
  ASSERT_TRUE(reader->Read(&resp));  // the first chunk; then the fake hangs
  ctx.TryCancel();
  while (reader->Read(&resp)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(backend_->WaitForCancels(1, absl::Seconds(30)));
}

TEST_F(GatewayIntegrationTest, ShutdownCancelsGenerationsInFlight) {
  RawClient c(server_->HttpPort());
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", server_->GrpcPort()), grpc::InsecureChannelCredentials()));
  v1::InferenceRequest req;
  req.set_model("tiny-r1");
  req.set_prompt("hold on");
  req.set_max_tokens(FakeGenerationBackend::kHoldMaxTokens);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, req);
  v1::InferenceResponse resp;
  ASSERT_TRUE(reader->Read(&resp));
  server_->Shutdown();
  EXPECT_GE(backend_->cancels(), 1);
  while (reader->Read(&resp)) {
  }
  EXPECT_FALSE(reader->Finish().ok());
}

}  // namespace
}  // namespace moeserve::gateway
