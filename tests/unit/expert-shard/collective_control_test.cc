// Integration: the collective data plane set up through real shard servers' gRPC control plane
// (JoinCollective), with the in-process PeerGroup standing in for NCCL's; a worker's logits must
// equal the whole model's exactly. The NCCL group itself needs GPUs (tests/gpu).
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "expert-shard/collective_connect.h"
#include "expert-shard/expert_shard_server.h"
#include "expert-shard/remote_expert_executor.h"
#include "expert-shard/transport/cpu_peer_group.h"
#include "expert-shard/transport/nccl_peer_group.h"
#include "gtest/gtest.h"
#include "tests/unit/expert-shard/shard_test_util.h"

namespace moeserve::expert_shard {
namespace {

using engine::ComputeDType;
using engine::Model;

// In-process groups handed out by rank: what the shards' and the worker's joiners take.
class GroupPool {
 public:
  explicit GroupPool(int size) : groups_(MakeCpuPeerGroups(size, absl::Seconds(20))) {}

  GroupJoiner Joiner() {
    return [this](const CollectiveJoin& join) -> absl::StatusOr<std::unique_ptr<PeerGroup>> {
      absl::MutexLock lock(&mu_);
      if (join.unique_id != "cpu-group" || join.rank < 0 ||
          join.rank >= static_cast<int>(groups_.size()) || groups_[join.rank] == nullptr) {
        return absl::UnavailableError("no such rank in the pool");
      }
      return std::move(groups_[join.rank]);
    };
  }

 private:
  absl::Mutex mu_;
  std::vector<std::unique_ptr<PeerGroup>> groups_ ABSL_GUARDED_BY(mu_);
};

std::unique_ptr<ExpertShardServer> StartShard(int32_t id, int num_shards, ComputeDType compute,
                                              GroupJoiner joiner) {
  ShardConfig c;
  c.model_dir = testing::SmallModelDir();
  c.host = "127.0.0.1";
  c.shard_id = id;
  c.num_shards = num_shards;
  c.placement = "round_robin";
  c.compute = compute;
  c.threads = 1;
  c.collective_joiner = std::move(joiner);
  absl::StatusOr<std::unique_ptr<ExpertShardServer>> s = ExpertShardServer::Create(c);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

std::unique_ptr<GrpcTransport> Control(const std::vector<int>& ports, int64_t hidden) {
  GrpcTransportOptions o;
  for (int p : ports) o.addresses.push_back(absl::StrCat("127.0.0.1:", p));
  o.hidden_size = hidden;
  absl::StatusOr<std::unique_ptr<GrpcTransport>> t = GrpcTransport::Create(o);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

TEST(CollectiveControlTest, ShardsJoinOverGrpcAndTheWorkerEqualsTheWholeModel) {
  const ComputeDType compute = ComputeDType::kF32;
  absl::StatusOr<std::unique_ptr<Model>> whole = testing::LoadPart(compute, true, nullptr, 2);
  ASSERT_TRUE(whole.ok()) << whole.status();
  absl::StatusOr<std::vector<std::vector<float>>> ref =
      testing::RunBatch(**whole, nullptr, testing::Prompts(), 2);
  ASSERT_TRUE(ref.ok()) << ref.status();

  GroupPool pool(3);
  std::unique_ptr<ExpertShardServer> s0 = StartShard(0, 2, compute, pool.Joiner());
  std::unique_ptr<ExpertShardServer> s1 = StartShard(1, 2, compute, pool.Joiner());
  ASSERT_NE(s0, nullptr);
  ASSERT_NE(s1, nullptr);
  absl::StatusOr<std::unique_ptr<Model>> worker = testing::LoadWorker(compute);
  ASSERT_TRUE(worker.ok()) << worker.status();
  const engine::ModelConfig& mc = (*worker)->config();
  std::unique_ptr<GrpcTransport> control = Control({s0->Port(), s1->Port()}, mc.hidden_size);
  ASSERT_NE(control, nullptr);
  absl::StatusOr<Placement> placement = Placement::Parse("round_robin", 2, MoeShape::FromConfig(mc));
  ASSERT_TRUE(placement.ok());
  ASSERT_TRUE(control->VerifyShards(*placement, mc).ok());
  absl::StatusOr<moeserve::v1::ShardInfoResponse> info = control->Info(0);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->nccl());  // a joiner is configured

  absl::StatusOr<std::unique_ptr<CollectiveTransport>> data = ConnectCollective(
      control.get(), mc, "cpu-group", pool.Joiner(), absl::Seconds(20), "cpu group");
  ASSERT_TRUE(data.ok()) << data.status();
  // Joining the same group twice is refused (other groups, other workers', may join).
  moeserve::v1::JoinCollectiveRequest again;
  again.set_nccl_unique_id("cpu-group");
  again.set_rank(1);
  again.set_world_size(3);
  EXPECT_EQ(control->JoinCollective(0, again).code(), absl::StatusCode::kFailedPrecondition);

  RemoteExpertExecutor remote(&*placement, data->get(), mc.hidden_size);
  absl::StatusOr<std::vector<std::vector<float>>> got =
      testing::RunBatch(**worker, &remote, testing::Prompts(), 2);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), ref->size());
  for (size_t i = 0; i < ref->size(); ++i) EXPECT_EQ((*got)[i], (*ref)[i]) << "logits " << i;
  data->reset();  // stops the shards' serving loops
  s0->Shutdown();
  s1->Shutdown();
}

TEST(CollectiveControlTest, JoinCollectiveRefusesRanksThatDoNotFitTheShard) {
  GroupPool pool(3);
  std::unique_ptr<ExpertShardServer> s1 = StartShard(1, 2, ComputeDType::kF32, pool.Joiner());
  ASSERT_NE(s1, nullptr);
  std::unique_ptr<GrpcTransport> control = Control({s1->Port()}, 64);
  ASSERT_NE(control, nullptr);
  moeserve::v1::JoinCollectiveRequest r;
  r.set_nccl_unique_id("cpu-group");
  r.set_rank(1);  // shard 1 is rank 2
  r.set_world_size(3);
  absl::Status st = control->JoinCollective(0, r);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("rank 2 of 3"), std::string::npos) << st;
  r.set_rank(2);
  r.set_world_size(4);
  EXPECT_EQ(control->JoinCollective(0, r).code(), absl::StatusCode::kInvalidArgument);
  r.set_world_size(3);
  r.set_timeout_ms(-1);
  EXPECT_EQ(control->JoinCollective(0, r).code(), absl::StatusCode::kInvalidArgument);
  // The shard's group never forms (rank 0 never joins): shutting down cancels it, no hang.
  r.set_timeout_ms(0);
  EXPECT_TRUE(control->JoinCollective(0, r).ok());
  s1->Shutdown();
}

// Without NCCL in the build, or without a GPU, asking for the NCCL data plane is a clear error
// on both sides, never a crash or a hang.
TEST(CollectiveControlTest, WithoutNcclOrADeviceTheNcclPlaneIsRefusedClearly) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present (tests/gpu cover it)";
  std::unique_ptr<ExpertShardServer> s0 = StartShard(0, 1, ComputeDType::kF32, nullptr);
  ASSERT_NE(s0, nullptr);
  std::unique_ptr<GrpcTransport> control = Control({s0->Port()}, 64);
  ASSERT_NE(control, nullptr);
  absl::StatusOr<moeserve::v1::ShardInfoResponse> info = control->Info(0);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->nccl(), NcclBuilt());
  absl::StatusOr<engine::ModelConfig> mc = engine::LoadModelConfig(testing::SmallModelDir());
  ASSERT_TRUE(mc.ok());
  absl::StatusOr<std::unique_ptr<CollectiveTransport>> t =
      ConnectNcclTransport(control.get(), *mc, 0, absl::Seconds(5));
  ASSERT_FALSE(t.ok());
  if (!NcclBuilt()) {
    EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition) << t.status();
    moeserve::v1::JoinCollectiveRequest r;
    r.set_nccl_unique_id("x");
    r.set_rank(1);
    r.set_world_size(2);
    absl::Status st = control->JoinCollective(0, r);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
    EXPECT_NE(st.message().find("NCCL"), std::string::npos) << st;
  } else {
    // The shard accepted the join; its rank, like the worker's, fails to reach a device.
    EXPECT_EQ(t.status().code(), absl::StatusCode::kUnavailable) << t.status();
    EXPECT_NE(t.status().message().find("CUDA"), std::string::npos) << t.status();
  }
  s0->Shutdown();
}

}  // namespace
}  // namespace moeserve::expert_shard
