#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer/utf8.h"

namespace moeserve::engine {

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, const DecodeOptions& options)
    : tokenizer_(tokenizer), options_(options) {}

absl::StatusOr<std::string> StreamDecoder::Add(int32_t id) {
  const std::optional<absl::string_view> bytes =
      tokenizer_.TokenBytes(id, options_.skip_special_tokens);
  if (!bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token id ", id, " is outside the vocabulary (size ", tokenizer_.vocab_size(), ")"));
  }
  std::string delta;
  if (pending_.empty()) {
    // Common case: nothing held back, decode straight from the token's bytes.
    const size_t used = tokenizer_internal::AppendUtf8Lossy(*bytes, /*final=*/false, &delta);
    const absl::string_view rest = bytes->substr(used);
    pending_.assign(rest.data(), rest.size());
    return delta;
  }
  pending_.append(bytes->data(), bytes->size());
  const size_t used = tokenizer_internal::AppendUtf8Lossy(pending_, /*final=*/false, &delta);
  pending_.erase(0, used);
  return delta;
}

std::string StreamDecoder::Flush() {
  std::string delta;
  tokenizer_internal::AppendUtf8Lossy(pending_, /*final=*/true, &delta);
  pending_.clear();
  return delta;
}

}  // namespace moeserve::engine
