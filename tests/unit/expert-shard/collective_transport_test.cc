#include "expert-shard/transport/collective_transport.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "expert-shard/remote_expert_executor.h"
#include "expert-shard/shard_compute.h"
#include "expert-shard/transport/collective_protocol.h"
#include "expert-shard/transport/cpu_peer_group.h"
#include "gtest/gtest.h"
#include "tests/unit/expert-shard/shard_test_util.h"

namespace moeserve::expert_shard {
namespace {

using engine::ComputeDType;
using engine::Model;

// --- the wire layout --------------------------------------------------------------------------

TEST(CollectiveProtocolTest, HeaderRoundTrips) {
  collective::Header h;
  h.step = 7;
  h.layer = 3;
  h.hidden = 64;
  h.experts = {1, 4, 15};
  h.counts = {2, 0, 5};
  std::vector<int64_t> words;
  collective::EncodeHeader(h, 16, &words);
  EXPECT_EQ(static_cast<int64_t>(words.size()), collective::HeaderWords(16));
  collective::Header back;
  ASSERT_TRUE(collective::DecodeHeader(words, 16, &back).ok());
  EXPECT_EQ(back.op, collective::Op::kExchange);
  EXPECT_EQ(back.step, 7u);
  EXPECT_EQ(back.layer, 3);
  EXPECT_EQ(back.hidden, 64);
  EXPECT_EQ(back.experts, h.experts);
  EXPECT_EQ(back.counts, h.counts);
  EXPECT_EQ(collective::RowBytes(back), 7 * 64 * 4);
}

TEST(CollectiveProtocolTest, CorruptHeadersAreInternalErrors) {
  collective::Header h;
  h.hidden = 8;
  h.experts = {2};
  h.counts = {3};
  std::vector<int64_t> good;
  collective::EncodeHeader(h, 4, &good);
  collective::Header back;
  auto corrupt = [&](int index, int64_t value) {
    std::vector<int64_t> w = good;
    w[index] = value;
    return collective::DecodeHeader(w, 4, &back);
  };
  EXPECT_EQ(corrupt(0, 1234).code(), absl::StatusCode::kInternal);  // magic
  EXPECT_EQ(corrupt(1, 9).code(), absl::StatusCode::kInternal);     // op
  EXPECT_EQ(corrupt(5, 5).code(), absl::StatusCode::kInternal);     // more entries than experts
  EXPECT_EQ(corrupt(6, 4).code(), absl::StatusCode::kInternal);     // expert out of range
  EXPECT_EQ(corrupt(7, -1).code(), absl::StatusCode::kInternal);    // negative count
  EXPECT_EQ(corrupt(7, int64_t{1} << 40).code(), absl::StatusCode::kInternal);  // huge payload
  // A header sized for another model is refused too.
  EXPECT_EQ(collective::DecodeHeader(good, 5, &back).code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(collective::DecodeHeader(good, 4, &back).ok());
}

TEST(CollectiveProtocolTest, RepliesCarryCodeAndMessage) {
  collective::Reply r;
  collective::EncodeReply(absl::OkStatus(), &r);
  EXPECT_TRUE(collective::DecodeReply(r).ok());
  collective::EncodeReply(absl::FailedPreconditionError("expert 3 is not held"), &r);
  absl::Status s = collective::DecodeReply(r);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "expert 3 is not held");
  // Long messages are cut to the block, never overrun it.
  collective::EncodeReply(absl::InvalidArgumentError(std::string(2000, 'x')), &r);
  s = collective::DecodeReply(r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message().size(), static_cast<size_t>(collective::kMessageBytes));
  r.magic = 1;
  EXPECT_EQ(collective::DecodeReply(r).code(), absl::StatusCode::kInternal);
}

TEST(CollectiveProtocolTest, CheckBatchNamesTheProblem) {
  ShardBatch b;
  b.experts = {0, 2};
  b.counts = {1, 1};
  b.rows.assign(2 * 4, 1.0f);
  EXPECT_TRUE(collective::CheckBatch(b, 4, 3).ok());
  ShardBatch bad = b;
  bad.experts = {2, 0};
  EXPECT_EQ(collective::CheckBatch(bad, 4, 3).code(), absl::StatusCode::kInvalidArgument);
  bad = b;
  bad.experts = {0, 3};
  EXPECT_EQ(collective::CheckBatch(bad, 4, 3).code(), absl::StatusCode::kInvalidArgument);
  bad = b;
  bad.counts = {1};
  EXPECT_EQ(collective::CheckBatch(bad, 4, 3).code(), absl::StatusCode::kInvalidArgument);
  bad = b;
  bad.rows.pop_back();
  EXPECT_EQ(collective::CheckBatch(bad, 4, 3).code(), absl::StatusCode::kInvalidArgument);
}

// --- the in-process group ---------------------------------------------------------------------

TEST(CpuPeerGroupTest, OneCallSendsAndReceivesBothWays) {
  std::vector<std::unique_ptr<PeerGroup>> g = MakeCpuPeerGroups(2);
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[1]->rank(), 1);
  EXPECT_EQ(g[1]->size(), 2);
  // Both ranks post a send and a receive in one call each: no deadlock, and per-pair order kept.
  auto exchange = [&](int r, std::vector<int>* got) {
    std::vector<int> a = {r * 10 + 1, r * 10 + 2}, b = {r * 10 + 3};
    got->assign(3, -1);
    std::vector<PeerOp> ops = {PeerOp::Send(1 - r, a.data(), 8), PeerOp::Send(1 - r, b.data(), 4),
                               PeerOp::Recv(1 - r, got->data(), 8),
                               PeerOp::Recv(1 - r, got->data() + 2, 4)};
    return g[r]->Run(ops);
  };
  std::vector<int> got0, got1;
  absl::Status s1;
  std::thread t([&] { s1 = exchange(1, &got1); });
  absl::Status s0 = exchange(0, &got0);
  t.join();
  ASSERT_TRUE(s0.ok()) << s0;
  ASSERT_TRUE(s1.ok()) << s1;
  EXPECT_EQ(got0, (std::vector<int>{11, 12, 13}));
  EXPECT_EQ(got1, (std::vector<int>{1, 2, 3}));
}

TEST(CpuPeerGroupTest, WrongSizeIsInternalAndSilenceTimesOut) {
  std::vector<std::unique_ptr<PeerGroup>> g = MakeCpuPeerGroups(2, absl::Milliseconds(50));
  int64_t v = 5;
  int32_t small = 0;
  ASSERT_TRUE(g[0]->Run({PeerOp::Send(1, &v, 8)}).ok());
  EXPECT_EQ(g[1]->Run({PeerOp::Recv(0, &small, 4)}).code(), absl::StatusCode::kInternal);
  // Rank 0 waits for a message rank 1 never sends; the group stays broken after.
  EXPECT_EQ(g[0]->Run({PeerOp::Recv(1, &v, 8)}).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(g[0]->Run({PeerOp::Send(1, &v, 8)}).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(g[0]->Run({PeerOp::Send(2, &v, 8)}).code(), absl::StatusCode::kUnavailable);
}

TEST(CpuPeerGroupTest, CancelEndsAnEndlessWait) {
  std::vector<std::unique_ptr<PeerGroup>> g = MakeCpuPeerGroups(2);
  int64_t v = 0;
  absl::Status waited;
  std::thread t([&] { waited = g[1]->RunFor({PeerOp::Recv(0, &v, 8)}, absl::InfiniteDuration()); });
  g[1]->Cancel();
  t.join();
  EXPECT_EQ(waited.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(g[1]->Run({PeerOp::Send(0, &v, 8)}).code(), absl::StatusCode::kCancelled);
  // The serving loop ends the same way.
  std::vector<std::unique_ptr<PeerGroup>> h = MakeCpuPeerGroups(2);
  h[1]->Cancel();
  EXPECT_EQ(ServeCollective(h[1].get(), 4,
                            [](const ShardBatch&, ShardResult*) { return absl::OkStatus(); })
                .code(),
            absl::StatusCode::kCancelled);
}

// --- the exchange, multi-rank ---------------------------------------------------------------

// A worker (rank 0) and one serving thread per shard (rank 1 + s), each shard computing with its
// own slice of the experts, over one in-process group.
class CollectiveCluster {
 public:
  CollectiveCluster(ComputeDType compute, const std::string& spec, int num_shards,
                    absl::Duration timeout = absl::Seconds(30), int silent_shard = -1) {
    absl::StatusOr<std::unique_ptr<Model>> worker = testing::LoadWorker(compute);
    EXPECT_TRUE(worker.ok()) << worker.status();
    if (!worker.ok()) return;
    worker_ = std::move(*worker);
    const engine::ModelConfig& c = worker_->config();
    absl::StatusOr<Placement> p = Placement::Parse(spec, num_shards, MoeShape::FromConfig(c));
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return;
    placement_ = std::make_unique<Placement>(*std::move(p));
    std::vector<std::unique_ptr<PeerGroup>> groups = MakeCpuPeerGroups(num_shards + 1, timeout);
    serve_status_.resize(num_shards);
    for (int32_t s = 0; s < num_shards; ++s) {
      absl::StatusOr<std::unique_ptr<Model>> m = testing::LoadShard(compute, *placement_, s);
      EXPECT_TRUE(m.ok()) << m.status();
      if (!m.ok()) return;
      models_.push_back(std::move(*m));
      computes_.push_back(std::make_unique<ShardCompute>(models_.back().get()));
      shard_groups_.push_back(std::move(groups[s + 1]));
      if (s == silent_shard) continue;  // joined the group but never serves
      PeerGroup* group = shard_groups_.back().get();
      ShardCompute* compute_s = computes_.back().get();
      const int64_t n_routed = c.n_routed_experts;
      threads_.emplace_back([this, s, group, compute_s, n_routed] {
        serve_status_[s] = ServeCollective(
            group, n_routed,
            [compute_s](const ShardBatch& b, ShardResult* r) { return compute_s->Run(b, r); });
      });
    }
    CollectiveOptions o;
    o.hidden_size = c.hidden_size;
    o.n_routed_experts = c.n_routed_experts;
    o.name = "cpu group";
    absl::StatusOr<std::unique_ptr<CollectiveTransport>> t =
        CollectiveTransport::Create(std::move(groups[0]), o);
    EXPECT_TRUE(t.ok()) << t.status();
    if (t.ok()) transport_ = std::move(*t);
  }
  ~CollectiveCluster() { Stop(/*cancel_shards=*/true); }

  // Stops the transport (its stop ends the serving loops), with `cancel_shards` also cancels the
  // shards' groups (a broken group cannot carry the stop), and joins the loops.
  void Stop(bool cancel_shards) {
    transport_.reset();
    if (cancel_shards) {
      for (const std::unique_ptr<PeerGroup>& g : shard_groups_) g->Cancel();
    }
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

  Model* worker() { return worker_.get(); }
  Placement* placement() { return placement_.get(); }
  CollectiveTransport* transport() { return transport_.get(); }
  const absl::Status& serve_status(int s) const { return serve_status_[s]; }

 private:
  std::unique_ptr<Model> worker_;
  std::unique_ptr<Placement> placement_;
  std::vector<std::unique_ptr<Model>> models_;
  std::vector<std::unique_ptr<ShardCompute>> computes_;
  std::vector<std::unique_ptr<PeerGroup>> shard_groups_;
  std::vector<absl::Status> serve_status_;
  std::vector<std::thread> threads_;
  std::unique_ptr<CollectiveTransport> transport_;
};

class CollectiveParityTest : public ::testing::TestWithParam<ComputeDType> {};

TEST_P(CollectiveParityTest, ThreeShardRanksEqualTheWholeModelExactly) {
  absl::StatusOr<std::unique_ptr<Model>> whole =
      testing::LoadPart(GetParam(), true, nullptr, 2);
  ASSERT_TRUE(whole.ok()) << whole.status();
  absl::StatusOr<std::vector<std::vector<float>>> ref =
      testing::RunBatch(**whole, nullptr, testing::Prompts(), 3);
  ASSERT_TRUE(ref.ok()) << ref.status();

  CollectiveCluster c(GetParam(), "contiguous", 3);
  ASSERT_NE(c.transport(), nullptr);
  EXPECT_EQ(c.transport()->num_shards(), 3);
  RemoteExpertExecutor remote(c.placement(), c.transport(), c.worker()->config().hidden_size);
  absl::StatusOr<std::vector<std::vector<float>>> got =
      testing::RunBatch(*c.worker(), &remote, testing::Prompts(), 3);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), ref->size());
  for (size_t i = 0; i < ref->size(); ++i) EXPECT_EQ((*got)[i], (*ref)[i]) << "logits " << i;
  c.Stop(/*cancel_shards=*/false);
  // The worker's stop ended every loop (a cancel would have made them Cancelled).
  for (int s = 0; s < 3; ++s) EXPECT_TRUE(c.serve_status(s).ok()) << c.serve_status(s);
}

INSTANTIATE_TEST_SUITE_P(ComputeDTypes, CollectiveParityTest,
                         ::testing::Values(ComputeDType::kF32, ComputeDType::kBf16),
                         [](const ::testing::TestParamInfo<ComputeDType>& p) {
                           return p.param == ComputeDType::kF32 ? "F32" : "Bf16";
                         });

// One MoE layer's rows for expert `e` of shard `s`, sent straight through the transport.
ShardBatch OneExpert(int32_t s, int64_t layer, int32_t e, int64_t rows, int64_t hidden) {
  ShardBatch b;
  b.shard = s;
  b.layer = layer;
  b.experts = {e};
  b.counts = {rows};
  b.rows.assign(static_cast<size_t>(rows * hidden), 0.25f);
  return b;
}

TEST(CollectiveTransportTest, AShardsRefusalIsItsOwnAndServingGoesOn) {
  CollectiveCluster c(ComputeDType::kF32, "round_robin", 2);
  ASSERT_NE(c.transport(), nullptr);
  const int64_t hidden = c.worker()->config().hidden_size;
  const int64_t layer = c.placement()->shape().moe_layers.front();
  // Expert 1 lives on shard 1 (round robin), so shard 0 refuses it; shard 1 computes expert 3.
  std::vector<ShardBatch> batches = {OneExpert(0, layer, 1, 2, hidden),
                                     OneExpert(1, layer, 3, 3, hidden)};
  std::vector<ShardResult> results;
  absl::Status st = c.transport()->Exchange(layer, batches, &results);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("shard 0"), std::string::npos) << st;
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(results[1].status.ok()) << results[1].status;
  EXPECT_EQ(results[1].outputs.size(), static_cast<size_t>(3 * hidden));
  // The shard kept serving: the next exchange, and an empty batch, go through.
  batches = {OneExpert(0, layer, 0, 1, hidden), OneExpert(1, layer, 1, 0, hidden)};
  st = c.transport()->Exchange(layer, batches, &results);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(results[0].outputs.size(), static_cast<size_t>(hidden));
  EXPECT_TRUE(results[1].outputs.empty());
  // The outputs are the expert's: shard 0 computes the same as calling its compute directly.
  bool nonzero = false;
  for (float v : results[0].outputs) nonzero = nonzero || v != 0.0f;
  EXPECT_TRUE(nonzero);
}

TEST(CollectiveTransportTest, MalformedBatchesSendNothing) {
  CollectiveCluster c(ComputeDType::kF32, "round_robin", 2);
  ASSERT_NE(c.transport(), nullptr);
  const int64_t hidden = c.worker()->config().hidden_size;
  const int64_t layer = c.placement()->shape().moe_layers.front();
  std::vector<ShardResult> results;
  std::vector<ShardBatch> two_for_one = {OneExpert(0, layer, 0, 1, hidden),
                                         OneExpert(0, layer, 2, 1, hidden)};
  EXPECT_EQ(c.transport()->Exchange(layer, two_for_one, &results).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<ShardBatch> no_such_shard = {OneExpert(2, layer, 0, 1, hidden)};
  EXPECT_EQ(c.transport()->Exchange(layer, no_such_shard, &results).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<ShardBatch> short_rows = {OneExpert(0, layer, 0, 2, hidden)};
  short_rows[0].rows.pop_back();
  EXPECT_EQ(c.transport()->Exchange(layer, short_rows, &results).code(),
            absl::StatusCode::kInvalidArgument);
  // Nothing was sent, so the group is still in step.
  std::vector<ShardBatch> good = {OneExpert(0, layer, 0, 1, hidden)};
  EXPECT_TRUE(c.transport()->Exchange(layer, good, &results).ok());
}

TEST(CollectiveTransportTest, ASilentRankFailsTheExchangeUnavailable) {
  CollectiveCluster c(ComputeDType::kF32, "round_robin", 2, absl::Milliseconds(200),
                      /*silent_shard=*/1);
  ASSERT_NE(c.transport(), nullptr);
  const int64_t hidden = c.worker()->config().hidden_size;
  const int64_t layer = c.placement()->shape().moe_layers.front();
  std::vector<ShardBatch> batches = {OneExpert(0, layer, 0, 1, hidden),
                                     OneExpert(1, layer, 1, 1, hidden)};
  std::vector<ShardResult> results;
  absl::Status st = c.transport()->Exchange(layer, batches, &results);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  ASSERT_EQ(results.size(), 2u);
  for (const ShardResult& r : results) EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable);
  // The group is broken for good.
  batches = {OneExpert(0, layer, 0, 1, hidden)};
  EXPECT_EQ(c.transport()->Exchange(layer, batches, &results).code(),
            absl::StatusCode::kUnavailable);
}

TEST(CollectiveTransportTest, CreateRefusesAShardRankOrALoneRank) {
  std::vector<std::unique_ptr<PeerGroup>> g = MakeCpuPeerGroups(2);
  CollectiveOptions o;
  o.hidden_size = 8;
  o.n_routed_experts = 4;
  EXPECT_EQ(CollectiveTransport::Create(std::move(g[1]), o).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<std::unique_ptr<PeerGroup>> lone = MakeCpuPeerGroups(1);
  EXPECT_EQ(CollectiveTransport::Create(std::move(lone[0]), o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.hidden_size = 0;
  EXPECT_EQ(CollectiveTransport::Create(std::move(g[0]), o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moeserve::expert_shard
