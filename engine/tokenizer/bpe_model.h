#ifndef MOESERVE_ENGINE_TOKENIZER_BPE_MODEL_H_
#define MOESERVE_ENGINE_TOKENIZER_BPE_MODEL_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine::tokenizer_internal {

// Reusable per-call buffers for BpeModel::Encode.
struct BpeScratch {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t size;  // bytes covered; 0 once merged away
  };
  std::vector<Symbol> symbols;
  std::vector<uint64_t> heap;  // (rank << 32 | position) for long words
};

// A byte-level BPE model ("model" of tokenizer.json, type BPE) that works on raw bytes: the
// vocabulary and merges are mapped out of the byte alphabet once at load time, which is exact
// because the alphabet is a bijection. Merges are applied by rank, leftmost first on ties (the
// order Hugging Face tokenizers and transformers.js both use). Results per pre-token word are
// cached in a bounded, sharded cache. Thread-safe.
class BpeModel {
 public:
  // `model` is the "model" object. Vocab entries outside the byte alphabet are kept for
  // decoding but can never be produced by Encode; merges naming unknown tokens are an error.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& model);

  // Appends the ids of `word` (non-empty raw bytes of one pre-token) to `out`.
  void Encode(absl::string_view word, BpeScratch* scratch, std::vector<int32_t>* out) const;

  // Same without the cache (exposed for tests and for the cache-miss path).
  void EncodeUncached(absl::string_view word, BpeScratch* scratch, std::vector<int32_t>* out) const;

  // Raw bytes of a vocab entry (the byte-level decoding), or nullptr when `id` is not in the
  // model vocab. `ok_bytes` is false when the entry was not in the byte alphabet (then the
  // returned string is its UTF-8 text, as Hugging Face's ByteLevel decoder falls back to).
  const std::string* IdToBytes(int32_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= id_to_bytes_.size() || !has_id_[id]) return nullptr;
    return &id_to_bytes_[id];
  }
  // Id of a raw-byte token, or -1.
  int32_t BytesToId(absl::string_view bytes) const {
    const auto it = vocab_.find(bytes);
    return it == vocab_.end() ? -1 : it->second;
  }
  size_t id_space() const { return id_to_bytes_.size(); }
  size_t num_merges() const { return merges_.size(); }

 private:
  struct Merge {
    int32_t rank;
    int32_t id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const Merge* FindMerge(int32_t a, int32_t b) const {
    const auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }
  void MergeShort(BpeScratch* scratch) const;
  void MergeLong(BpeScratch* scratch) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;  // raw bytes -> id
  std::vector<std::string> id_to_bytes_;
  std::vector<bool> has_id_;
  std::array<int32_t, 256> byte_ids_{};
  absl::flat_hash_map<uint64_t, Merge> merges_;

  // The word cache: ids of each word are stored contiguously in `ids`.
  struct CacheShard {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, std::pair<uint32_t, uint32_t>> index ABSL_GUARDED_BY(mu);
    std::vector<int32_t> ids ABSL_GUARDED_BY(mu);
  };
  static constexpr size_t kCacheShards = 16;
  static constexpr size_t kMaxCachedWordBytes = 256;
  static constexpr size_t kMaxCacheEntriesPerShard = 1 << 16;
  mutable std::array<CacheShard, kCacheShards> cache_;
};

}  // namespace moeserve::engine::tokenizer_internal

#endif  // MOESERVE_ENGINE_TOKENIZER_BPE_MODEL_H_
