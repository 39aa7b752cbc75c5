#ifndef MOESERVE_COMMON_HTTP_STATUS_H_
#define MOESERVE_COMMON_HTTP_STATUS_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moeserve {

// The one place that converts an absl::Status into an HTTP status and an OpenAI-style error
// body (STYLE.md): {"error": {"message", "type", "param", "code"}}.
//
// Codes: InvalidArgument 400, Unauthenticated 401, PermissionDenied 403, NotFound 404,
// ResourceExhausted 429, Cancelled 499, Unavailable 503, DeadlineExceeded 504, else 500.
// "param" and "code" travel on the status as payloads (WithErrorParam / WithErrorCode) so that
// the code producing an error can name the offending field without knowing about HTTP.
// Header-only (like grpc_status.h) so that it adds no link dependency to moeserve::common.

inline constexpr char kErrorParamPayload[] = "type.moeserve.dev/error-param";
inline constexpr char kErrorCodePayload[] = "type.moeserve.dev/error-code";
inline constexpr char kRetryAfterPayload[] = "type.moeserve.dev/retry-after";

inline absl::Status WithErrorParam(absl::Status status, absl::string_view param) {
  status.SetPayload(kErrorParamPayload, absl::Cord(param));
  return status;
}

// InvalidArgument (HTTP 400) naming the request field `param`.
inline absl::Status InvalidParam(absl::string_view param, absl::string_view message) {
  return WithErrorParam(absl::InvalidArgumentError(message), param);
}

inline absl::Status WithErrorCode(absl::Status status, absl::string_view code) {
  status.SetPayload(kErrorCodePayload, absl::Cord(code));
  return status;
}

// How many seconds a client should wait before retrying (the HTTP layer sends it as
// `Retry-After` on every 429: overload, and quotas).
inline absl::Status WithRetryAfter(absl::Status status, int seconds) {
  status.SetPayload(kRetryAfterPayload, absl::Cord(std::to_string(seconds)));
  return status;
}

// The Retry-After seconds of `status`: its payload, else 1 (the default for a 429).
inline int RetryAfterSeconds(const absl::Status& status) {
  if (auto p = status.GetPayload(kRetryAfterPayload)) {
    const std::string text(*p);
    int seconds = 0;
    for (char c : text) {
      if (c < '0' || c > '9' || seconds > 86400) return 1;
      seconds = seconds * 10 + (c - '0');
    }
    if (!text.empty()) return seconds;
  }
  return 1;
}

inline int HttpStatusCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

// OpenAI's error "type" for an HTTP status.
inline const char* OpenAiErrorType(int http_status) {
  switch (http_status) {
    case 400:
    case 404:
    case 405:
    case 413:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 429:
      return "rate_limit_error";
    default:
      return "server_error";
  }
}

// The error body for `status` (not OK). `http_status` overrides the mapped status for the type
// (the HTTP layer answers 405 and 413 itself); 0 uses HttpStatusCode(status.code()).
inline std::string OpenAiErrorBody(const absl::Status& status, int http_status = 0) {
  if (http_status == 0) http_status = HttpStatusCode(status.code());
  nlohmann::json error = {{"message", std::string(status.message())},
                          {"type", OpenAiErrorType(http_status)},
                          {"param", nullptr},
                          {"code", nullptr}};
  if (auto p = status.GetPayload(kErrorParamPayload)) {
    error["param"] = std::string(*p);
  }
  if (auto c = status.GetPayload(kErrorCodePayload)) {
    error["code"] = std::string(*c);
  }
  // Replace invalid UTF-8 (a message may quote user input) instead of throwing.
  return nlohmann::json{{"error", error}}.dump(-1, ' ', false,
                                               nlohmann::json::error_handler_t::replace);
}

}  // namespace moeserve

#endif  // MOESERVE_COMMON_HTTP_STATUS_H_
