#ifndef MOESERVE_ENGINE_TOKENIZER_UTF8_H_
#define MOESERVE_ENGINE_TOKENIZER_UTF8_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace moeserve::engine::tokenizer_internal {

// Offset of the first byte that does not start a well-formed UTF-8 sequence (overlongs,
// surrogates and code points above U+10FFFF are ill-formed), or npos when `text` is valid.
size_t FindInvalidUtf8(absl::string_view text);

// Appends `bytes` to `out` as valid UTF-8, replacing each maximal ill-formed subsequence with
// U+FFFD (the WHATWG / Rust `from_utf8_lossy` rule, which Hugging Face decoding uses).
// When `final` is false, an incomplete but so-far valid sequence at the end is left
// unconsumed so that the next call can complete it. Returns the number of bytes consumed.
size_t AppendUtf8Lossy(absl::string_view bytes, bool final, std::string* out);

// Number of bytes of the UTF-8 sequence led by `lead` (1 for ASCII and for invalid leads).
inline int Utf8SequenceLength(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

}  // namespace moeserve::engine::tokenizer_internal

#endif  // MOESERVE_ENGINE_TOKENIZER_UTF8_H_
