#include "engine/reasoning.h"

#include <ostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace moeserve::engine {
namespace {

struct Split {
  std::string reasoning;
  std::string content;
  bool operator==(const Split& o) const {
    return reasoning == o.reasoning && content == o.content;
  }
};

std::ostream& operator<<(std::ostream& os, const Split& s) {
  return os << "{reasoning=\"" << s.reasoning << "\", content=\"" << s.content << "\"}";
}

Split RunSplitter(bool starts_in_reasoning, const std::vector<std::string>& chunks) {
  ReasoningSplitter splitter(starts_in_reasoning);
  Split out;
  for (const std::string& c : chunks) {
    ReasoningSplitter::Delta d = splitter.Add(c);
    out.reasoning += d.reasoning;
    out.content += d.content;
  }
  ReasoningSplitter::Delta d = splitter.Flush();
  out.reasoning += d.reasoning;
  out.content += d.content;
  return out;
}

struct Case {
  bool starts_in_reasoning;
  std::string text;
  Split want;
};

const std::vector<Case>& Cases() {
  static const auto* cases = new std::vector<Case>{
      {false, "Hello world", {"", "Hello world"}},
      {false, "", {"", ""}},
      {true, "", {"", ""}},
      {true, "I think.</think>\n\nAnswer.", {"I think.", "Answer."}},
      {false, "<think>\nreason</think>\n\nanswer", {"reason", "answer"}},
      {true, "<think>\nreason</think>answer", {"reason", "answer"}},
      {false, "  \n<think>r</think>c", {"r", "c"}},
      {false, "  hello", {"", "  hello"}},
      {true, "  hello", {"  hello", ""}},
      {true, "\n\nhello</think>x", {"\n\nhello", "x"}},
      {false, "<thinking>x", {"", "<thinking>x"}},
      {false, "<thi", {"", "<thi"}},
      {false, " <", {"", " <"}},
      {false, "\n\n", {"", "\n\n"}},
      {true, "a < b </thi nk> c</think>\n\n\nd\n", {"a < b </thi nk> c", "d\n"}},
      {true, "reasoning only, no close", {"reasoning only, no close", ""}},
      {true, "ends with partial </thi", {"ends with partial </thi", ""}},
      {true, "ends with <", {"ends with <", ""}},
      {false, "<think>\n\nr</think>", {"\nr", ""}},  // only one "\n" after <think>
      {false, "<think>r</think>\n \nc", {"r", " \nc"}},  // only '\n's after </think>
      {true, "x</think></think>y<think>z", {"x", "</think>y<think>z"}},
      {true, "x<think>y</think>z", {"x<think>y", "z"}},
      {false, "a<think>b</think>c", {"", "a<think>b</think>c"}},
      {true, "r</think>", {"r", ""}},
      {true, "r</think>\n\n", {"r", ""}},
      {true, "<think></think>content", {"", "content"}},
      {false, "<think>", {"", ""}},
      {true, "<<</</t</think>c", {"<<</</t", "c"}},
      {true, "思考…🤔</think>\n\n答案：42 ✓", {"思考…🤔", "答案：42 ✓"}},
      {false, "<think>\né</think>\n\nü<think>", {"é", "ü<think>"}},
      {false, "日本<think>語", {"", "日本<think>語"}},
  };
  return *cases;
}

TEST(ReasoningSplitterTest, WholeTextGivesExpectedSplit) {
  for (const Case& c : Cases()) {
    EXPECT_EQ(RunSplitter(c.starts_in_reasoning, {c.text}), c.want)
        << "text \"" << c.text << "\" starts_in_reasoning " << c.starts_in_reasoning;
  }
}

TEST(ReasoningSplitterTest, EverySplitPointAndPairOfSplitPointsGivesTheSameResult) {
  for (const Case& c : Cases()) {
    const std::string& t = c.text;
    for (size_t i = 0; i <= t.size(); ++i) {
      ASSERT_EQ(RunSplitter(c.starts_in_reasoning, {t.substr(0, i), t.substr(i)}), c.want)
          << "text \"" << t << "\" split at " << i;
      for (size_t j = i; j <= t.size(); ++j) {
        ASSERT_EQ(RunSplitter(c.starts_in_reasoning,
                      {t.substr(0, i), t.substr(i, j - i), t.substr(j)}),
                  c.want)
            << "text \"" << t << "\" split at " << i << " and " << j;
      }
    }
  }
}

TEST(ReasoningSplitterTest, OneByteChunksGiveTheSameResult) {
  for (const Case& c : Cases()) {
    std::vector<std::string> bytes;
    for (char ch : c.text) bytes.emplace_back(1, ch);
    EXPECT_EQ(RunSplitter(c.starts_in_reasoning, bytes), c.want) << "text \"" << c.text << "\"";
  }
}

TEST(ReasoningSplitterTest, HoldsBackOnlyAPossibleTagPrefix) {
  ReasoningSplitter s(true);
  EXPECT_EQ(s.Add("ab").reasoning, "ab");
  EXPECT_EQ(s.Add("c<b").reasoning, "c<b");  // "<b" cannot start "</think>"
  EXPECT_EQ(s.Add("x</th").reasoning, "x");
  EXPECT_TRUE(s.in_reasoning());
  ReasoningSplitter::Delta d = s.Add("ink>\n");
  EXPECT_EQ(d.reasoning, "");
  EXPECT_EQ(d.content, "");
  EXPECT_FALSE(s.in_reasoning());
  d = s.Add("\nhi <think>");
  EXPECT_EQ(d.content, "hi <think>");  // content is never held back
  EXPECT_EQ(s.Flush().content, "");
}

TEST(ReasoningSplitterTest, InReasoningTracksTags) {
  ReasoningSplitter s(false);
  EXPECT_FALSE(s.in_reasoning());
  s.Add(" <thi");
  EXPECT_FALSE(s.in_reasoning());
  s.Add("nk>");
  EXPECT_TRUE(s.in_reasoning());
  EXPECT_EQ(s.Add("\nplan").reasoning, "plan");
  s.Add("</think>");
  EXPECT_FALSE(s.in_reasoning());

  ReasoningSplitter plain(false);
  EXPECT_EQ(plain.Add("Hi").content, "Hi");
  EXPECT_FALSE(plain.in_reasoning());
  EXPECT_TRUE(ReasoningSplitter(true).in_reasoning());
}

TEST(ReasoningSplitterTest, FlushEmitsHeldBackPartialTag) {
  ReasoningSplitter s(true);
  EXPECT_EQ(s.Add("a</think").reasoning, "a");
  EXPECT_EQ(s.Flush().reasoning, "</think");
  ReasoningSplitter t(false);
  EXPECT_EQ(t.Add(" <th").content, "");
  EXPECT_EQ(t.Flush().content, " <th");
}

TEST(ThinkingBudgetTest, MapsEffortToConfiguredBudgets) {
  ThinkingBudget b;
  EXPECT_EQ(*b.ForEffort("low"), 256);
  EXPECT_EQ(*b.ForEffort("medium"), 1024);
  EXPECT_EQ(*b.ForEffort("high"), 4096);
  b.low = 10;
  b.medium = 20;
  b.high = 30;
  EXPECT_EQ(*b.ForEffort("low"), 10);
  EXPECT_EQ(*b.ForEffort("medium"), 20);
  EXPECT_EQ(*b.ForEffort("high"), 30);
}

TEST(ThinkingBudgetTest, UnknownEffortIsInvalidArgumentNamingAllowedValues) {
  for (absl::string_view bad : {"", "HIGH", "max", "minimal"}) {
    absl::StatusOr<int64_t> r = ThinkingBudget().ForEffort(bad);
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    const std::string msg(r.status().message());
    EXPECT_NE(msg.find("\"low\", \"medium\", \"high\""), std::string::npos) << msg;
  }
}

using Ids = std::vector<int32_t>;
Ids ToVec(absl::Span<const int32_t> s) { return Ids(s.begin(), s.end()); }

TEST(ThinkingBudgetEnforcerTest, ForcesCloseWhenBudgetIsUsedUp) {
  ThinkingBudgetEnforcer e(3, {900, 13});
  EXPECT_TRUE(e.AtStart().empty());
  EXPECT_TRUE(e.OnReasoningToken(5).empty());
  EXPECT_TRUE(e.OnReasoningToken(6).empty());
  EXPECT_FALSE(e.done());
  EXPECT_EQ(ToVec(e.OnReasoningToken(7)), (Ids{900, 13}));
  EXPECT_TRUE(e.done());
  EXPECT_TRUE(e.forced());
  EXPECT_EQ(e.used(), 3);
  EXPECT_TRUE(e.OnReasoningToken(8).empty());
}

TEST(ThinkingBudgetEnforcerTest, ModelClosingItselfStopsEnforcement) {
  ThinkingBudgetEnforcer e(3, {900, 13});
  EXPECT_TRUE(e.OnReasoningToken(5).empty());
  EXPECT_TRUE(e.OnReasoningToken(900).empty());
  EXPECT_TRUE(e.done());
  EXPECT_FALSE(e.forced());
  EXPECT_EQ(e.used(), 1);
  EXPECT_TRUE(e.OnReasoningToken(6).empty());
  EXPECT_TRUE(e.OnReasoningToken(7).empty());
}

TEST(ThinkingBudgetEnforcerTest, ZeroBudgetClosesAtStart) {
  ThinkingBudgetEnforcer e(0, {900});
  EXPECT_EQ(ToVec(e.AtStart()), (Ids{900}));
  EXPECT_TRUE(e.done());
  EXPECT_TRUE(e.forced());
  EXPECT_TRUE(e.AtStart().empty());
  EXPECT_TRUE(e.OnReasoningToken(1).empty());
}

TEST(ThinkingBudgetEnforcerTest, BudgetOfOneClosesAfterFirstToken) {
  ThinkingBudgetEnforcer e(1, {900, 13});
  EXPECT_TRUE(e.AtStart().empty());
  EXPECT_EQ(ToVec(e.OnReasoningToken(4)), (Ids{900, 13}));
}

}  // namespace
}  // namespace moeserve::engine
