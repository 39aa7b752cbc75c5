#include "router/worker_registry.h"

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_set.h"
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
  EXPECT_EQ(MergeWorkerLists({"dns:name"}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MergeWorkerLists({"dns::5"}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(MergeWorkerLists({"dns:x"}, {}).status().message().find("dns:name:port"),
            absl::string_view::npos);
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

TEST(MergeWorkerListsTest, DnsSourcesKeepTheirRoles) {
  absl::StatusOr<std::vector<WorkerEndpoint>> got =
      MergeWorkerLists({"dns:pool.ns.svc:50052"}, {"dns:pool.ns.svc:50052", "d:1"});
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].address, "dns:pool.ns.svc:50052");
  EXPECT_TRUE((*got)[0].prefill && (*got)[0].decode);
}

TEST(ResolveHostTest, NumericAndLocalhost) {
  absl::StatusOr<std::vector<std::string>> v4 = ResolveHost("127.0.0.1");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(*v4, std::vector<std::string>{"127.0.0.1"});
  absl::StatusOr<std::vector<std::string>> v6 = ResolveHost("::1");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(*v6, std::vector<std::string>{"::1"});
  absl::StatusOr<std::vector<std::string>> local = ResolveHost("localhost");
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_FALSE(local->empty());
}

// A static prefill worker and a dns: source of decode workers, over a fake resolver.
class DiscoveryTest : public ::testing::Test {
 protected:
  DiscoveryTest() {
    options_.stale_after = absl::Seconds(5);
    options_.forget_after = absl::Seconds(60);
    options_.resolver = [this](const std::string& host) -> absl::StatusOr<std::vector<std::string>> {
      ++resolutions_;
      if (host != "pool") return std::vector<std::string>();
      return answer_;
    };
    registry_ = std::make_unique<WorkerRegistry>(
        std::vector<WorkerEndpoint>{{"s:1", true, false}, {"dns:pool:7", false, true}},
        [this](const WorkerEndpoint& e) {
          auto client = std::make_shared<FakeWorkerClient>();
          client->FailGetLoad(down_.contains(e.address));
          clients_[e.address] = client;
          return client;
        },
        options_, &clock_);
  }

  // address -> (id, healthy, can_prefill, can_decode) of the pool.
  std::map<std::string, std::tuple<WorkerId, bool, bool, bool>> Pool() const {
    std::map<std::string, std::tuple<WorkerId, bool, bool, bool>> out;
    for (const WorkerLoad& w : registry_->Snapshot()) {
      out[registry_->Address(w.id)] = {w.id, w.healthy, w.can_prefill, w.can_decode};
    }
    return out;
  }

  moeserve::testing::FakeClock clock_;
  RegistryOptions options_;
  absl::StatusOr<std::vector<std::string>> answer_ = std::vector<std::string>();
  int resolutions_ = 0;
  absl::flat_hash_set<std::string> down_;
  std::map<std::string, std::shared_ptr<FakeWorkerClient>> clients_;
  std::unique_ptr<WorkerRegistry> registry_;
};

TEST_F(DiscoveryTest, ScalingUpAndDownChangesThePool) {
  EXPECT_EQ(registry_->size(), 1u);  // nothing resolved yet
  answer_ = std::vector<std::string>{"10.0.0.1", "10.0.0.2", "fd00::3"};
  registry_->RefreshMembership();
  EXPECT_EQ(resolutions_, 1);
  using Row = std::tuple<WorkerId, bool, bool, bool>;
  EXPECT_EQ(Pool(), (std::map<std::string, Row>{{"s:1", {0, true, true, false}},
                                                {"10.0.0.1:7", {1, true, false, true}},
                                                {"10.0.0.2:7", {2, true, false, true}},
                                                {"[fd00::3]:7", {3, true, false, true}}}));
  // Scale down: 10.0.0.1 leaves. It gets no new work but its client lives on for the requests
  // already on it, until forget_after.
  answer_ = std::vector<std::string>{"10.0.0.2", "fd00::3"};
  registry_->RefreshMembership();
  EXPECT_EQ(registry_->size(), 3u);
  EXPECT_FALSE(Pool().contains("10.0.0.1:7"));
  EXPECT_EQ(registry_->List().size(), 3u);
  EXPECT_NE(registry_->Client(1), nullptr);
  EXPECT_EQ(registry_->Address(1), "10.0.0.1:7");
  // Back before forget_after: the same id.
  answer_ = std::vector<std::string>{"10.0.0.1", "10.0.0.2", "fd00::3"};
  registry_->RefreshMembership();
  EXPECT_EQ(std::get<0>(Pool().at("10.0.0.1:7")), 1);
  // Gone for forget_after: forgotten; coming back later is a new worker with a new id.
  answer_ = std::vector<std::string>{"10.0.0.2"};
  registry_->RefreshMembership();
  clock_.Advance(absl::Seconds(60));
  registry_->RefreshMembership();
  EXPECT_EQ(registry_->Client(1), nullptr);
  EXPECT_EQ(registry_->Address(3), "");
  registry_->ReportFailure(1);  // ignored
  answer_ = std::vector<std::string>{"10.0.0.1", "10.0.0.2"};
  registry_->RefreshMembership();
  EXPECT_EQ(std::get<0>(Pool().at("10.0.0.1:7")), 4);
  EXPECT_EQ(registry_->size(), 3u);
}

TEST_F(DiscoveryTest, ANewWorkerJoinsHealthyOnlyWhenItAnswers) {
  down_.insert("10.0.0.9:7");
  answer_ = std::vector<std::string>{"10.0.0.9"};
  registry_->RefreshMembership();
  EXPECT_FALSE(std::get<1>(Pool().at("10.0.0.9:7")));
  clients_.at("10.0.0.9:7")->FailGetLoad(false);
  clients_.at("10.0.0.9:7")->SetLoad(2, 1, 40);
  registry_->PollOnce();
  EXPECT_TRUE(std::get<1>(Pool().at("10.0.0.9:7")));
  EXPECT_EQ(registry_->List()[1].load().running(), 2);
}

TEST_F(DiscoveryTest, AFailedResolutionKeepsTheWorkers) {
  answer_ = std::vector<std::string>{"10.0.0.1"};
  registry_->RefreshMembership();
  answer_ = absl::UnavailableError("resolver down");
  registry_->RefreshMembership();
  clock_.Advance(absl::Minutes(10));
  registry_->RefreshMembership();
  EXPECT_TRUE(Pool().contains("10.0.0.1:7"));
  // An empty answer (no ready pod, NXDOMAIN) does empty the source.
  answer_ = std::vector<std::string>();
  registry_->RefreshMembership();
  EXPECT_EQ(Pool().size(), 1u);
}

TEST_F(DiscoveryTest, AStaticWorkerAlsoDiscoveredServesBothRoles) {
  WorkerRegistry registry(
      {{"10.0.0.5:7", true, false}, {"dns:pool:7", false, true}},
      [](const WorkerEndpoint&) { return std::make_shared<FakeWorkerClient>(); }, options_, &clock_);
  answer_ = std::vector<std::string>{"10.0.0.5", "10.0.0.6"};
  registry.RefreshMembership();
  std::vector<v1::WorkerStatus> list = registry.List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].address(), "10.0.0.5:7");
  EXPECT_EQ(list[0].role(), "both");
  EXPECT_EQ(list[1].role(), "decode");
  answer_ = std::vector<std::string>();
  registry.RefreshMembership();
  list = registry.List();
  ASSERT_EQ(list.size(), 1u);  // a static worker never leaves; it keeps its own role
  EXPECT_EQ(list[0].role(), "prefill");
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
