#include "router/router_flags.h"

#include <cstdint>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace moeserve::router {
namespace {

std::vector<std::string> SplitList(const std::string& value) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
    out.emplace_back(part);
  }
  return out;
}

absl::Status Bad(const std::string& name, const std::string& value) {
  return absl::InvalidArgumentError(absl::StrCat("--", name, ": bad value '", value, "'"));
}

}  // namespace

absl::StatusOr<RouterConfig> ParseFlags(const std::vector<std::string>& args) {
  RouterConfig config;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name = arg.substr(2);
    std::string value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat(arg, " needs a value"));
      value = args[++i];
    }
    int64_t n = 0;
    double x = 0;
    if (name == "prefill") {
      config.prefill = SplitList(value);
    } else if (name == "decode") {
      config.decode = SplitList(value);
    } else if (name == "host") {
      if (value.empty()) return Bad(name, value);
      config.host = value;
    } else if (name == "port") {
      if (!absl::SimpleAtoi(value, &n) || n < 0 || n > 65535) return Bad(name, value);
      config.port = static_cast<int>(n);
    } else if (name == "metrics-port") {
      if (!absl::SimpleAtoi(value, &n) || n < 0 || n > 65535) return Bad(name, value);
      config.metrics_port = static_cast<int>(n);
    } else if (name == "block-tokens") {
      if (!absl::SimpleAtoi(value, &n) || n <= 0 || n > (1 << 20)) return Bad(name, value);
      config.relay.prefill.block_tokens = n;
    } else if (name == "retry-attempts") {
      if (!absl::SimpleAtoi(value, &n) || n < 0 || n > 100) return Bad(name, value);
      config.relay.retry_attempts = static_cast<int>(n);
    } else if (name == "alpha") {
      if (!absl::SimpleAtod(value, &x) || !(x >= 0)) return Bad(name, value);
      config.relay.prefill.alpha = x;
    } else if (name == "load-cost-tokens") {
      if (!absl::SimpleAtoi(value, &n) || n < 0) return Bad(name, value);
      config.relay.prefill.load_cost_tokens = n;
    } else if (name == "poll-ms") {
      if (!absl::SimpleAtoi(value, &n) || n <= 0) return Bad(name, value);
      config.registry.poll_interval = absl::Milliseconds(n);
    } else if (name == "resolve-ms") {
      if (!absl::SimpleAtoi(value, &n) || n <= 0) return Bad(name, value);
      config.registry.resolve_interval = absl::Milliseconds(n);
    } else if (name == "relay-threads") {
      if (!absl::SimpleAtoi(value, &n) || n <= 0 || n > 4096) return Bad(name, value);
      config.relay_threads = static_cast<int>(n);
    } else if (name == "max-queue") {
      if (!absl::SimpleAtoi(value, &n) || n < 0 || n > (1 << 20)) return Bad(name, value);
      config.max_queue = static_cast<int>(n);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  if (config.prefill.empty()) return absl::InvalidArgumentError("--prefill is required");
  if (config.decode.empty()) return absl::InvalidArgumentError("--decode is required");
  absl::StatusOr<std::vector<WorkerEndpoint>> merged = MergeWorkerLists(config.prefill, config.decode);
  if (!merged.ok()) return merged.status();
  return config;
}

}  // namespace moeserve::router
