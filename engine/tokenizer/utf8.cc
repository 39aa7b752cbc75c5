#include "engine/tokenizer/utf8.h"

#include <cstdint>
#include <cstring>

namespace moeserve::engine::tokenizer_internal {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// Length of the well-formed sequence starting at `p` (at most `n` bytes available).
// Returns >0: a complete valid sequence of that length; 0: a valid but incomplete prefix
// running to the end of the input; <0: ill-formed, and -k means the maximal ill-formed
// subsequence has k bytes.
int ScanSequence(const unsigned char* p, size_t n) {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) return 1;
  int len;
  unsigned char lo = 0x80, hi = 0xBF;  // range allowed for the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return -1;
  }
  for (int i = 1; i < len; ++i) {
    if (static_cast<size_t>(i) >= n) return 0;
    const unsigned char b = p[i];
    const bool ok = i == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return -i;
  }
  return len;
}

}  // namespace

size_t FindInvalidUtf8(absl::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // Fast path over ASCII, eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, p + i, 8);
      if (word & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const int len = ScanSequence(p + i, n - i);
    if (len <= 0) return i;
    i += static_cast<size_t>(len);
  }
  return absl::string_view::npos;
}

size_t AppendUtf8Lossy(absl::string_view bytes, bool final, std::string* out) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  size_t run_start = 0;  // start of the pending run of valid bytes, copied in bulk
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const int len = ScanSequence(p + i, n - i);
    if (len > 0) {
      i += static_cast<size_t>(len);
      continue;
    }
    out->append(bytes.data() + run_start, i - run_start);
    if (len == 0) {  // incomplete at the end of the input
      if (!final) return i;
      out->append(kReplacement);
      return n;
    }
    out->append(kReplacement);
    i += static_cast<size_t>(-len);
    run_start = i;
  }
  out->append(bytes.data() + run_start, n - run_start);
  return n;
}

}  // namespace moeserve::engine::tokenizer_internal
