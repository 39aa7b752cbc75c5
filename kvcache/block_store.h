#ifndef MOESERVE_KVCACHE_BLOCK_STORE_H_
#define MOESERVE_KVCACHE_BLOCK_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kvcache/block_hash.h"

namespace moeserve::kvcache {

// What the store says about one block.
enum class Presence {
  kPresent,
  kAbsent,       // the backend answered and does not hold it
  kUnavailable,  // the backend could not be asked (down, timed out); treat as a miss, keep the
                 // index
};

struct BlockView {
  BlockHash hash;
  absl::string_view data;  // not owned; valid for the duration of the call
};

struct StoredBlock {
  Presence presence = Presence::kAbsent;
  std::string data;  // set when kPresent
};

// Where block bytes live: process memory or Redis. The store holds bytes only; which blocks count
// as cached, their recency and leases belong to the BlockIndex. The store may lose blocks on its
// own (Redis eviction or restart, an operator's FLUSHALL); callers find out through kAbsent.
//
// A backend failure is never an error return: it is reported per block (kUnavailable, a non-OK
// Put status) and counted in errors(), so a cache outage degrades to misses.
//
// Implementations are thread-safe. Calls may block on I/O (Redis round trips); callers keep them
// off gRPC callback threads and outside their own locks.
class BlockStore {
 public:
  virtual ~BlockStore() = default;

  // Stores every block (overwriting is harmless: equal hashes mean equal content). One status per
  // block, in order: OK, or UNAVAILABLE when the backend did not take it.
  virtual std::vector<absl::Status> Put(absl::Span<const BlockView> blocks) = 0;

  // One answer per hash, in order.
  virtual std::vector<StoredBlock> Get(absl::Span<const BlockHash> hashes) = 0;
  virtual std::vector<Presence> Contains(absl::Span<const BlockHash> hashes) = 0;

  // Best effort: a block that cannot be deleted now is left for the backend's own eviction.
  virtual void Delete(absl::Span<const BlockHash> hashes) = 0;

  // Backend failures seen so far (failed connects, commands, replies).
  virtual int64_t errors() const = 0;
};

using BlockStorePtr = std::unique_ptr<BlockStore>;

// A store in process memory (used when no Redis endpoint is configured). Never unavailable.
BlockStorePtr NewMemoryBlockStore();

}  // namespace moeserve::kvcache

#endif  // MOESERVE_KVCACHE_BLOCK_STORE_H_
