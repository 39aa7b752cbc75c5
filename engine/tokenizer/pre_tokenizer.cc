#include "engine/tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/utf8.h"

namespace moeserve::engine::tokenizer_internal {

class CompiledRegex {
 public:
  CompiledRegex(pcre2_code* code, bool jit) : code_(code), jit_(jit) {}
  ~CompiledRegex() { pcre2_code_free(code_); }
  CompiledRegex(const CompiledRegex&) = delete;
  CompiledRegex& operator=(const CompiledRegex&) = delete;

  // Returns >= 0 on a match (ovector of `md` holds it), PCRE2_ERROR_NOMATCH, or another
  // negative PCRE2 error.
  int Match(const char* subject, size_t size, size_t start, pcre2_match_data* md,
            pcre2_match_context* ctx) const {
    const auto* s = reinterpret_cast<PCRE2_SPTR>(subject);
    if (jit_) return pcre2_jit_match(code_, s, size, start, 0, md, ctx);
    return pcre2_match(code_, s, size, start, PCRE2_NO_UTF_CHECK, md, ctx);
  }

 private:
  pcre2_code* code_;
  bool jit_;
};

namespace {

// Unicode White_Space, which is what Oniguruma (used by Hugging Face tokenizers) means by \s.
constexpr absl::string_view kWhiteSpace =
    "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}"
    "\\x{202f}\\x{205f}\\x{3000}";

absl::StatusOr<std::shared_ptr<const CompiledRegex>> Compile(absl::string_view pattern) {
  const std::string translated = TranslateRegex(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("regex '", pattern, "' does not compile at ",
                                                   offset, ": ",
                                                   reinterpret_cast<const char*>(message)));
  }
  const bool jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return std::make_shared<const CompiledRegex>(code, jit);
}

absl::StatusOr<SplitBehavior> ParseBehavior(const std::string& name) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return absl::UnimplementedError(absl::StrCat("unknown Split behavior '", name, "'"));
}

absl::Status AddStep(const nlohmann::json& node, std::vector<SplitStep>* steps) {
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) {
    return absl::InvalidArgumentError("pre_tokenizer entry without a type");
  }
  const std::string type = node["type"].get<std::string>();
  if (type == "Sequence") {
    const auto it = node.find("pretokenizers");
    if (it == node.end() || !it->is_array()) {
      return absl::InvalidArgumentError("Sequence pre_tokenizer without 'pretokenizers'");
    }
    for (const auto& child : *it) {
      absl::Status status = AddStep(child, steps);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    // The byte mapping is folded into the BPE model; only the plain form is supported.
    if (node.value("add_prefix_space", false) || node.value("use_regex", true)) {
      return absl::UnimplementedError(
          "ByteLevel pre_tokenizer with add_prefix_space or use_regex is not supported");
    }
    return absl::OkStatus();
  }
  if (type != "Split") {
    return absl::UnimplementedError(absl::StrCat("pre_tokenizer type '", type, "'"));
  }
  const auto pattern = node.find("pattern");
  if (pattern == node.end() || !pattern->is_object()) {
    return absl::InvalidArgumentError("Split pre_tokenizer without a pattern");
  }
  std::string regex;
  if (pattern->contains("Regex") && (*pattern)["Regex"].is_string()) {
    regex = (*pattern)["Regex"].get<std::string>();
  } else if (pattern->contains("String") && (*pattern)["String"].is_string()) {
    regex = absl::StrCat("\\Q", (*pattern)["String"].get<std::string>(), "\\E");
  } else {
    return absl::InvalidArgumentError("Split pattern is neither Regex nor String");
  }
  SplitStep step;
  auto compiled = Compile(regex);
  if (!compiled.ok()) return compiled.status();
  step.regex = *std::move(compiled);
  auto behavior = ParseBehavior(node.value("behavior", std::string("Isolated")));
  if (!behavior.ok()) return behavior.status();
  step.behavior = *behavior;
  step.invert = node.value("invert", false);
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

}  // namespace

std::string TranslateRegex(absl::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's') {
        absl::StrAppend(&out, in_class ? "" : "[", kWhiteSpace, in_class ? "" : "]");
      } else if (e == 'S' && !in_class) {
        absl::StrAppend(&out, "[^", kWhiteSpace, "]");
      } else {
        out.push_back('\\');
        out.push_back(e);
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out.push_back(pattern[++i]);
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

PreTokenizerScratch::PreTokenizerScratch() : match_data_(pcre2_match_data_create(16, nullptr)) {}

PreTokenizerScratch::~PreTokenizerScratch() {
  pcre2_match_data_free(static_cast<pcre2_match_data*>(match_data_));
}

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const nlohmann::json& node) {
  PreTokenizer pre;
  if (node.is_null()) return pre;
  absl::Status status = AddStep(node, &pre.steps_);
  if (!status.ok()) return status;
  return pre;
}

absl::Status PreTokenizer::Split(absl::string_view text, PreTokenizerScratch* scratch,
                                 std::vector<Span>* out) const {
  if (text.empty()) return absl::OkStatus();
  if (steps_.empty()) {
    out->push_back(Span{0, static_cast<uint32_t>(text.size())});
    return absl::OkStatus();
  }
  std::vector<Span>& current = scratch->a_;
  std::vector<Span>& next = scratch->b_;
  current.clear();
  current.push_back(Span{0, static_cast<uint32_t>(text.size())});
  for (size_t s = 0; s < steps_.size(); ++s) {
    const bool last = s + 1 == steps_.size();
    std::vector<Span>* target = last ? out : &next;
    if (!last) next.clear();
    for (const Span piece : current) {
      absl::Status status = ApplyStep(steps_[s], text, piece, scratch, target);
      if (!status.ok()) return status;
    }
    if (!last) current.swap(next);
  }
  return absl::OkStatus();
}

absl::Status PreTokenizer::ApplyStep(const SplitStep& step, absl::string_view text, Span piece,
                                     PreTokenizerScratch* scratch, std::vector<Span>* out) const {
  auto* md = static_cast<pcre2_match_data*>(scratch->match_data_);
  const char* subject = text.data() + piece.begin;
  const size_t size = piece.size;
  const bool fast = step.behavior == SplitBehavior::kIsolated && !step.invert;
  auto& matches = scratch->matches_;
  matches.clear();
  auto emit = [&](size_t b, size_t e, bool is_match) {
    if (b == e) return;
    const Span span{piece.begin + static_cast<uint32_t>(b), static_cast<uint32_t>(e - b)};
    if (fast) {
      out->push_back(span);
    } else {
      matches.emplace_back(span, is_match != step.invert);
    }
  };
  size_t prev = 0;
  size_t start = 0;
  while (start <= size) {
    const int rc = step.regex->Match(subject, size, start, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      return absl::ResourceExhaustedError(
          absl::StrCat("pre-tokenizer regex failed: ", reinterpret_cast<const char*>(message)));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    emit(prev, b, false);
    emit(b, e, true);
    prev = e;
    if (e == b) {
      if (e >= size) break;
      start = e + Utf8SequenceLength(static_cast<unsigned char>(subject[e]));
    } else {
      start = e;
    }
  }
  emit(prev, size, false);
  if (fast) return absl::OkStatus();

  // Combine per the Hugging Face SplitDelimiterBehavior rules (empty pieces are dropped).
  switch (step.behavior) {
    case SplitBehavior::kRemoved:
      for (const auto& [span, is_match] : matches) {
        if (!is_match) out->push_back(span);
      }
      break;
    case SplitBehavior::kIsolated:
      for (const auto& m : matches) out->push_back(m.first);
      break;
    case SplitBehavior::kMergedWithPrevious: {
      const size_t first = out->size();
      bool previous_match = false;
      for (const auto& [span, is_match] : matches) {
        if (is_match && !previous_match && out->size() > first) {
          out->back().size = span.begin + span.size - out->back().begin;
        } else {
          out->push_back(span);
        }
        previous_match = is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      // Walk backwards, merging each match into the piece after it.
      std::vector<Span> reversed;
      bool previous_match = false;
      for (size_t i = matches.size(); i-- > 0;) {
        const auto& [span, is_match] = matches[i];
        if (is_match && !previous_match && !reversed.empty()) {
          Span& last = reversed.back();
          last.size = last.begin + last.size - span.begin;
          last.begin = span.begin;
        } else {
          reversed.push_back(span);
        }
        previous_match = is_match;
      }
      out->insert(out->end(), reversed.rbegin(), reversed.rend());
      break;
    }
    case SplitBehavior::kContiguous: {
      const size_t first = out->size();
      bool previous_match = false;
      for (const auto& [span, is_match] : matches) {
        if (is_match == previous_match && out->size() > first) {
          out->back().size = span.begin + span.size - out->back().begin;
        } else {
          out->push_back(span);
        }
        previous_match = is_match;
      }
      break;
    }
  }
  return absl::OkStatus();
}

}  // namespace moeserve::engine::tokenizer_internal
