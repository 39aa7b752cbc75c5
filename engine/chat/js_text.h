#ifndef MOESERVE_ENGINE_CHAT_JS_TEXT_H_
#define MOESERVE_ENGINE_CHAT_JS_TEXT_H_

// Text helpers that reproduce JavaScript string and number semantics on UTF-8 strings, because the
// reference chat-template renderer (@huggingface/jinja) runs on JavaScript strings (UTF-16).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace moeserve::engine::chat {

// Decodes one code point at `*pos` and advances it. Invalid bytes decode as themselves (one byte).
uint32_t DecodeUtf8(absl::string_view s, size_t* pos);
void AppendUtf8(std::string* out, uint32_t cp);

// JavaScript's String(number) and Number.prototype.toFixed(1) for integral values.
std::string JsNumberToString(double v);
// How @huggingface/jinja prints a float value: "3.0" for integral values, else String(v).
std::string JsFloatToString(double v);

// JavaScript's `\s`: ASCII whitespace, NBSP, BOM, Unicode space separators and line terminators.
bool IsJsWhitespace(uint32_t cp);
// True when `s` ends with a JavaScript whitespace character; sets `*len` to its byte length.
bool EndsWithJsWhitespace(absl::string_view s, size_t* len);
std::string JsTrim(absl::string_view s, bool left, bool right);

size_t Utf16Length(absl::string_view s);
// The code points of `s`, each as its own UTF-8 string (Array.from(str)).
std::vector<std::string> CodePoints(absl::string_view s);
// str.at(index) over UTF-16 code units; nullopt when out of range. A lone surrogate becomes U+FFFD.
std::optional<std::string> Utf16At(absl::string_view s, int64_t index);

std::string JsToUpper(absl::string_view s);
std::string JsToLower(absl::string_view s);
// str.replace(/\b\w/g, toUpperCase): ASCII word characters after a non-word character.
std::string JsTitle(absl::string_view s);
// charAt(0).toUpperCase() + slice(1).
std::string JsCapitalize(absl::string_view s);

// parseInt(s, 10) and parseFloat(s); nullopt for NaN.
std::optional<double> JsParseInt(absl::string_view s);
std::optional<double> JsParseFloat(absl::string_view s);
// Number(s) as used by loose equality (NaN when not numeric).
double JsToNumber(absl::string_view s);

// Python's str.replace(old, new, count) as @huggingface/jinja implements it; count < 0 means all.
std::string JsReplace(const std::string& s, const std::string& old_value, const std::string& new_value,
                      double count);

// JSON.stringify(string).
std::string JsonQuote(absl::string_view s);

// An approximation of String.prototype.localeCompare (ICU root collation): punctuation before
// digits before letters, case-insensitive first, lowercase before uppercase on ties.
int JsLocaleCompare(absl::string_view a, absl::string_view b);

}  // namespace moeserve::engine::chat

#endif  // MOESERVE_ENGINE_CHAT_JS_TEXT_H_
