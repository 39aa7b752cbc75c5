#include "engine/tokenizer/bpe_model.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/byte_level.h"

namespace moeserve::engine::tokenizer_internal {
namespace {

// Words up to this many bytes merge with a quadratic scan over a flat array, which beats a
// heap for the short words that dominate real text; longer words use the heap.
constexpr size_t kShortWordBytes = 48;
constexpr int32_t kNoRank = std::numeric_limits<int32_t>::max();

absl::StatusOr<std::pair<std::string, std::string>> MergeParts(const nlohmann::json& entry) {
  if (entry.is_string()) {
    const std::string& s = entry.get_ref<const std::string&>();
    const size_t space = s.find(' ');
    if (space == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("merge '", s, "' has no space"));
    }
    return std::make_pair(s.substr(0, space), s.substr(space + 1));
  }
  if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
    return std::make_pair(entry[0].get<std::string>(), entry[1].get<std::string>());
  }
  return absl::InvalidArgumentError("merge is neither \"a b\" nor [a, b]");
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const nlohmann::json& model) {
  if (!model.is_object() || model.value("type", std::string("BPE")) != "BPE") {
    return absl::UnimplementedError("only BPE models are supported");
  }
  const auto vocab = model.find("vocab");
  const auto merges = model.find("merges");
  if (vocab == model.end() || !vocab->is_object()) {
    return absl::InvalidArgumentError("model.vocab is missing or not an object");
  }
  if (merges == model.end() || !merges->is_array()) {
    return absl::InvalidArgumentError("model.merges is missing or not an array");
  }
  if (model.value("byte_fallback", false)) {
    return absl::UnimplementedError("BPE byte_fallback is not supported");
  }
  auto bpe = std::unique_ptr<BpeModel>(new BpeModel());
  bpe->vocab_.reserve(vocab->size());
  int64_t max_id = -1;
  for (const auto& [token, id_json] : vocab->items()) {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 ||
        id_json.get<int64_t>() > std::numeric_limits<int32_t>::max() / 2) {
      return absl::InvalidArgumentError(absl::StrCat("vocab entry '", token, "' has a bad id"));
    }
    max_id = std::max(max_id, id_json.get<int64_t>());
  }
  bpe->id_to_bytes_.resize(static_cast<size_t>(max_id + 1));
  bpe->has_id_.assign(static_cast<size_t>(max_id + 1), false);
  std::string bytes;
  for (const auto& [token, id_json] : vocab->items()) {
    const auto id = static_cast<int32_t>(id_json.get<int64_t>());
    bpe->has_id_[id] = true;
    if (UnicodeToBytes(token, &bytes)) {
      bpe->vocab_[bytes] = id;
      bpe->id_to_bytes_[id] = bytes;
    } else {
      bpe->id_to_bytes_[id] = token;  // unreachable by Encode; decodes as its own text
    }
  }
  for (int b = 0; b < 256; ++b) {
    const int32_t id = bpe->BytesToId(std::string(1, static_cast<char>(b)));
    if (id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocab lacks the byte-level token for byte ", b));
    }
    bpe->byte_ids_[b] = id;
  }
  bpe->merges_.reserve(merges->size());
  std::string left, right;
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    auto parts = MergeParts((*merges)[rank]);
    if (!parts.ok()) return parts.status();
    if (!UnicodeToBytes(parts->first, &left) || !UnicodeToBytes(parts->second, &right)) {
      continue;  // outside the byte alphabet: can never apply
    }
    const int32_t a = bpe->BytesToId(left), b = bpe->BytesToId(right);
    const int32_t merged = bpe->BytesToId(absl::StrCat(left, right));
    if (a < 0 || b < 0 || merged < 0) {
      return absl::InvalidArgumentError(absl::StrCat("merge ", rank, " ('", parts->first, " ",
                                                     parts->second, "') is not in the vocab"));
    }
    bpe->merges_.try_emplace(PairKey(a, b), Merge{static_cast<int32_t>(rank), merged});
  }
  return bpe;
}

void BpeModel::Encode(absl::string_view word, BpeScratch* scratch,
                      std::vector<int32_t>* out) const {
  if (word.size() == 1) {
    out->push_back(byte_ids_[static_cast<uint8_t>(word[0])]);
    return;
  }
  if (word.size() > kMaxCachedWordBytes) {
    EncodeUncached(word, scratch, out);
    return;
  }
  const size_t hash = absl::Hash<absl::string_view>()(word);
  CacheShard& shard = cache_[(hash >> 7) % kCacheShards];
  {
    absl::MutexLock lock(&shard.mu);
    const auto it = shard.index.find(word);
    if (it != shard.index.end()) {
      const int32_t* ids = shard.ids.data() + it->second.first;
      out->insert(out->end(), ids, ids + it->second.second);
      return;
    }
  }
  const size_t start = out->size();
  EncodeUncached(word, scratch, out);
  absl::MutexLock lock(&shard.mu);
  if (shard.index.size() >= kMaxCacheEntriesPerShard) {
    shard.index.clear();
    shard.ids.clear();
  }
  const auto offset = static_cast<uint32_t>(shard.ids.size());
  const auto count = static_cast<uint32_t>(out->size() - start);
  if (shard.index.try_emplace(word, offset, count).second) {
    shard.ids.insert(shard.ids.end(), out->begin() + static_cast<ptrdiff_t>(start), out->end());
  }
}

void BpeModel::EncodeUncached(absl::string_view word, BpeScratch* scratch,
                              std::vector<int32_t>* out) const {
  auto& symbols = scratch->symbols;
  symbols.resize(word.size());
  const auto n = static_cast<int32_t>(word.size());
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = BpeScratch::Symbol{byte_ids_[static_cast<uint8_t>(word[i])], i - 1, i + 1, 1};
  }
  if (word.size() <= kShortWordBytes) {
    MergeShort(scratch);
  } else {
    MergeLong(scratch);
  }
  for (int32_t i = 0; i < n; i = symbols[i].next) out->push_back(symbols[i].id);
}

// Quadratic merge over a compact array: ids[] and the ranks of adjacent pairs. The linked-list
// fields of `symbols` are rewritten at the end so EncodeUncached can walk them.
void BpeModel::MergeShort(BpeScratch* scratch) const {
  auto& symbols = scratch->symbols;
  const auto n0 = static_cast<int32_t>(symbols.size());
  int32_t ids[kShortWordBytes];
  int32_t pos[kShortWordBytes];  // original position of each live symbol
  int32_t ranks[kShortWordBytes];
  int32_t n = n0;
  for (int32_t i = 0; i < n; ++i) {
    ids[i] = symbols[i].id;
    pos[i] = i;
  }
  auto rank_of = [&](int32_t i) {
    const Merge* m = FindMerge(ids[i], ids[i + 1]);
    return m == nullptr ? kNoRank : m->rank;
  };
  for (int32_t i = 0; i + 1 < n; ++i) ranks[i] = rank_of(i);
  while (n > 1) {
    int32_t best = -1;
    int32_t best_rank = kNoRank;
    for (int32_t i = 0; i + 1 < n; ++i) {
      if (ranks[i] < best_rank) {
        best_rank = ranks[i];
        best = i;
      }
    }
    if (best < 0) break;
    ids[best] = FindMerge(ids[best], ids[best + 1])->id;
    for (int32_t i = best + 1; i + 1 < n; ++i) {
      ids[i] = ids[i + 1];
      pos[i] = pos[i + 1];
      ranks[i] = ranks[i + 1];
    }
    --n;
    if (best > 0) ranks[best - 1] = rank_of(best - 1);
    if (best + 1 < n) ranks[best] = rank_of(best);
  }
  for (int32_t i = 0; i < n; ++i) {
    auto& s = symbols[pos[i]];
    s.id = ids[i];
    s.next = i + 1 < n ? pos[i + 1] : n0;
  }
}

// Heap-driven merge (ordered by rank, then position) for long words: O(n log n).
void BpeModel::MergeLong(BpeScratch* scratch) const {
  auto& symbols = scratch->symbols;
  auto& heap = scratch->heap;
  const auto n = static_cast<int32_t>(symbols.size());
  heap.clear();
  auto push = [&](int32_t i) {
    const int32_t j = symbols[i].next;
    if (j >= n) return;
    const Merge* m = FindMerge(symbols[i].id, symbols[j].id);
    if (m == nullptr) return;
    heap.push_back((static_cast<uint64_t>(m->rank) << 32) | static_cast<uint32_t>(i));
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const uint64_t top = heap.back();
    heap.pop_back();
    const auto rank = static_cast<int32_t>(top >> 32);
    const auto i = static_cast<int32_t>(top & 0xFFFFFFFFu);
    auto& left = symbols[i];
    if (left.size == 0 || left.next >= n) continue;
    auto& right = symbols[left.next];
    const Merge* m = FindMerge(left.id, right.id);
    if (m == nullptr || m->rank != rank) continue;  // stale entry
    left.id = m->id;
    left.size += right.size;
    right.size = 0;
    left.next = right.next;
    if (left.next < n) symbols[left.next].prev = i;
    if (left.prev >= 0) push(left.prev);
    push(i);
  }
}

}  // namespace moeserve::engine::tokenizer_internal
