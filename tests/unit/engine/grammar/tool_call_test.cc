// ToolCallConstraint over a small synthetic vocabulary: printable ASCII bytes as tokens, plus
// markup tokens (which have no bytes, like a model's added tokens) and an end token. Random
// walks under the mask must always spell well-formed calls, checked by a separate parser below.
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "engine/grammar/json_schema.h"
#include "engine/grammar/token_constraint.h"
#include "engine/grammar/tool_call_constraint.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine::grammar {
namespace {

using Json = nlohmann::json;

// Ids: 0 = end, 1..5 = markup, then one token per printable ASCII byte and "\n".
constexpr int32_t kEnd = 0, kCallsBegin = 1, kCallBegin = 2, kSep = 3, kCallEnd = 4,
                  kCallsEnd = 5;
const char* kMarkupNames[] = {"<END>", "<CALLS>", "<CALL>", "<SEP>", "<CALL_END>", "<CALLS_END>"};

struct Fixture {
  std::vector<std::string> bytes;
  std::map<char, int32_t> byte_id;
  std::shared_ptr<const Vocabulary> vocab;

  Fixture() {
    bytes.assign(6, "");
    for (int c = 0x20; c < 0x7f; ++c) {
      byte_id[static_cast<char>(c)] = static_cast<int32_t>(bytes.size());
      bytes.push_back(std::string(1, static_cast<char>(c)));
    }
    byte_id['\n'] = static_cast<int32_t>(bytes.size());
    bytes.push_back("\n");
    vocab = std::make_shared<Vocabulary>(bytes, kEnd);
  }
  std::vector<int32_t> Text(const std::string& s) const {
    std::vector<int32_t> ids;
    for (char c : s) ids.push_back(byte_id.at(c));
    return ids;
  }
  std::string Spell(const std::vector<int32_t>& ids) const {
    std::string out;
    for (int32_t id : ids) out += id < 6 ? kMarkupNames[id] : bytes[static_cast<size_t>(id)];
    return out;
  }
};

std::shared_ptr<const SchemaGraph> Compile(const std::string& schema) {
  auto g = CompileJsonSchema(schema);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *g : nullptr;
}

std::shared_ptr<ToolCallGrammar> WeatherAndAdd(const Fixture& f, bool parallel) {
  auto g = std::make_shared<ToolCallGrammar>();
  g->open = {kCallsBegin};
  auto head = [&](const std::string& name) {
    std::vector<int32_t> h = {kCallBegin};
    for (int32_t id : f.Text("function")) h.push_back(id);
    h.push_back(kSep);
    for (int32_t id : f.Text(name + "\n```json\n")) h.push_back(id);
    return h;
  };
  g->options.push_back({head("get_weather"), Compile(R"({"type":"object","properties":{
      "city":{"type":"string","maxLength":6}},"required":["city"],"additionalProperties":false})")});
  g->options.push_back({head("add"), Compile(R"({"type":"object","properties":{
      "a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"],
      "additionalProperties":false})")});
  g->tail = f.Text("\n```");
  g->tail.push_back(kCallEnd);
  g->separator = f.Text("\n");
  g->close = {kCallsEnd};
  g->parallel = parallel;
  return g;
}

// An independent reading of the spelled output: the calls, or a failure.
struct Call {
  std::string name;
  Json arguments;
};
bool ParseCalls(std::string text, std::vector<Call>* calls, std::string* why) {
  // At most 4 whitespace tokens (one byte each here) before the markup.
  const size_t lead = text.find_first_not_of(" \n");
  if (lead == std::string::npos || lead > 4) return *why = "too much whitespace first", false;
  text.erase(0, lead);
  const std::string open = "<CALLS>", close = "<CALLS_END><END>";
  if (text.rfind(open, 0) != 0) return *why = "does not open with <CALLS>", false;
  if (text.size() < close.size() || text.compare(text.size() - close.size(), close.size(), close) != 0) {
    return *why = "does not end with <CALLS_END><END>", false;
  }
  const std::string body = text.substr(open.size(), text.size() - open.size() - close.size());
  for (absl::string_view piece : absl::StrSplit(body, "<CALL_END>", absl::SkipEmpty())) {
    std::string p(piece);
    if (!calls->empty()) {
      if (p.rfind("\n", 0) != 0) return *why = "calls not separated by a newline", false;
      p.erase(0, 1);
    }
    const std::string header = "<CALL>function<SEP>";
    if (p.rfind(header, 0) != 0) return *why = "call without its header: " + p, false;
    p.erase(0, header.size());
    const size_t nl = p.find("\n```json\n");
    if (nl == std::string::npos) return *why = "no json fence", false;
    Call c;
    c.name = p.substr(0, nl);
    std::string args = p.substr(nl + 9);
    if (args.size() < 4 || args.compare(args.size() - 4, 4, "\n```") != 0) {
      return *why = "no closing fence", false;
    }
    c.arguments = Json::parse(args.substr(0, args.size() - 4), nullptr, false);
    if (c.arguments.is_discarded()) return *why = "arguments are not JSON: " + args, false;
    calls->push_back(std::move(c));
  }
  if (calls->empty()) return *why = "no call", false;
  return true;
}

bool ArgumentsMatch(const Call& c) {
  const Json& a = c.arguments;
  if (!a.is_object()) return false;
  if (c.name == "get_weather") {
    if (a.size() != 1 || !a.contains("city") || !a["city"].is_string()) return false;
    int code_points = 0;  // maxLength counts characters ("\uXXXX" escapes make non-ASCII ones)
    for (char ch : a["city"].get<std::string>()) code_points += (ch & 0xC0) != 0x80;
    return code_points <= 6;
  }
  if (c.name == "add") {
    return a.size() == 2 && a.contains("a") && a["a"].is_number_integer() && a.contains("b") &&
           a["b"].is_number_integer();
  }
  return false;
}

// Samples under the mask with random logits until the end token (or `limit` tokens).
std::vector<int32_t> Walk(ToolCallConstraint& c, const Fixture& f, std::mt19937& rng, int limit) {
  std::vector<int32_t> out;
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int step = 0; step < limit; ++step) {
    std::vector<float> logits(f.bytes.size());
    for (float& l : logits) l = u(rng);
    // Favour the end of arguments so walks finish: the markup tokens get a bonus.
    logits[static_cast<size_t>(f.byte_id.at('\n'))] += 0.3f;
    logits[static_cast<size_t>(f.byte_id.at('}'))] += 0.5f;
    c.MaskLogits(absl::MakeSpan(logits));
    int32_t best = -1;
    for (size_t i = 0; i < logits.size(); ++i) {
      if (std::isfinite(logits[i]) && (best < 0 || logits[i] > logits[static_cast<size_t>(best)])) {
        best = static_cast<int32_t>(i);
      }
    }
    EXPECT_GE(best, 0) << "everything masked after " << f.Spell(out);
    if (best < 0) break;
    EXPECT_TRUE(c.Accept(best).ok());
    out.push_back(best);
    if (best == kEnd) break;
  }
  return out;
}

TEST(ToolCallConstraintTest, RandomWalksSpellWellFormedCalls) {
  Fixture f;
  for (bool parallel : {false, true}) {
    auto grammar = WeatherAndAdd(f, parallel);
    ASSERT_TRUE(ValidateToolCallGrammar(*grammar, static_cast<int32_t>(f.bytes.size())).ok());
    std::mt19937 rng(parallel ? 11 : 5);
    int finished = 0, several = 0;
    std::map<std::string, int> names;
    for (int trial = 0; trial < 200; ++trial) {
      ToolCallConstraint c(f.vocab, grammar);
      std::vector<int32_t> ids = Walk(c, f, rng, 600);
      if (ids.empty() || ids.back() != kEnd) continue;
      ++finished;
      EXPECT_TRUE(c.IsComplete());
      std::vector<Call> calls;
      std::string why;
      ASSERT_TRUE(ParseCalls(f.Spell(ids), &calls, &why)) << why << "\n" << f.Spell(ids);
      if (!parallel) {
        EXPECT_EQ(calls.size(), 1u) << f.Spell(ids);
      }
      several += calls.size() > 1;
      for (const Call& call : calls) {
        EXPECT_TRUE(ArgumentsMatch(call)) << call.name << " " << call.arguments.dump();
        ++names[call.name];
      }
    }
    EXPECT_GT(finished, 150) << "walks rarely finish: the test would prove little";
    EXPECT_EQ(names.size(), 2u) << "both functions should be reachable";
    if (parallel) {
      EXPECT_GT(several, 0) << "parallel calls never happened";
    }
  }
}

TEST(ToolCallConstraintTest, MarkupIsForcedTokenByToken) {
  Fixture f;
  auto grammar = WeatherAndAdd(f, false);
  grammar->options.resize(1);  // only get_weather: every markup step has one choice
  ToolCallConstraint c(f.vocab, grammar);
  std::vector<int32_t> expected = {kCallsBegin};
  expected.insert(expected.end(), grammar->options[0].head.begin(), grammar->options[0].head.end());
  // Up to kMaxLead whitespace tokens may come first (the blank line after "</think>").
  const int32_t space = f.byte_id.at(' '), newline = f.byte_id.at('\n');
  for (int i = 0; i < ToolCallConstraint::kMaxLead; ++i) {
    std::vector<float> logits(f.bytes.size(), 1.0f);
    c.MaskLogits(absl::MakeSpan(logits));
    for (size_t id = 0; id < logits.size(); ++id) {
      const bool allowed = static_cast<int32_t>(id) == kCallsBegin ||
                           static_cast<int32_t>(id) == space || static_cast<int32_t>(id) == newline;
      EXPECT_EQ(std::isfinite(logits[id]), allowed) << "id " << id;
    }
    ASSERT_TRUE(c.Accept(i % 2 ? space : newline).ok());
  }
  EXPECT_FALSE(c.Accept(newline).ok()) << "no more than kMaxLead";
  for (int32_t want : expected) {
    std::vector<float> logits(f.bytes.size(), 1.0f);
    c.MaskLogits(absl::MakeSpan(logits));
    for (size_t i = 0; i < logits.size(); ++i) {
      EXPECT_EQ(std::isfinite(logits[i]), static_cast<int32_t>(i) == want) << "id " << i;
    }
    const int32_t wrong = want == kEnd ? kCallEnd : kEnd;
    EXPECT_FALSE(c.Accept(wrong).ok());
    ASSERT_TRUE(c.Accept(want).ok());
  }
  // In the arguments: JSON only, never the end token or markup. (The tail's first token, "\n",
  // is JSON whitespace between tokens, so it is allowed there as such.)
  for (int32_t id : f.Text("{\"city\":\"Oslo\"")) {
    std::vector<float> logits(f.bytes.size(), 1.0f);
    c.MaskLogits(absl::MakeSpan(logits));
    for (int32_t markup = kEnd; markup <= kCallsEnd; ++markup) {
      EXPECT_FALSE(std::isfinite(logits[static_cast<size_t>(markup)])) << markup;
    }
    ASSERT_TRUE(c.Accept(id).ok()) << f.Spell({id});
  }
  EXPECT_FALSE(c.Accept(kCallEnd).ok());
  EXPECT_FALSE(c.Accept(kEnd).ok());
  ASSERT_TRUE(c.Accept(f.byte_id.at('}')).ok());
  std::vector<float> logits(f.bytes.size(), 1.0f);
  c.MaskLogits(absl::MakeSpan(logits));
  EXPECT_TRUE(std::isfinite(logits[static_cast<size_t>(grammar->tail[0])]));
  EXPECT_FALSE(std::isfinite(logits[kEnd]));
  std::vector<int32_t> rest = grammar->tail;
  rest.push_back(kCallsEnd);
  rest.push_back(kEnd);
  for (int32_t id : rest) ASSERT_TRUE(c.Accept(id).ok()) << f.Spell({id});
  EXPECT_TRUE(c.IsComplete());
}

TEST(ToolCallConstraintTest, ValidationNamesTheProblem) {
  Fixture f;
  const auto n = static_cast<int32_t>(f.bytes.size());
  auto g = WeatherAndAdd(f, true);
  g->close.push_back(n);
  absl::Status s = ValidateToolCallGrammar(*g, n);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("close"), absl::string_view::npos) << s;
  g = WeatherAndAdd(f, true);
  g->options.clear();
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateToolCallGrammar(*g, n)));
  g = WeatherAndAdd(f, true);
  g->tail.clear();
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateToolCallGrammar(*g, n)));
}

}  // namespace
}  // namespace moeserve::engine::grammar
