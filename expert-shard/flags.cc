#include "expert-shard/flags.h"

#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace moeserve::expert_shard {
namespace {

absl::Status ParseInt(const std::string& flag, const std::string& text, int lo, int* out) {
  int v = 0;
  if (!absl::SimpleAtoi(text, &v) || v < lo) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " '", text, "' is not an integer >= ", lo));
  }
  *out = v;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int> ShardIdFromHostname(absl::string_view hostname) {
  const absl::string_view name = hostname.substr(0, hostname.find('.'));
  const size_t dash = name.rfind('-');
  int id = 0;
  if (dash == absl::string_view::npos || dash + 1 == name.size() ||
      name.substr(dash + 1).find_first_not_of("0123456789") != absl::string_view::npos ||
      !absl::SimpleAtoi(name.substr(dash + 1), &id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shard-id-from-hostname: hostname '", hostname, "' does not end in -<ordinal>"));
  }
  return id;
}

absl::StatusOr<ShardConfig> ParseFlags(int argc, char** argv, const std::string& hostname) {
  static const char* const kFlags[] = {"model",        "port",          "shard-id",
                                       "num-shards",   "placement",     "compute-dtype",
                                       "threads",      "host",          "metrics-port",
                                       "shard-id-from-hostname", "cuda-device", "backend"};
  std::map<std::string, std::string> values;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg.substr(0, 2) != "--") {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    arg.remove_prefix(2);
    std::string name(arg.substr(0, arg.find('=')));
    bool known = false;
    for (const char* f : kFlags) known = known || name == f;
    if (!known) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    if (arg.find('=') != absl::string_view::npos) {
      values[name] = std::string(arg.substr(arg.find('=') + 1));
    } else if (i + 1 < argc) {
      values[name] = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
    }
  }
  ShardConfig c;
  if (!values.count("model")) return absl::InvalidArgumentError("--model DIR is required");
  c.model_dir = values["model"];
  if (values.count("host")) c.host = values["host"];
  if (values.count("placement")) c.placement = values["placement"];
  if (values.count("backend")) c.backend = values["backend"];
  absl::Status s;
  if (values.count("port")) s.Update(ParseInt("port", values["port"], 0, &c.port));
  if (values.count("shard-id")) s.Update(ParseInt("shard-id", values["shard-id"], 0, &c.shard_id));
  if (values.count("num-shards")) {
    s.Update(ParseInt("num-shards", values["num-shards"], 1, &c.num_shards));
  }
  if (values.count("threads")) s.Update(ParseInt("threads", values["threads"], 0, &c.threads));
  if (values.count("cuda-device")) {
    s.Update(ParseInt("cuda-device", values["cuda-device"], 0, &c.cuda_device));
  }
  if (values.count("metrics-port")) {
    s.Update(ParseInt("metrics-port", values["metrics-port"], 0, &c.metrics_port));
  }
  if (values.count("shard-id-from-hostname")) {
    const std::string& v = values["shard-id-from-hostname"];
    if (v != "true" && v != "false") {
      return absl::InvalidArgumentError(
          absl::StrCat("--shard-id-from-hostname '", v, "' must be true or false"));
    }
    if (v == "true") {
      if (values.count("shard-id")) {
        return absl::InvalidArgumentError(
            "--shard-id and --shard-id-from-hostname true exclude each other");
      }
      absl::StatusOr<int> id = ShardIdFromHostname(hostname);
      if (!id.ok()) return id.status();
      c.shard_id = *id;
    }
  }
  if (!s.ok()) return s;
  if (c.port > 65535 || c.metrics_port > 65535) {
    return absl::InvalidArgumentError("--port and --metrics-port must be at most 65535");
  }
  if (c.shard_id >= c.num_shards) {
    return absl::InvalidArgumentError(
        absl::StrCat("--shard-id ", c.shard_id, " must be below --num-shards ", c.num_shards));
  }
  if (values.count("compute-dtype")) {
    absl::StatusOr<engine::ComputeDType> d = engine::ParseComputeDType(values["compute-dtype"]);
    if (!d.ok()) return d.status();
    c.compute = *d;
  }
  return c;
}

}  // namespace moeserve::expert_shard
