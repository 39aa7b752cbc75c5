#include "gateway/price_table.h"

#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace moeserve::gateway {
namespace {

constexpr char kGood[] = R"({
  "currency": "EUR",
  "models": {
    "*": {"input_cache_hit_per_million": 0.1, "input_cache_miss_per_million": 1,
          "output_per_million": 4},
    "deepseek-r1": {"input_cache_hit_per_million": 0.14, "input_cache_miss_per_million": 0.55,
                    "output_per_million": 2.19}
  }
})";

std::string WriteTemp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(PriceTableTest, DefaultHasOnlyTheWildcardInUsd) {
  const PriceTable t = PriceTable::Default();
  EXPECT_EQ(t.currency(), "USD");
  EXPECT_EQ(t.For("anything").input_cache_hit_per_million, 0.14);
  EXPECT_EQ(t.For("anything").input_cache_miss_per_million, 0.55);
  EXPECT_EQ(t.For("anything").output_per_million, 2.19);
}

TEST(PriceTableTest, LoadsAGoodFileAndFallsBackToTheWildcard) {
  absl::StatusOr<PriceTable> t = PriceTable::LoadFile(WriteTemp("good_prices.json", kGood));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->currency(), "EUR");
  EXPECT_EQ(t->For("deepseek-r1").output_per_million, 2.19);
  EXPECT_EQ(t->For("tiny").output_per_million, 4);
  // 1000 hit + 2000 miss + 500 output tokens of deepseek-r1.
  EXPECT_NEAR(t->Cost("deepseek-r1", 1000, 2000, 500), (140 + 1100 + 1095) / 1e6, 1e-12);
  EXPECT_NEAR(t->Cost("tiny", 1e6, 0, 1e6), 0.1 + 4, 1e-12);
  EXPECT_EQ(t->PricesJson({"deepseek-r1", "tiny"}).dump(),
            R"({"object":"list","currency":"EUR","data":[)"
            R"({"model":"deepseek-r1","input_cache_hit_per_million":0.14,)"
            R"("input_cache_miss_per_million":0.55,"output_per_million":2.19},)"
            R"({"model":"tiny","input_cache_hit_per_million":0.1,)"
            R"("input_cache_miss_per_million":1.0,"output_per_million":4.0}]})");
}

TEST(PriceTableTest, CurrencyIsOptional) {
  absl::StatusOr<PriceTable> t = PriceTable::Parse(
      R"({"models":{"*":{"input_cache_hit_per_million":0,"input_cache_miss_per_million":0,)"
      R"("output_per_million":0}}})");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->currency(), "USD");
  EXPECT_EQ(t->Cost("m", 10, 10, 10), 0);
}

TEST(PriceTableTest, MissingFileIsNotFound) {
  absl::StatusOr<PriceTable> t = PriceTable::LoadFile(::testing::TempDir() + "/no/such.json");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(t.status().message(), "no/such.json")) << t.status();
}

TEST(PriceTableTest, BadFilesNameTheProblem) {
  const std::string price =
      R"({"input_cache_hit_per_million":1,"input_cache_miss_per_million":2,"output_per_million":3})";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{oops", "not valid JSON"},
      {"[]", "must be a JSON object"},
      {R"({"currency":"USD"})", "\"models\" must be an object"},
      {R"({"models":[]})", "\"models\" must be an object"},
      {R"({"models":{}})", "needs a \"*\" entry"},
      {R"({"models":{"deepseek-r1":)" + price + "}}", "needs a \"*\" entry"},
      {R"({"modles":{"*":)" + price + "}}", "unknown key \"modles\""},
      {R"({"currency":"usd","models":{"*":)" + price + "}}", "currency must be"},
      {R"({"currency":7,"models":{"*":)" + price + "}}", "currency must be"},
      {R"({"models":{"*":3}})", "models[\"*\"] must be an object"},
      {R"({"models":{"*":{"input_cache_hit_per_million":1,"input_cache_miss_per_million":2}}})",
       "lacks \"output_per_million\""},
      {R"({"models":{"*":{"input_cache_hit_per_million":-1,"input_cache_miss_per_million":2,)"
       R"("output_per_million":3}}})",
       "input_cache_hit_per_million must be a finite number >= 0"},
      {R"({"models":{"*":{"input_cache_hit_per_million":"1","input_cache_miss_per_million":2,)"
       R"("output_per_million":3}}})",
       "must be a finite number >= 0, got \"1\""},
      {R"({"models":{"*":{"input_cache_hit_per_million":1,"input_cache_miss_per_million":2,)"
       R"("output_per_million":3,"output_per_millon":3}}})",
       "unknown key \"output_per_millon\""},
      {R"({"models":{"":)" + price + "}}", "empty model id"},
  };
  int i = 0;
  for (const auto& [text, message] : cases) {
    const std::string path = WriteTemp("bad_prices_" + std::to_string(i++) + ".json", text);
    absl::StatusOr<PriceTable> t = PriceTable::LoadFile(path);
    ASSERT_FALSE(t.ok()) << text;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_TRUE(absl::StrContains(t.status().message(), message)) << t.status();
    EXPECT_TRUE(absl::StrContains(t.status().message(), path)) << t.status();
  }
}

}  // namespace
}  // namespace moeserve::gateway
