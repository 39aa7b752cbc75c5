#include "engine/chat/js_text.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"

namespace moeserve::engine::chat {

uint32_t DecodeUtf8(absl::string_view s, size_t* pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const size_t i = *pos;
  const uint8_t b0 = byte(i);
  int extra = 0;
  uint32_t cp = b0;
  if (b0 >= 0xF0 && b0 < 0xF8) {
    extra = 3;
    cp = b0 & 0x07;
  } else if (b0 >= 0xE0 && b0 < 0xF0) {
    extra = 2;
    cp = b0 & 0x0F;
  } else if (b0 >= 0xC0 && b0 < 0xE0) {
    extra = 1;
    cp = b0 & 0x1F;
  }
  if (extra > 0) {
    bool ok = true;
    for (int k = 1; k <= extra; ++k) {
      if (i + k >= s.size() || (byte(i + k) & 0xC0) != 0x80) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (byte(i + k) & 0x3F);
    }
    if (ok) {
      *pos = i + 1 + extra;
      return cp;
    }
  }
  *pos = i + 1;
  return b0;
}

void AppendUtf8(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string JsNumberToString(double v) {
  if (std::isnan(v)) return "NaN";
  if (v == 0) return "0";
  if (std::isinf(v)) return v < 0 ? "-Infinity" : "Infinity";
  std::string sign = v < 0 ? "-" : "";
  v = std::fabs(v);
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  const size_t e = sci.find('e');
  std::string digits;
  for (size_t i = 0; i < e; ++i) {
    if (sci[i] != '.') digits.push_back(sci[i]);
  }
  const int exp10 = std::atoi(sci.c_str() + e + 1);
  const int k = static_cast<int>(digits.size());
  const int n = exp10 + 1;  // value = 0.digits * 10^n
  std::string out;
  if (k <= n && n <= 21) {
    out = digits + std::string(n - k, '0');
  } else if (0 < n && n <= 21) {
    out = absl::StrCat(digits.substr(0, n), ".", digits.substr(n));
  } else if (-6 < n && n <= 0) {
    out = absl::StrCat("0.", std::string(-n, '0'), digits);
  } else {
    out = digits.substr(0, 1);
    if (k > 1) absl::StrAppend(&out, ".", digits.substr(1));
    absl::StrAppend(&out, "e", n - 1 >= 0 ? "+" : "-", std::abs(n - 1));
  }
  return sign + out;
}

std::string JsFloatToString(double v) {
  if (std::isfinite(v) && std::fmod(v, 1.0) == 0) {
    if (std::fabs(v) >= 1e21) return JsNumberToString(v);
    char buf[400];
    std::snprintf(buf, sizeof(buf), "%.1f", v == 0 ? 0.0 : v);
    return buf;
  }
  return JsNumberToString(v);
}

bool IsJsWhitespace(uint32_t cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0xA0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000: case 0xFEFF:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool EndsWithJsWhitespace(absl::string_view s, size_t* len) {
  if (s.empty()) return false;
  // Step back to the start of the last code point (at most 4 bytes).
  size_t start = s.size() - 1;
  while (start > 0 && s.size() - start < 4 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) {
    --start;
  }
  size_t pos = start;
  const uint32_t cp = DecodeUtf8(s, &pos);
  if (pos != s.size()) {  // Not a well-formed final code point: judge the last byte alone.
    start = s.size() - 1;
    pos = start;
    if (!IsJsWhitespace(DecodeUtf8(s, &pos))) return false;
    *len = 1;
    return true;
  }
  if (!IsJsWhitespace(cp)) return false;
  *len = s.size() - start;
  return true;
}

std::string JsTrim(absl::string_view s, bool left, bool right) {
  if (left) {
    size_t pos = 0;
    while (pos < s.size()) {
      size_t next = pos;
      if (!IsJsWhitespace(DecodeUtf8(s, &next))) break;
      pos = next;
    }
    s.remove_prefix(pos);
  }
  if (right) {
    size_t len = 0;
    while (EndsWithJsWhitespace(s, &len)) s.remove_suffix(len);
  }
  return std::string(s);
}

size_t Utf16Length(absl::string_view s) {
  size_t n = 0;
  for (size_t pos = 0; pos < s.size();) n += DecodeUtf8(s, &pos) >= 0x10000 ? 2 : 1;
  return n;
}

std::vector<std::string> CodePoints(absl::string_view s) {
  std::vector<std::string> out;
  for (size_t pos = 0; pos < s.size();) {
    const size_t start = pos;
    DecodeUtf8(s, &pos);
    out.emplace_back(s.substr(start, pos - start));
  }
  return out;
}

std::optional<std::string> Utf16At(absl::string_view s, int64_t index) {
  const int64_t len = static_cast<int64_t>(Utf16Length(s));
  if (index < 0) index += len;
  if (index < 0 || index >= len) return std::nullopt;
  int64_t unit = 0;
  for (size_t pos = 0; pos < s.size();) {
    const size_t start = pos;
    const uint32_t cp = DecodeUtf8(s, &pos);
    const int64_t width = cp >= 0x10000 ? 2 : 1;
    if (index < unit + width) {
      if (width == 2) return std::string("\xEF\xBF\xBD");
      return std::string(s.substr(start, pos - start));
    }
    unit += width;
  }
  return std::nullopt;
}

namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Length of the longest prefix of `s` that is a StrDecimalLiteral (sign, digits, fraction,
// exponent), or of "Infinity". Zero when none.
size_t DecimalPrefix(absl::string_view s, bool allow_fraction) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  if (allow_fraction && s.substr(i, 8) == "Infinity") return i + 8;
  size_t digits = 0;
  while (i < s.size() && IsDigit(s[i])) ++i, ++digits;
  if (!allow_fraction) return digits > 0 ? i : 0;
  if (i < s.size() && s[i] == '.') {
    size_t j = i + 1, frac = 0;
    while (j < s.size() && IsDigit(s[j])) ++j, ++frac;
    if (digits + frac > 0) {
      i = j;
      digits += frac;
    }
  }
  if (digits == 0) return 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    size_t j = i + 1;
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
    size_t exp_digits = 0;
    while (j < s.size() && IsDigit(s[j])) ++j, ++exp_digits;
    if (exp_digits > 0) i = j;
  }
  return i;
}

double ParseDecimal(absl::string_view s) {
  std::string text(s);
  if (text.find("Infinity") != std::string::npos) {
    return text[0] == '-' ? -INFINITY : INFINITY;
  }
  return std::strtod(text.c_str(), nullptr);
}

}  // namespace

std::optional<double> JsParseInt(absl::string_view s) {
  const std::string trimmed = JsTrim(s, true, false);
  const size_t n = DecimalPrefix(trimmed, false);
  if (n == 0) return std::nullopt;
  return ParseDecimal(absl::string_view(trimmed).substr(0, n));
}

std::optional<double> JsParseFloat(absl::string_view s) {
  const std::string trimmed = JsTrim(s, true, false);
  const size_t n = DecimalPrefix(trimmed, true);
  if (n == 0) return std::nullopt;
  return ParseDecimal(absl::string_view(trimmed).substr(0, n));
}

double JsToNumber(absl::string_view s) {
  const std::string t = JsTrim(s, true, true);
  if (t.empty()) return 0;
  if (t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
    double v = 0;
    for (size_t i = 2; i < t.size(); ++i) {
      const char c = t[i];
      int d;
      if (IsDigit(c)) d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else return NAN;
      v = v * 16 + d;
    }
    return v;
  }
  if (DecimalPrefix(t, true) != t.size()) return NAN;
  return ParseDecimal(t);
}

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<uint8_t>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (u < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", u);
          out += buf;
        } else {
          out.push_back(c);
        }
    }
  }
  out += "\"";
  return out;
}

// utils.ts replace(): Python's str.replace(old, new, count).
std::string JsReplace(const std::string& s, const std::string& old_value, const std::string& new_value,
                      double count) {
  if (count == 0) return s;
  double remaining = count < 0 ? std::numeric_limits<double>::infinity() : count;
  std::string out;
  if (old_value.empty()) {
    for (const std::string& ch : CodePoints(s)) {
      if (remaining > 0) {
        out += new_value;
        --remaining;
      }
      out += ch;
    }
    if (remaining > 0) out += new_value;
    return out;
  }
  size_t start = 0;
  while (remaining > 0) {
    const size_t at = s.find(old_value, start);
    if (at == std::string::npos) break;
    out.append(s, start, at - start);
    out += new_value;
    start = at + old_value.size();
    --remaining;
  }
  out.append(s, start, std::string::npos);
  return out;
}

}  // namespace moeserve::engine::chat
