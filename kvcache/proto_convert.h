#ifndef MOESERVE_KVCACHE_PROTO_CONVERT_H_
#define MOESERVE_KVCACHE_PROTO_CONVERT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/repeated_field.h"
#include "kvcache/kv_cache.h"
#include "moeserve/v1/kvcache.pb.h"

namespace moeserve::kvcache {

// Proto <-> domain conversions shared by the service and the gRPC client.

// INVALID_ARGUMENT naming the first hash that is not 16 bytes.
absl::StatusOr<std::vector<BlockHash>> HashesFromProto(
    const google::protobuf::RepeatedPtrField<std::string>& hashes);
void HashesToProto(absl::Span<const BlockHash> hashes,
                   google::protobuf::RepeatedPtrField<std::string>* out);

moeserve::v1::PublishOutcome PublishOutcomeToProto(PublishOutcome outcome);
absl::StatusOr<PublishOutcome> PublishOutcomeFromProto(moeserve::v1::PublishOutcome outcome);

void StatsToProto(const KvCacheStats& stats, moeserve::v1::StatsResponse* out);
KvCacheStats StatsFromProto(const moeserve::v1::StatsResponse& in);

}  // namespace moeserve::kvcache

#endif  // MOESERVE_KVCACHE_PROTO_CONVERT_H_
