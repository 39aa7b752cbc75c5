#ifndef MOESERVE_EXPERT_SHARD_WIRE_H_
#define MOESERVE_EXPERT_SHARD_WIRE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "expert-shard/transport/activation_transport.h"
#include "moeserve/v1/expert_shard.pb.h"

// Conversions between the ExpertShard wire messages and the transport's batches. Activations go
// over the wire as raw little-endian float32 bytes (every machine we run on is little-endian).
namespace moeserve::expert_shard {

void BatchToProto(const ShardBatch& batch, int64_t hidden, uint64_t step,
                  moeserve::v1::ExchangeRequest* request);

// InvalidArgument when the request's row width differs from `hidden` or a batch's bytes are not
// rows * hidden float32 values.
absl::Status BatchFromProto(const moeserve::v1::ExchangeRequest& request, int64_t hidden,
                            ShardBatch* batch);

void ResultToProto(const ShardBatch& batch, const ShardResult& result, int64_t hidden,
                   moeserve::v1::ExchangeResponse* response);

// Checks that the response answers `sent` (same experts, counts and sizes); Internal otherwise.
absl::Status ResultFromProto(const moeserve::v1::ExchangeResponse& response, const ShardBatch& sent,
                             int64_t hidden, ShardResult* result);

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_WIRE_H_
