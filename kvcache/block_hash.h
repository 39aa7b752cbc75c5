#ifndef MOESERVE_KVCACHE_BLOCK_HASH_H_
#define MOESERVE_KVCACHE_BLOCK_HASH_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace moeserve::kvcache {

// The 128-bit name of one KV block. `lo` holds output bytes 0..7 and `hi` bytes 8..15, each
// little-endian; ToBytes() gives the 16 bytes that travel in proto `bytes` fields.
struct BlockHash {
  uint64_t lo = 0;
  uint64_t hi = 0;

  friend bool operator==(const BlockHash& a, const BlockHash& b) = default;
  template <typename H>
  friend H AbslHashValue(H h, const BlockHash& b) {
    return H::combine(std::move(h), b.lo, b.hi);
  }

  std::string ToBytes() const;  // 16 bytes
  std::string ToHex() const;    // 32 lowercase hex digits, in ToBytes() order
  // nullopt unless `bytes` is exactly 16 bytes long.
  static std::optional<BlockHash> FromBytes(absl::string_view bytes);
};

inline constexpr int64_t kBlockHashBytes = 16;
// The second half of the SipHash key; the first half is the per-model seed.
inline constexpr uint64_t kBlockHashKeyTag = 0x6d6f657365727665ULL;  // "moeserve", big-endian

// SipHash-2-4 with 128-bit output (Aumasson & Bernstein), key (k0, k1) as the reference's two
// little-endian key words. Exposed for its reference-vector test.
BlockHash SipHash128(uint64_t k0, uint64_t k1, absl::string_view data);

// The hash of the block that follows `parent` (use BlockHash{} for the first block), fixed across
// releases and platforms because caches outlive processes:
//   SipHash-2-4-128 with key (seed, kBlockHashKeyTag) over
//   parent.ToBytes() || each token as 4 bytes little-endian (two's complement).
BlockHash NextBlockHash(const BlockHash& parent, absl::Span<const int32_t> block,
                        uint64_t seed = 0);

// The chained hashes of every FULL block of `tokens` (a trailing partial block is ignored):
// result[i] = NextBlockHash(result[i-1], tokens[i*block_tokens, (i+1)*block_tokens), seed).
// Equal prefixes give equal leading hashes; `seed` separates models (different weights or
// tokenizers must never share blocks). Returns nothing when block_tokens <= 0.
std::vector<BlockHash> ChainedBlockHashes(absl::Span<const int32_t> tokens, int64_t block_tokens,
                                          uint64_t seed = 0);

}  // namespace moeserve::kvcache

#endif  // MOESERVE_KVCACHE_BLOCK_HASH_H_
