#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kvcache/block_store.h"

namespace moeserve::kvcache {
namespace {

BlockHash H(uint64_t n) { return BlockHash{n, n * 31}; }

TEST(MemoryBlockStoreTest, PutGetContainsDelete) {
  BlockStorePtr store = NewMemoryBlockStore();
  const std::string a(1000, 'a');
  const std::string b = std::string("\0b\0", 3);  // binary-safe
  const std::vector<BlockView> blocks = {{H(1), a}, {H(2), b}};
  for (const absl::Status& s : store->Put(blocks)) EXPECT_TRUE(s.ok()) << s;

  const std::vector<BlockHash> hashes = {H(2), H(3), H(1)};
  std::vector<StoredBlock> got = store->Get(hashes);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].presence, Presence::kPresent);
  EXPECT_EQ(got[0].data, b);
  EXPECT_EQ(got[1].presence, Presence::kAbsent);
  EXPECT_EQ(got[2].data, a);
  EXPECT_EQ(store->Contains(hashes),
            (std::vector<Presence>{Presence::kPresent, Presence::kAbsent, Presence::kPresent}));

  const std::vector<BlockHash> gone = {H(1), H(9)};
  store->Delete(gone);
  EXPECT_EQ(store->Contains(hashes),
            (std::vector<Presence>{Presence::kPresent, Presence::kAbsent, Presence::kAbsent}));
  EXPECT_EQ(store->errors(), 0);
}

TEST(MemoryBlockStoreTest, PutOverwrites) {
  BlockStorePtr store = NewMemoryBlockStore();
  const std::vector<BlockView> first = {{H(1), "x"}};
  const std::vector<BlockView> second = {{H(1), "y"}};
  store->Put(first);
  store->Put(second);
  const std::vector<BlockHash> one = {H(1)};
  EXPECT_EQ(store->Get(one)[0].data, "y");
}

}  // namespace
}  // namespace moeserve::kvcache
