#ifndef MOESERVE_GATEWAY_BATCH_MANAGER_H_
#define MOESERVE_GATEWAY_BATCH_MANAGER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "gateway/batch_format.h"
#include "gateway/batch_store.h"
#include "gateway/output_assembler.h"
#include "gateway/generation_backend.h"
#include "gateway/model_context.h"
#include "gateway/request_mapping.h"
#include "nlohmann/json.hpp"

namespace moeserve::gateway {

struct BatchOptions {
  int concurrency = 2;              // batch requests in flight at once (over all batches)
  int32_t priority = kMaxPriority;  // the router's queue order: lower first; batches go last
  size_t max_file_bytes = size_t{100} << 20;  // largest upload (413 beyond)
  size_t max_requests = 50000;                // requests per batch (OpenAI's limit)
  absl::Duration completion_window = absl::Hours(24);
  absl::Duration poll = absl::Seconds(1);  // how often the runner looks at the clock (expiry)
  // Called on the runner thread with the batch's owner and the usage (choices summed) of each
  // request that completes, so API keys are charged for batch work as for direct requests.
  std::function<void(const std::string& owner, const UsageInfo& usage)> on_usage;
};

// The Batch API (/v1/files, /v1/batches): files and batches kept in a BatchStore, and one runner
// thread that validates new batches and runs their requests through the same request mapping
// and backend as direct requests, at `options.priority` with at most `options.concurrency` in
// flight, storing each request's result as it ends. Start() resumes what a previous process left
// unfinished in the store: a request whose result is stored is not run again.
//
// `owner` identifies who may see an object: "" when API keys are off, else the key's name; an
// object of another owner is NOT_FOUND, as a missing one. Methods are thread-safe and do store
// I/O on the calling thread (UNAVAILABLE when the store is down). `model`, `backend` and `clock`
// are not owned and outlive the manager.
class BatchManager {
 public:
  using ojson = nlohmann::ordered_json;

  BatchManager(BatchStorePtr store, const ModelContext* model, GenerationBackend* backend,
               const Clock* clock, BatchOptions options);
  ~BatchManager();
  BatchManager(const BatchManager&) = delete;
  BatchManager& operator=(const BatchManager&) = delete;

  // Loads unfinished batches from the store and starts the runner. UNAVAILABLE when the store
  // cannot be read.
  absl::Status Start();
  // Stops the runner and cancels the requests in flight (not stored: they run again after a
  // restart); waits for their backend calls to end. Idempotent.
  void Shutdown();

  const BatchOptions& options() const { return options_; }
  std::string DescribeStore() const { return store_->Describe(); }

  // POST /v1/files. INVALID_ARGUMENT for a purpose other than "batch", an empty file or no
  // filename; OUT_OF_RANGE (413) over max_file_bytes.
  absl::StatusOr<ojson> UploadFile(const std::string& owner, const std::string& purpose,
                                   const std::string& filename, std::string content);
  // GET /v1/files (newest first; `purpose` "" = any; `after` an id; limit in [1, 10000]).
  absl::StatusOr<ojson> ListFiles(const std::string& owner, const std::string& purpose,
                                  int64_t limit, const std::string& after);
  absl::StatusOr<ojson> GetFile(const std::string& owner, const std::string& id);
  absl::StatusOr<std::string> FileContent(const std::string& owner, const std::string& id);
  absl::StatusOr<ojson> DeleteFile(const std::string& owner, const std::string& id);

  // POST /v1/batches: a batch in "validating". NOT_FOUND for an unknown input file,
  // INVALID_ARGUMENT for a bad body or an input file whose purpose is not "batch".
  absl::StatusOr<ojson> CreateBatch(const std::string& owner, absl::string_view body);
  absl::StatusOr<ojson> GetBatch(const std::string& owner, const std::string& id);
  // POST /v1/batches/{id}/cancel: "cancelling" (then "cancelled" once the requests in flight
  // end). INVALID_ARGUMENT for a batch already finished.
  absl::StatusOr<ojson> CancelBatch(const std::string& owner, const std::string& id);
  // GET /v1/batches (newest first; limit in [1, 100]).
  absl::StatusOr<ojson> ListBatches(const std::string& owner, int64_t limit,
                                    const std::string& after);

 private:
  struct Run;
  struct Active;

  std::string NewId(absl::string_view prefix);
  int64_t NowSeconds() const;
  absl::StatusOr<ojson> LoadRecord(const std::string& key, const std::string& owner,
                                   absl::string_view what, const std::string& id);
  absl::Status PutFile(const std::string& id, const std::string& owner, const std::string& purpose,
                       const std::string& filename, const std::string& content);
  absl::Status SaveBatch(const Active& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<ojson> ListObjects(const std::string& index, const std::string& prefix,
                                    const std::string& owner, const std::string& purpose,
                                    int64_t limit, const std::string& after);

  void RunnerLoop();
  void Step() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Validate(Active& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadLines(Active& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartRequest(Active& batch, size_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StoreResult(Active& batch, const std::string& custom_id, bool ok, const ojson& line)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnRunDone(const std::shared_ptr<Run>& run) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finalize(Active& batch, BatchStatus final_status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Wake();
  void RunFinished(std::shared_ptr<Run> run);  // from a backend thread

  const BatchStorePtr store_;
  const ModelContext* const model_;
  GenerationBackend* const backend_;
  const Clock* const clock_;
  const BatchOptions options_;

  absl::Mutex id_mu_;
  std::mt19937_64 rng_ ABSL_GUARDED_BY(id_mu_);

  // The runner's state. Store writes of an active batch's object happen under it, so the store
  // always holds the object the runner has.
  absl::Mutex mu_;
  std::vector<std::shared_ptr<Active>> active_ ABSL_GUARDED_BY(mu_);  // oldest first
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;

  // What backend threads hand to the runner (never held together with mu_ by them).
  absl::Mutex done_mu_;
  std::vector<std::shared_ptr<Run>> finished_ ABSL_GUARDED_BY(done_mu_);
  int outstanding_ ABSL_GUARDED_BY(done_mu_) = 0;  // runs whose on_done has not come
  bool wake_ ABSL_GUARDED_BY(done_mu_) = false;
  bool stop_ ABSL_GUARDED_BY(done_mu_) = false;

  std::thread runner_;
  bool started_ = false;
  bool shut_down_ = false;
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_BATCH_MANAGER_H_
