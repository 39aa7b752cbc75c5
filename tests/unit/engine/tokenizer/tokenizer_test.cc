#include "engine/tokenizer.h"

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/engine/tokenizer/corpus.h"

namespace moeserve::engine {
namespace {

using tokenizer_internal::AppendUtf8Lossy;
using tokenizer_internal::FindInvalidUtf8;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string V3Json() {
  static const std::string* json =
      new std::string(ReadAll(absl::StrCat(testing::kDeepSeekV3TokenizerDir, "/tokenizer.json")));
  return *json;
}

std::string V3ConfigJson() {
  return ReadAll(absl::StrCat(testing::kDeepSeekV3TokenizerDir, "/tokenizer_config.json"));
}

const Tokenizer& V3() {
  static const Tokenizer* tok = [] {
    auto t = Tokenizer::Load(testing::kDeepSeekV3TokenizerDir);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? t->release() : nullptr;
  }();
  return *tok;
}

const Tokenizer& R1() {
  static const Tokenizer* tok = [] {
    auto json = MakeR1TokenizerJson(V3Json());
    EXPECT_TRUE(json.ok()) << json.status();
    auto t = Tokenizer::FromJson(*json, V3ConfigJson());
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? t->release() : nullptr;
  }();
  return *tok;
}

std::vector<int32_t> Ids(const Tokenizer& tok, absl::string_view text, bool bos = false) {
  auto ids = tok.Encode(text, {.add_special_tokens = bos});
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

std::vector<std::string> Pieces(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(std::string(*tok.TokenBytes(id)));
  return pieces;
}

// --- byte alphabet -------------------------------------------------------------------------

TEST(ByteLevelTest, AlphabetIsABijectionOntoPrintableCodePoints) {
  const auto& table = tokenizer_internal::ByteToCodePoint();
  std::set<uint32_t> seen(table.begin(), table.end());
  EXPECT_EQ(seen.size(), 256u);
  EXPECT_EQ(table[' '], 0x120u);   // 'Ġ'
  EXPECT_EQ(table['\n'], 0x10Au);  // 'Ċ'
  EXPECT_EQ(table['A'], uint32_t{'A'});
  EXPECT_EQ(table[0xAD], 0x143u);  // the last remapped byte
  std::string bytes;
  for (int b = 0; b < 256; ++b) {
    ASSERT_TRUE(tokenizer_internal::UnicodeToBytes(
        tokenizer_internal::ByteToUnicodeString(static_cast<uint8_t>(b)), &bytes));
    EXPECT_EQ(bytes, std::string(1, static_cast<char>(b)));
  }
  EXPECT_TRUE(tokenizer_internal::UnicodeToBytes("ĠtheĊ", &bytes));
  EXPECT_EQ(bytes, " the\n");
  EXPECT_FALSE(tokenizer_internal::UnicodeToBytes("｜", &bytes));  // not in the alphabet
  EXPECT_FALSE(tokenizer_internal::UnicodeToBytes(" ", &bytes));   // raw space is not either
}

// --- UTF-8 ---------------------------------------------------------------------------------

TEST(Utf8Test, FindsTheFirstInvalidByte) {
  EXPECT_EQ(FindInvalidUtf8("plain ascii text, long enough for the fast path"),
            absl::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("中文😀é"), absl::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("abc\xFF"), 3u);
  EXPECT_EQ(FindInvalidUtf8("ab\xC3"), 2u);            // truncated
  EXPECT_EQ(FindInvalidUtf8("\xC0\xAF"), 0u);          // overlong
  EXPECT_EQ(FindInvalidUtf8("x\xED\xA0\x80"), 1u);     // surrogate
  EXPECT_EQ(FindInvalidUtf8("\xF4\x90\x80\x80"), 0u);  // > U+10FFFF
  EXPECT_EQ(FindInvalidUtf8("12345678\x80"), 8u);
}

TEST(Utf8Test, LossyDecodingReplacesMaximalSubparts) {
  std::string out;
  EXPECT_EQ(AppendUtf8Lossy("a\xF0\x9F\x98", /*final=*/false, &out), 1u);
  EXPECT_EQ(out, "a");
  out.clear();
  AppendUtf8Lossy("a\xF0\x9F\x98", /*final=*/true, &out);
  EXPECT_EQ(out, "a\xEF\xBF\xBD");
  out.clear();
  AppendUtf8Lossy("\xE2\x82x\xFF", /*final=*/true, &out);  // one U+FFFD per maximal subpart
  EXPECT_EQ(out, "\xEF\xBF\xBDx\xEF\xBF\xBD");
}

// --- pre-tokenizer -------------------------------------------------------------------------

TEST(PreTokenizerTest, TranslatesWhitespaceClasses) {
  const std::string t = tokenizer_internal::TranslateRegex("\\s+(?!\\S)|[^\\s\\p{L}]");
  EXPECT_EQ(t.find("\\s"), std::string::npos);
  EXPECT_EQ(t.find("\\S"), std::string::npos);
  EXPECT_NE(t.find("[^\\x{9}-\\x{d}"), std::string::npos);
  EXPECT_EQ(tokenizer_internal::TranslateRegex("[\\]\\s]"),
            absl::StrCat("[\\]",
                         "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}"
                         "\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}]"));
}

TEST(PreTokenizerTest, SplitsLikeTheReference) {
  // From TOOLING.md: pieces Hello , ␠ 世界 ! ␠< think >\n.
  const auto ids = Ids(V3(), "Hello, 世界! <think>\n");
  EXPECT_EQ(ids, (std::vector<int32_t>{19923, 14, 223, 3427, 3, 818, 37947, 1018}));
  EXPECT_EQ(Pieces(V3(), ids),
            (std::vector<std::string>{"Hello", ",", " ", "世界", "!", " <", "think", ">\n"}));
  // Digits are isolated in groups of at most three.
  const auto digits = Pieces(V3(), Ids(V3(), "1234567"));
  EXPECT_EQ(digits, (std::vector<std::string>{"123", "456", "7"}));
}

std::vector<std::string> SplitWith(const std::string& behavior, bool invert,
                                   absl::string_view text) {
  const nlohmann::json node = {{"type", "Split"},
                               {"pattern", {{"String", "-"}}},
                               {"behavior", behavior},
                               {"invert", invert}};
  auto pre = tokenizer_internal::PreTokenizer::FromJson(node);
  EXPECT_TRUE(pre.ok()) << pre.status();
  tokenizer_internal::PreTokenizerScratch scratch;
  std::vector<tokenizer_internal::Span> spans;
  EXPECT_TRUE(pre->Split(text, &scratch, &spans).ok());
  std::vector<std::string> pieces;
  for (const auto& s : spans) pieces.emplace_back(text.substr(s.begin, s.size));
  return pieces;
}

TEST(PreTokenizerTest, SplitBehaviorsFollowHuggingFace) {
  using V = std::vector<std::string>;
  const char* text = "the-final--countdown";
  EXPECT_EQ(SplitWith("Removed", false, text), (V{"the", "final", "countdown"}));
  EXPECT_EQ(SplitWith("Isolated", false, text), (V{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(SplitWith("MergedWithPrevious", false, text), (V{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(SplitWith("MergedWithNext", false, text), (V{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(SplitWith("Contiguous", false, text), (V{"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(SplitWith("Removed", true, text), (V{"-", "-", "-"}));
}

TEST(AddedTokensTest, StripFlagsSwallowNeighbouringWhitespace) {
  tokenizer_internal::AddedToken mask;
  mask.id = 7;
  mask.content = "<mask>";
  mask.lstrip = true;
  mask.rstrip = true;
  tokenizer_internal::AddedToken word;
  word.id = 8;
  word.content = "cat";
  word.single_word = true;
  const tokenizer_internal::AddedTokenMatcher matcher({mask, word});
  const std::string text = "a \u3000<mask>\t b cat concat";
  std::vector<tokenizer_internal::Segment> segments;
  matcher.Split(text, true, &segments);
  std::vector<std::string> pieces;
  for (const auto& s : segments) {
    pieces.push_back(s.token_id >= 0 ? absl::StrCat("#", s.token_id)
                                     : text.substr(s.begin, s.size));
  }
  EXPECT_EQ(pieces, (std::vector<std::string>{"a", "#7", "b ", "#8", " concat"}));
}

// --- BPE merges ----------------------------------------------------------------------------

TEST(BpeTest, MergesByRankAndUsesTheCacheConsistently) {
  const std::string text = "internationalization internationalization";
  const auto first = Ids(V3(), text);
  const auto second = Ids(V3(), text);  // now served from the word cache
  EXPECT_EQ(first, second);
  EXPECT_LT(first.size(), 8u);
  // A long word takes the heap path; its result must equal the sum of its pieces' merges.
  const std::string long_word(500, 'a');
  const auto ids = Ids(V3(), long_word);
  std::string joined;
  for (const auto& p : Pieces(V3(), ids)) joined += p;
  EXPECT_EQ(joined, long_word);
  EXPECT_LT(ids.size(), 100u);
}

TEST(BpeTest, ConcurrentEncodesAgree) {
  const auto docs = testing::GenerateCorpus(40000, 7, {});
  std::vector<std::vector<int32_t>> expected;
  for (const auto& d : docs) expected.push_back(Ids(V3(), d));
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < docs.size(); ++i) {
        auto ids = V3().Encode(docs[(i + t * 7) % docs.size()], {.add_special_tokens = false});
        if (!ids.ok() || *ids != expected[(i + t * 7) % docs.size()]) ++failures[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

// --- added tokens --------------------------------------------------------------------------

TEST(AddedTokensTest, MatchedInRawTextBeforePreTokenization) {
  const auto ids = Ids(V3(), "a<｜User｜>b<｜Assistant｜><｜end▁of▁sentence｜>");
  EXPECT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids[1], 128803);
  EXPECT_EQ(ids[3], 128804);
  EXPECT_EQ(ids[4], 1);
  // Longest match: "<｜tool▁calls▁begin｜>" is not "<｜tool▁call" + text.
  EXPECT_EQ(Ids(V3(), "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>"),
            (std::vector<int32_t>{128806, 128808}));
  // A token cut short is plain text.
  const auto partial = Ids(V3(), "<｜User");
  for (int32_t id : partial) EXPECT_LT(id, 128000);
  // Non-special added tokens are matched too.
  EXPECT_EQ(Ids(V3(), "<|EOT|>"), (std::vector<int32_t>{128805}));
}

TEST(AddedTokensTest, UntrustedTextCanOptOutOfSpecialTokens) {
  auto ids =
      V3().Encode("<｜User｜>hi", {.add_special_tokens = false, .parse_special_tokens = false});
  ASSERT_TRUE(ids.ok());
  for (int32_t id : *ids) EXPECT_FALSE(V3().IsSpecial(id));
  EXPECT_EQ(*V3().Decode(*ids), "<｜User｜>hi");
}

TEST(AddedTokensTest, BosFollowsTokenizerConfig) {
  EXPECT_EQ(V3().bos_id(), 0);
  EXPECT_EQ(V3().eos_id(), 1);
  EXPECT_TRUE(V3().add_bos_token());
  const auto with_bos = Ids(V3(), "hi", /*bos=*/true);
  ASSERT_FALSE(with_bos.empty());
  EXPECT_EQ(with_bos[0], 0);
  EXPECT_EQ(std::vector<int32_t>(with_bos.begin() + 1, with_bos.end()), Ids(V3(), "hi"));
  EXPECT_EQ(Ids(V3(), "", /*bos=*/true), (std::vector<int32_t>{0}));
}

// --- decode --------------------------------------------------------------------------------

TEST(DecodeTest, RoundTripsAndSkipsSpecialTokens) {
  const std::string text = "<｜begin▁of▁sentence｜>Hi 你好 👨‍👩‍👧‍👦\n\t x";
  const auto ids = Ids(V3(), text);
  EXPECT_EQ(*V3().Decode(ids), text);
  EXPECT_EQ(*V3().Decode(ids, {.skip_special_tokens = true}),
            "Hi 你好 👨‍👩‍👧‍👦\n\t x");
}

TEST(DecodeTest, RejectsOutOfRangeIds) {
  for (int32_t bad : {-1, 128815, 1 << 30}) {
    auto text = V3().Decode(std::vector<int32_t>{19923, bad});
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(text.status().message().find(std::to_string(bad)), absl::string_view::npos);
  }
  EXPECT_EQ(V3().vocab_size(), 128815);
}

TEST(EncodeTest, InvalidUtf8IsAnErrorWithTheOffset) {
  auto ids = V3().Encode("abc\xC3(def");
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ids.status().message().find("byte offset 3"), absl::string_view::npos) << ids.status();
}

// --- streaming -----------------------------------------------------------------------------

// Feeds `ids` one by one and checks every delta is valid UTF-8; returns the joined text.
std::string StreamAll(const Tokenizer& tok, const std::vector<int32_t>& ids,
                      DecodeOptions options = {}) {
  StreamDecoder decoder(tok, options);
  std::string text;
  for (int32_t id : ids) {
    auto delta = decoder.Add(id);
    EXPECT_TRUE(delta.ok()) << delta.status();
    EXPECT_EQ(FindInvalidUtf8(*delta), absl::string_view::npos);
    text += *delta;
  }
  const std::string tail = decoder.Flush();
  EXPECT_EQ(FindInvalidUtf8(tail), absl::string_view::npos);
  return text + tail;
}

std::vector<int32_t> ByteTokens(const Tokenizer& tok, absl::string_view bytes) {
  std::vector<int32_t> ids;
  for (char b : bytes) {
    ids.push_back(*tok.TokenToId(tokenizer_internal::ByteToUnicodeString(static_cast<uint8_t>(b))));
  }
  return ids;
}

TEST(StreamDecoderTest, HoldsBackCharactersSplitAcrossTokens) {
  const std::string text = "é😀中文👩🏽‍💻 한국어";
  const auto ids = ByteTokens(V3(), text);  // one token per byte: every character is split
  StreamDecoder decoder(V3());
  std::string joined;
  auto first = decoder.Add(ids[0]);  // first byte of 'é'
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, "");
  EXPECT_EQ(decoder.pending_bytes(), 1u);
  joined += *first;
  for (size_t i = 1; i < ids.size(); ++i) joined += *decoder.Add(ids[i]);
  joined += decoder.Flush();
  EXPECT_EQ(joined, text);
  EXPECT_EQ(StreamAll(V3(), ids), text);
  // Real encodings split emoji and rare CJK across tokens too.
  const std::string mixed = "🫠🐦‍⬛ 龘龘 𠀀 ok";
  EXPECT_EQ(StreamAll(V3(), Ids(V3(), mixed)), mixed);
}

TEST(StreamDecoderTest, MatchesDecodeOnInvalidSequencesAndSpecialTokens) {
  std::vector<int32_t> ids = ByteTokens(V3(), "a\xE4\xB8");  // truncated 中
  ids.push_back(0);                                          // BOS between
  const auto tail = ByteTokens(V3(), "\xFF\x80z");
  ids.insert(ids.end(), tail.begin(), tail.end());
  for (bool skip : {false, true}) {
    const DecodeOptions options{.skip_special_tokens = skip};
    EXPECT_EQ(StreamAll(V3(), ids, options), *V3().Decode(ids, options)) << skip;
  }
  // The corpus, streamed, equals the batch decode.
  for (const auto& doc : testing::GenerateCorpus(20000, 3, {"<｜User｜>", "<|EOT|>"})) {
    const auto doc_ids = Ids(V3(), doc);
    EXPECT_EQ(StreamAll(V3(), doc_ids), doc);
  }
  StreamDecoder decoder(V3());
  EXPECT_EQ(decoder.Add(200000).status().code(), absl::StatusCode::kInvalidArgument);
}

// --- R1 flavour ----------------------------------------------------------------------------

TEST(R1FlavourTest, ThinkTagsAreSingleNonSpecialTokens) {
  EXPECT_EQ(Ids(R1(), "<think>\nhmm</think>")[0], 128798);
  const auto ids = Ids(R1(), "<think>\nhmm</think>answer");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128799), 1);
  EXPECT_FALSE(R1().IsSpecial(128798));
  EXPECT_EQ(*R1().Decode(ids, {.skip_special_tokens = true}), "<think>\nhmm</think>answer");
  // V3 keeps them as placeholders and splits <think> as text.
  EXPECT_NE(Ids(V3(), "<think>")[0], 128798);
  EXPECT_TRUE(V3().IsSpecial(128798));
}

TEST(R1FlavourTest, RewritesOnlyTheTwoEntries) {
  const std::string v3 = V3Json();
  auto r1 = MakeR1TokenizerJson(v3);
  ASSERT_TRUE(r1.ok()) << r1.status();
  size_t prefix = 0;
  while (prefix < v3.size() && v3[prefix] == (*r1)[prefix]) ++prefix;
  size_t suffix = 0;
  while (suffix < v3.size() - prefix &&
         v3[v3.size() - 1 - suffix] == (*r1)[r1->size() - 1 - suffix]) {
    ++suffix;
  }
  const std::string changed = v3.substr(prefix, v3.size() - prefix - suffix);
  EXPECT_NE(changed.find("place▁holder▁no▁798"), std::string::npos);
  EXPECT_NE(changed.find("place▁holder▁no▁799"), std::string::npos);
  EXPECT_LT(changed.size(), 600u);
  EXPECT_EQ(MakeR1TokenizerJson("{").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeR1TokenizerJson("{\"added_tokens\": []}").status().code(),
            absl::StatusCode::kInvalidArgument);
  // Idempotent.
  auto twice = MakeR1TokenizerJson(*r1);
  ASSERT_TRUE(twice.ok());
  auto again = Tokenizer::FromJson(*twice, "");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*(*again)->Encode("<think>", {.add_special_tokens = false}),
            (std::vector<int32_t>{128798}));
}

// --- loading -------------------------------------------------------------------------------

TEST(LoadTest, ErrorsNameTheFile) {
  auto missing = Tokenizer::Load("/nonexistent/model");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/model/tokenizer.json"),
            absl::string_view::npos);

  char dir_template[] = "/tmp/moeserve_tok_load_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  std::ofstream(dir + "/tokenizer.json") << "{\"model\": ";
  auto malformed = Tokenizer::Load(dir);
  EXPECT_EQ(malformed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(malformed.status().message().find(dir + "/tokenizer.json"), absl::string_view::npos);

  std::ofstream(dir + "/tokenizer.json", std::ios::trunc) << V3Json();
  std::ofstream(dir + "/tokenizer_config.json")
      << "{\"add_bos_token\": true, \"bos_token\": \"<nope>\"}";
  auto bad_config = Tokenizer::Load(dir);
  EXPECT_EQ(bad_config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_config.status().message().find(dir + "/tokenizer_config.json"),
            absl::string_view::npos)
      << bad_config.status();
  std::remove((dir + "/tokenizer.json").c_str());
  std::remove((dir + "/tokenizer_config.json").c_str());
  std::remove(dir.c_str());
}

}  // namespace
}  // namespace moeserve::engine
