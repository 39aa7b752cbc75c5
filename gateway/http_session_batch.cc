// The Batch API's HTTP routes (/v1/files, /v1/batches) of HttpSession; the work is done by
// gateway/batch_manager.h. Its store calls are short round trips to Redis on loopback, made on
// the connection's strand (bounded by the Redis I/O timeout when Redis is down).
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/http_status.h"
#include "gateway/http_session.h"
#include "gateway/multipart.h"

namespace moeserve::gateway {

namespace http = boost::beast::http;

namespace {

std::map<std::string, std::string> QueryParams(absl::string_view target) {
  std::map<std::string, std::string> out;
  const size_t q = target.find('?');
  if (q == absl::string_view::npos) return out;
  for (absl::string_view pair : absl::StrSplit(target.substr(q + 1), '&', absl::SkipEmpty())) {
    const size_t eq = pair.find('=');
    out[std::string(pair.substr(0, eq))] =
        eq == absl::string_view::npos ? "" : std::string(pair.substr(eq + 1));
  }
  return out;
}

std::string Dump(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace

void HttpSession::HandleBatchApi(const Request& request, const std::string& path,
                                 const std::optional<Principal>& principal) {
  BatchManager* batches = context_.batches;
  const http::verb method = request.method();
  // Route labels without ids, so that metrics stay bounded.
  const bool files = absl::StartsWith(path, "/v1/files");
  if (batches == nullptr) {
    route_ = "other";
    return SendError(absl::NotFoundError("the Batch API is off in this gateway"));
  }
  const std::string owner = principal ? principal->name : "";
  const auto params =
      QueryParams(absl::string_view(request.target().data(), request.target().size()));
  auto param = [&](const char* name) -> std::string {
    auto it = params.find(name);
    return it == params.end() ? "" : it->second;
  };
  auto limit = [&](int64_t dflt, int64_t* out) -> bool {
    const std::string text = param("limit");
    if (text.empty()) {
      *out = dflt;
      return true;
    }
    if (!absl::SimpleAtoi(text, out)) {
      SendError(WithErrorParam(absl::InvalidArgumentError("limit must be an integer"), "limit"));
      return false;
    }
    return true;
  };
  auto reply = [&](const absl::StatusOr<nlohmann::ordered_json>& result) {
    if (!result.ok()) {
      // OUT_OF_RANGE is a size limit here (the file): 413, as for a body over the limit.
      return SendError(result.status(),
                       result.status().code() == absl::StatusCode::kOutOfRange ? 413 : 0);
    }
    SendJson(http::status::ok, Dump(*result), keep_alive_);
  };
  auto wrong_method = [&](const char* allow) {
    SendError(absl::InvalidArgumentError(absl::StrCat("use ", allow)), 405, allow);
  };
  absl::string_view rest(path);
  absl::ConsumePrefix(&rest, files ? "/v1/files" : "/v1/batches");
  absl::ConsumePrefix(&rest, "/");
  const std::vector<std::string> parts = absl::StrSplit(rest, '/', absl::SkipEmpty());
  if (files) {
    route_ = parts.empty()       ? "/v1/files"
             : parts.size() == 1 ? "/v1/files/{id}"
                                 : "/v1/files/{id}/content";
    if (parts.empty()) {
      if (method == http::verb::get) {
        int64_t n = 0;
        if (!limit(10000, &n)) return;
        return reply(batches->ListFiles(owner, param("purpose"), n, param("after")));
      }
      if (method != http::verb::post) return wrong_method("GET, POST");
      absl::StatusOr<std::string> boundary = MultipartBoundary(absl::string_view(
          request[http::field::content_type].data(), request[http::field::content_type].size()));
      if (!boundary.ok()) return SendError(boundary.status());
      MultipartLimits limits;
      limits.max_part_bytes = batches->options().max_file_bytes;
      absl::StatusOr<std::vector<FormPart>> form =
          ParseMultipart(request.body(), *boundary, limits);
      if (!form.ok()) {
        return SendError(form.status(),
                         form.status().code() == absl::StatusCode::kOutOfRange ? 413 : 0);
      }
      const FormPart* file = nullptr;
      std::string purpose;
      for (const FormPart& part : *form) {
        if (part.name == "file") file = &part;
        if (part.name == "purpose") purpose = part.body;
      }
      if (file == nullptr) {
        return SendError(WithErrorParam(
            absl::InvalidArgumentError("Missing required parameter: 'file'."), "file"));
      }
      return reply(batches->UploadFile(owner, purpose, file->filename, file->body));
    }
    if (parts.size() == 1) {
      if (method == http::verb::get) return reply(batches->GetFile(owner, parts[0]));
      if (method == http::verb::delete_) return reply(batches->DeleteFile(owner, parts[0]));
      return wrong_method("GET, DELETE");
    }
    if (parts.size() == 2 && parts[1] == "content") {
      if (method != http::verb::get) return wrong_method("GET");
      absl::StatusOr<std::string> content = batches->FileContent(owner, parts[0]);
      if (!content.ok()) return SendError(content.status());
      return SendBody(http::status::ok, "application/octet-stream", *std::move(content),
                      keep_alive_);
    }
  } else {
    route_ = parts.empty()       ? "/v1/batches"
             : parts.size() == 1 ? "/v1/batches/{id}"
                                 : "/v1/batches/{id}/cancel";
    if (parts.empty()) {
      if (method == http::verb::get) {
        int64_t n = 0;
        if (!limit(20, &n)) return;
        return reply(batches->ListBatches(owner, n, param("after")));
      }
      if (method != http::verb::post) return wrong_method("GET, POST");
      return reply(batches->CreateBatch(owner, request.body()));
    }
    if (parts.size() == 1) {
      if (method != http::verb::get) return wrong_method("GET");
      return reply(batches->GetBatch(owner, parts[0]));
    }
    if (parts.size() == 2 && parts[1] == "cancel") {
      if (method != http::verb::post) return wrong_method("POST");
      return reply(batches->CancelBatch(owner, parts[0]));
    }
  }
  route_ = "other";
  SendError(absl::NotFoundError(
      absl::StrCat("no route for ", std::string(request.method_string()), " ", path)));
}

}  // namespace moeserve::gateway
