#include "engine/chat_template.h"

#include "gtest/gtest.h"

namespace moeserve::engine {
namespace {

TEST(ChatTemplateTest, Smoke) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("Hi {{ name }}!");
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> out = t->Render(nlohmann::ordered_json{{"name", "Bob"}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "Hi Bob!");
}

}  // namespace
}  // namespace moeserve::engine
