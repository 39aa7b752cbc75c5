// moeserve keys: makes the entries of a gateway's API keys file (gateway/api_keys.h), which holds
// only SHA-256 hashes of the keys.
//   moeserve keys hash [--key KEY]        the hash of KEY (or of the first line of stdin)
//   moeserve keys add --file F --name N --tier T [--admin] [--key KEY]
//       adds a key (a new random one unless --key) to F, creating F with tier T (no limits) when
//       it does not exist, and prints the key: the file keeps only its hash.
#include <openssl/rand.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "gateway/api_keys.h"
#include "nlohmann/json.hpp"
#include "tools/moeserve/commands.h"
#include "tools/moeserve/flags.h"

namespace moeserve::cli {
namespace {

using Json = nlohmann::ordered_json;

absl::StatusOr<std::string> NewKey() {
  unsigned char bytes[24];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return absl::InternalError("RAND_bytes failed");
  return absl::StrCat("sk-", absl::BytesToHexString(absl::string_view(
                                 reinterpret_cast<const char*>(bytes), sizeof(bytes))));
}

absl::Status Add(const Flags& f) {
  MOESERVE_ASSIGN_OR_RETURN(std::string path, f.Required("file"));
  MOESERVE_ASSIGN_OR_RETURN(std::string name, f.Required("name"));
  MOESERVE_ASSIGN_OR_RETURN(std::string tier, f.Required("tier"));
  std::string key = f.Get("key").value_or("");
  if (key.empty()) {
    absl::StatusOr<std::string> k = NewKey();
    if (!k.ok()) return k.status();
    key = *k;
  }
  Json file;
  if (std::filesystem::exists(path)) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    file = Json::parse(text.str(), nullptr, false);
    if (file.is_discarded() || !file.is_object() || !file.contains("keys") ||
        !file["keys"].is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(path, " is not an API keys file"));
    }
  } else {
    file = {{"tiers", {{tier, Json::object()}}}, {"keys", Json::array()}};
  }
  Json entry = {{"name", name}, {"sha256", gateway::ApiKeyStore::HashKey(key)}, {"tier", tier}};
  if (f.Has("admin")) entry["admin"] = true;
  file["keys"].push_back(entry);
  const std::string text = file.dump(2) + "\n";
  // The gateway's own parser checks the result (unknown tier, duplicate name or key).
  RealClock clock;
  if (absl::StatusOr<std::unique_ptr<gateway::ApiKeyStore>> check =
          gateway::ApiKeyStore::Parse(text, &clock);
      !check.ok()) {
    return check.status();
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out.flush()) return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot write ", path, ": ", ec.message()));
  std::cerr << "added '" << name << "' (tier " << tier << ") to " << path
            << "; the file keeps only the key's hash, so store the key now:\n";
  std::cout << key << "\n";
  return absl::OkStatus();
}

}  // namespace

int RunKeys(const std::vector<std::string>& args) {
  const std::string usage =
      "usage: moeserve keys hash [--key KEY]\n"
      "       moeserve keys add --file FILE --name NAME --tier TIER [--admin] [--key KEY]\n";
  if (args.empty() || (args[0] != "hash" && args[0] != "add")) {
    std::cerr << usage;
    return 2;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "hash") {
    absl::StatusOr<Flags> f = Flags::Parse(rest, {"key"}, {});
    if (!f.ok()) {
      LogError(f.status());
      return 2;
    }
    std::string key = f->Get("key").value_or("");
    if (!f->Has("key")) std::getline(std::cin, key);
    if (key.empty()) {
      LogError(absl::InvalidArgumentError("no key: give --key KEY or a line on stdin"));
      return 2;
    }
    std::cout << gateway::ApiKeyStore::HashKey(key) << "\n";
    return 0;
  }
  absl::StatusOr<Flags> f = Flags::Parse(rest, {"file", "name", "tier", "key"}, {"admin"});
  if (!f.ok()) {
    LogError(f.status());
    std::cerr << usage;
    return 2;
  }
  if (absl::Status s = Add(*f); !s.ok()) {
    LogError(s);
    return absl::IsInvalidArgument(s) ? 2 : 1;
  }
  return 0;
}

}  // namespace moeserve::cli
