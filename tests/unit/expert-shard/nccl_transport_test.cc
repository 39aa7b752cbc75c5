// The NCCL PeerGroup and the collective transport over it (label gpu: these need CUDA devices and
// skip without them; the exchange logic itself is tested multi-rank in-process in
// collective_transport_test.cc, since NCCL refuses two ranks on one GPU).
#include "expert-shard/transport/nccl_peer_group.h"

#include <cstdint>
#include <memory>
#include <numeric>
#include <thread>
#include <vector>

#include "expert-shard/shard_compute.h"
#include "expert-shard/transport/collective_transport.h"
#include "gtest/gtest.h"
#include "tests/unit/expert-shard/shard_test_util.h"

namespace moeserve::expert_shard {
namespace {

bool HaveDevices(int n) { return NcclBuilt() && CudaDeviceCount() >= n; }

std::unique_ptr<PeerGroup> OneRank(absl::Duration timeout) {
  absl::StatusOr<std::string> id = NewNcclUniqueId();
  EXPECT_TRUE(id.ok()) << id.status();
  if (!id.ok()) return nullptr;
  NcclGroupOptions o;
  o.unique_id = *id;
  o.rank = 0;
  o.size = 1;
  o.timeout = timeout;
  absl::StatusOr<std::unique_ptr<PeerGroup>> g = CreateNcclPeerGroup(o);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? std::move(*g) : nullptr;
}

TEST(NcclPeerGroupTest, SendsToItselfInOrderAtEverySize) {
  if (!HaveDevices(1)) GTEST_SKIP() << "needs NCCL and a CUDA device";
  std::unique_ptr<PeerGroup> g = OneRank(absl::Seconds(30));
  ASSERT_NE(g, nullptr);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{1000}, int64_t{3} << 20}) {
    std::vector<int32_t> a(n), b(n + 7);
    std::iota(a.begin(), a.end(), static_cast<int32_t>(n));
    std::iota(b.begin(), b.end(), -5);
    std::vector<int32_t> ra(n, -1), rb(n + 7, -1);
    std::vector<PeerOp> ops = {PeerOp::Send(0, a.data(), n * 4), PeerOp::Send(0, b.data(), (n + 7) * 4),
                               PeerOp::Recv(0, ra.data(), n * 4),
                               PeerOp::Recv(0, rb.data(), (n + 7) * 4)};
    absl::Status st = g->Run(ops);
    ASSERT_TRUE(st.ok()) << st;
    EXPECT_EQ(ra, a) << n;
    EXPECT_EQ(rb, b) << n;
  }
}

TEST(NcclPeerGroupTest, AReceiveWithNoSenderTimesOutAndBreaksTheGroup) {
  if (!HaveDevices(1)) GTEST_SKIP() << "needs NCCL and a CUDA device";
  std::unique_ptr<PeerGroup> g = OneRank(absl::Milliseconds(500));
  ASSERT_NE(g, nullptr);
  int64_t v = 0;
  EXPECT_EQ(g->Run({PeerOp::Recv(0, &v, 8)}).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(g->Run({PeerOp::Send(0, &v, 8), PeerOp::Recv(0, &v, 8)}).code(),
            absl::StatusCode::kUnavailable);
}

TEST(NcclPeerGroupTest, BadOptionsAreInvalidArgument) {
  if (!NcclBuilt()) GTEST_SKIP() << "built without NCCL";
  NcclGroupOptions o;
  o.unique_id = "short";
  o.size = 1;
  EXPECT_EQ(CreateNcclPeerGroup(o).status().code(), absl::StatusCode::kInvalidArgument);
}

// Worker on GPU 0, one shard on GPU 1: the NCCL transport returns what the shard computes.
TEST(NcclTransportTest, WorkerAndShardOnTwoGpusEqualTheShardsOwnCompute) {
  if (!HaveDevices(2)) GTEST_SKIP() << "needs NCCL and two CUDA devices (one rank per GPU)";
  absl::StatusOr<std::string> id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  absl::StatusOr<std::unique_ptr<engine::Model>> model = testing::LoadPart(
      engine::ComputeDType::kF32, false, [](int64_t, int64_t) { return true; }, 2);
  ASSERT_TRUE(model.ok()) << model.status();
  ShardCompute compute(model->get());
  const engine::ModelConfig& c = (*model)->config();
  absl::Status served;
  std::thread shard([&] {
    NcclGroupOptions o;
    o.unique_id = *id;
    o.rank = 1;
    o.size = 2;
    o.device = 1;
    absl::StatusOr<std::unique_ptr<PeerGroup>> g = CreateNcclPeerGroup(o);
    if (!g.ok()) {
      served = g.status();
      return;
    }
    served = ServeCollective(g->get(), c.n_routed_experts,
                             [&](const ShardBatch& b, ShardResult* r) { return compute.Run(b, r); });
  });
  NcclGroupOptions o;
  o.unique_id = *id;
  o.rank = 0;
  o.size = 2;
  o.device = 0;
  absl::StatusOr<std::unique_ptr<PeerGroup>> g = CreateNcclPeerGroup(o);
  ASSERT_TRUE(g.ok()) << g.status();
  CollectiveOptions co;
  co.hidden_size = c.hidden_size;
  co.n_routed_experts = c.n_routed_experts;
  co.name = "nccl";
  absl::StatusOr<std::unique_ptr<CollectiveTransport>> t =
      CollectiveTransport::Create(std::move(*g), co);
  ASSERT_TRUE(t.ok()) << t.status();
  const int64_t layer = c.first_k_dense_replace;
  ShardBatch b;
  b.shard = 0;
  b.layer = layer;
  b.experts = {0, 3, 5};
  b.counts = {2, 1, 4};
  b.rows.resize(7 * c.hidden_size);
  for (size_t i = 0; i < b.rows.size(); ++i) b.rows[i] = static_cast<float>(i % 13) * 0.03f - 0.2f;
  std::vector<ShardResult> results;
  absl::Status st = (*t)->Exchange(layer, {&b, 1}, &results);
  ASSERT_TRUE(st.ok()) << st;
  t->reset();
  shard.join();
  EXPECT_TRUE(served.ok()) << served;
  ShardCompute direct(model->get());
  ShardResult want;
  ASSERT_TRUE(direct.Run(b, &want).ok());
  EXPECT_EQ(results[0].outputs, want.outputs);
}

}  // namespace
}  // namespace moeserve::expert_shard
