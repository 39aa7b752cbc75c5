// libFuzzer target: every RPC of moeserve.v1.KvCache (kvcache/kvcache_service.h) in process over
// an in-memory block store (the setup of KvCacheServer::Create without Redis or a port). The
// first byte picks the RPC (Lookup, Publish, Fetch, ReleaseLease, Stats); the rest is parsed as
// its request message. The cache keeps its state across inputs (a small budget bounds it), so
// sequences of publishes, lookups with leases, fetches and releases are explored.
// Properties: no crash; a clear status (CheckStatus); Publish answers one outcome per block;
// Stats stay within the budget.
#include <cstdint>
#include <memory>

#include "common/clock.h"
#include "kvcache/block_store.h"
#include "kvcache/kv_cache.h"
#include "kvcache/kvcache_service.h"
#include "kvcache/work_queue.h"
#include "moeserve/v1/kvcache.grpc.pb.h"
#include "tests/fuzz/grpc_fuzz_util.h"

namespace {

using moeserve::fuzz::CheckStatus;
using moeserve::fuzz::FuzzContext;
using moeserve::fuzz::ParseInput;
namespace v1 = moeserve::v1;
namespace kv = moeserve::kvcache;

constexpr int64_t kBudgetBytes = int64_t{8} << 20;

v1::KvCache::Stub& Stub() {
  static v1::KvCache::Stub* stub = [] {
    static moeserve::RealClock clock;
    kv::KvCacheOptions options;
    options.budget_bytes = kBudgetBytes;
    options.max_block_bytes = int64_t{1} << 20;
    options.max_blocks_per_request = 256;
    auto* cache = new kv::KvCache(options, kv::NewMemoryBlockStore(), &clock);
    auto* queue = new kv::WorkQueue(2);
    auto* service = new kv::KvCacheService(cache, queue, /*fetch_batch_blocks=*/4);
    moeserve::fuzz::InProcessServer* server = moeserve::fuzz::InProcessServer::Start(service);
    return v1::KvCache::NewStub(server->channel).release();
  }();
  return *stub;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  v1::KvCache::Stub& stub = Stub();
  uint8_t method = 0;
  if (!moeserve::fuzz::TakeSelector(&data, &size, &method)) return 0;
  auto context = FuzzContext();
  switch (method % 5) {
    case 0: {
      v1::LookupRequest request;
      if (!ParseInput(data, size, &request)) return 0;
      v1::LookupResponse response;
      const grpc::Status status = stub.Lookup(context.get(), request, &response);
      CheckStatus(status, "Lookup");
      if (status.ok()) {
        MOESERVE_FUZZ_ASSERT(response.present_blocks() >= 0 &&
                                 response.present_blocks() <= request.block_hashes_size(),
                             absl::StrCat(response.present_blocks()));
      }
      break;
    }
    case 1: {
      v1::PublishRequest request;
      if (!ParseInput(data, size, &request)) return 0;
      v1::PublishResponse response;
      const grpc::Status status = stub.Publish(context.get(), request, &response);
      CheckStatus(status, "Publish");
      if (status.ok()) {
        MOESERVE_FUZZ_ASSERT(response.outcomes_size() == request.blocks_size(),
                             absl::StrCat(response.outcomes_size(), " outcomes for ",
                                          request.blocks_size(), " blocks"));
      }
      break;
    }
    case 2: {
      v1::FetchRequest request;
      if (!ParseInput(data, size, &request)) return 0;
      auto reader = stub.Fetch(context.get(), request);
      moeserve::fuzz::ReadAll<v1::FetchResponse>(reader.get());
      CheckStatus(reader->Finish(), "Fetch");
      break;
    }
    case 3: {
      v1::ReleaseLeaseRequest request;
      if (!ParseInput(data, size, &request)) return 0;
      v1::ReleaseLeaseResponse response;
      CheckStatus(stub.ReleaseLease(context.get(), request, &response), "ReleaseLease");
      break;
    }
    default: {
      v1::StatsRequest request;
      if (!ParseInput(data, size, &request)) return 0;
      v1::StatsResponse response;
      const grpc::Status status = stub.Stats(context.get(), request, &response);
      CheckStatus(status, "Stats");
      MOESERVE_FUZZ_ASSERT(status.ok(), status.error_message());
      MOESERVE_FUZZ_ASSERT(response.bytes() >= 0 && response.bytes() <= kBudgetBytes,
                           absl::StrCat(response.bytes(), " bytes held"));
      break;
    }
  }
  return 0;
}
