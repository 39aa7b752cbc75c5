#ifndef MOESERVE_GATEWAY_BATCH_FORMAT_H_
#define MOESERVE_GATEWAY_BATCH_FORMAT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moeserve::gateway {

// The Batch API's pure parts (no I/O): the input file's validation, the objects' JSON, the
// output lines and the batch state machine, as OpenAI defines them (docs/DESIGN-NOTES.md,
// "Batch API").

// OpenAI's batch lifecycle: validating -> in_progress -> finalizing -> completed; validating ->
// failed (the input file is invalid); validating / in_progress -> cancelling -> cancelled;
// validating / in_progress -> expired (the completion window passed).
enum class BatchStatus {
  kValidating,
  kFailed,
  kInProgress,
  kFinalizing,
  kCompleted,
  kExpired,
  kCancelling,
  kCancelled,
};

const char* BatchStatusName(BatchStatus status);
std::optional<BatchStatus> ParseBatchStatus(absl::string_view name);
bool IsTerminal(BatchStatus status);
bool CanTransition(BatchStatus from, BatchStatus to);

// Moves a batch object to `to` and stamps "<to>_at" (in_progress_at, finalizing_at, ...) with
// `now` (unix seconds). FAILED_PRECONDITION, the object unchanged, when the move is not allowed
// (for example cancelling a completed batch); INVALID_ARGUMENT when the object has no status.
absl::Status TransitionBatch(nlohmann::ordered_json* batch, BatchStatus to, int64_t now);
absl::StatusOr<BatchStatus> StatusOf(const nlohmann::ordered_json& batch);

// One request line of a batch input file.
struct BatchRequestLine {
  int64_t line = 0;  // 1-based
  std::string custom_id;
  std::string body;  // the "body" object as JSON text, mapped like a direct request's body
};

// A line that makes the whole batch fail (OpenAI's "errors" data).
struct BatchLineError {
  std::string code;  // invalid_json_line, missing_required_parameter, invalid_url, ...
  std::string message;
  std::string param;  // "" -> null
  int64_t line = 0;   // 0 -> null (a file-level error)
};

struct BatchInput {
  std::vector<BatchRequestLine> requests;
  std::vector<BatchLineError> errors;  // non-empty: the batch fails
};

// Most line errors reported in one failed batch's "errors" (the rest are counted in a last one).
inline constexpr size_t kMaxReportedLineErrors = 100;

// Checks every line of a JSONL input file for `endpoint` ("/v1/chat/completions" or
// "/v1/completions") as OpenAI does while a batch is "validating": each non-blank line must be a
// JSON object with a string "custom_id" unique in the file, "method" "POST", "url" equal to the
// endpoint and an object "body". A body the API would refuse (bad messages, a bad temperature)
// is not a line error: that request gets its own 4xx in the error file, as OpenAI does. An empty
// file and more than `max_requests` requests are file-level errors (empty_file,
// too_many_tasks).
BatchInput ParseBatchInput(absl::string_view jsonl, absl::string_view endpoint,
                           size_t max_requests);

// The "errors" member of a failed batch: {"object":"list","data":[{code,message,param,line}]}.
nlohmann::ordered_json BatchErrorsJson(const std::vector<BatchLineError>& errors);

// A line of the output or error file for a request that ran:
// {"id","custom_id","response":{"status_code","request_id","body"},"error":null}.
// `body` is the response body's JSON text (the completion, or an OpenAI error body); text that
// does not parse is kept as a string.
nlohmann::ordered_json BatchResponseLine(const std::string& id, const std::string& custom_id,
                                         int status_code, const std::string& request_id,
                                         absl::string_view body);
// A line of the error file for a request that did not run (expired):
// {"id","custom_id","response":null,"error":{"code","message"}}.
nlohmann::ordered_json BatchErrorLine(const std::string& id, const std::string& custom_id,
                                      const std::string& code, const std::string& message);

// A file object: {"id","object":"file","bytes","created_at","filename","purpose","status":
// "processed","expires_at":null,"status_details":null}.
nlohmann::ordered_json FileObjectJson(const std::string& id, int64_t bytes, int64_t created_at,
                                      const std::string& filename, const std::string& purpose);

// A new batch object in "validating", every timestamp but created_at / expires_at null.
nlohmann::ordered_json NewBatchJson(const std::string& id, const std::string& endpoint,
                                    const std::string& input_file_id,
                                    const std::string& completion_window, int64_t created_at,
                                    int64_t expires_at, nlohmann::ordered_json metadata);

// The body of POST /v1/batches, checked.
struct BatchCreateRequest {
  std::string input_file_id;
  std::string endpoint;
  std::string completion_window;
  nlohmann::ordered_json metadata;  // object or null
};
// INVALID_ARGUMENT (with the param) for a missing or mistyped field, an endpoint other than
// /v1/chat/completions and /v1/completions, a window other than "24h", or metadata beyond
// OpenAI's bounds (16 pairs, keys up to 64 characters, string values up to 512).
absl::StatusOr<BatchCreateRequest> ParseBatchCreateRequest(absl::string_view body);

// Which purposes an upload may have. Only "batch" files are used here; OpenAI's other purposes
// (fine-tune, assistants, vision, user_data, evals) are refused with a message.
absl::Status CheckUploadPurpose(absl::string_view purpose);

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_BATCH_FORMAT_H_
