#include "gateway/batch_format.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/http_status.h"

namespace moeserve::gateway {
namespace {

using ojson = nlohmann::ordered_json;

constexpr BatchStatus kAllStatuses[] = {
    BatchStatus::kValidating, BatchStatus::kFailed,    BatchStatus::kInProgress,
    BatchStatus::kFinalizing, BatchStatus::kCompleted, BatchStatus::kExpired,
    BatchStatus::kCancelling, BatchStatus::kCancelled,
};

// The timestamp a status stamps ("validating" has none: created_at is its stamp).
const char* StampOf(BatchStatus status) {
  switch (status) {
    case BatchStatus::kValidating:
      return nullptr;
    case BatchStatus::kFailed:
      return "failed_at";
    case BatchStatus::kInProgress:
      return "in_progress_at";
    case BatchStatus::kFinalizing:
      return "finalizing_at";
    case BatchStatus::kCompleted:
      return "completed_at";
    case BatchStatus::kExpired:
      return "expired_at";
    case BatchStatus::kCancelling:
      return "cancelling_at";
    case BatchStatus::kCancelled:
      return "cancelled_at";
  }
  return nullptr;
}

absl::Status BadField(absl::string_view param, absl::string_view message) {
  return WithErrorParam(absl::InvalidArgumentError(message), param);
}

}  // namespace

const char* BatchStatusName(BatchStatus status) {
  switch (status) {
    case BatchStatus::kValidating:
      return "validating";
    case BatchStatus::kFailed:
      return "failed";
    case BatchStatus::kInProgress:
      return "in_progress";
    case BatchStatus::kFinalizing:
      return "finalizing";
    case BatchStatus::kCompleted:
      return "completed";
    case BatchStatus::kExpired:
      return "expired";
    case BatchStatus::kCancelling:
      return "cancelling";
    case BatchStatus::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

std::optional<BatchStatus> ParseBatchStatus(absl::string_view name) {
  for (BatchStatus s : kAllStatuses) {
    if (name == BatchStatusName(s)) return s;
  }
  return std::nullopt;
}

bool IsTerminal(BatchStatus status) {
  return status == BatchStatus::kFailed || status == BatchStatus::kCompleted ||
         status == BatchStatus::kExpired || status == BatchStatus::kCancelled;
}

bool CanTransition(BatchStatus from, BatchStatus to) {
  switch (from) {
    case BatchStatus::kValidating:
      return to == BatchStatus::kInProgress || to == BatchStatus::kFailed ||
             to == BatchStatus::kCancelling || to == BatchStatus::kExpired;
    case BatchStatus::kInProgress:
      return to == BatchStatus::kFinalizing || to == BatchStatus::kCancelling ||
             to == BatchStatus::kExpired;
    case BatchStatus::kFinalizing:
      return to == BatchStatus::kCompleted;
    case BatchStatus::kCancelling:
      return to == BatchStatus::kCancelled;
    case BatchStatus::kFailed:
    case BatchStatus::kCompleted:
    case BatchStatus::kExpired:
    case BatchStatus::kCancelled:
      return false;
  }
  return false;
}

absl::StatusOr<BatchStatus> StatusOf(const ojson& batch) {
  if (!batch.is_object() || !batch.contains("status") || !batch["status"].is_string()) {
    return absl::InvalidArgumentError("batch object without a status");
  }
  std::optional<BatchStatus> s = ParseBatchStatus(batch["status"].get<std::string>());
  if (!s) return absl::InvalidArgumentError("batch object with an unknown status");
  return *s;
}

absl::Status TransitionBatch(ojson* batch, BatchStatus to, int64_t now) {
  absl::StatusOr<BatchStatus> from = StatusOf(*batch);
  if (!from.ok()) return from.status();
  if (!CanTransition(*from, to)) {
    return absl::FailedPreconditionError(absl::StrCat("batch is ", BatchStatusName(*from),
                                                      "; it cannot become ", BatchStatusName(to)));
  }
  (*batch)["status"] = BatchStatusName(to);
  if (const char* stamp = StampOf(to)) (*batch)[stamp] = now;
  return absl::OkStatus();
}

BatchInput ParseBatchInput(absl::string_view jsonl, absl::string_view endpoint,
                           size_t max_requests) {
  BatchInput out;
  absl::flat_hash_set<std::string> seen;
  auto error = [&](std::string code, std::string message, std::string param, int64_t line) {
    out.errors.push_back({std::move(code), std::move(message), std::move(param), line});
  };
  int64_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(jsonl, '\n')) {
    ++line_no;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    // Ordered: the body is passed on as the client wrote it. Key order matters (a json_schema's
    // properties are generated in their order); a sorted copy made batch answers differ from
    // direct ones (found by batch_api).
    const ojson j = ojson::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      error("invalid_json_line",
            "This line is not parseable as valid JSON (one JSON object per line).", "", line_no);
      continue;
    }
    if (!j.contains("custom_id") || !j["custom_id"].is_string()) {
      error(j.contains("custom_id") ? "invalid_type" : "missing_required_parameter",
            j.contains("custom_id") ? "custom_id must be a string"
                                    : "Missing required parameter: 'custom_id'.",
            "custom_id", line_no);
      continue;
    }
    std::string custom_id = j["custom_id"].get<std::string>();
    // Checked first, so a custom_id is unique over every line that names one, valid or not.
    if (!seen.insert(custom_id).second) {
      error("duplicate_custom_id",
            absl::StrCat("The custom_id '", custom_id,
                         "' is a duplicate of another request's; custom_id must be unique "
                         "within a batch."),
            "custom_id", line_no);
      continue;
    }
    if (!j.contains("method") || !j["method"].is_string() || j["method"] != "POST") {
      error(j.contains("method") ? "invalid_method" : "missing_required_parameter",
            j.contains("method") ? "method must be \"POST\""
                                 : "Missing required parameter: 'method'.",
            "method", line_no);
      continue;
    }
    if (!j.contains("url") || !j["url"].is_string()) {
      error("missing_required_parameter", "Missing required parameter: 'url'.", "url", line_no);
      continue;
    }
    if (j["url"].get<std::string>() != endpoint) {
      error("invalid_url",
            absl::StrCat("The URL provided for this request (", j["url"].get<std::string>(),
                         ") does not match the batch endpoint (", endpoint, ")."),
            "url", line_no);
      continue;
    }
    if (!j.contains("body") || !j["body"].is_object()) {
      error(
          j.contains("body") ? "invalid_type" : "missing_required_parameter",
          j.contains("body") ? "body must be a JSON object" : "Missing required parameter: 'body'.",
          "body", line_no);
      continue;
    }
    out.requests.push_back({line_no, std::move(custom_id),
                            j["body"].dump(-1, ' ', false, ojson::error_handler_t::replace)});
  }
  if (out.errors.empty()) {
    if (out.requests.empty()) {
      error("empty_file", "The batch input file has no requests.", "", 0);
    } else if (out.requests.size() > max_requests) {
      error("too_many_tasks",
            absl::StrCat("The batch input file has ", out.requests.size(),
                         " requests; the limit is ", max_requests, "."),
            "", 0);
    }
  }
  return out;
}

ojson BatchErrorsJson(const std::vector<BatchLineError>& errors) {
  ojson data = ojson::array();
  for (size_t i = 0; i < errors.size() && i < kMaxReportedLineErrors; ++i) {
    const BatchLineError& e = errors[i];
    data.push_back({{"code", e.code},
                    {"message", e.message},
                    {"param", e.param.empty() ? ojson(nullptr) : ojson(e.param)},
                    {"line", e.line > 0 ? ojson(e.line) : ojson(nullptr)}});
  }
  if (errors.size() > kMaxReportedLineErrors) {
    data.push_back({{"code", "too_many_errors"},
                    {"message", absl::StrCat(errors.size() - kMaxReportedLineErrors,
                                             " more invalid lines not listed")},
                    {"param", nullptr},
                    {"line", nullptr}});
  }
  return {{"object", "list"}, {"data", std::move(data)}};
}

ojson BatchResponseLine(const std::string& id, const std::string& custom_id, int status_code,
                        const std::string& request_id, absl::string_view body_text) {
  ojson body = ojson::parse(body_text, nullptr, false);
  if (body.is_discarded()) body = std::string(body_text);
  return {{"id", id},
          {"custom_id", custom_id},
          {"response",
           {{"status_code", status_code}, {"request_id", request_id}, {"body", std::move(body)}}},
          {"error", nullptr}};
}

ojson BatchErrorLine(const std::string& id, const std::string& custom_id, const std::string& code,
                     const std::string& message) {
  return {{"id", id},
          {"custom_id", custom_id},
          {"response", nullptr},
          {"error", {{"code", code}, {"message", message}}}};
}

ojson FileObjectJson(const std::string& id, int64_t bytes, int64_t created_at,
                     const std::string& filename, const std::string& purpose) {
  return {{"id", id},
          {"object", "file"},
          {"bytes", bytes},
          {"created_at", created_at},
          {"filename", filename},
          {"purpose", purpose},
          {"status", "processed"},
          {"expires_at", nullptr},
          {"status_details", nullptr}};
}

ojson NewBatchJson(const std::string& id, const std::string& endpoint,
                   const std::string& input_file_id, const std::string& completion_window,
                   int64_t created_at, int64_t expires_at, ojson metadata) {
  return {{"id", id},
          {"object", "batch"},
          {"endpoint", endpoint},
          {"errors", nullptr},
          {"input_file_id", input_file_id},
          {"completion_window", completion_window},
          {"status", "validating"},
          {"output_file_id", nullptr},
          {"error_file_id", nullptr},
          {"created_at", created_at},
          {"in_progress_at", nullptr},
          {"expires_at", expires_at},
          {"finalizing_at", nullptr},
          {"completed_at", nullptr},
          {"failed_at", nullptr},
          {"expired_at", nullptr},
          {"cancelling_at", nullptr},
          {"cancelled_at", nullptr},
          {"request_counts", {{"total", 0}, {"completed", 0}, {"failed", 0}}},
          {"metadata", std::move(metadata)}};
}

absl::StatusOr<BatchCreateRequest> ParseBatchCreateRequest(absl::string_view body) {
  const ojson j = ojson::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("the request body is not a JSON object");
  }
  BatchCreateRequest out;
  for (const char* field : {"input_file_id", "endpoint", "completion_window"}) {
    if (!j.contains(field)) {
      return BadField(field, absl::StrCat("Missing required parameter: '", field, "'."));
    }
    if (!j[field].is_string()) return BadField(field, absl::StrCat(field, " must be a string"));
  }
  out.input_file_id = j["input_file_id"].get<std::string>();
  out.endpoint = j["endpoint"].get<std::string>();
  out.completion_window = j["completion_window"].get<std::string>();
  if (out.endpoint != "/v1/chat/completions" && out.endpoint != "/v1/completions") {
    return BadField("endpoint", absl::StrCat("endpoint '", out.endpoint,
                                             "' is not supported; use /v1/chat/completions or "
                                             "/v1/completions"));
  }
  if (out.completion_window != "24h") {
    return BadField("completion_window", "completion_window must be \"24h\"");
  }
  out.metadata = nullptr;
  if (j.contains("metadata") && !j["metadata"].is_null()) {
    const ojson& m = j["metadata"];
    if (!m.is_object()) return BadField("metadata", "metadata must be an object");
    if (m.size() > 16) return BadField("metadata", "metadata has more than 16 keys");
    for (const auto& [key, value] : m.items()) {
      if (key.size() > 64) return BadField("metadata", "a metadata key is over 64 characters");
      if (!value.is_string() || value.get<std::string>().size() > 512) {
        return BadField("metadata", "metadata values must be strings of at most 512 characters");
      }
    }
    out.metadata = m;
  }
  return out;
}

absl::Status CheckUploadPurpose(absl::string_view purpose) {
  if (purpose == "batch") return absl::OkStatus();
  if (purpose.empty()) {
    return BadField("purpose", "Missing required parameter: 'purpose'.");
  }
  return BadField("purpose", absl::StrCat("purpose '", purpose,
                                          "' is not supported here; only \"batch\" files are"));
}

}  // namespace moeserve::gateway
