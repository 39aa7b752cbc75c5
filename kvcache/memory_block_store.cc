#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "kvcache/block_store.h"

namespace moeserve::kvcache {
namespace {

// Bytes in a hash map under one mutex. The index bounds how much is held.
class MemoryBlockStore final : public BlockStore {
 public:
  std::vector<absl::Status> Put(absl::Span<const BlockView> blocks) override {
    absl::MutexLock lock(&mu_);
    for (const BlockView& block : blocks) blocks_[block.hash] = std::string(block.data);
    return std::vector<absl::Status>(blocks.size(), absl::OkStatus());
  }

  std::vector<StoredBlock> Get(absl::Span<const BlockHash> hashes) override {
    std::vector<StoredBlock> out(hashes.size());
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < hashes.size(); ++i) {
      auto it = blocks_.find(hashes[i]);
      if (it == blocks_.end()) continue;
      out[i].presence = Presence::kPresent;
      out[i].data = it->second;
    }
    return out;
  }

  std::vector<Presence> Contains(absl::Span<const BlockHash> hashes) override {
    std::vector<Presence> out;
    out.reserve(hashes.size());
    absl::MutexLock lock(&mu_);
    for (const BlockHash& hash : hashes) {
      out.push_back(blocks_.contains(hash) ? Presence::kPresent : Presence::kAbsent);
    }
    return out;
  }

  void Delete(absl::Span<const BlockHash> hashes) override {
    absl::MutexLock lock(&mu_);
    for (const BlockHash& hash : hashes) blocks_.erase(hash);
  }

  int64_t errors() const override { return 0; }

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<BlockHash, std::string> blocks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

BlockStorePtr NewMemoryBlockStore() { return std::make_unique<MemoryBlockStore>(); }

}  // namespace moeserve::kvcache
