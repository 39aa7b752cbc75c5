#include "gateway/gateway_flags.h"

#include <cstdint>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace moeserve::gateway {
namespace {

absl::StatusOr<int64_t> Count(const std::string& name, const std::string& value, int64_t max) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(value, &v) || v < 0 || v > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": '", value, "' is not a number in [0, ", max, "]"));
  }
  return v;
}

}  // namespace

absl::StatusOr<GatewayConfig> ParseFlags(const std::vector<std::string>& args) {
  GatewayConfig config;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (!absl::ConsumePrefix(&arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name(arg);
    std::string value;
    if (name == "reject-logprobs-for-reasoner" || name == "reject-logprobs-for-reasoner=true") {
      config.reject_reasoner_logprobs = true;  // a switch: it takes no value
      continue;
    }
    if (name == "reject-logprobs-for-reasoner=false") {
      config.reject_reasoner_logprobs = false;
      continue;
    }
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
    }
    if (name == "reject-logprobs-for-reasoner") {
      return absl::InvalidArgumentError(
          absl::StrCat("--reject-logprobs-for-reasoner takes true or false, not '", value, "'"));
    }
    if (name == "model") {
      config.model_dir = value;
    } else if (name == "model-name") {
      config.model_name = value;
    } else if (name == "host") {
      config.host = value;
    } else if (name == "router") {
      config.router_address = value;
    } else if (name == "price-table") {
      config.price_table_file = value;
    } else if (name == "api-keys") {
      if (value.empty()) return absl::InvalidArgumentError("--api-keys needs a file");
      config.api_keys_file = value;
    } else if (name == "sse-keepalive-s") {
      double seconds = 0;
      if (!absl::SimpleAtod(value, &seconds) || !(seconds >= 0) || seconds > 3600) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--sse-keepalive-s: '", value, "' is not a number of seconds in [0, 3600]"));
      }
      config.sse_keepalive = absl::Seconds(seconds);
    } else if (name == "stream-resume-grace-s") {
      double seconds = 0;
      if (!absl::SimpleAtod(value, &seconds) || !(seconds >= 0) || seconds > 3600) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--stream-resume-grace-s: '", value, "' is not a number of seconds in [0, 3600]"));
      }
      config.stream_resume.grace = absl::Seconds(seconds);
    } else if (name == "stream-resume-max-bytes" || name == "stream-resume-max-detached") {
      absl::StatusOr<int64_t> n = Count(name, value, int64_t{1} << 34);
      if (!n.ok()) return n.status();
      if (*n == 0) return absl::InvalidArgumentError(absl::StrCat("--", name, " must be > 0"));
      (name == "stream-resume-max-bytes" ? config.stream_resume.max_stream_bytes
                                         : config.stream_resume.max_detached) =
          static_cast<size_t>(*n);
    } else if (name == "redis") {
      absl::StatusOr<std::vector<RedisEndpoint>> endpoints = ParseRedisEndpoints(value);
      if (!endpoints.ok()) return endpoints.status();
      if (endpoints->size() != 1) {
        return absl::InvalidArgumentError("--redis takes one HOST:PORT (the Batch API's store)");
      }
      config.redis = endpoints->front();
    } else if (name == "batch-concurrency" || name == "batch-max-file-mb" ||
               name == "batch-max-requests") {
      absl::StatusOr<int64_t> n = Count(name, value, name == "batch-concurrency" ? 1024 : 1 << 20);
      if (!n.ok()) return n.status();
      if (*n == 0) return absl::InvalidArgumentError(absl::StrCat("--", name, " must be > 0"));
      if (name == "batch-concurrency") {
        config.batch.concurrency = static_cast<int>(*n);
      } else if (name == "batch-max-file-mb") {
        config.batch.max_file_bytes = static_cast<size_t>(*n) << 20;
      } else {
        config.batch.max_requests = static_cast<size_t>(*n);
      }
    } else if (name == "batch-priority") {
      int64_t p = 0;
      if (!absl::SimpleAtoi(value, &p) || p < -kMaxPriority || p > kMaxPriority) {
        return absl::InvalidArgumentError(absl::StrCat("--batch-priority: '", value,
                                                       "' is not a number in [-", kMaxPriority,
                                                       ", ", kMaxPriority, "]"));
      }
      config.batch.priority = static_cast<int32_t>(p);
    } else if (name != "port" && name != "grpc-port" && name != "metrics-port" &&
               name != "http-threads" &&
               name != "max-tokens-default" && name != "router-timeout-s") {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    } else {
      absl::StatusOr<int64_t> n =
          Count(name, value, name == "port" || name == "grpc-port" || name == "metrics-port" ? 65535 : int64_t{1} << 30);
      if (!n.ok()) return n.status();
      if (name == "port") {
        config.http_port = static_cast<int>(*n);
      } else if (name == "grpc-port") {
        config.grpc_port = static_cast<int>(*n);
      } else if (name == "metrics-port") {
        config.metrics_port = static_cast<int>(*n);
      } else if (name == "http-threads") {
        config.http_threads = static_cast<int>(*n);
      } else if (name == "max-tokens-default") {
        config.max_tokens_default = static_cast<int32_t>(*n);
      } else {  // router-timeout-s
        config.router_timeout = absl::Seconds(*n);
      }
    }
  }
  if (config.model_dir.empty()) return absl::InvalidArgumentError("--model DIR is required");
  if (config.router_address.empty()) {
    return absl::InvalidArgumentError("--router HOST:PORT is required");
  }
  return config;
}

}  // namespace moeserve::gateway
