// Regression tests for expert-shard/wire.cc's BatchFromProto, from inputs the ExpertShard fuzz
// target (tests/fuzz/expert_shard_grpc_fuzzer.cc) found.
#include "expert-shard/wire.h"

#include <cstdint>
#include <string>

#include "gtest/gtest.h"

namespace moeserve::expert_shard {
namespace {

constexpr int64_t kHidden = 64;

// The fuzzer's input: step 1, layer 1, hidden 64 and one batch of expert 0 with no rows. The
// batch has no activations, so the row buffer stayed empty and memcpy got a null destination
// (undefined behaviour, reported by UBSan).
TEST(WireTest, AcceptsABatchWithNoRows) {
  v1::ExchangeRequest request;
  ASSERT_TRUE(request.ParseFromString(std::string("\x08\x01\x10\x01\x18\x40\x22\x00", 8)));
  ShardBatch batch;
  ASSERT_TRUE(BatchFromProto(request, kHidden, &batch).ok());
  EXPECT_EQ(batch.layer, 1);
  ASSERT_EQ(batch.experts.size(), 1u);
  EXPECT_EQ(batch.counts[0], 0);
  EXPECT_TRUE(batch.rows.empty());
}

// rows x 64 x 4 bytes wraps to 0 for rows = 2^58: the old size check multiplied, accepted the
// empty activations and then sized the row buffer from the huge count.
TEST(WireTest, RejectsARowCountWhoseByteSizeOverflows) {
  v1::ExchangeRequest request;
  request.set_hidden_size(kHidden);
  v1::ExpertRows* rows = request.add_batches();
  rows->set_expert(3);
  rows->set_rows(int64_t{1} << 58);
  ShardBatch batch;
  const absl::Status s = BatchFromProto(request, kHidden, &batch);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(WireTest, RejectsActivationsThatAreNotWholeRows) {
  v1::ExchangeRequest request;
  request.set_hidden_size(kHidden);
  v1::ExpertRows* rows = request.add_batches();
  rows->set_rows(1);
  rows->set_activations(std::string(kHidden * 4 + 4, '\0'));
  ShardBatch batch;
  EXPECT_EQ(BatchFromProto(request, kHidden, &batch).code(), absl::StatusCode::kInvalidArgument);
  rows->set_activations(std::string(kHidden * 4, '\0'));
  EXPECT_TRUE(BatchFromProto(request, kHidden, &batch).ok());
  EXPECT_EQ(batch.rows.size(), static_cast<size_t>(kHidden));
}

}  // namespace
}  // namespace moeserve::expert_shard
