#include "expert-shard/remote_expert_executor.h"

#include <algorithm>
#include <memory>
#include <random>
#include <vector>

#include "engine/backend_registry.h"
#include "engine/model/backend_experts.h"
#include "expert-shard/shard_compute.h"
#include "expert-shard/transport/loopback_transport.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/unit/expert-shard/shard_test_util.h"

namespace moeserve::expert_shard {
namespace {

using engine::ComputeDType;
using engine::Model;
using testing::LoadShard;
using testing::LoadWorker;
using testing::Prompts;
using testing::RunBatch;

constexpr int kDecodeSteps = 3;

// The whole model, run in-process: the reference every split must equal exactly.
std::vector<std::vector<float>> Reference(ComputeDType compute) {
  absl::StatusOr<std::unique_ptr<Model>> whole = testing::LoadPart(compute, true, nullptr, 2);
  EXPECT_TRUE(whole.ok()) << whole.status();
  if (!whole.ok()) return {};
  absl::StatusOr<std::vector<std::vector<float>>> ref =
      RunBatch(**whole, nullptr, Prompts(), kDecodeSteps);
  EXPECT_TRUE(ref.ok()) << ref.status();
  return ref.ok() ? *ref : std::vector<std::vector<float>>{};
}

// A worker plus N loopback shards under one placement.
struct Cluster {
  std::unique_ptr<Placement> placement;
  std::unique_ptr<Model> worker;
  std::vector<std::unique_ptr<Model>> shard_models;
  std::vector<std::unique_ptr<ShardCompute>> shards;
  std::unique_ptr<LoopbackTransport> transport;
};

Cluster MakeCluster(ComputeDType compute, const std::string& spec, int num_shards) {
  Cluster c;
  absl::StatusOr<std::unique_ptr<Model>> worker = LoadWorker(compute);
  EXPECT_TRUE(worker.ok()) << worker.status();
  if (!worker.ok()) return c;
  c.worker = std::move(*worker);
  absl::StatusOr<Placement> p =
      Placement::Parse(spec, num_shards, MoeShape::FromConfig(c.worker->config()));
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return c;
  c.placement = std::make_unique<Placement>(*std::move(p));
  std::vector<ShardCompute*> computes;
  for (int32_t s = 0; s < num_shards; ++s) {
    absl::StatusOr<std::unique_ptr<Model>> m = LoadShard(compute, *c.placement, s);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return c;
    c.shard_models.push_back(std::move(*m));
    c.shards.push_back(std::make_unique<ShardCompute>(c.shard_models.back().get()));
    computes.push_back(c.shards.back().get());
  }
  c.transport = std::make_unique<LoopbackTransport>(computes);
  return c;
}

class LoopbackParityTest : public ::testing::TestWithParam<ComputeDType> {};

TEST_P(LoopbackParityTest, TwoShardsEqualTheWholeModelExactly) {
  std::vector<std::vector<float>> ref = Reference(GetParam());
  ASSERT_FALSE(ref.empty());
  Cluster c = MakeCluster(GetParam(), "round_robin", 2);
  ASSERT_NE(c.transport, nullptr);
  // Each shard holds exactly its half of the routed experts.
  for (int32_t s = 0; s < 2; ++s) {
    for (int64_t layer : c.placement->shape().moe_layers) {
      for (int64_t e = 0; e < 16; ++e) {
        EXPECT_EQ(c.shard_models[s]->expert(layer, e).loaded, e % 2 == s) << s << " " << e;
      }
    }
  }
  RemoteExpertExecutor remote(c.placement.get(), c.transport.get(), c.worker->config().hidden_size);
  absl::StatusOr<std::vector<std::vector<float>>> got =
      RunBatch(*c.worker, &remote, Prompts(), kDecodeSteps);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_EQ((*got)[i], ref[i]) << "logits " << i;
  // One exchange per MoE layer per step, and each exchange sends each shard at most one batch;
  // with 4 sequences x 4 experts per token, both shards are needed every time.
  const int64_t moe_layers = static_cast<int64_t>(c.placement->shape().moe_layers.size());
  EXPECT_EQ(c.transport->exchanges(), (1 + kDecodeSteps) * moe_layers);
  EXPECT_EQ(c.transport->batches_sent(0), c.transport->exchanges());
  EXPECT_EQ(c.transport->batches_sent(1), c.transport->exchanges());
}

TEST_P(LoopbackParityTest, RedundantCopiesGiveTheSameLogits) {
  std::vector<std::vector<float>> ref = Reference(GetParam());
  ASSERT_FALSE(ref.empty());
  Cluster c = MakeCluster(GetParam(), "contiguous,replicas=2,L1:0-3@2", 3);
  ASSERT_NE(c.transport, nullptr);
  for (ReplicaChoice choice : {ReplicaChoice::kLowestShard, ReplicaChoice::kSpreadByToken}) {
    RemoteExpertExecutor remote(c.placement.get(), c.transport.get(),
                                c.worker->config().hidden_size, choice);
    absl::StatusOr<std::vector<std::vector<float>>> got =
        RunBatch(*c.worker, &remote, Prompts(), kDecodeSteps);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, ref) << "choice " << static_cast<int>(choice);
  }
  // With shard 1 marked unhealthy, its experts are served by their other copies.
  const int64_t before = c.transport->batches_sent(1);
  RemoteExpertExecutor remote(c.placement.get(), c.transport.get(), c.worker->config().hidden_size,
                              ReplicaChoice::kSpreadByToken);
  remote.SetShardHealthy(1, false);
  absl::StatusOr<std::vector<std::vector<float>>> got =
      RunBatch(*c.worker, &remote, Prompts(), kDecodeSteps);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, ref);
  EXPECT_EQ(c.transport->batches_sent(1), before);
}

INSTANTIATE_TEST_SUITE_P(ComputeDTypes, LoopbackParityTest,
                         ::testing::Values(ComputeDType::kF32, ComputeDType::kBf16),
                         [](const ::testing::TestParamInfo<ComputeDType>& p) {
                           return p.param == ComputeDType::kF32 ? "F32" : "Bf16";
                         });

TEST(RemoteExpertExecutorTest, SpreadByTokenUsesEveryCopy) {
  Cluster c = MakeCluster(ComputeDType::kF32, "round_robin,replicas=2", 2);
  ASSERT_NE(c.transport, nullptr);
  RemoteExpertExecutor remote(c.placement.get(), c.transport.get(), c.worker->config().hidden_size,
                              ReplicaChoice::kSpreadByToken);
  const int64_t hidden = c.worker->config().hidden_size;
  // Two tokens, both choosing expert 3: token 0 goes to shard 0, token 1 to shard 1.
  std::vector<float> x(2 * hidden, 0.5f), out(2 * hidden);
  std::vector<int32_t> ids = {3, 3};
  std::vector<float> w = {1.0f, 1.0f};
  ASSERT_TRUE(remote.Run(1, x.data(), 2, 1, ids.data(), w.data(), out.data()).ok());
  EXPECT_EQ(c.transport->batches_sent(0), 1);
  EXPECT_EQ(c.transport->batches_sent(1), 1);
  // Equal inputs on either copy give equal outputs.
  for (int64_t d = 0; d < hidden; ++d) EXPECT_EQ(out[d], out[hidden + d]);
}

TEST(RemoteExpertExecutorTest, ErrorsNameTheShard) {
  Cluster c = MakeCluster(ComputeDType::kF32, "round_robin", 2);
  ASSERT_NE(c.transport, nullptr);
  const int64_t hidden = c.worker->config().hidden_size;
  std::vector<float> x(hidden, 0.25f), out(hidden);
  std::vector<int32_t> ids = {0, 1};
  std::vector<float> w = {0.5f, 0.5f};
  // The worker believes in a different placement than the shards loaded: shard 0 is asked for
  // expert 1, which it does not hold.
  absl::StatusOr<Placement> wrong = Placement::Parse("explicit,0-15@0", 2, c.placement->shape());
  ASSERT_TRUE(wrong.ok());
  RemoteExpertExecutor confused(&*wrong, c.transport.get(), hidden);
  absl::Status s = confused.Run(1, x.data(), 1, 2, ids.data(), w.data(), out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("loopback shard 0: expert 1 of layer 1 is not held"),
            absl::string_view::npos)
      << s;

  RemoteExpertExecutor remote(c.placement.get(), c.transport.get(), hidden);
  std::vector<int32_t> bad = {0, 16};
  s = remote.Run(1, x.data(), 1, 2, bad.data(), w.data(), out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = remote.Run(0, x.data(), 1, 2, ids.data(), w.data(), out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;

  LoopbackTransport half_dead({c.shards[0].get(), nullptr});
  RemoteExpertExecutor over_dead(c.placement.get(), &half_dead, hidden);
  s = over_dead.Run(1, x.data(), 1, 2, ids.data(), w.data(), out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("loopback shard 1"), absl::string_view::npos) << s;
  over_dead.SetShardHealthy(1, false);
  s = over_dead.Run(1, x.data(), 1, 2, ids.data(), w.data(), out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("no healthy shard holds expert 1"), absl::string_view::npos) << s;
}

// A redundant copy: with every expert on both shards, a dead shard costs nothing (the exchange
// is redone on the copy, same numbers), is left alone while it is out of service, and is used
// again once the retry interval has passed and it is back.
TEST(RemoteExpertExecutorTest, FailsOverToTheCopyAndComesBack) {
  Cluster c = MakeCluster(ComputeDType::kF32, "round_robin,replicas=2", 2);
  ASSERT_NE(c.transport, nullptr);
  const int64_t hidden = c.worker->config().hidden_size;
  std::vector<float> x(2 * hidden), ref(2 * hidden), out(2 * hidden);
  for (int64_t i = 0; i < 2 * hidden; ++i) x[i] = 0.01f * static_cast<float>(i % 37) - 0.2f;
  std::vector<int32_t> ids = {0, 1, 2, 3};
  std::vector<float> w = {0.25f, 0.75f, 0.5f, 0.5f};
  RemoteExpertExecutor healthy(c.placement.get(), c.transport.get(), hidden);
  ASSERT_TRUE(healthy.Run(1, x.data(), 2, 2, ids.data(), w.data(), ref.data()).ok());

  ::moeserve::testing::FakeClock clock;
  RemoteExpertExecutor remote(c.placement.get(), c.transport.get(), hidden,
                              ReplicaChoice::kLowestShard, &clock, absl::Seconds(1));
  c.transport->SetShard(0, nullptr);  // kill -9 shard 0
  absl::Status s = remote.Run(1, x.data(), 2, 2, ids.data(), w.data(), out.data());
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(out, ref);
  EXPECT_EQ(remote.failovers(), 1);
  const int64_t to_copy = c.transport->batches_sent(1);
  EXPECT_GT(to_copy, 0);

  std::fill(out.begin(), out.end(), 0.0f);
  ASSERT_TRUE(remote.Run(1, x.data(), 2, 2, ids.data(), w.data(), out.data()).ok());
  EXPECT_EQ(out, ref);
  EXPECT_EQ(remote.failovers(), 1) << "shard 0 is out of service: not tried again yet";
  EXPECT_EQ(c.transport->batches_sent(1), to_copy + 1);

  c.transport->SetShard(0, c.shards[0].get());  // restarted
  clock.Advance(absl::Seconds(2));
  const int64_t to_first = c.transport->batches_sent(0);
  ASSERT_TRUE(remote.Run(1, x.data(), 2, 2, ids.data(), w.data(), out.data()).ok());
  EXPECT_EQ(out, ref);
  EXPECT_EQ(c.transport->batches_sent(0), to_first + 1) << "shard 0 serves again";
  EXPECT_EQ(c.transport->batches_sent(1), to_copy + 1);
}

// Without a copy: a clean Unavailable naming the dead shard, fast (no exchange is attempted
// while the shard is out of service), and service again once it is back.
// One token through experts 0 and 1 of layer 1 of `c`, on a fake clock, a failed shard out of
// service for 1 s (then longer while it keeps failing).
struct OneTokenRun {
  explicit OneTokenRun(Cluster& c)
      : x(c.worker->config().hidden_size, 0.25f),
        out(x.size()),
        remote(c.placement.get(), c.transport.get(), c.worker->config().hidden_size,
               ReplicaChoice::kLowestShard, &clock, absl::Seconds(1)) {}
  absl::Status Run() { return remote.Run(1, x.data(), 1, 2, ids.data(), w.data(), out.data()); }

  std::vector<float> x, out;
  std::vector<int32_t> ids = {0, 1};
  std::vector<float> w = {0.5f, 0.5f};
  ::moeserve::testing::FakeClock clock;
  RemoteExpertExecutor remote;
};

TEST(RemoteExpertExecutorTest, WithoutACopyFailsCleanlyAndRecovers) {
  Cluster c = MakeCluster(ComputeDType::kF32, "round_robin", 2);
  ASSERT_NE(c.transport, nullptr);
  OneTokenRun one(c);
  ::moeserve::testing::FakeClock& clock = one.clock;
  c.transport->SetShard(1, nullptr);
  absl::Status s = one.Run();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("loopback shard 1 is down"), absl::string_view::npos) << s;
  const int64_t exchanges = c.transport->exchanges();
  s = one.Run();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("no healthy shard holds expert 1 of layer 1"),
            absl::string_view::npos)
      << s;
  EXPECT_EQ(c.transport->exchanges(), exchanges);

  c.transport->SetShard(1, c.shards[1].get());
  clock.Advance(absl::Seconds(1));
  s = one.Run();
  EXPECT_TRUE(s.ok()) << s;
}

// A shard that keeps failing (hung rather than dead: each try costs the engine thread a wait) is
// tried less and less often: out of service for 1, 2, 4, then 8 x retry_after, no longer; one
// success puts it back to 1 x.
TEST(RemoteExpertExecutorTest, AShardFailingAgainAndAgainIsTriedLessOften) {
  Cluster c = MakeCluster(ComputeDType::kF32, "round_robin,replicas=2", 2);
  ASSERT_NE(c.transport, nullptr);
  OneTokenRun one(c);
  ::moeserve::testing::FakeClock& clock = one.clock;
  RemoteExpertExecutor& remote = one.remote;
  auto run = [&] {
    absl::Status s = one.Run();
    EXPECT_TRUE(s.ok()) << s;  // the copy on shard 1 always answers
  };
  c.transport->SetShard(0, nullptr);
  run();
  EXPECT_EQ(remote.failovers(), 1);
  // Out for 1 s, then 2, 4, 8 and 8 again: shard 0 is tried exactly when that has passed.
  for (int64_t out_s : {1, 2, 4, 8, 8}) {
    const int64_t tried = remote.failovers();
    clock.Advance(absl::Seconds(out_s) - absl::Milliseconds(1));
    run();
    EXPECT_EQ(remote.failovers(), tried) << "still out of service (" << out_s << " s)";
    clock.Advance(absl::Milliseconds(1));
    run();
    EXPECT_EQ(remote.failovers(), tried + 1) << "tried again after " << out_s << " s";
  }
  c.transport->SetShard(0, c.shards[0].get());  // it answers again
  clock.Advance(absl::Seconds(8));
  const int64_t to_first = c.transport->batches_sent(0);
  run();
  EXPECT_EQ(c.transport->batches_sent(0), to_first + 1) << "shard 0 serves again";
  c.transport->SetShard(0, nullptr);  // and fails once more: out for 1 s only
  run();
  const int64_t tried = remote.failovers();
  clock.Advance(absl::Seconds(1));
  run();
  EXPECT_EQ(remote.failovers(), tried + 1);
}

TEST(ShardComputeTest, ValidatesBatches) {
  Cluster c = MakeCluster(ComputeDType::kF32, "round_robin", 2);
  ASSERT_NE(c.transport, nullptr);
  ShardCompute& shard0 = *c.shards[0];
  const int64_t hidden = c.worker->config().hidden_size;
  ShardResult r;
  ShardBatch ok{0, 1, {0, 2}, {1, 2}, std::vector<float>(3 * hidden, 0.1f)};
  ASSERT_TRUE(shard0.Run(ok, &r).ok());
  EXPECT_EQ(r.outputs.size(), ok.rows.size());

  ShardBatch b = ok;
  b.rows.pop_back();  // rows one float short
  EXPECT_EQ(shard0.Run(b, &r).code(), absl::StatusCode::kInvalidArgument);
  b = ok;
  b.counts = {1};
  EXPECT_EQ(shard0.Run(b, &r).code(), absl::StatusCode::kInvalidArgument);
  b = ok;
  b.counts = {-1, 4};
  EXPECT_EQ(shard0.Run(b, &r).code(), absl::StatusCode::kInvalidArgument);
  b = ok;
  b.experts = {2, 0};
  EXPECT_EQ(shard0.Run(b, &r).code(), absl::StatusCode::kInvalidArgument);
  b = ok;
  b.experts = {0, 1};  // 1 lives on shard 1
  absl::Status s = shard0.Run(b, &r);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "expert 1 of layer 1 is not held by this shard");
  b = ok;
  b.experts = {0, 16};
  EXPECT_EQ(shard0.Run(b, &r).code(), absl::StatusCode::kFailedPrecondition);
  b = ok;
  b.layer = 0;  // the dense layer
  EXPECT_EQ(shard0.Run(b, &r).code(), absl::StatusCode::kFailedPrecondition);
  b.layer = 99;
  EXPECT_EQ(shard0.Run(b, &r).code(), absl::StatusCode::kFailedPrecondition);
}

// A shard whose products run on a backend (--backend; the CPU backend here, a GPU's in a GPU
// shard) computes the host shard's outputs bit for bit, in f32 and bf16, for batches with
// empty groups too; and a batch it cannot serve gets the same errors.
TEST(ShardComputeTest, OnABackendEqualsTheHostBitForBit) {
  for (ComputeDType compute : {ComputeDType::kF32, ComputeDType::kBf16}) {
    absl::StatusOr<Placement> placement =
        Placement::Parse("round_robin", 2, MoeShape::FromConfig(*engine::LoadModelConfig(
                                               testing::SmallModelDir())));
    ASSERT_TRUE(placement.ok()) << placement.status();
    absl::StatusOr<std::unique_ptr<engine::Model>> model =
        testing::LoadShard(compute, *placement, 0);
    ASSERT_TRUE(model.ok()) << model.status();
    absl::StatusOr<engine::BackendPtr> backend = engine::CreateBackend("cpu:2");
    ASSERT_TRUE(backend.ok()) << backend.status();
    absl::StatusOr<std::unique_ptr<engine::BackendExpertExecutor>> uploaded =
        engine::BackendExpertExecutor::Create(model->get(), backend->get());
    ASSERT_TRUE(uploaded.ok()) << uploaded.status();
    ShardCompute host(model->get()), on_backend(model->get(), uploaded->get());
    const int64_t hidden = (*model)->config().hidden_size;
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-1, 1);
    ShardBatch batch{0, 1, {0, 2, 4, 6}, {3, 0, 5, 1}, {}};
    for (int64_t i = 0; i < 9 * hidden; ++i) batch.rows.push_back(u(rng));
    ShardResult want, got;
    ASSERT_TRUE(host.Run(batch, &want).ok());
    ASSERT_TRUE(on_backend.Run(batch, &got).ok());
    EXPECT_EQ(got.outputs, want.outputs);
    EXPECT_NE(got.outputs, std::vector<float>(got.outputs.size(), 0.0f));
    batch.experts = {0, 1, 2, 3};  // 1 and 3 live on shard 1
    absl::Status s = on_backend.Run(batch, &got);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  }
}

}  // namespace
}  // namespace moeserve::expert_shard
