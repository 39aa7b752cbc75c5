#include "gateway/batch_manager.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/http_status.h"
#include "common/log.h"
#include "gateway/openai_format.h"
#include "gateway/output_assembler.h"

namespace moeserve::gateway {
namespace {

using ojson = nlohmann::ordered_json;

// Redis keys (docs/DESIGN-NOTES.md, "Batch API").
constexpr char kFilesIndex[] = "moeserve:batch:files";
constexpr char kBatchesIndex[] = "moeserve:batch:batches";
constexpr char kFilePrefix[] = "moeserve:batch:file:";
constexpr char kBatchPrefix[] = "moeserve:batch:batch:";

std::string FileKey(absl::string_view id) { return absl::StrCat(kFilePrefix, id); }
std::string ContentKey(absl::string_view id) { return absl::StrCat(kFilePrefix, id, ":content"); }
std::string BatchKey(absl::string_view id) { return absl::StrCat(kBatchPrefix, id); }
std::string ResultsKey(absl::string_view id) { return absl::StrCat(kBatchPrefix, id, ":results"); }

// A stored record: who owns it and the OpenAI object.
std::string RecordText(const std::string& owner, const ojson& object) {
  return ojson{{"owner", owner}, {"object", object}}.dump(-1, ' ', false,
                                                          ojson::error_handler_t::replace);
}

std::string Dump(const ojson& j) { return j.dump(-1, ' ', false, ojson::error_handler_t::replace); }

// Results are stored per custom_id as "1<line>" (a 2xx response) or "0<line>" (an error).
constexpr char kOk = '1';

}  // namespace

// One batch request in flight: its choices' output, assembled as the backend streams it.
struct BatchManager::Run {
  std::string batch_id;
  std::string custom_id;
  std::string line_id;
  ResponseMeta meta;
  absl::Mutex mu;
  std::vector<OutputAssembler> outputs ABSL_GUARDED_BY(mu);
  std::vector<TextDelta> texts ABSL_GUARDED_BY(mu);
  std::vector<GenerationCallPtr> calls ABSL_GUARDED_BY(mu);
  int remaining ABSL_GUARDED_BY(mu) = 0;
  absl::Status status ABSL_GUARDED_BY(mu);
  bool cancelled ABSL_GUARDED_BY(mu) = false;

  // Cancels every choice. The calls are cancelled outside `mu`: a backend may run on_done from
  // inside Cancel().
  void Cancel() {
    std::vector<GenerationCallPtr> to_cancel;
    {
      absl::MutexLock lock(&mu);
      cancelled = true;
      to_cancel = calls;
    }
    for (const GenerationCallPtr& c : to_cancel) {
      if (c != nullptr) c->Cancel();
    }
  }
};

// A batch the runner works on (not terminal).
struct BatchManager::Active {
  std::string id;
  std::string owner;
  ojson object;
  Endpoint endpoint = Endpoint::kChat;
  bool loaded = false;  // lines read from the input file
  std::vector<BatchRequestLine> lines;
  size_t next = 0;                        // the next line to consider
  std::vector<size_t> retry;              // lines whose result could not be stored
  absl::flat_hash_set<std::string> done;  // custom_ids with a stored result
  std::map<std::string, std::shared_ptr<Run>> running;
  bool cancel_requested = false;
  bool expiring = false;
};

BatchManager::BatchManager(BatchStorePtr store, const ModelContext* model,
                           GenerationBackend* backend, const Clock* clock, BatchOptions options)
    : store_(std::move(store)),
      model_(model),
      backend_(backend),
      clock_(clock),
      options_(options),
      rng_(std::random_device{}()) {}

BatchManager::~BatchManager() { Shutdown(); }

std::string BatchManager::NewId(absl::string_view prefix) {
  absl::MutexLock lock(&id_mu_);
  return absl::StrCat(prefix, absl::Hex(rng_(), absl::kZeroPad16),
                      absl::Hex(rng_() >> 32, absl::kZeroPad8));
}

int64_t BatchManager::NowSeconds() const { return absl::ToUnixSeconds(clock_->Now()); }

absl::Status BatchManager::Start() {
  absl::StatusOr<std::vector<std::string>> ids = store_->SetMembers(kBatchesIndex);
  if (!ids.ok()) return ids.status();
  std::vector<std::string> keys;
  for (const std::string& id : *ids) keys.push_back(BatchKey(id));
  absl::StatusOr<std::vector<std::optional<std::string>>> records = store_->GetMany(keys);
  if (!records.ok()) return records.status();
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < ids->size(); ++i) {
      if (!(*records)[i]) continue;
      const ojson record = ojson::parse(*(*records)[i], nullptr, false);
      if (record.is_discarded() || !record.contains("object")) continue;
      absl::StatusOr<BatchStatus> status = StatusOf(record["object"]);
      if (!status.ok() || IsTerminal(*status)) continue;
      auto batch = std::make_shared<Active>();
      batch->id = (*ids)[i];
      batch->owner = record.value("owner", "");
      batch->object = record["object"];
      batch->endpoint = batch->object.value("endpoint", "") == "/v1/completions"
                            ? Endpoint::kCompletion
                            : Endpoint::kChat;
      if (*status != BatchStatus::kValidating) {
        if (absl::Status s = LoadLines(*batch); !s.ok()) {
          LogLine("W", absl::StrCat("batch ", batch->id, ": cannot resume: ", s.message()));
          continue;
        }
      }
      batch->cancel_requested = *status == BatchStatus::kCancelling;
      LogLine("I", absl::StrCat("batch ", batch->id, " resumed (", BatchStatusName(*status),
                                "): ", batch->done.size(), " of ", batch->lines.size(),
                                " requests already answered"));
      active_.push_back(std::move(batch));
    }
    std::sort(active_.begin(), active_.end(), [](const auto& a, const auto& b) {
      return a->object.value("created_at", int64_t{0}) < b->object.value("created_at", int64_t{0});
    });
  }
  started_ = true;
  runner_ = std::thread([this] { RunnerLoop(); });
  return absl::OkStatus();
}

void BatchManager::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  {
    absl::MutexLock lock(&done_mu_);
    stop_ = true;
  }
  if (runner_.joinable()) runner_.join();
  {
    absl::MutexLock lock(&mu_);
    for (const auto& batch : active_) {
      for (auto& [id, run] : batch->running) run->Cancel();
    }
  }
  absl::MutexLock lock(&done_mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(done_mu_) { return outstanding_ == 0; };
  done_mu_.AwaitWithTimeout(absl::Condition(&idle), absl::Seconds(30));
}

void BatchManager::Wake() {
  absl::MutexLock lock(&done_mu_);
  wake_ = true;
}

// ---- files ----

absl::Status BatchManager::PutFile(const std::string& id, const std::string& owner,
                                   const std::string& purpose, const std::string& filename,
                                   const std::string& content) {
  const ojson object =
      FileObjectJson(id, static_cast<int64_t>(content.size()), NowSeconds(), filename, purpose);
  // Content first and the index last: a crash in between leaves no listed file without bytes.
  if (absl::Status s = store_->Set(ContentKey(id), content); !s.ok()) return s;
  if (absl::Status s = store_->Set(FileKey(id), RecordText(owner, object)); !s.ok()) return s;
  return store_->SetAdd(kFilesIndex, id);
}

absl::StatusOr<ojson> BatchManager::UploadFile(const std::string& owner, const std::string& purpose,
                                               const std::string& filename, std::string content) {
  if (absl::Status s = CheckUploadPurpose(purpose); !s.ok()) return s;
  if (filename.empty()) {
    return WithErrorParam(absl::InvalidArgumentError("the file part needs a filename"), "file");
  }
  if (content.empty()) {
    return WithErrorParam(absl::InvalidArgumentError("the file is empty"), "file");
  }
  if (content.size() > options_.max_file_bytes) {
    return absl::OutOfRangeError(absl::StrCat("the file has ", content.size(),
                                              " bytes; the limit is ", options_.max_file_bytes,
                                              " (--batch-max-file-mb)"));
  }
  const std::string id = NewId("file-");
  if (absl::Status s = PutFile(id, owner, purpose, filename, content); !s.ok()) return s;
  return FileObjectJson(id, static_cast<int64_t>(content.size()), NowSeconds(), filename, purpose);
}

absl::StatusOr<ojson> BatchManager::LoadRecord(const std::string& key, const std::string& owner,
                                               absl::string_view what, const std::string& id) {
  absl::StatusOr<std::optional<std::string>> text = store_->Get(key);
  if (!text.ok()) return text.status();
  const absl::Status missing = absl::NotFoundError(absl::StrCat("No such ", what, " object: ", id));
  if (!*text) return missing;
  ojson record = ojson::parse(**text, nullptr, false);
  if (record.is_discarded() || !record.contains("object")) {
    return absl::InternalError(absl::StrCat("stored ", what, " ", id, " is corrupt"));
  }
  if (record.value("owner", "") != owner) return missing;
  return record["object"];
}

absl::StatusOr<ojson> BatchManager::GetFile(const std::string& owner, const std::string& id) {
  return LoadRecord(FileKey(id), owner, "File", id);
}

absl::StatusOr<std::string> BatchManager::FileContent(const std::string& owner,
                                                      const std::string& id) {
  absl::StatusOr<ojson> file = GetFile(owner, id);
  if (!file.ok()) return file.status();
  absl::StatusOr<std::optional<std::string>> content = store_->Get(ContentKey(id));
  if (!content.ok()) return content.status();
  if (!*content) return absl::NotFoundError(absl::StrCat("No such File object: ", id));
  return **content;
}

absl::StatusOr<ojson> BatchManager::DeleteFile(const std::string& owner, const std::string& id) {
  absl::StatusOr<ojson> file = GetFile(owner, id);
  if (!file.ok()) return file.status();
  // The index first: a crash in between leaves unlisted bytes, never a listed file without them.
  if (absl::Status s = store_->SetRemove(kFilesIndex, id); !s.ok()) return s;
  if (absl::Status s = store_->Delete(FileKey(id)); !s.ok()) return s;
  if (absl::Status s = store_->Delete(ContentKey(id)); !s.ok()) return s;
  return ojson{{"id", id}, {"object", "file"}, {"deleted", true}};
}

absl::StatusOr<ojson> BatchManager::ListObjects(const std::string& index, const std::string& prefix,
                                                const std::string& owner,
                                                const std::string& purpose, int64_t limit,
                                                const std::string& after) {
  absl::StatusOr<std::vector<std::string>> ids = store_->SetMembers(index);
  if (!ids.ok()) return ids.status();
  std::vector<std::string> keys;
  for (const std::string& id : *ids) keys.push_back(absl::StrCat(prefix, id));
  absl::StatusOr<std::vector<std::optional<std::string>>> records = store_->GetMany(keys);
  if (!records.ok()) return records.status();
  std::vector<ojson> objects;
  for (const std::optional<std::string>& text : *records) {
    if (!text) continue;
    ojson record = ojson::parse(*text, nullptr, false);
    if (record.is_discarded() || record.value("owner", "") != owner) continue;
    if (!purpose.empty() && record["object"].value("purpose", "") != purpose) continue;
    objects.push_back(std::move(record["object"]));
  }
  // Newest first, as OpenAI lists; ids break ties so that the `after` cursor is stable.
  std::sort(objects.begin(), objects.end(), [](const ojson& a, const ojson& b) {
    const int64_t ta = a.value("created_at", int64_t{0}), tb = b.value("created_at", int64_t{0});
    if (ta != tb) return ta > tb;
    return a.value("id", "") > b.value("id", "");
  });
  size_t begin = 0;
  if (!after.empty()) {
    auto it = std::find_if(objects.begin(), objects.end(),
                           [&](const ojson& o) { return o.value("id", "") == after; });
    if (it == objects.end()) {
      return WithErrorParam(absl::InvalidArgumentError(absl::StrCat("no object '", after, "'")),
                            "after");
    }
    begin = static_cast<size_t>(it - objects.begin()) + 1;
  }
  ojson data = ojson::array();
  for (size_t i = begin; i < objects.size() && data.size() < static_cast<size_t>(limit); ++i) {
    data.push_back(objects[i]);
  }
  const bool has_more = begin + data.size() < objects.size();
  ojson out = {{"object", "list"}, {"data", data}};
  out["first_id"] = data.empty() ? ojson(nullptr) : data.front()["id"];
  out["last_id"] = data.empty() ? ojson(nullptr) : data.back()["id"];
  out["has_more"] = has_more;
  return out;
}

absl::StatusOr<ojson> BatchManager::ListFiles(const std::string& owner, const std::string& purpose,
                                              int64_t limit, const std::string& after) {
  if (limit < 1 || limit > 10000) {
    return WithErrorParam(absl::InvalidArgumentError("limit must be in [1, 10000]"), "limit");
  }
  return ListObjects(kFilesIndex, kFilePrefix, owner, purpose, limit, after);
}

// ---- batches ----

absl::StatusOr<ojson> BatchManager::CreateBatch(const std::string& owner, absl::string_view body) {
  absl::StatusOr<BatchCreateRequest> request = ParseBatchCreateRequest(body);
  if (!request.ok()) return request.status();
  absl::StatusOr<ojson> file = GetFile(owner, request->input_file_id);
  if (!file.ok()) return file.status();
  if ((*file).value("purpose", "") != "batch") {
    return WithErrorParam(
        absl::InvalidArgumentError(absl::StrCat("file ", request->input_file_id, " has purpose '",
                                                (*file).value("purpose", ""), "', not 'batch'")),
        "input_file_id");
  }
  auto batch = std::make_shared<Active>();
  batch->id = NewId("batch_");
  batch->owner = owner;
  batch->endpoint =
      request->endpoint == "/v1/completions" ? Endpoint::kCompletion : Endpoint::kChat;
  const int64_t now = NowSeconds();
  batch->object =
      NewBatchJson(batch->id, request->endpoint, request->input_file_id, request->completion_window,
                   now, now + absl::ToInt64Seconds(options_.completion_window),
                   request->metadata.is_null() ? ojson::object() : request->metadata);
  ojson created = batch->object;  // the runner owns the object from here on
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = SaveBatch(*batch); !s.ok()) return s;
    if (absl::Status s = store_->SetAdd(kBatchesIndex, batch->id); !s.ok()) return s;
    active_.push_back(std::move(batch));
  }
  Wake();
  return created;
}

absl::Status BatchManager::SaveBatch(const Active& batch) {
  return store_->Set(BatchKey(batch.id), RecordText(batch.owner, batch.object));
}

absl::StatusOr<ojson> BatchManager::GetBatch(const std::string& owner, const std::string& id) {
  return LoadRecord(BatchKey(id), owner, "Batch", id);
}

absl::StatusOr<ojson> BatchManager::CancelBatch(const std::string& owner, const std::string& id) {
  absl::StatusOr<ojson> stored = GetBatch(owner, id);
  if (!stored.ok()) return stored.status();
  {
    absl::MutexLock lock(&mu_);
    for (const auto& batch : active_) {
      if (batch->id != id) continue;
      absl::StatusOr<BatchStatus> status = StatusOf(batch->object);
      if (status.ok() && *status == BatchStatus::kCancelling) return batch->object;
      if (absl::Status s = TransitionBatch(&batch->object, BatchStatus::kCancelling, NowSeconds());
          !s.ok()) {
        return absl::InvalidArgumentError(s.message());
      }
      batch->cancel_requested = true;
      for (auto& [custom_id, run] : batch->running) run->Cancel();
      if (absl::Status s = SaveBatch(*batch); !s.ok()) return s;
      ojson out = batch->object;
      Wake();
      return out;
    }
  }
  // Not active: finished (or another gateway's, which this one does not run).
  absl::StatusOr<BatchStatus> status = StatusOf(*stored);
  return absl::InvalidArgumentError(absl::StrCat("Cannot cancel a batch with status '",
                                                 status.ok() ? BatchStatusName(*status) : "unknown",
                                                 "'."));
}

absl::StatusOr<ojson> BatchManager::ListBatches(const std::string& owner, int64_t limit,
                                                const std::string& after) {
  if (limit < 1 || limit > 100) {
    return WithErrorParam(absl::InvalidArgumentError("limit must be in [1, 100]"), "limit");
  }
  return ListObjects(kBatchesIndex, kBatchPrefix, owner, "", limit, after);
}

// ---- the runner ----

void BatchManager::RunnerLoop() {
  while (true) {
    std::vector<std::shared_ptr<Run>> finished;
    {
      absl::MutexLock lock(&done_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(done_mu_) {
        return stop_ || wake_ || !finished_.empty();
      };
      done_mu_.AwaitWithTimeout(absl::Condition(&ready), options_.poll);
      if (stop_) return;
      wake_ = false;
      finished.swap(finished_);
    }
    absl::MutexLock lock(&mu_);
    for (const std::shared_ptr<Run>& run : finished) OnRunDone(run);
    Step();
  }
}

absl::Status BatchManager::LoadLines(Active& batch) {
  const std::string file_id = batch.object.value("input_file_id", "");
  absl::StatusOr<std::optional<std::string>> content = store_->Get(ContentKey(file_id));
  if (!content.ok()) return content.status();
  if (!*content) return absl::NotFoundError(absl::StrCat("input file ", file_id, " is gone"));
  BatchInput input =
      ParseBatchInput(**content, batch.object.value("endpoint", ""), options_.max_requests);
  if (!input.errors.empty()) {
    batch.object["errors"] = BatchErrorsJson(input.errors);
    return absl::InvalidArgumentError("the input file is invalid");
  }
  batch.lines = std::move(input.requests);
  batch.loaded = true;
  absl::StatusOr<std::map<std::string, std::string>> results =
      store_->HashGetAll(ResultsKey(batch.id));
  if (!results.ok()) return results.status();
  int64_t completed = 0, failed = 0;
  for (const auto& [custom_id, value] : *results) {
    batch.done.insert(custom_id);
    (!value.empty() && value[0] == kOk ? completed : failed) += 1;
  }
  batch.object["request_counts"] = {{"total", static_cast<int64_t>(batch.lines.size())},
                                    {"completed", completed},
                                    {"failed", failed}};
  return absl::OkStatus();
}

void BatchManager::Validate(Active& batch) {
  absl::Status s = LoadLines(batch);
  if (!s.ok() && absl::IsUnavailable(s)) return;  // the store is down: try again later
  const int64_t now = NowSeconds();
  if (!s.ok()) {
    if (batch.object["errors"].is_null()) {
      batch.object["errors"] = BatchErrorsJson({{"invalid_file", std::string(s.message()), "", 0}});
    }
    (void)TransitionBatch(&batch.object, BatchStatus::kFailed, now);
  } else {
    (void)TransitionBatch(&batch.object, BatchStatus::kInProgress, now);
  }
  if (absl::Status saved = SaveBatch(batch); !saved.ok()) {
    LogLine("W", absl::StrCat("batch ", batch.id, ": ", saved.message()));
  }
}

void BatchManager::Step() {
  const int64_t now = NowSeconds();
  for (const std::shared_ptr<Active>& ptr : active_) {
    Active& batch = *ptr;
    absl::StatusOr<BatchStatus> status = StatusOf(batch.object);
    if (!status.ok()) continue;
    if (*status == BatchStatus::kValidating && !batch.cancel_requested) {
      Validate(batch);
      status = StatusOf(batch.object);
      if (!status.ok()) continue;
    }
    if (!IsTerminal(*status) && !batch.expiring && *status != BatchStatus::kCancelling &&
        now >= batch.object.value("expires_at", int64_t{0})) {
      batch.expiring = true;
      for (auto& [custom_id, run] : batch.running) run->Cancel();
    }
    if (batch.expiring) {
      if (batch.running.empty()) Finalize(batch, BatchStatus::kExpired);
      continue;
    }
    if (*status == BatchStatus::kCancelling) {
      if (batch.running.empty()) Finalize(batch, BatchStatus::kCancelled);
      continue;
    }
    if (*status == BatchStatus::kFinalizing) {
      Finalize(batch, BatchStatus::kCompleted);
      continue;
    }
    if (*status != BatchStatus::kInProgress) continue;
    while (in_flight_ < options_.concurrency) {
      size_t index;
      if (!batch.retry.empty()) {
        index = batch.retry.back();
        batch.retry.pop_back();
      } else if (batch.next < batch.lines.size()) {
        index = batch.next++;
      } else {
        break;
      }
      if (batch.done.contains(batch.lines[index].custom_id)) continue;
      StartRequest(batch, index);
    }
    if (batch.next >= batch.lines.size() && batch.retry.empty() && batch.running.empty()) {
      (void)TransitionBatch(&batch.object, BatchStatus::kFinalizing, now);
      if (absl::Status s = SaveBatch(batch); !s.ok()) {
        LogLine("W", absl::StrCat("batch ", batch.id, ": ", s.message()));
      }
      Finalize(batch, BatchStatus::kCompleted);
    }
  }
  active_.erase(std::remove_if(active_.begin(), active_.end(),
                               [](const std::shared_ptr<Active>& b) {
                                 absl::StatusOr<BatchStatus> s = StatusOf(b->object);
                                 return !s.ok() || IsTerminal(*s);
                               }),
                active_.end());
}

void BatchManager::StoreResult(Active& batch, const std::string& custom_id, bool ok,
                               const ojson& line) {
  if (absl::Status s = store_->HashSet(ResultsKey(batch.id), custom_id,
                                       absl::StrCat(ok ? "1" : "0", Dump(line)));
      !s.ok()) {
    LogLine("W", absl::StrCat("batch ", batch.id, ": cannot store the result of '", custom_id,
                              "' (it runs again): ", s.message()));
    for (size_t i = 0; i < batch.lines.size(); ++i) {
      if (batch.lines[i].custom_id == custom_id) batch.retry.push_back(i);
    }
    return;
  }
  batch.done.insert(custom_id);
  ojson& counts = batch.object["request_counts"];
  counts[ok ? "completed" : "failed"] = counts.value(ok ? "completed" : "failed", int64_t{0}) + 1;
  if (absl::Status s = SaveBatch(batch); !s.ok()) {
    LogLine("W", absl::StrCat("batch ", batch.id, ": ", s.message()));
  }
}

void BatchManager::StartRequest(Active& batch, size_t index) {
  const BatchRequestLine& line = batch.lines[index];
  const std::string line_id = NewId("batch_req_");
  const std::string request_id = NewId(batch.endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-");
  auto fail = [&](const absl::Status& status) {
    const int code = HttpStatusCode(status.code());
    StoreResult(batch, line.custom_id, false,
                BatchResponseLine(line_id, line.custom_id, code, request_id,
                                  OpenAiErrorBody(status, code)));
  };
  absl::StatusOr<ApiRequest> api = batch.endpoint == Endpoint::kChat
                                       ? ParseChatCompletionRequest(line.body)
                                       : ParseCompletionRequest(line.body);
  if (!api.ok()) return fail(api.status());
  if (api->stream) {
    return fail(WithErrorParam(
        absl::InvalidArgumentError("stream is not supported in a batch request"), "stream"));
  }
  if (api->show_prompt_logprobs) {
    return fail(WithErrorParam(
        absl::InvalidArgumentError("prompt_logprobs is not supported in a batch request"),
        "prompt_logprobs"));
  }
  absl::StatusOr<PreparedRequest> prepared = PrepareRequest(*api, *model_, request_id);
  if (!prepared.ok()) return fail(prepared.status());
  // Batches run behind interactive traffic: at the batch priority unless the body asks for a
  // lower one (a larger value).
  prepared->generation.priority = std::max(prepared->generation.priority, options_.priority);

  auto run = std::make_shared<Run>();
  run->batch_id = batch.id;
  run->custom_id = line.custom_id;
  run->line_id = line_id;
  run->meta.id = request_id;
  run->meta.created = NowSeconds();
  run->meta.model = prepared->model;
  run->meta.endpoint = batch.endpoint;
  run->meta.split_reasoning = prepared->split_reasoning;
  run->meta.include_usage = false;
  run->meta.logprobs = prepared->generation.sampling.logprobs;
  const int n = std::max(prepared->n, 1);
  {
    absl::MutexLock lock(&run->mu);
    for (int i = 0; i < n; ++i) {
      run->outputs.push_back(MakeOutputAssembler(*model_->tokenizer, *prepared));
    }
    run->texts.resize(n);
    run->calls.resize(n);
    run->remaining = n;
  }
  batch.running[line.custom_id] = run;
  ++in_flight_;
  {
    absl::MutexLock lock(&done_mu_);
    ++outstanding_;
  }
  // All choices start at once (the HTTP path waits for choice 0's prefill to share its KV
  // blocks; a batch trades that for simplicity: it runs in idle capacity).
  for (int i = 0; i < n; ++i) {
    GenerationCallbacks callbacks;
    callbacks.on_chunk = [run, i](GenerationChunk chunk) {
      GenerationCallPtr stop;
      {
        absl::MutexLock lock(&run->mu);
        OutputAssembler& out = run->outputs[i];
        if (out.finished()) return;
        run->texts[i].Append(out.OnChunk(chunk));
        if (out.stopped_by_string()) stop = run->calls[i];
      }
      if (stop != nullptr) stop->Cancel();
    };
    callbacks.on_done = [this, run, i](absl::Status status) {
      bool last = false;
      std::vector<GenerationCallPtr> others;  // one choice failed: the request fails
      {
        absl::MutexLock lock(&run->mu);
        OutputAssembler& out = run->outputs[i];
        if (status.ok() || out.finished()) {
          run->texts[i].Append(out.Finish(FinishReason::kStop));
        } else if (run->status.ok()) {
          run->status = status;
          others = run->calls;
        }
        last = --run->remaining == 0;
      }
      for (const GenerationCallPtr& c : others) {
        if (c != nullptr) c->Cancel();
      }
      if (last) RunFinished(run);
    };
    GenerationCallPtr call =
        backend_->Start(ChoiceRequest(prepared->generation, i), std::move(callbacks));
    bool cancel = false;
    {
      absl::MutexLock lock(&run->mu);
      run->calls[i] = call;
      cancel = run->cancelled || run->outputs[i].stopped_by_string() || !run->status.ok();
    }
    if (cancel) call->Cancel();
  }
}

void BatchManager::RunFinished(std::shared_ptr<Run> run) {
  absl::MutexLock lock(&done_mu_);
  finished_.push_back(std::move(run));
  --outstanding_;
}

void BatchManager::OnRunDone(const std::shared_ptr<Run>& run) {
  --in_flight_;
  auto it = std::find_if(active_.begin(), active_.end(),
                         [&](const auto& b) { return b->id == run->batch_id; });
  if (it == active_.end()) return;
  Active& batch = **it;
  batch.running.erase(run->custom_id);
  absl::MutexLock lock(&run->mu);
  // A request cancelled with its batch (cancel, expiry, shutdown) has no result: it either
  // never counts (cancel, expiry) or runs again (restart).
  if (run->cancelled || batch.cancel_requested || batch.expiring) return;
  if (!run->status.ok()) {
    const int code = HttpStatusCode(run->status.code());
    StoreResult(batch, run->custom_id, false,
                BatchResponseLine(run->line_id, run->custom_id, code, run->meta.id,
                                  OpenAiErrorBody(run->status, code)));
    return;
  }
  std::vector<ChoiceResult> results;
  UsageInfo usage = run->outputs[0].usage();
  for (size_t i = 0; i < run->outputs.size(); ++i) {
    if (i > 0) {
      usage.completion_tokens += run->outputs[i].usage().completion_tokens;
      usage.reasoning_tokens += run->outputs[i].usage().reasoning_tokens;
    }
    results.push_back({std::move(run->texts[i]), run->outputs[i].finish_reason()});
  }
  if (options_.on_usage) options_.on_usage(batch.owner, usage);
  StoreResult(batch, run->custom_id, true,
              BatchResponseLine(run->line_id, run->custom_id, 200, run->meta.id,
                                DumpJson(CompletionResponseJson(run->meta, results, usage))));
}

void BatchManager::Finalize(Active& batch, BatchStatus final_status) {
  absl::StatusOr<std::map<std::string, std::string>> results =
      store_->HashGetAll(ResultsKey(batch.id));
  if (!results.ok()) {
    LogLine("W", absl::StrCat("batch ", batch.id,
                              ": cannot finalize yet: ", results.status().message()));
    return;
  }
  std::string output, errors;
  for (const BatchRequestLine& line : batch.lines) {
    auto it = results->find(line.custom_id);
    if (it == results->end()) {
      // Only an expired batch reports the requests it never ran (OpenAI's batch_expired); a
      // cancelled one lists what completed.
      if (final_status == BatchStatus::kExpired) {
        absl::StrAppend(&errors,
                        Dump(BatchErrorLine(NewId("batch_req_"), line.custom_id, "batch_expired",
                                            "This request could not be executed before the "
                                            "completion window expired.")),
                        "\n");
      }
      continue;
    }
    absl::StrAppend(it->second[0] == kOk ? &output : &errors,
                    absl::string_view(it->second).substr(1), "\n");
  }
  // Deterministic ids: finalizing again after a crash overwrites instead of adding files.
  const std::string suffix = batch.id.substr(std::string("batch_").size());
  auto put = [&](const std::string& content, const char* kind) -> std::optional<std::string> {
    if (content.empty()) return std::nullopt;
    const std::string id = absl::StrCat("file-", suffix, kind);
    if (absl::Status s = PutFile(id, batch.owner, absl::StrCat("batch_", kind),
                                 absl::StrCat(batch.id, "_", kind, ".jsonl"), content);
        !s.ok()) {
      LogLine("W", absl::StrCat("batch ", batch.id, ": ", s.message()));
      return std::string();
    }
    return id;
  };
  const std::optional<std::string> output_id = put(output, "output");
  const std::optional<std::string> error_id = put(errors, "error");
  if ((output_id && output_id->empty()) || (error_id && error_id->empty())) return;  // retry
  if (output_id) batch.object["output_file_id"] = *output_id;
  if (error_id) batch.object["error_file_id"] = *error_id;
  if (absl::Status s = TransitionBatch(&batch.object, final_status, NowSeconds()); !s.ok()) {
    LogLine("W", absl::StrCat("batch ", batch.id, ": ", s.message()));
  }
  if (absl::Status s = SaveBatch(batch); !s.ok()) {
    LogLine("W", absl::StrCat("batch ", batch.id, ": ", s.message()));
  }
  LogLine("I", absl::StrCat("batch ", batch.id, " ", batch.object.value("status", ""), ": ",
                            Dump(batch.object["request_counts"])));
}

}  // namespace moeserve::gateway
