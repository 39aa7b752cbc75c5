#ifndef MOESERVE_ENGINE_TOKENIZER_ADDED_TOKENS_H_
#define MOESERVE_ENGINE_TOKENIZER_ADDED_TOKENS_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace moeserve::engine::tokenizer_internal {

// One entry of tokenizer.json "added_tokens".
struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;       // swallow whitespace to the left of the token
  bool rstrip = false;       // swallow whitespace to the right of the token
  bool single_word = false;  // only match when not inside a word
  bool normalized = false;   // matched on normalized text (same as raw: no normalizer is used)
};

// A segment of the input: either text to pre-tokenize, or an added token.
struct Segment {
  uint32_t begin;
  uint32_t size;
  int32_t token_id;  // -1 for text
};

// Finds added tokens in raw text, leftmost-longest (as Hugging Face's aho-corasick and
// transformers.js's trie both do), before any pre-tokenization. Immutable; thread-safe.
class AddedTokenMatcher {
 public:
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);

  // Splits `text` into segments appended to `out`. Special tokens are only recognised when
  // `match_special` is true; the others always are.
  void Split(absl::string_view text, bool match_special, std::vector<Segment>* out) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // Index into tokens_ of the longest token matching at `text[at]`, or -1.
  int32_t LongestMatch(absl::string_view text, size_t at, bool match_special) const;
  bool Acceptable(const AddedToken& token, absl::string_view text, size_t begin, size_t end) const;

  std::vector<AddedToken> tokens_;
  // Byte trie: key (node << 8 | byte) -> child node; terminal[node] = token index or -1.
  absl::flat_hash_map<uint64_t, int32_t> children_;
  std::vector<int32_t> terminal_;
  std::array<bool, 256> first_byte_{};
};

}  // namespace moeserve::engine::tokenizer_internal

#endif  // MOESERVE_ENGINE_TOKENIZER_ADDED_TOKENS_H_
