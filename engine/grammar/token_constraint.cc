#include "engine/grammar/token_constraint.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moeserve::engine::grammar {
namespace {

// Masks kept per request; a long generation visits few distinct states, but bound the memory.
constexpr size_t kMaxCachedMasks = 64;

bool Test(const std::vector<uint64_t>& mask, int32_t id) {
  return (mask[static_cast<size_t>(id) >> 6] >> (id & 63)) & 1u;
}

}  // namespace

Vocabulary::Vocabulary(const std::vector<std::string>& token_bytes, int32_t end_id)
    : bytes_(token_bytes), size_(static_cast<int32_t>(token_bytes.size())), end_id_(end_id) {
  // Insert in byte order so that every node's tokens and children are contiguous in creation.
  std::vector<int32_t> order(token_bytes.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return token_bytes[a] < token_bytes[b]; });
  nodes_.emplace_back();
  std::vector<int32_t> last_child(1, -1);
  std::vector<int32_t> path;  // node per depth of the previous insertion
  std::string previous;
  for (int32_t id = 0; id < size_; ++id) {
    const std::string& s = token_bytes[static_cast<size_t>(id)];
    if (!s.empty() && id != end_id &&
        s.find_first_not_of(" \t\r\n") == std::string::npos) {
      whitespace_.push_back(id);
    }
  }
  for (int32_t id : order) {
    const std::string& s = token_bytes[static_cast<size_t>(id)];
    if (s.empty() || id == end_id) continue;
    // Shared prefix with the previous token (sorted, so its path is reusable).
    size_t common = 0;
    while (common < s.size() && common < previous.size() && s[common] == previous[common]) ++common;
    path.resize(common);
    int32_t node = common == 0 ? 0 : path[common - 1];
    for (size_t d = common; d < s.size(); ++d) {
      Node child;
      child.byte = static_cast<uint8_t>(s[d]);
      const int32_t index = static_cast<int32_t>(nodes_.size());
      nodes_.push_back(child);
      last_child.push_back(-1);
      if (last_child[static_cast<size_t>(node)] < 0) {
        nodes_[static_cast<size_t>(node)].first_child = index;
      } else {
        nodes_[static_cast<size_t>(last_child[static_cast<size_t>(node)])].next_sibling = index;
      }
      last_child[static_cast<size_t>(node)] = index;
      node = index;
      path.push_back(node);
    }
    Node& n = nodes_[static_cast<size_t>(node)];
    if (n.token_count == 0) n.first_token = static_cast<int32_t>(tokens_.size());
    tokens_.push_back(id);
    ++n.token_count;
    previous = s;
    max_length_ = std::max(max_length_, static_cast<int32_t>(s.size()));
  }
}

std::shared_ptr<const Vocabulary> VocabularyFromTokenizer(const Tokenizer& tokenizer, int32_t end_id,
                                                          const std::vector<int32_t>& excluded) {
  std::vector<std::string> bytes(static_cast<size_t>(tokenizer.vocab_size()));
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (tokenizer.IsSpecial(id)) continue;
    if (std::optional<absl::string_view> b = tokenizer.TokenBytes(id)) bytes[id] = std::string(*b);
  }
  for (int32_t id : excluded) {
    if (id >= 0 && id < tokenizer.vocab_size()) bytes[static_cast<size_t>(id)].clear();
  }
  return std::make_shared<Vocabulary>(bytes, end_id);
}

TokenConstraint::TokenConstraint(std::shared_ptr<const Vocabulary> vocab,
                                 std::shared_ptr<const SchemaGraph> schema)
    : vocab_(std::move(vocab)), schema_(std::move(schema)), matcher_(schema_.get()) {}

void TokenConstraint::Collect(int32_t node, int depth, Mask* mask) {
  const std::vector<Vocabulary::Node>& nodes = vocab_->nodes_;
  for (int32_t child = nodes[static_cast<size_t>(node)].first_child; child >= 0;
       child = nodes[static_cast<size_t>(child)].next_sibling) {
    const Vocabulary::Node& c = nodes[static_cast<size_t>(child)];
    JsonMatcher& next = levels_[static_cast<size_t>(depth + 1)];
    next = levels_[static_cast<size_t>(depth)];
    if (!next.Advance(c.byte)) continue;
    for (int32_t i = 0; i < c.token_count; ++i) {
      const int32_t id = vocab_->tokens_[static_cast<size_t>(c.first_token + i)];
      (*mask)[static_cast<size_t>(id) >> 6] |= uint64_t{1} << (id & 63);
    }
    if (c.first_child >= 0) Collect(child, depth + 1, mask);
  }
}

const TokenConstraint::Mask& TokenConstraint::CurrentMask() {
  key_.clear();
  matcher_.AppendStateKey(&key_);
  if (auto it = cache_.find(key_); it != cache_.end()) return *it->second;
  if (cache_.size() >= kMaxCachedMasks) cache_.clear();
  auto mask = std::make_unique<Mask>((static_cast<size_t>(vocab_->size()) + 63) / 64, 0);
  levels_.assign(static_cast<size_t>(vocab_->max_length_) + 1, matcher_);
  Collect(0, 0, mask.get());
  if (matcher_.IsComplete() && vocab_->end_id() >= 0 && vocab_->end_id() < vocab_->size()) {
    const int32_t end = vocab_->end_id();
    (*mask)[static_cast<size_t>(end) >> 6] |= uint64_t{1} << (end & 63);
  }
  const Mask& ref = *mask;
  cache_.emplace(key_, std::move(mask));
  return ref;
}

void TokenConstraint::MaskLogits(absl::Span<float> logits) {
  const Mask& mask = CurrentMask();
  const int32_t n = vocab_->size();
  for (size_t i = 0; i < logits.size(); ++i) {
    const int32_t id = static_cast<int32_t>(i);
    if (id >= n || !Test(mask, id)) logits[i] = -std::numeric_limits<float>::infinity();
  }
}

bool TokenConstraint::Allows(int32_t token) const {
  if (token < 0 || token >= vocab_->size()) return false;
  if (token == vocab_->end_id()) return matcher_.IsComplete();
  const std::string& bytes = vocab_->bytes(token);
  if (bytes.empty()) return false;
  JsonMatcher copy = matcher_;
  return copy.AdvanceBytes(bytes);
}

absl::Status TokenConstraint::Accept(int32_t token) {
  if (token >= 0 && token == vocab_->end_id() && matcher_.IsComplete()) return absl::OkStatus();
  if (token < 0 || token >= vocab_->size() || vocab_->bytes(token).empty() ||
      !matcher_.AdvanceBytes(vocab_->bytes(token))) {
    return absl::FailedPreconditionError(
        absl::StrCat("token ", token, " does not continue the constrained output"));
  }
  return absl::OkStatus();
}

}  // namespace moeserve::engine::grammar
