#ifndef MOESERVE_KVCACHE_GRPC_KVCACHE_CLIENT_H_
#define MOESERVE_KVCACHE_GRPC_KVCACHE_CLIENT_H_

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "kvcache/kvcache_client.h"
#include "moeserve/v1/kvcache.grpc.pb.h"

namespace moeserve::kvcache {

struct GrpcKvCacheClientOptions {
  absl::Duration timeout = absl::Seconds(10);  // per call (a whole Fetch stream included)
  // Publish splits its blocks into requests of at most this many bytes (keep it under the
  // server's max_request_bytes); a single larger block goes alone.
  int64_t max_publish_request_bytes = int64_t{32} << 20;
  int64_t max_blocks_per_request = 4096;
};

// KvCacheClient over gRPC. Thread-safe.
class GrpcKvCacheClient final : public KvCacheClient {
 public:
  // A channel to `target` ("host:port") with no receive-size limit (blocks are megabytes).
  static std::unique_ptr<GrpcKvCacheClient> Create(const std::string& target,
                                                   GrpcKvCacheClientOptions options = {});
  // Over an existing channel; it must allow messages as large as the largest block.
  GrpcKvCacheClient(std::shared_ptr<grpc::Channel> channel, GrpcKvCacheClientOptions options);

  absl::StatusOr<LookupResult> Lookup(absl::Span<const BlockHash> hashes, bool take_lease) override;
  absl::StatusOr<PublishResult> Publish(absl::Span<const BlockView> blocks) override;
  absl::StatusOr<FetchResult> Fetch(absl::Span<const BlockHash> hashes) override;
  absl::Status Release(uint64_t lease_id) override;
  absl::StatusOr<KvCacheStats> Stats() override;

 private:
  absl::StatusOr<PublishResult> PublishOne(absl::Span<const BlockView> blocks);
  void SetDeadline(grpc::ClientContext* context) const;

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<moeserve::v1::KvCache::Stub> stub_;
  const GrpcKvCacheClientOptions options_;
};

}  // namespace moeserve::kvcache

#endif  // MOESERVE_KVCACHE_GRPC_KVCACHE_CLIENT_H_
