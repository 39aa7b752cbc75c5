// Preprocessing that reproduces @huggingface/jinja's regular-expression passes (lexer.ts).
#include <cstddef>
#include <string>

#include "engine/chat/js_text.h"
#include "engine/chat/lexer.h"

namespace moeserve::engine::chat {
namespace {

using Mapped = PreprocessedSource;

bool StartsAt(const Mapped& s, size_t i, absl::string_view what) {
  return absl::string_view(s.text).substr(i, what.size()) == what;
}

void Copy(const Mapped& in, size_t i, Mapped* out) {
  out->text.push_back(in.text[i]);
  out->origin.push_back(in.origin[i]);
}

void CopyRange(const Mapped& in, size_t begin, size_t end, Mapped* out) {
  for (size_t i = begin; i < end; ++i) Copy(in, i, out);
}

// Whether `i` follows a JavaScript line terminator (where a multiline `^` matches).
bool IsLineStart(const std::string& s, size_t i) {
  if (i == 0) return true;
  if (s[i - 1] == '\n' || s[i - 1] == '\r') return true;
  // U+2028 and U+2029 are E2 80 A8 / E2 80 A9.
  return i >= 3 && s.compare(i - 3, 2, "\xE2\x80") == 0 &&
         (s[i - 1] == '\xA8' || s[i - 1] == '\xA9');
}

// /^[ \t]*({[#%-])/gm -> "$1"
Mapped LstripBlocks(const Mapped& in) {
  Mapped out;
  size_t i = 0;
  while (i < in.text.size()) {
    if (IsLineStart(in.text, i)) {
      size_t j = i;
      while (j < in.text.size() && (in.text[j] == ' ' || in.text[j] == '\t')) ++j;
      if (j + 1 < in.text.size() && in.text[j] == '{' &&
          (in.text[j + 1] == '#' || in.text[j + 1] == '%' || in.text[j + 1] == '-')) {
        CopyRange(in, j, j + 2, &out);
        i = j + 2;
        continue;
      }
    }
    Copy(in, i, &out);
    ++i;
  }
  return out;
}

// /([#%-]})\n/g -> "$1"
Mapped TrimBlocks(const Mapped& in) {
  Mapped out;
  size_t i = 0;
  while (i < in.text.size()) {
    const char c = in.text[i];
    if ((c == '#' || c == '%' || c == '-') && StartsAt(in, i + 1, "}\n")) {
      CopyRange(in, i, i + 2, &out);
      i += 3;
      continue;
    }
    Copy(in, i, &out);
    ++i;
  }
  return out;
}

// /MARKER\s*/g -> REPLACEMENT
Mapped StripAfter(const Mapped& in, absl::string_view marker, absl::string_view replacement) {
  Mapped out;
  size_t i = 0;
  while (i < in.text.size()) {
    if (StartsAt(in, i, marker)) {
      for (size_t k = 0; k < replacement.size(); ++k) {
        out.text.push_back(replacement[k]);
        out.origin.push_back(in.origin[i + 1 + k]);
      }
      i += marker.size();
      while (i < in.text.size()) {
        size_t next = i;
        if (!IsJsWhitespace(DecodeUtf8(in.text, &next))) break;
        i = next;
      }
      continue;
    }
    Copy(in, i, &out);
    ++i;
  }
  return out;
}

// /\s*MARKER/g -> REPLACEMENT
Mapped StripBefore(const Mapped& in, absl::string_view marker, absl::string_view replacement) {
  Mapped out;
  size_t i = 0;
  size_t protect = 0;  // output before this index belongs to an earlier match
  while (i < in.text.size()) {
    if (StartsAt(in, i, marker)) {
      size_t len = 0;
      while (out.text.size() > protect &&
             EndsWithJsWhitespace(absl::string_view(out.text).substr(protect), &len)) {
        out.text.resize(out.text.size() - len);
        out.origin.resize(out.origin.size() - len);
      }
      for (size_t k = 0; k < replacement.size(); ++k) {
        out.text.push_back(replacement[k]);
        out.origin.push_back(in.origin[i + k]);
      }
      i += marker.size();
      protect = out.text.size();
      continue;
    }
    Copy(in, i, &out);
    ++i;
  }
  return out;
}

size_t SkipWhitespace(const std::string& s, size_t i) {
  while (i < s.size()) {
    size_t next = i;
    if (!IsJsWhitespace(DecodeUtf8(s, &next))) break;
    i = next;
  }
  return i;
}

// /{%\s*(end)?generation\s*%}/gs -> ""
Mapped DropGenerationTags(const Mapped& in) {
  Mapped out;
  size_t i = 0;
  while (i < in.text.size()) {
    if (StartsAt(in, i, "{%")) {
      size_t j = SkipWhitespace(in.text, i + 2);
      if (StartsAt(in, j, "end")) j += 3;
      if (StartsAt(in, j, "generation")) {
        j = SkipWhitespace(in.text, j + 10);
        if (StartsAt(in, j, "%}")) {
          i = j + 2;
          continue;
        }
      }
    }
    Copy(in, i, &out);
    ++i;
  }
  return out;
}

}  // namespace

PreprocessedSource Preprocess(absl::string_view source) {
  if (!source.empty() && source.back() == '\n') source.remove_suffix(1);
  Mapped s;
  s.text = std::string(source);
  s.origin.resize(source.size());
  for (size_t i = 0; i < source.size(); ++i) s.origin[i] = i;
  s = LstripBlocks(s);
  s = TrimBlocks(s);
  s = StripAfter(s, "-%}", "%}");
  s = StripBefore(s, "{%-", "{%");
  s = StripAfter(s, "-}}", "}}");
  s = StripBefore(s, "{{-", "{{");
  s = StripAfter(s, "-#}", "#}");
  s = StripBefore(s, "{#-", "{#");
  return DropGenerationTags(s);
}

}  // namespace moeserve::engine::chat
