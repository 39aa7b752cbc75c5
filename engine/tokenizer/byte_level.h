#ifndef MOESERVE_ENGINE_TOKENIZER_BYTE_LEVEL_H_
#define MOESERVE_ENGINE_TOKENIZER_BYTE_LEVEL_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace moeserve::engine::tokenizer_internal {

// The GPT-2 byte-level alphabet: every byte maps to one printable code point, so that BPE
// vocabularies can be written as text. Printable Latin-1 bytes map to themselves; the rest
// (controls, space, 0x7F-0xA0, 0xAD) map to U+0100 onwards in byte order.
// Returns the code point for each byte.
const std::array<uint32_t, 256>& ByteToCodePoint();

// UTF-8 of ByteToCodePoint()[b].
std::string ByteToUnicodeString(uint8_t b);

// Maps a byte-level string (as in tokenizer.json) back to raw bytes. Returns false, leaving
// `out` unspecified, when some character is not in the alphabet (or the input is not UTF-8).
bool UnicodeToBytes(absl::string_view text, std::string* out);

}  // namespace moeserve::engine::tokenizer_internal

#endif  // MOESERVE_ENGINE_TOKENIZER_BYTE_LEVEL_H_
