#ifndef MOESERVE_ENGINE_TOKENIZER_H_
#define MOESERVE_ENGINE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace moeserve::engine {

namespace tokenizer_internal {
class AddedTokenMatcher;
class BpeModel;
class PreTokenizer;
}  // namespace tokenizer_internal

struct EncodeOptions {
  // Adds BOS (and EOS) around the ids as tokenizer_config.json asks (add_bos_token,
  // add_eos_token), like Hugging Face's LlamaTokenizerFast.
  bool add_special_tokens = true;
  // Recognise special added tokens (e.g. "<｜User｜>") written in the text. Set false for
  // untrusted user text so it cannot forge control tokens; non-special added tokens (R1's
  // "<think>") are still recognised.
  bool parse_special_tokens = true;
};

struct DecodeOptions {
  // Drop ids of added tokens marked special (BOS, EOS, the chat markers). Non-special added
  // tokens such as R1's <think> are kept.
  bool skip_special_tokens = false;
};

// The DeepSeek-V3 / R1 tokenizer: a Hugging Face tokenizer.json byte-level BPE (Split
// pre-tokenizers with PCRE2 regexes, ByteLevel, BPE merges) plus added tokens, which are matched
// in the raw text first, leftmost-longest.
//
// Encode and Decode are const and thread-safe; the BPE word cache inside is internally locked.
// Unicode note: regex classes follow PCRE2's Unicode 15 tables and \s is Unicode White_Space
// (as in Hugging Face tokenizers' Oniguruma), so U+0085 is whitespace and U+FEFF is not; the
// transformers.js port differs on exactly those two characters.
class Tokenizer {
 public:
  // Reads DIR/tokenizer.json and DIR/tokenizer_config.json (the latter is optional: without it
  // no BOS is added). Errors name the file: NotFound when unreadable, InvalidArgument when
  // malformed, Unimplemented for tokenizer.json features outside byte-level BPE.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& model_dir);
  // The same from file contents; `config_json` may be empty.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view tokenizer_json,
                                                             absl::string_view config_json);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // InvalidArgument (with the byte offset) when `text` is not valid UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text,
                                              const EncodeOptions& options = {}) const;
  // Appends to `ids` instead of returning a new vector (for callers that reuse buffers).
  absl::Status EncodeTo(absl::string_view text, const EncodeOptions& options,
                        std::vector<int32_t>* ids) const;

  // Text of `ids`. Byte sequences that are not UTF-8 become U+FFFD, as in Hugging Face.
  // InvalidArgument when an id is outside the vocabulary.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     const DecodeOptions& options = {}) const;

  // Raw bytes that `id` decodes to (possibly a partial UTF-8 sequence), or nullopt when out of
  // range; empty when `skip_special` and `id` is a special token.
  std::optional<absl::string_view> TokenBytes(int32_t id, bool skip_special = false) const;
  // The token string as written in tokenizer.json ("Ġthe", "<｜User｜>"), or nullopt.
  std::optional<std::string> IdToToken(int32_t id) const;
  // Id of an added token's content or of a vocab entry written in tokenizer.json form.
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  bool IsSpecial(int32_t id) const;

  // One past the largest id (128815 for DeepSeek-V3).
  int32_t vocab_size() const { return static_cast<int32_t>(token_bytes_.size()); }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  bool add_bos_token() const { return add_bos_; }

 private:
  Tokenizer();
  absl::Status EncodeText(absl::string_view text, std::vector<int32_t>* ids) const;

  std::unique_ptr<tokenizer_internal::BpeModel> bpe_;
  std::unique_ptr<tokenizer_internal::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<tokenizer_internal::AddedTokenMatcher> added_;
  std::vector<std::string> token_bytes_;  // decoded bytes per id
  std::vector<uint8_t> kind_;             // 0 = absent, 1 = vocab, 2 = added, 3 = special added
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
  bool add_bos_ = false;
  bool add_eos_ = false;
};

// Incremental detokenizer for streaming. Feed ids one at a time; each call returns the text
// that became complete. Deltas are always valid UTF-8: bytes of a character split across
// tokens are held back until it completes, and bytes that can never form a character become
// U+FFFD exactly as Decode would, so the concatenation of all deltas plus Flush() equals
// Decode(all ids). Holds a reference to the tokenizer, which must outlive it. Not thread-safe.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, const DecodeOptions& options = {});

  // InvalidArgument for an out-of-range id (the decoder state is unchanged).
  absl::StatusOr<std::string> Add(int32_t id);
  // Emits whatever is held back (an incomplete sequence becomes U+FFFD) and resets.
  std::string Flush();
  // Bytes held back waiting for the rest of a character.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  DecodeOptions options_;
  std::string pending_;
};

// Rewrites a DeepSeek-V3 tokenizer.json into the DeepSeek-R1 flavour: added tokens 128798 and
// 128799 become "<think>" and "</think>" with special=false. Everything else is kept byte for
// byte. InvalidArgument when the input is not JSON or lacks those added tokens.
absl::StatusOr<std::string> MakeR1TokenizerJson(const std::string& v3_tokenizer_json);

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_TOKENIZER_H_
