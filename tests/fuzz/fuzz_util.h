#ifndef MOESERVE_TESTS_FUZZ_FUZZ_UTIL_H_
#define MOESERVE_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"

namespace moeserve::fuzz {

// A property that must hold for every input; a violation aborts, which libFuzzer reports as a
// crash and saves the input.
#define MOESERVE_FUZZ_ASSERT(cond, what)                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "fuzz property violated at %s:%d: %s: %s\n", __FILE__, __LINE__, \
                   #cond, std::string(what).c_str());                                      \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

inline absl::string_view AsText(const uint8_t* data, size_t size) {
  return absl::string_view(reinterpret_cast<const char*>(data), size);
}

// Splits off the first byte as a selector (which entry point, which mode); false when empty.
inline bool TakeSelector(const uint8_t** data, size_t* size, uint8_t* selector) {
  if (*size == 0) return false;
  *selector = **data;
  ++*data;
  --*size;
  return true;
}

// Strict UTF-8 check (no overlongs, surrogates or code points past U+10FFFF), written here
// independently of the tokenizer's and the gateway's so properties compare two implementations.
inline bool IsUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    uint32_t min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

}  // namespace moeserve::fuzz

#endif  // MOESERVE_TESTS_FUZZ_FUZZ_UTIL_H_
