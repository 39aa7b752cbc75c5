#ifndef MOESERVE_ENGINE_GRAMMAR_TOKEN_CONSTRAINT_H_
#define MOESERVE_ENGINE_GRAMMAR_TOKEN_CONSTRAINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/grammar/json_matcher.h"
#include "engine/grammar/json_schema.h"
#include "engine/tokenizer.h"

namespace moeserve::engine::grammar {

// The byte strings of a model's tokens, in a trie, so that the tokens a matcher allows are found
// by walking shared prefixes once. Immutable after construction; share one per model.
class Vocabulary {
 public:
  // token_bytes[id] is what token id stands for; an empty entry is never allowed under a
  // constraint (special tokens). `end_id` is the token that ends generation (EOS).
  Vocabulary(const std::vector<std::string>& token_bytes, int32_t end_id);

  int32_t size() const { return size_; }
  int32_t end_id() const { return end_id_; }
  const std::string& bytes(int32_t id) const { return bytes_[static_cast<size_t>(id)]; }
  // The tokens made only of JSON whitespace (space, tab, CR, LF), ascending.
  const std::vector<int32_t>& whitespace() const { return whitespace_; }

 private:
  friend class TokenConstraint;
  struct Node {
    int32_t first_child = -1;
    int32_t next_sibling = -1;
    int32_t first_token = -1;  // into tokens_ of this node: [first_token, first_token + count)
    int32_t token_count = 0;
    uint8_t byte = 0;
  };
  std::vector<Node> nodes_;     // nodes_[0] is the root (the empty prefix)
  std::vector<int32_t> tokens_;  // token ids grouped by the node that spells them
  std::vector<std::string> bytes_;
  std::vector<int32_t> whitespace_;
  int32_t size_ = 0;
  int32_t end_id_ = -1;
  int32_t max_length_ = 0;  // longest token, in bytes
};

// The vocabulary of a byte-level BPE tokenizer for constrained output: every token but the special
// ones and `excluded` (a model's added tokens: chat markers, <think>, tool-call markers, which
// must never appear inside an answer's JSON); `end_id` (the model's EOS) ends the output.
std::shared_ptr<const Vocabulary> VocabularyFromTokenizer(const Tokenizer& tokenizer, int32_t end_id,
                                                          const std::vector<int32_t>& excluded);

// What a request's output must be, one token at a time. MaskLogits sets every token that cannot
// come next to -inf; Accept moves past the chosen token (FailedPrecondition, state unchanged,
// for a token that was not allowed). Not thread-safe; one per generation.
class OutputConstraint {
 public:
  virtual ~OutputConstraint() = default;
  // `logits` covers ids [0, logits.size()); ids past the vocabulary are masked too.
  virtual void MaskLogits(absl::Span<float> logits) = 0;
  virtual absl::Status Accept(int32_t token) = 0;
  virtual bool IsComplete() const = 0;
};

// One request's output constraint: the JSON its answer must be. MaskLogits sets every token that
// cannot come next to -inf (the end token only once the value is complete); Accept moves past the
// chosen token. Masks are cached by matcher state, so repeated states (inside a long string, say)
// cost one lookup. Not thread-safe.
class TokenConstraint : public OutputConstraint {
 public:
  TokenConstraint(std::shared_ptr<const Vocabulary> vocab, std::shared_ptr<const SchemaGraph> schema);

  void MaskLogits(absl::Span<float> logits) override;
  // Whether `token` may come next.
  bool Allows(int32_t token) const;
  absl::Status Accept(int32_t token) override;
  bool IsComplete() const override { return matcher_.IsComplete(); }
  const Vocabulary& vocabulary() const { return *vocab_; }

 private:
  using Mask = std::vector<uint64_t>;
  const Mask& CurrentMask();
  void Collect(int32_t node, int depth, Mask* mask);

  std::shared_ptr<const Vocabulary> vocab_;
  std::shared_ptr<const SchemaGraph> schema_;
  JsonMatcher matcher_;
  std::vector<JsonMatcher> levels_;  // scratch for the trie walk, one matcher per depth
  absl::flat_hash_map<std::string, std::unique_ptr<Mask>> cache_;
  std::string key_;
};

}  // namespace moeserve::engine::grammar

#endif  // MOESERVE_ENGINE_GRAMMAR_TOKEN_CONSTRAINT_H_
