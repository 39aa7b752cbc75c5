#include "kvcache/kvcache_flags.h"

#include <cstdint>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace moeserve::kvcache {
namespace {

absl::StatusOr<int64_t> PositiveInt(absl::string_view name, absl::string_view value) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(value, &v) || v < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", value, "' is not a count"));
  }
  return v;
}

}  // namespace

absl::StatusOr<KvCacheServerConfig> ParseFlags(const std::vector<std::string>& args) {
  KvCacheServerConfig config;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (!absl::ConsumePrefix(&arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name(arg);
    std::string value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
    }
    if (name == "host") {
      config.host = value;
    } else if (name == "metrics-port") {
      int64_t n = -1;
      if (!absl::SimpleAtoi(value, &n) || n < 0 || n > 65535) {
        return absl::InvalidArgumentError(
            absl::StrCat("--metrics-port: '", value, "' is not a port in [0, 65535]"));
      }
      config.metrics_port = static_cast<int>(n);
    } else if (name == "redis") {
      if (!value.empty()) {
        absl::StatusOr<std::vector<RedisEndpoint>> endpoints = ParseRedisEndpoints(value);
        if (!endpoints.ok()) return endpoints.status();
        config.redis.endpoints = std::move(*endpoints);
      }
    } else {
      absl::StatusOr<int64_t> n = PositiveInt(name, value);
      if (!n.ok()) return n.status();
      if (name == "port") {
        if (*n > 65535) return absl::InvalidArgumentError(absl::StrCat("--port ", *n, " > 65535"));
        config.port = static_cast<int>(*n);
      } else if (name == "budget-mb") {
        config.cache.budget_bytes = *n << 20;
      } else if (name == "lease-ttl-ms") {
        config.cache.lease_ttl = absl::Milliseconds(*n);
      } else if (name == "block-tokens") {
        config.cache.block_tokens = *n;
      } else if (name == "max-block-mb") {
        config.cache.max_block_bytes = *n << 20;
      } else if (name == "threads") {
        config.worker_threads = static_cast<int>(*n);
      } else {
        return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
      }
    }
  }
  return config;
}

}  // namespace moeserve::kvcache
