#include "gateway/static_files.h"

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace moeserve::gateway {
namespace {

std::string ReadSource(absl::string_view url_path) {
  std::ifstream in(std::string(MOESERVE_SOURCE_DIR) + "/gateway/web" + std::string(url_path),
                   std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

TEST(StaticFilesTest, EmbedsEveryPageFileByteForByte) {
  std::set<std::string> paths;
  for (const StaticFile& f : StaticFiles()) {
    paths.insert(std::string(f.path));
    const std::string source = ReadSource(f.path);
    ASSERT_FALSE(source.empty()) << f.path;
    EXPECT_EQ(f.body, source) << f.path;
    EXPECT_EQ(f.etag.size(), 22u) << f.etag;  // 20 hex digits in quotes
  }
  EXPECT_EQ(paths, (std::set<std::string>{"/index.html", "/playground.js", "/playground.css",
                                          "/favicon.svg"}));
}

TEST(StaticFilesTest, RootIsTheIndexAndTypesFollowTheExtension) {
  const StaticFile* root = FindStaticFile("/");
  ASSERT_NE(root, nullptr);
  EXPECT_EQ(root, FindStaticFile("/index.html"));
  EXPECT_EQ(root->content_type, "text/html; charset=utf-8");
  EXPECT_TRUE(absl::StrContains(root->body, "playground.js"));
  ASSERT_NE(FindStaticFile("/playground.js"), nullptr);
  EXPECT_EQ(FindStaticFile("/playground.js")->content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(FindStaticFile("/playground.css")->content_type, "text/css; charset=utf-8");
  EXPECT_EQ(FindStaticFile("/favicon.svg")->content_type, "image/svg+xml");
}

TEST(StaticFilesTest, DifferentFilesHaveDifferentEtags) {
  std::set<absl::string_view> etags;
  for (const StaticFile& f : StaticFiles()) etags.insert(f.etag);
  EXPECT_EQ(etags.size(), StaticFiles().size());
}

TEST(StaticFilesTest, NothingOutsideTheEmbeddedSet) {
  for (const char* path : {"", "/index.htm", "/../gateway/web/index.html", "/web/index.html",
                           "//index.html", "/INDEX.HTML", "/playground.js/", "/v1/models"}) {
    EXPECT_EQ(FindStaticFile(path), nullptr) << path;
  }
}

}  // namespace
}  // namespace moeserve::gateway
