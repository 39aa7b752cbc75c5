// The Batch API: multipart parsing, input validation, the state machine, the output lines
// (batch_format, multipart) and the runner (batch_manager) over the fake backend and an
// in-memory store.
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "gateway/batch_format.h"
#include "gateway/batch_manager.h"
#include "gateway/batch_store.h"
#include "gateway/multipart.h"
#include "gtest/gtest.h"
#include "tests/integration/gateway/fake_generation_backend.h"
#include "tests/unit/gateway/test_model.h"

namespace moeserve::gateway {
namespace {

using ojson = nlohmann::ordered_json;

// ---- multipart ----

std::string Form(const std::string& boundary, const std::vector<std::string>& parts) {
  std::string body;
  for (const std::string& p : parts) absl::StrAppend(&body, "--", boundary, "\r\n", p, "\r\n");
  absl::StrAppend(&body, "--", boundary, "--\r\n");
  return body;
}

TEST(MultipartTest, ParsesFieldsAndAFileWithCrlfInside) {
  const std::string body =
      Form("XyZ", {"Content-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch",
                   "Content-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
                   "Content-Type: application/jsonl\r\n\r\n{\"a\":1}\r\n{\"b\":2}\r\n"});
  absl::StatusOr<std::string> boundary = MultipartBoundary("multipart/form-data; boundary=\"XyZ\"");
  ASSERT_TRUE(boundary.ok()) << boundary.status();
  absl::StatusOr<std::vector<FormPart>> parts = ParseMultipart(body, *boundary, {});
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].name, "purpose");
  EXPECT_EQ((*parts)[0].body, "batch");
  EXPECT_FALSE((*parts)[0].has_filename);
  EXPECT_EQ((*parts)[1].filename, "in.jsonl");
  EXPECT_EQ((*parts)[1].content_type, "application/jsonl");
  EXPECT_EQ((*parts)[1].body, "{\"a\":1}\r\n{\"b\":2}\r\n");
}

TEST(MultipartTest, RejectsBadContentTypesAndBoundaries) {
  EXPECT_FALSE(MultipartBoundary("application/json").ok());
  EXPECT_FALSE(MultipartBoundary("multipart/form-data").ok());
  EXPECT_FALSE(MultipartBoundary("multipart/form-data; boundary=").ok());
  EXPECT_FALSE(MultipartBoundary("multipart/form-data; boundary=a{b}").ok());
  EXPECT_FALSE(
      MultipartBoundary(absl::StrCat("multipart/form-data; boundary=", std::string(71, 'a'))).ok());
  EXPECT_TRUE(MultipartBoundary("Multipart/Form-Data; charset=x; boundary=----abc").ok());
}

TEST(MultipartTest, RejectsBodiesThatDoNotFollowTheBoundary) {
  const std::string good = Form("b", {"Content-Disposition: form-data; name=\"f\"\r\n\r\nx"});
  EXPECT_TRUE(ParseMultipart(good, "b", {}).ok());
  // Another boundary than the header's.
  EXPECT_EQ(ParseMultipart(good, "other", {}).status().code(), absl::StatusCode::kInvalidArgument);
  // No closing boundary (a truncated upload).
  EXPECT_EQ(ParseMultipart("--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nxyz", "b", {})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // Headers that never end.
  EXPECT_FALSE(ParseMultipart("--b\r\nContent-Disposition: form-data; name=\"f\"", "b", {}).ok());
  // A part without Content-Disposition, or without a name.
  EXPECT_FALSE(ParseMultipart(Form("b", {"Content-Type: text/plain\r\n\r\nx"}), "b", {}).ok());
  EXPECT_FALSE(
      ParseMultipart(Form("b", {"Content-Disposition: form-data\r\n\r\nx"}), "b", {}).ok());
  EXPECT_FALSE(ParseMultipart(Form("b", {"\r\nx"}), "b", {}).ok());
  EXPECT_FALSE(ParseMultipart("", "b", {}).ok());
}

TEST(MultipartTest, AHugePartIsOutOfRangeAndTooManyPartsInvalid) {
  MultipartLimits limits;
  limits.max_part_bytes = 1000;
  const std::string big =
      Form("b", {"Content-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n" +
                 std::string(1001, 'x')});
  EXPECT_EQ(ParseMultipart(big, "b", limits).status().code(), absl::StatusCode::kOutOfRange);
  limits.max_part_bytes = 1001;
  EXPECT_TRUE(ParseMultipart(big, "b", limits).ok());
  std::vector<std::string> many(17, "Content-Disposition: form-data; name=\"f\"\r\n\r\nx");
  EXPECT_EQ(ParseMultipart(Form("b", many), "b", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  limits.max_header_bytes = 10;
  EXPECT_FALSE(ParseMultipart(big, "b", limits).ok());
}

// ---- input validation ----

std::string Line(const std::string& id, const std::string& url = "/v1/chat/completions",
                 const std::string& body = R"({"model":"m","messages":[]})") {
  return absl::StrCat(R"({"custom_id":")", id, R"(","method":"POST","url":")", url, R"(","body":)",
                      body, "}");
}

TEST(BatchInputTest, AcceptsValidLinesAndSkipsBlankOnes) {
  BatchInput in =
      ParseBatchInput(absl::StrCat(Line("a"), "\n\n", Line("b"), "\n"), "/v1/chat/completions", 10);
  EXPECT_TRUE(in.errors.empty());
  ASSERT_EQ(in.requests.size(), 2u);
  EXPECT_EQ(in.requests[1].custom_id, "b");
  EXPECT_EQ(in.requests[1].line, 3);
  // The body as written: key order kept (a schema's properties are generated in their order).
  EXPECT_EQ(in.requests[0].body, R"({"model":"m","messages":[]})");
}

TEST(BatchInputTest, NamesEveryBadLine) {
  const std::string file = absl::StrJoin(
      {Line("a"), std::string("not json"), std::string(R"({"method":"POST"})"), Line("a"),
       Line("c", "/v1/completions"), Line("d", "/v1/chat/completions", "[1]"),
       std::string(R"({"custom_id":"e","method":"GET","url":"/v1/chat/completions","body":{}})"),
       std::string(R"({"custom_id":7,"method":"POST"})")},
      "\n");
  BatchInput in = ParseBatchInput(file, "/v1/chat/completions", 10);
  std::map<int64_t, std::string> codes;
  for (const BatchLineError& e : in.errors) codes[e.line] = e.code;
  EXPECT_EQ(codes, (std::map<int64_t, std::string>{{2, "invalid_json_line"},
                                                   {3, "missing_required_parameter"},
                                                   {4, "duplicate_custom_id"},
                                                   {5, "invalid_url"},
                                                   {6, "invalid_type"},
                                                   {7, "invalid_method"},
                                                   {8, "invalid_type"}}));
  const ojson errors = BatchErrorsJson(in.errors);
  EXPECT_EQ(errors["object"], "list");
  EXPECT_EQ(errors["data"][0]["line"], 2);
  EXPECT_EQ(errors["data"][1]["param"], "custom_id");
}

TEST(BatchInputTest, ABodyTheApiWouldRefuseIsNotALineError) {
  // A bad temperature is the request's own 400, in the error file, as OpenAI does.
  BatchInput in = ParseBatchInput(Line("a", "/v1/chat/completions", R"({"temperature":"hot"})"),
                                  "/v1/chat/completions", 10);
  EXPECT_TRUE(in.errors.empty());
  EXPECT_EQ(in.requests.size(), 1u);
}

TEST(BatchInputTest, EmptyFilesAndTooManyRequestsFailTheFile) {
  BatchInput empty = ParseBatchInput("\n  \n", "/v1/completions", 10);
  ASSERT_EQ(empty.errors.size(), 1u);
  EXPECT_EQ(empty.errors[0].code, "empty_file");
  BatchInput many = ParseBatchInput(absl::StrCat(Line("a"), "\n", Line("b"), "\n", Line("c")),
                                    "/v1/chat/completions", 2);
  ASSERT_EQ(many.errors.size(), 1u);
  EXPECT_EQ(many.errors[0].code, "too_many_tasks");
}

TEST(BatchInputTest, ReportsAtMostAHundredLineErrors) {
  std::string file;
  for (int i = 0; i < 150; ++i) absl::StrAppend(&file, "x\n");
  const ojson errors = BatchErrorsJson(ParseBatchInput(file, "/v1/completions", 10).errors);
  ASSERT_EQ(errors["data"].size(), kMaxReportedLineErrors + 1);
  EXPECT_EQ(errors["data"].back()["code"], "too_many_errors");
}

// ---- state machine and formats ----

TEST(BatchStateTest, FollowsOpenAisLifecycleAndStampsTimes) {
  ojson b = NewBatchJson("batch_1", "/v1/completions", "file-1", "24h", 100, 200, ojson::object());
  EXPECT_EQ(b["status"], "validating");
  ASSERT_TRUE(TransitionBatch(&b, BatchStatus::kInProgress, 101).ok());
  EXPECT_EQ(b["in_progress_at"], 101);
  EXPECT_EQ(TransitionBatch(&b, BatchStatus::kCompleted, 102).code(),
            absl::StatusCode::kFailedPrecondition);  // finalizing first
  EXPECT_EQ(b["status"], "in_progress");
  ASSERT_TRUE(TransitionBatch(&b, BatchStatus::kFinalizing, 103).ok());
  ASSERT_TRUE(TransitionBatch(&b, BatchStatus::kCompleted, 104).ok());
  EXPECT_EQ(b["completed_at"], 104);
  for (BatchStatus to : {BatchStatus::kCancelling, BatchStatus::kInProgress, BatchStatus::kFailed,
                         BatchStatus::kExpired}) {
    EXPECT_FALSE(TransitionBatch(&b, to, 105).ok()) << BatchStatusName(to);
  }
  EXPECT_TRUE(CanTransition(BatchStatus::kValidating, BatchStatus::kFailed));
  EXPECT_TRUE(CanTransition(BatchStatus::kInProgress, BatchStatus::kCancelling));
  EXPECT_TRUE(CanTransition(BatchStatus::kCancelling, BatchStatus::kCancelled));
  EXPECT_FALSE(CanTransition(BatchStatus::kCancelling, BatchStatus::kCompleted));
  EXPECT_FALSE(CanTransition(BatchStatus::kFailed, BatchStatus::kInProgress));
  for (const char* name : {"validating", "failed", "in_progress", "finalizing", "completed",
                           "expired", "cancelling", "cancelled"}) {
    ASSERT_TRUE(ParseBatchStatus(name).has_value()) << name;
    EXPECT_STREQ(BatchStatusName(*ParseBatchStatus(name)), name);
  }
  EXPECT_FALSE(ParseBatchStatus("done").has_value());
}

TEST(BatchFormatTest, OutputAndErrorLinesHaveOpenAisShape) {
  const ojson ok = BatchResponseLine("batch_req_1", "c1", 200, "chatcmpl-1", R"({"x":1})");
  EXPECT_EQ(ok.dump(), R"({"id":"batch_req_1","custom_id":"c1","response":{"status_code":200,)"
                       R"("request_id":"chatcmpl-1","body":{"x":1}},"error":null})");
  const ojson expired = BatchErrorLine("batch_req_2", "c2", "batch_expired", "late");
  EXPECT_EQ(expired.dump(), R"({"id":"batch_req_2","custom_id":"c2","response":null,)"
                            R"("error":{"code":"batch_expired","message":"late"}})");
}

TEST(BatchFormatTest, CreateRequestIsChecked) {
  EXPECT_TRUE(ParseBatchCreateRequest(
                  R"({"input_file_id":"f","endpoint":"/v1/completions","completion_window":"24h",
                      "metadata":{"k":"v"}})")
                  .ok());
  for (const char* bad :
       {R"({"endpoint":"/v1/completions","completion_window":"24h"})",
        R"({"input_file_id":"f","endpoint":"/v1/embeddings","completion_window":"24h"})",
        R"({"input_file_id":"f","endpoint":"/v1/completions","completion_window":"1h"})",
        R"({"input_file_id":1,"endpoint":"/v1/completions","completion_window":"24h"})",
        R"({"input_file_id":"f","endpoint":"/v1/completions","completion_window":"24h",
            "metadata":{"k":1}})",
        "[]", "nope"}) {
    EXPECT_EQ(ParseBatchCreateRequest(bad).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_TRUE(CheckUploadPurpose("batch").ok());
  EXPECT_FALSE(CheckUploadPurpose("fine-tune").ok());
  EXPECT_FALSE(CheckUploadPurpose("").ok());
}

// ---- the manager ----

// A store that forwards to one the test keeps, so that a second manager finds the first's state
// (a gateway restart over the same Redis).
class SharedStore final : public BatchStore {
 public:
  explicit SharedStore(BatchStore* s) : s_(s) {}
  absl::Status Set(absl::string_view k, absl::string_view v) override { return s_->Set(k, v); }
  absl::StatusOr<std::optional<std::string>> Get(absl::string_view k) override {
    return s_->Get(k);
  }
  absl::StatusOr<std::vector<std::optional<std::string>>> GetMany(
      const std::vector<std::string>& k) override {
    return s_->GetMany(k);
  }
  absl::Status Delete(absl::string_view k) override { return s_->Delete(k); }
  absl::Status HashSet(absl::string_view k, absl::string_view f, absl::string_view v) override {
    return s_->HashSet(k, f, v);
  }
  absl::StatusOr<std::map<std::string, std::string>> HashGetAll(absl::string_view k) override {
    return s_->HashGetAll(k);
  }
  absl::Status SetAdd(absl::string_view k, absl::string_view m) override {
    return s_->SetAdd(k, m);
  }
  absl::Status SetRemove(absl::string_view k, absl::string_view m) override {
    return s_->SetRemove(k, m);
  }
  absl::StatusOr<std::vector<std::string>> SetMembers(absl::string_view k) override {
    return s_->SetMembers(k);
  }
  std::string Describe() const override { return "shared"; }

 private:
  BatchStore* s_;
};

// Passes requests on with max_new_tokens 5, so a request the fake would hold (kHoldMaxTokens)
// completes: the same input file after a "restart".
class NoHoldBackend final : public GenerationBackend {
 public:
  explicit NoHoldBackend(GenerationBackend* inner) : inner_(inner) {}
  GenerationCallPtr Start(GenerationRequest request, GenerationCallbacks callbacks) override {
    request.max_new_tokens = 5;
    return inner_->Start(std::move(request), std::move(callbacks));
  }

 private:
  GenerationBackend* inner_;
};

class BatchManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::LoadTestModel("tiny");
    ASSERT_NE(model_, nullptr);
    store_ = NewMemoryBatchStore();
  }

  std::unique_ptr<BatchManager> NewManager(GenerationBackend* backend, int concurrency = 2,
                                           BatchOptions options = BatchOptions()) {
    options.concurrency = concurrency;
    options.poll = absl::Milliseconds(5);
    options.max_file_bytes = 4096;
    auto m = std::make_unique<BatchManager>(std::make_unique<SharedStore>(store_.get()),
                                            model_.get(), backend, &clock_, options);
    EXPECT_TRUE(m->Start().ok());
    return m;
  }

  std::string Upload(BatchManager& m, const std::string& content, const std::string& owner = "") {
    absl::StatusOr<ojson> f = m.UploadFile(owner, "batch", "in.jsonl", content);
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? (*f)["id"].get<std::string>() : "";
  }

  std::string Create(BatchManager& m, const std::string& file, const std::string& endpoint,
                     const std::string& owner = "") {
    absl::StatusOr<ojson> b = m.CreateBatch(
        owner, absl::StrCat(R"({"input_file_id":")", file, R"(","endpoint":")", endpoint,
                            R"(","completion_window":"24h","metadata":{"job":"t"}})"));
    EXPECT_TRUE(b.ok()) << b.status();
    if (!b.ok()) return "";
    EXPECT_EQ((*b)["status"], "validating");
    EXPECT_EQ((*b)["metadata"]["job"], "t");
    return (*b)["id"].get<std::string>();
  }

  // Polls (bounded, no assertion on time) until the batch's status is `status`.
  ojson WaitFor(BatchManager& m, const std::string& id, const std::string& status,
                const std::string& owner = "") {
    ojson last;
    for (int i = 0; i < 2000; ++i) {
      absl::StatusOr<ojson> b = m.GetBatch(owner, id);
      if (b.ok()) {
        last = *b;
        if (last["status"] == status) return last;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    ADD_FAILURE() << "batch " << id << " never became " << status << ": " << last.dump();
    return last;
  }

  // custom_id -> the line, over a JSONL file.
  std::map<std::string, ojson> Lines(BatchManager& m, const ojson& file_id) {
    std::map<std::string, ojson> out;
    if (!file_id.is_string()) return out;
    absl::StatusOr<std::string> text = m.FileContent("", file_id.get<std::string>());
    EXPECT_TRUE(text.ok()) << text.status();
    if (!text.ok()) return out;
    for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
      ojson j = ojson::parse(line);
      EXPECT_FALSE(out.count(j["custom_id"].get<std::string>())) << "twice: " << line;
      out[j["custom_id"].get<std::string>()] = j;
    }
    return out;
  }

  RealClock clock_;
  std::unique_ptr<ModelContext> model_;
  BatchStorePtr store_;
};

TEST_F(BatchManagerTest, RunsEveryRequestAtBatchPriorityAndWritesOutputAndErrorFiles) {
  testing::FakeGenerationBackend backend({72, 101, 108}, 0);
  auto m = NewManager(&backend);
  const std::string file = Upload(
      *m, absl::StrJoin({Line("a", "/v1/chat/completions",
                              R"({"model":"tiny","messages":[{"role":"user","content":"hi"}]})"),
                         Line("b", "/v1/chat/completions",
                              R"({"model":"tiny","messages":[{"role":"user","content":"x"}],)"
                              R"("n":2,"priority":1000})"),
                         Line("bad", "/v1/chat/completions",
                              R"({"model":"tiny","messages":[],"temperature":"hot"})")},
                        "\n"));
  const std::string id = Create(*m, file, "/v1/chat/completions");
  const ojson done = WaitFor(*m, id, "completed");
  EXPECT_EQ(done["request_counts"], ojson({{"total", 3}, {"completed", 2}, {"failed", 1}}));
  for (const char* stamp : {"in_progress_at", "finalizing_at", "completed_at"}) {
    EXPECT_TRUE(done[stamp].is_number()) << stamp;
  }
  const auto out = Lines(*m, done["output_file_id"]);
  ASSERT_EQ(out.size(), 2u);
  const ojson& a = out.at("a");
  EXPECT_EQ(a["response"]["status_code"], 200);
  EXPECT_EQ(a["response"]["body"]["object"], "chat.completion");
  EXPECT_EQ(a["response"]["body"]["id"], a["response"]["request_id"]);
  EXPECT_TRUE(a["error"].is_null());
  EXPECT_EQ(out.at("b")["response"]["body"]["choices"].size(), 2u);
  const auto errors = Lines(*m, done["error_file_id"]);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors.at("bad")["response"]["status_code"], 400);
  EXPECT_TRUE(errors.at("bad")["response"]["body"]["error"]["message"].is_string());
  // 1 + 2 choices reached the backend, every one at the batch priority.
  ASSERT_EQ(backend.requests().size(), 3u);
  for (const GenerationRequest& r : backend.requests()) EXPECT_EQ(r.priority, kMaxPriority);
  // The output files are listed with their purposes.
  absl::StatusOr<ojson> outputs = m->ListFiles("", "batch_output", 100, "");
  ASSERT_TRUE(outputs.ok());
  EXPECT_EQ((*outputs)["data"].size(), 1u);
}

TEST_F(BatchManagerTest, AnInvalidInputFileFailsTheBatchNamingTheLines) {
  testing::FakeGenerationBackend backend({72}, 0);
  auto m = NewManager(&backend);
  const std::string file = Upload(*m, absl::StrCat(Line("a"), "\n{oops\n", Line("a")));
  const ojson failed = WaitFor(*m, Create(*m, file, "/v1/chat/completions"), "failed");
  ASSERT_EQ(failed["errors"]["data"].size(), 2u);
  EXPECT_EQ(failed["errors"]["data"][0]["line"], 2);
  EXPECT_EQ(failed["errors"]["data"][1]["code"], "duplicate_custom_id");
  EXPECT_TRUE(failed["failed_at"].is_number());
  EXPECT_TRUE(backend.requests().empty());
}

TEST_F(BatchManagerTest, CancelStopsRequestsInFlightAndKeepsWhatCompleted) {
  testing::FakeGenerationBackend backend({72, 101}, 0);
  auto m = NewManager(&backend, 1);
  // The first request completes; the second holds (max_tokens 77) until cancelled.
  const std::string file = Upload(
      *m, absl::StrJoin(
              {Line("a", "/v1/completions", R"({"model":"tiny","prompt":"a"})"),
               Line("b", "/v1/completions", R"({"model":"tiny","prompt":"b","max_tokens":77})"),
               Line("c", "/v1/completions", R"({"model":"tiny","prompt":"c"})")},
              "\n"));
  const std::string id = Create(*m, file, "/v1/completions");
  for (int i = 0; i < 2000 && backend.requests().size() < 2; ++i) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(backend.requests().size(), 2u);
  absl::StatusOr<ojson> cancelling = m->CancelBatch("", id);
  ASSERT_TRUE(cancelling.ok()) << cancelling.status();
  EXPECT_TRUE((*cancelling)["status"] == "cancelling" || (*cancelling)["status"] == "cancelled");
  const ojson cancelled = WaitFor(*m, id, "cancelled");
  EXPECT_TRUE(cancelled["cancelling_at"].is_number());
  EXPECT_EQ(cancelled["request_counts"]["completed"], 1);
  EXPECT_EQ(Lines(*m, cancelled["output_file_id"]).count("a"), 1u);
  EXPECT_EQ(backend.requests().size(), 2u);  // c never ran
  EXPECT_EQ(m->CancelBatch("", id).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BatchManagerTest, ARestartResumesWithoutRunningAnsweredRequestsAgain) {
  testing::FakeGenerationBackend first({72}, 0);
  std::string id;
  {
    auto m = NewManager(&first, 1);
    const std::string file = Upload(
        *m, absl::StrJoin(
                {Line("a", "/v1/completions", R"({"model":"tiny","prompt":"a"})"),
                 Line("b", "/v1/completions", R"({"model":"tiny","prompt":"b","max_tokens":77})"),
                 Line("c", "/v1/completions", R"({"model":"tiny","prompt":"c"})")},
                "\n"));
    id = Create(*m, file, "/v1/completions");
    for (int i = 0; i < 2000 && first.requests().size() < 2; ++i) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    ASSERT_EQ(first.requests().size(), 2u);
    // The gateway stops with "b" in flight: it is cancelled, not stored.
  }
  testing::FakeGenerationBackend second({72}, 0);
  NoHoldBackend no_hold(&second);
  auto m = NewManager(&no_hold, 1);
  const ojson done = WaitFor(*m, id, "completed");
  // Only b and c ran again; a's stored result was kept.
  ASSERT_EQ(second.requests().size(), 2u);
  EXPECT_EQ(done["request_counts"], ojson({{"total", 3}, {"completed", 3}, {"failed", 0}}));
  const auto out = Lines(*m, done["output_file_id"]);
  EXPECT_EQ(out.size(), 3u);
}

TEST_F(BatchManagerTest, ObjectsBelongToTheirOwner) {
  testing::FakeGenerationBackend backend({72}, 0);
  auto m = NewManager(&backend);
  const std::string file = Upload(*m, Line("a"), "alice");
  EXPECT_TRUE(m->GetFile("alice", file).ok());
  EXPECT_EQ(m->GetFile("bob", file).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m->FileContent("bob", file).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m->DeleteFile("bob", file).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m->CreateBatch("bob", absl::StrCat(R"({"input_file_id":")", file,
                                               R"(","endpoint":"/v1/chat/completions",)"
                                               R"("completion_window":"24h"})"))
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  const std::string id = Create(*m, file, "/v1/chat/completions", "alice");
  EXPECT_EQ(m->GetBatch("bob", id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m->CancelBatch("bob", id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*m->ListBatches("bob", 20, ""))["data"].size(), 0u);
  EXPECT_EQ((*m->ListBatches("alice", 20, ""))["data"].size(), 1u);
  EXPECT_EQ((*m->ListFiles("bob", "", 100, ""))["data"].size(), 0u);
}

// Completed requests are charged to the batch's owner (choices summed); refused ones are not.
TEST_F(BatchManagerTest, CompletedRequestsReportTheirUsageToTheOwner) {
  testing::FakeGenerationBackend backend({72, 101, 108}, 0);
  absl::Mutex mu;
  std::vector<std::pair<std::string, UsageInfo>> charged;
  BatchOptions options;
  options.on_usage = [&](const std::string& owner, const UsageInfo& usage) {
    absl::MutexLock lock(&mu);
    charged.emplace_back(owner, usage);
  };
  auto m = NewManager(&backend, 2, options);
  const std::string file = Upload(
      *m, absl::StrJoin({Line("one", "/v1/chat/completions",
                              R"({"model":"tiny","messages":[{"role":"user","content":"hi"}]})"),
                         Line("two", "/v1/chat/completions",
                              R"({"model":"tiny","messages":[{"role":"user","content":"hi"}],)"
                              R"("n":2})"),
                         Line("bad", "/v1/chat/completions",
                              R"({"model":"tiny","messages":[],"temperature":"hot"})")},
                        "\n"),
      "alice");
  WaitFor(*m, Create(*m, file, "/v1/chat/completions", "alice"), "completed", "alice");
  absl::MutexLock lock(&mu);
  ASSERT_EQ(charged.size(), 2u);
  std::vector<int32_t> completion;
  for (const auto& [owner, usage] : charged) {
    EXPECT_EQ(owner, "alice");
    EXPECT_GT(usage.prompt_tokens, 0);
    completion.push_back(usage.completion_tokens);
  }
  std::sort(completion.begin(), completion.end());
  EXPECT_EQ(completion, (std::vector<int32_t>{3, 6}));  // 3 tokens per choice
}

TEST_F(BatchManagerTest, UploadsAreCheckedAndListsPage) {
  testing::FakeGenerationBackend backend({72}, 0);
  auto m = NewManager(&backend);
  EXPECT_EQ(m->UploadFile("", "batch", "x", std::string(4097, 'x')).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(m->UploadFile("", "batch", "x", "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->UploadFile("", "batch", "", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m->UploadFile("", "assistants", "x", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(Upload(*m, Line("a")));
  absl::StatusOr<ojson> page = m->ListFiles("", "batch", 2, "");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ((*page)["data"].size(), 2u);
  EXPECT_TRUE((*page)["has_more"].get<bool>());
  absl::StatusOr<ojson> rest = m->ListFiles("", "batch", 2, (*page)["last_id"]);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ((*rest)["data"].size(), 1u);
  EXPECT_FALSE((*rest)["has_more"].get<bool>());
  EXPECT_FALSE(m->ListFiles("", "", 0, "").ok());
  EXPECT_FALSE(m->ListBatches("", 101, "").ok());
  absl::StatusOr<ojson> deleted = m->DeleteFile("", ids[0]);
  ASSERT_TRUE(deleted.ok());
  EXPECT_TRUE((*deleted)["deleted"].get<bool>());
  EXPECT_EQ(m->GetFile("", ids[0]).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m->CreateBatch("", R"({"input_file_id":"file-none","endpoint":"/v1/completions",
                                   "completion_window":"24h"})")
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace moeserve::gateway
