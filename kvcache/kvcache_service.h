#ifndef MOESERVE_KVCACHE_KVCACHE_SERVICE_H_
#define MOESERVE_KVCACHE_KVCACHE_SERVICE_H_

#include "kvcache/kv_cache.h"
#include "kvcache/work_queue.h"
#include "moeserve/v1/kvcache.grpc.pb.h"

namespace moeserve::kvcache {

// The gRPC adapter of KvCache (callback API): converts proto to domain types and back, and
// statuses through common/grpc_status.h. Calls that touch the store run on `queue`, so callback
// threads never block; Fetch streams the blocks several per message (about 4 MiB each), reading
// `fetch_batch_blocks` blocks from the store at a time. A hash that is not 16 bytes is INVALID_ARGUMENT.
//
// `cache` and `queue` are not owned and must outlive the service and every call in flight (the
// server shuts gRPC down before stopping the queue).
class KvCacheService final : public moeserve::v1::KvCache::CallbackService {
 public:
  KvCacheService(KvCache* cache, WorkQueue* queue, int fetch_batch_blocks = 32)
      : cache_(cache), queue_(queue), fetch_batch_blocks_(fetch_batch_blocks) {}

  grpc::ServerUnaryReactor* Lookup(grpc::CallbackServerContext* context,
                                   const moeserve::v1::LookupRequest* request,
                                   moeserve::v1::LookupResponse* response) override;
  grpc::ServerUnaryReactor* Publish(grpc::CallbackServerContext* context,
                                    const moeserve::v1::PublishRequest* request,
                                    moeserve::v1::PublishResponse* response) override;
  grpc::ServerWriteReactor<moeserve::v1::FetchResponse>* Fetch(
      grpc::CallbackServerContext* context, const moeserve::v1::FetchRequest* request) override;
  grpc::ServerUnaryReactor* ReleaseLease(grpc::CallbackServerContext* context,
                                         const moeserve::v1::ReleaseLeaseRequest* request,
                                         moeserve::v1::ReleaseLeaseResponse* response) override;
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* context,
                                  const moeserve::v1::StatsRequest* request,
                                  moeserve::v1::StatsResponse* response) override;

 private:
  KvCache* const cache_;
  WorkQueue* const queue_;
  const int fetch_batch_blocks_;
};

}  // namespace moeserve::kvcache

#endif  // MOESERVE_KVCACHE_KVCACHE_SERVICE_H_
