#include "kvcache/block_hash.h"

#include <cstring>

#include "absl/strings/escaping.h"

namespace moeserve::kvcache {
namespace {

inline uint64_t Rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

inline uint64_t LoadLe64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

inline void StoreLe64(uint64_t v, char* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

struct SipState {
  uint64_t v0, v1, v2, v3;
  void Round() {
    v0 += v1;
    v1 = Rotl(v1, 13);
    v1 ^= v0;
    v0 = Rotl(v0, 32);
    v2 += v3;
    v3 = Rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = Rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = Rotl(v1, 17);
    v1 ^= v2;
    v2 = Rotl(v2, 32);
  }
  void Compress(uint64_t m) {
    v3 ^= m;
    Round();
    Round();
    v0 ^= m;
  }
  uint64_t Finish() {
    for (int i = 0; i < 4; ++i) Round();
    return v0 ^ v1 ^ v2 ^ v3;
  }
};

}  // namespace

std::string BlockHash::ToBytes() const {
  std::string out(kBlockHashBytes, '\0');
  StoreLe64(lo, out.data());
  StoreLe64(hi, out.data() + 8);
  return out;
}

std::string BlockHash::ToHex() const { return absl::BytesToHexString(ToBytes()); }

std::optional<BlockHash> BlockHash::FromBytes(absl::string_view bytes) {
  if (static_cast<int64_t>(bytes.size()) != kBlockHashBytes) return std::nullopt;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  return BlockHash{LoadLe64(p), LoadLe64(p + 8)};
}

BlockHash SipHash128(uint64_t k0, uint64_t k1, absl::string_view data) {
  SipState s{k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL, k0 ^ 0x6c7967656e657261ULL,
             k1 ^ 0x7465646279746573ULL};
  s.v1 ^= 0xee;  // 128-bit output variant
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const size_t n = data.size();
  const size_t full = n - n % 8;
  for (size_t i = 0; i < full; i += 8) s.Compress(LoadLe64(p + i));
  uint64_t last = static_cast<uint64_t>(n & 0xff) << 56;
  for (size_t i = full; i < n; ++i) last |= static_cast<uint64_t>(p[i]) << (8 * (i - full));
  s.Compress(last);
  s.v2 ^= 0xee;
  const uint64_t out0 = s.Finish();
  s.v1 ^= 0xdd;
  const uint64_t out1 = s.Finish();
  return BlockHash{out0, out1};
}

BlockHash NextBlockHash(const BlockHash& parent, absl::Span<const int32_t> block, uint64_t seed) {
  std::string message = parent.ToBytes();
  message.resize(kBlockHashBytes + 4 * block.size());
  char* out = message.data() + kBlockHashBytes;
  for (int32_t token : block) {
    const auto u = static_cast<uint32_t>(token);
    for (int b = 0; b < 4; ++b) *out++ = static_cast<char>((u >> (8 * b)) & 0xff);
  }
  return SipHash128(seed, kBlockHashKeyTag, message);
}

std::vector<BlockHash> ChainedBlockHashes(absl::Span<const int32_t> tokens, int64_t block_tokens,
                                          uint64_t seed) {
  std::vector<BlockHash> hashes;
  if (block_tokens <= 0) return hashes;
  const int64_t num_blocks = static_cast<int64_t>(tokens.size()) / block_tokens;
  hashes.reserve(num_blocks);
  BlockHash parent;
  for (int64_t i = 0; i < num_blocks; ++i) {
    parent = NextBlockHash(parent, tokens.subspan(i * block_tokens, block_tokens), seed);
    hashes.push_back(parent);
  }
  return hashes;
}

}  // namespace moeserve::kvcache
