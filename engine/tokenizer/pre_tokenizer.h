#ifndef MOESERVE_ENGINE_TOKENIZER_PRE_TOKENIZER_H_
#define MOESERVE_ENGINE_TOKENIZER_PRE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine::tokenizer_internal {

// A piece of the text being tokenized: [begin, begin + size) in bytes.
struct Span {
  uint32_t begin;
  uint32_t size;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

class CompiledRegex;  // PCRE2 code + JIT, defined in pre_tokenizer.cc

// One `Split` pre-tokenizer of tokenizer.json.
struct SplitStep {
  std::shared_ptr<const CompiledRegex> regex;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
};

// Reusable per-call buffers, so that the hot loop does not allocate.
class PreTokenizerScratch {
 public:
  PreTokenizerScratch();
  ~PreTokenizerScratch();
  PreTokenizerScratch(const PreTokenizerScratch&) = delete;
  PreTokenizerScratch& operator=(const PreTokenizerScratch&) = delete;

 private:
  friend class PreTokenizer;
  void* match_data_ = nullptr;  // pcre2_match_data_8*
  std::vector<Span> a_, b_;
  std::vector<std::pair<Span, bool>> matches_;
};

// The `pre_tokenizer` of a byte-level BPE tokenizer.json: a Sequence of Split steps with
// PCRE2 regexes (UTF + UCP, JIT) followed by ByteLevel (add_prefix_space=false,
// use_regex=false). The ByteLevel step itself is a no-op here because the BPE model works on
// raw bytes (the byte alphabet is a bijection). Immutable after construction; thread-safe.
class PreTokenizer {
 public:
  // `node` is the "pre_tokenizer" value. Unsupported types are Unimplemented.
  static absl::StatusOr<PreTokenizer> FromJson(const nlohmann::json& node);

  // Splits `text` (valid UTF-8, < 4 GiB) into pieces, appended to `out` as spans of `text`.
  // Fails (ResourceExhausted) only when PCRE2 runs out of match resources.
  absl::Status Split(absl::string_view text, PreTokenizerScratch* scratch,
                     std::vector<Span>* out) const;

  size_t num_steps() const { return steps_.size(); }

 private:
  absl::Status ApplyStep(const SplitStep& step, absl::string_view text, Span piece,
                         PreTokenizerScratch* scratch, std::vector<Span>* out) const;
  std::vector<SplitStep> steps_;
};

// Rewrites a tokenizer.json (Oniguruma-flavoured) regex for PCRE2: `\s` and `\S` become the
// Unicode White_Space set that Oniguruma uses (PCRE2's UCP `\s` also matches U+180E).
// Exposed for tests.
std::string TranslateRegex(absl::string_view pattern);

}  // namespace moeserve::engine::tokenizer_internal

#endif  // MOESERVE_ENGINE_TOKENIZER_PRE_TOKENIZER_H_
