#include "expert-shard/placement.h"

#include <vector>

#include "gtest/gtest.h"

namespace moeserve::expert_shard {
namespace {

// 4 layers, the first dense, 8 experts per MoE layer.
MoeShape Shape() {
  MoeShape s;
  s.num_layers = 4;
  s.n_routed_experts = 8;
  s.moe_layers = {1, 2, 3};
  return s;
}

using Shards = std::vector<int32_t>;

TEST(PlacementTest, RoundRobinDealsExpertsInTurn) {
  absl::StatusOr<Placement> p = Placement::Parse("round_robin", 3, Shape());
  ASSERT_TRUE(p.ok()) << p.status();
  for (int64_t layer : {1, 2, 3}) {
    for (int64_t e = 0; e < 8; ++e) EXPECT_EQ(p->Replicas(layer, e), Shards{int32_t(e % 3)});
  }
  EXPECT_EQ(p->ExpertsOf(1, 2), (Shards{1, 4, 7}));
  EXPECT_TRUE(p->Holds(2, 3, 5));
  EXPECT_FALSE(p->Holds(0, 3, 5));
}

TEST(PlacementTest, ContiguousDealsRanges) {
  absl::StatusOr<Placement> p = Placement::Parse("contiguous", 3, Shape());
  ASSERT_TRUE(p.ok()) << p.status();
  // ceil(8 / 3) = 3 experts per shard: 0-2, 3-5, 6-7.
  EXPECT_EQ(p->ExpertsOf(0, 1), (Shards{0, 1, 2}));
  EXPECT_EQ(p->ExpertsOf(1, 1), (Shards{3, 4, 5}));
  EXPECT_EQ(p->ExpertsOf(2, 1), (Shards{6, 7}));
}

TEST(PlacementTest, DenseLayersAndOutOfRangeIdsHaveNoShard) {
  absl::StatusOr<Placement> p = Placement::Parse("round_robin", 2, Shape());
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->IsMoeLayer(0));
  EXPECT_TRUE(p->Replicas(0, 1).empty());
  EXPECT_TRUE(p->Replicas(1, 8).empty());
  EXPECT_TRUE(p->Replicas(1, -1).empty());
  EXPECT_TRUE(p->Replicas(4, 0).empty());
  EXPECT_TRUE(p->ExpertsOf(0, 0).empty());
}

TEST(PlacementTest, ReplicasPutEveryExpertOnConsecutiveShards) {
  absl::StatusOr<Placement> p = Placement::Parse("round_robin,replicas=2", 3, Shape());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->Replicas(1, 0), (Shards{0, 1}));
  EXPECT_EQ(p->Replicas(1, 2), (Shards{0, 2}));  // shard 2, then wraps to 0; sorted
  absl::StatusOr<Placement> all = Placement::Parse("contiguous, replicas=3", 3, Shape());
  ASSERT_TRUE(all.ok()) << all.status();
  for (int64_t e = 0; e < 8; ++e) EXPECT_EQ(all->Replicas(2, e), (Shards{0, 1, 2}));
}

TEST(PlacementTest, ExtraCopiesForAllLayersOrOneLayer) {
  absl::StatusOr<Placement> p = Placement::Parse("contiguous,0@1,L2:6-7@0,3@1", 2, Shape());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->Replicas(1, 0), (Shards{0, 1}));
  EXPECT_EQ(p->Replicas(3, 0), (Shards{0, 1}));
  EXPECT_EQ(p->Replicas(2, 6), (Shards{0, 1}));
  EXPECT_EQ(p->Replicas(1, 6), (Shards{1}));
  EXPECT_EQ(p->Replicas(1, 3), (Shards{0, 1}));  // held twice by spec, listed once
  EXPECT_EQ(p->Replicas(1, 4), (Shards{1}));
}

TEST(PlacementTest, ExplicitLayoutMustCoverEveryExpert) {
  absl::StatusOr<Placement> p = Placement::Parse("explicit,0-3@1,4-7@0", 2, Shape());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->ExpertsOf(1, 3), (Shards{0, 1, 2, 3}));
  absl::StatusOr<Placement> gap = Placement::Parse("explicit,0-3@1,5-7@0", 2, Shape());
  ASSERT_FALSE(gap.ok());
  EXPECT_EQ(gap.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(gap.status().message().find("expert 4 of MoE layer 1 is on no shard"),
            absl::string_view::npos)
      << gap.status();
  // Only layer 2 covered for expert 4: layer 1 still missing.
  absl::StatusOr<Placement> one_layer =
      Placement::Parse("explicit,0-3@1,5-7@0,L2:4@0,L3:4@1", 2, Shape());
  ASSERT_FALSE(one_layer.ok());
  EXPECT_NE(one_layer.status().message().find("layer 1"), absl::string_view::npos);
}

TEST(PlacementTest, RejectsBadSpecsWithClearMessages) {
  struct Case {
    const char* spec;
    int shards;
    const char* message;
  };
  const Case cases[] = {
      {"", 2, "empty"},
      {"striped", 2, "layout 'striped'"},
      {"round_robin", 0, "at least one shard"},
      {"round_robin,1@2", 2, "shard 2 outside [0, 2)"},
      {"round_robin,8@0", 2, "experts outside [0, 8)"},
      {"round_robin,3-1@0", 2, "experts outside"},
      {"round_robin,L0:1@0", 2, "layer 0 is not a MoE layer"},
      {"round_robin,L9:1@0", 2, "layer 9 is not a MoE layer"},
      {"round_robin,Lx:1@0", 2, "layer 'x'"},
      {"round_robin,1", 2, "expected replicas=R"},
      {"round_robin,a@0", 2, "expert 'a'"},
      {"round_robin,1@-1", 2, "shard '-1'"},
      {"round_robin,replicas=3", 2, "replicas must be in [1, 2]"},
      {"round_robin,replicas=0", 2, "replicas must be in"},
      {"explicit,replicas=2", 2, "replicas=R needs"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Placement> p = Placement::Parse(c.spec, c.shards, Shape());
    ASSERT_FALSE(p.ok()) << c.spec;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << c.spec;
    EXPECT_NE(p.status().message().find(c.message), absl::string_view::npos)
        << c.spec << ": " << p.status();
  }
}

TEST(PlacementTest, ShapeFromConfigListsMoeLayers) {
  engine::ModelConfig c;
  c.num_hidden_layers = 6;
  c.n_routed_experts = 4;
  c.first_k_dense_replace = 1;
  c.moe_layer_freq = 2;
  MoeShape s = MoeShape::FromConfig(c);
  EXPECT_EQ(s.moe_layers, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(s.n_routed_experts, 4);
}

}  // namespace
}  // namespace moeserve::expert_shard
