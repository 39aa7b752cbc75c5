#include "common/drain.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace moeserve {
namespace {

TEST(DrainFlagTest, DefaultWhenAbsentAndOtherFlagsKept) {
  std::vector<std::string> args = {"--port", "5", "--model", "m"};
  absl::StatusOr<absl::Duration> d = TakeDrainTimeoutFlag(&args);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, absl::Seconds(30));
  EXPECT_EQ(args, (std::vector<std::string>{"--port", "5", "--model", "m"}));
}

TEST(DrainFlagTest, BothSpellingsAreTakenOut) {
  std::vector<std::string> args = {"--port", "5", "--drain-timeout-s", "7", "--model", "m"};
  absl::StatusOr<absl::Duration> d = TakeDrainTimeoutFlag(&args);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, absl::Seconds(7));
  EXPECT_EQ(args, (std::vector<std::string>{"--port", "5", "--model", "m"}));
  args = {"--drain-timeout-s=0"};
  d = TakeDrainTimeoutFlag(&args);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, absl::ZeroDuration());
  EXPECT_TRUE(args.empty());
}

TEST(DrainFlagTest, BadValuesAreInvalidArgument) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"--drain-timeout-s"}, {"--drain-timeout-s", "-1"}, {"--drain-timeout-s=soon"},
           {"--drain-timeout-s", "1.5"}, {"--drain-timeout-s=999999"}}) {
    absl::StatusOr<absl::Duration> d = TakeDrainTimeoutFlag(&args);
    EXPECT_TRUE(absl::IsInvalidArgument(d.status())) << args[0];
  }
}

}  // namespace
}  // namespace moeserve
