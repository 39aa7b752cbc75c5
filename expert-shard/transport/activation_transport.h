#ifndef MOESERVE_EXPERT_SHARD_TRANSPORT_ACTIVATION_TRANSPORT_H_
#define MOESERVE_EXPERT_SHARD_TRANSPORT_ACTIVATION_TRANSPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace moeserve::expert_shard {

// What a worker sends one shard for one MoE layer of one step. The header (experts and counts)
// is separate from the payload (rows) so that a transport can exchange counts first and then
// size its payload transfers from them (the NCCL transport does exactly that: one small
// all-to-all of counts, then grouped send/recv of rows; the receiver of results already knows
// their size from the counts it sent).
struct ShardBatch {
  int32_t shard = 0;
  int64_t layer = 0;
  std::vector<int32_t> experts;  // ascending, each at most once
  std::vector<int64_t> counts;   // rows per expert, same length as experts
  // sum(counts) rows of hidden float32 values: expert experts[0]'s rows first, then experts[1]'s.
  std::vector<float> rows;
};

// A shard's answer: the raw output of each expert for each of its rows, laid out exactly as the
// batch's rows (sum(counts) * hidden floats), and how that shard's part of the exchange went.
struct ShardResult {
  std::vector<float> outputs;
  absl::Status status;  // this batch's outcome, so a caller can fail over just the failed shards
};

// The data plane between a worker and the expert shards.
//
// Contract: Exchange sends every batch (at most one per shard) of one MoE layer, waits for all
// of them and fills results[i] for batches[i]. It either succeeds for all batches or returns an
// error naming a failing shard (its address, for remote transports); then results has one entry
// per batch and results[i].status is that batch's own error (OK where the shard answered), so a
// caller can tell which shards failed. Codes:
//   Unavailable        the shard is unreachable, timed out or failed in transit;
//   FailedPrecondition the shard does not hold a requested expert or layer;
//   InvalidArgument    the shard rejected the batch (row width, counts).
// Ownership: batches are borrowed for the call; results are owned by the caller.
// Thread-safety: one Exchange at a time per transport (a worker's engine thread); implementations
// may overlap the per-shard transfers inside one call.
class ActivationTransport {
 public:
  virtual ~ActivationTransport() = default;

  virtual absl::Status Exchange(int64_t layer, absl::Span<const ShardBatch> batches,
                                std::vector<ShardResult>* results) = 0;
  // Shards this transport reaches (shard ids are 0 .. num_shards() - 1).
  virtual int num_shards() const = 0;
  // A human-readable name of a shard for errors and logs (an address for gRPC).
  virtual std::string ShardName(int32_t shard) const = 0;
};

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_TRANSPORT_ACTIVATION_TRANSPORT_H_
