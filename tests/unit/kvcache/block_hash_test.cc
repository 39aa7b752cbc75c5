#include "kvcache/block_hash.h"

#include <numeric>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace moeserve::kvcache {
namespace {

std::vector<int32_t> Iota(int n, int32_t start = 0) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::string Bytes(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(static_cast<char>(i));
  return s;
}

// Reference vectors of the SipHash authors (vectors_sip128 in github.com/veorq/SipHash):
// key 00 01 .. 0f, message 00 01 .. (n-1).
TEST(BlockHashTest, SipHash128MatchesReferenceVectors) {
  const uint64_t k0 = 0x0706050403020100ULL;
  const uint64_t k1 = 0x0f0e0d0c0b0a0908ULL;
  EXPECT_EQ(SipHash128(k0, k1, Bytes(0)).ToHex(), "a3817f04ba25a8e66df67214c7550293");
  EXPECT_EQ(SipHash128(k0, k1, Bytes(1)).ToHex(), "da87c1d86b99af44347659119b22fc45");
  EXPECT_EQ(SipHash128(k0, k1, Bytes(2)).ToHex(), "8177228da4a45dc7fca38bdef60affe4");
  EXPECT_EQ(SipHash128(k0, k1, Bytes(15)).ToHex(), "5493e99933b0a8117e08ec0f97cfc3d9");
}

TEST(BlockHashTest, NextBlockHashHashesParentThenLittleEndianTokens) {
  const BlockHash parent{0x1122334455667788ULL, 0x99aabbccddeeff00ULL};
  const std::vector<int32_t> tokens = {1, -1, 0x01020304};
  std::string message = parent.ToBytes();
  message += std::string("\x01\x00\x00\x00", 4);
  message += std::string("\xff\xff\xff\xff", 4);
  message += std::string("\x04\x03\x02\x01", 4);
  EXPECT_EQ(NextBlockHash(parent, tokens, 7), SipHash128(7, kBlockHashKeyTag, message));
}

TEST(BlockHashTest, OnlyFullBlocksAreHashed) {
  EXPECT_EQ(ChainedBlockHashes(Iota(63), 64).size(), 0u);
  EXPECT_EQ(ChainedBlockHashes(Iota(64), 64).size(), 1u);
  EXPECT_EQ(ChainedBlockHashes(Iota(130), 64).size(), 2u);
  EXPECT_EQ(ChainedBlockHashes(Iota(130), 0).size(), 0u);
  EXPECT_EQ(ChainedBlockHashes(Iota(130), -4).size(), 0u);
  EXPECT_EQ(ChainedBlockHashes({}, 64).size(), 0u);
  // The trailing partial block does not change the full ones.
  EXPECT_EQ(ChainedBlockHashes(Iota(130), 64), ChainedBlockHashes(Iota(128), 64));
}

TEST(BlockHashTest, EqualPrefixesGiveEqualLeadingHashes) {
  std::vector<int32_t> a = Iota(256);
  std::vector<int32_t> b = a;
  b.resize(200);
  b.insert(b.end(),
           {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
            7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7});
  const std::vector<BlockHash> ha = ChainedBlockHashes(a, 16);
  const std::vector<BlockHash> hb = ChainedBlockHashes(b, 16);
  ASSERT_EQ(ha.size(), 16u);
  ASSERT_EQ(hb.size(), 16u);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(ha[i], hb[i]) << i;   // tokens 0..191 agree
  for (int i = 12; i < 16; ++i) EXPECT_NE(ha[i], hb[i]) << i;  // block 12 holds token 200
  // Each hash is a function of the prefix alone.
  std::vector<int32_t> prefix(a.begin(), a.begin() + 64);
  const std::vector<BlockHash> hp = ChainedBlockHashes(prefix, 16);
  EXPECT_EQ(hp, std::vector<BlockHash>(ha.begin(), ha.begin() + 4));
}

TEST(BlockHashTest, AChangeInOneBlockChangesItAndEveryLaterBlock) {
  const std::vector<int32_t> a = Iota(64 * 4);
  std::vector<int32_t> b = a;
  b[64 * 1 + 5] += 1;
  const std::vector<BlockHash> ha = ChainedBlockHashes(a, 64);
  const std::vector<BlockHash> hb = ChainedBlockHashes(b, 64);
  EXPECT_EQ(ha[0], hb[0]);
  for (int i = 1; i < 4; ++i) EXPECT_NE(ha[i], hb[i]) << i;
}

TEST(BlockHashTest, SameTokensAtAnotherPositionHashDifferently) {
  // Blocks 0 and 1 hold identical tokens; their names differ because their prefixes do.
  std::vector<int32_t> tokens(128, 42);
  const std::vector<BlockHash> h = ChainedBlockHashes(tokens, 64);
  EXPECT_NE(h[0], h[1]);
}

TEST(BlockHashTest, SeedSeparatesModels) {
  const std::vector<int32_t> tokens = Iota(128);
  EXPECT_NE(ChainedBlockHashes(tokens, 64, 1)[0], ChainedBlockHashes(tokens, 64, 2)[0]);
  EXPECT_EQ(ChainedBlockHashes(tokens, 64, 3), ChainedBlockHashes(tokens, 64, 3));
}

TEST(BlockHashTest, DistinctSingleTokenBlocksDoNotCollide) {
  absl::flat_hash_set<BlockHash> seen;
  for (int32_t t = 0; t < 20000; ++t) {
    const std::vector<int32_t> one = {t};
    EXPECT_TRUE(seen.insert(NextBlockHash(BlockHash{}, one)).second) << t;
  }
}

TEST(BlockHashTest, BytesRoundTripAndRejectWrongSizes) {
  const BlockHash h = ChainedBlockHashes(Iota(64), 64)[0];
  const std::string bytes = h.ToBytes();
  ASSERT_EQ(bytes.size(), 16u);
  EXPECT_EQ(BlockHash::FromBytes(bytes), h);
  EXPECT_EQ(h.ToHex().size(), 32u);
  EXPECT_FALSE(BlockHash::FromBytes("").has_value());
  EXPECT_FALSE(BlockHash::FromBytes(std::string(15, 'x')).has_value());
  EXPECT_FALSE(BlockHash::FromBytes(std::string(17, 'x')).has_value());
}

}  // namespace
}  // namespace moeserve::kvcache
