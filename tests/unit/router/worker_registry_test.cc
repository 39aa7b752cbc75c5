#include "router/worker_registry.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/unit/router/fake_worker.h"

namespace moeserve::router {
namespace {

using testing::FakeWorkerClient;

TEST(MergeWorkerListsTest, RolesAndBoth) {
  absl::StatusOr<std::vector<WorkerEndpoint>> got =
      MergeWorkerLists({"a:1", "b:2"}, {"b:2", "c:3"});
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 3u);
  EXPECT_EQ((*got)[0].address, "a:1");
  EXPECT_TRUE((*got)[0].prefill);
  EXPECT_FALSE((*got)[0].decode);
  EXPECT_TRUE((*got)[1].prefill);
  EXPECT_TRUE((*got)[1].decode);
  EXPECT_FALSE((*got)[2].prefill);
  EXPECT_TRUE((*got)[2].decode);
}

TEST(MergeWorkerListsTest, RejectsMalformedAndDuplicates) {
  EXPECT_EQ(MergeWorkerLists({"nohost"}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MergeWorkerLists({"h:0"}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MergeWorkerLists({"h:x"}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MergeWorkerLists({}, {":5"}).status().code(), absl::StatusCode::kInvalidArgument);
  absl::Status dup = MergeWorkerLists({}, {"h:5", "h:5"}).status();
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(dup.message().find("twice"), absl::string_view::npos);
}

class WorkerRegistryTest : public ::testing::Test {
 protected:
  WorkerRegistryTest() {
    options_.stale_after = absl::Seconds(5);
    registry_ = std::make_unique<WorkerRegistry>(
        std::vector<WorkerEndpoint>{{"p:1", true, false}, {"d:2", false, true}},
        [this](const WorkerEndpoint&) {
          clients_.push_back(std::make_shared<FakeWorkerClient>());
          return clients_.back();
        },
        options_, &clock_);
  }

  moeserve::testing::FakeClock clock_;
  RegistryOptions options_;
  std::vector<std::shared_ptr<FakeWorkerClient>> clients_;
  std::unique_ptr<WorkerRegistry> registry_;
};

TEST_F(WorkerRegistryTest, StartsHealthyWithConfiguredRoles) {
  std::vector<WorkerLoad> s = registry_->Snapshot();
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].id, 0);
  EXPECT_TRUE(s[0].healthy && s[0].can_prefill && !s[0].can_decode);
  EXPECT_TRUE(s[1].healthy && !s[1].can_prefill && s[1].can_decode);
  EXPECT_EQ(registry_->Address(1), "d:2");
}

TEST_F(WorkerRegistryTest, PollRefreshesLoad) {
  clients_[1]->SetLoad(3, 4, 55);
  registry_->PollOnce();
  std::vector<WorkerLoad> s = registry_->Snapshot();
  EXPECT_EQ(s[1].running, 3);
  EXPECT_EQ(s[1].waiting, 4);
  EXPECT_EQ(s[1].kv_blocks_free, 55);
  std::vector<v1::WorkerStatus> list = registry_->List();
  EXPECT_EQ(list[0].role(), "prefill");
  EXPECT_EQ(list[1].role(), "decode");
  EXPECT_EQ(list[1].load().running(), 3);
}

TEST_F(WorkerRegistryTest, FailedPollIsUnhealthyUntilNextSuccess) {
  clients_[0]->FailGetLoad(true);
  registry_->PollOnce();
  EXPECT_FALSE(registry_->Snapshot()[0].healthy);
  EXPECT_TRUE(registry_->Snapshot()[1].healthy);
  EXPECT_FALSE(registry_->List()[0].healthy());
  clients_[0]->FailGetLoad(false);
  registry_->PollOnce();
  EXPECT_TRUE(registry_->Snapshot()[0].healthy);
}

TEST_F(WorkerRegistryTest, ReportedFailureLastsUntilNextSuccessfulPoll) {
  registry_->ReportFailure(1);
  registry_->ReportFailure(99);  // ignored
  EXPECT_FALSE(registry_->Snapshot()[1].healthy);
  registry_->PollOnce();
  EXPECT_TRUE(registry_->Snapshot()[1].healthy);
}

TEST_F(WorkerRegistryTest, StaleWorkerIsUnhealthy) {
  clock_.Advance(absl::Seconds(5));
  EXPECT_TRUE(registry_->Snapshot()[0].healthy);
  clock_.Advance(absl::Seconds(1));
  EXPECT_FALSE(registry_->Snapshot()[0].healthy);
  registry_->PollOnce();
  EXPECT_TRUE(registry_->Snapshot()[0].healthy);
  // A worker that keeps failing is not refreshed by time passing.
  clients_[0]->FailGetLoad(true);
  registry_->PollOnce();
  clock_.Advance(absl::Seconds(1));
  EXPECT_FALSE(registry_->Snapshot()[0].healthy);
}

}  // namespace
}  // namespace moeserve::router
