#include "tests/unit/engine/tokenizer/corpus.h"

#include <array>
#include <random>

#include "absl/strings/str_cat.h"

namespace moeserve::engine::testing {
namespace {

// Uniform-enough draws from the raw engine output, so the corpus does not depend on the
// standard library's distribution implementations.
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  uint64_t Below(uint64_t n) { return engine_() % n; }
  uint32_t Range(uint32_t lo, uint32_t hi) {
    return lo + static_cast<uint32_t>(Below(hi - lo + 1));
  }
  bool Chance(int percent) { return Below(100) < static_cast<uint64_t>(percent); }
  template <typename T, size_t N>
  const T& Pick(const std::array<T, N>& items) {
    return items[Below(N)];
  }

 private:
  std::mt19937_64 engine_;
};

void AppendCodePoint(uint32_t cp, std::string* out) {
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

constexpr std::array<const char*, 64> kEnglish = {"the",
                                                  "of",
                                                  "and",
                                                  "to",
                                                  "in",
                                                  "is",
                                                  "that",
                                                  "it",
                                                  "was",
                                                  "for",
                                                  "on",
                                                  "are",
                                                  "as",
                                                  "with",
                                                  "his",
                                                  "they",
                                                  "at",
                                                  "be",
                                                  "this",
                                                  "from",
                                                  "I",
                                                  "have",
                                                  "or",
                                                  "by",
                                                  "one",
                                                  "had",
                                                  "not",
                                                  "but",
                                                  "what",
                                                  "all",
                                                  "were",
                                                  "when",
                                                  "we",
                                                  "there",
                                                  "can",
                                                  "an",
                                                  "your",
                                                  "which",
                                                  "their",
                                                  "said",
                                                  "if",
                                                  "do",
                                                  "will",
                                                  "each",
                                                  "about",
                                                  "how",
                                                  "up",
                                                  "out",
                                                  "them",
                                                  "then",
                                                  "tokenizer",
                                                  "inference",
                                                  "mixture-of-experts",
                                                  "attention",
                                                  "DeepSeek",
                                                  "GPU",
                                                  "latency",
                                                  "don't",
                                                  "it's",
                                                  "we're",
                                                  "they've",
                                                  "I'm",
                                                  "you'll",
                                                  "She'd"};
constexpr std::array<const char*, 16> kPunct = {".",  ",", "!",  "?", ";",  ":", "...", " -",
                                                " (", ")", "\"", "'", " —", "…", "/",   " &"};
constexpr std::array<const char*, 24> kChinese = {
    "我们", "模型",     "推理",   "的",   "是",   "在",   "专家", "混合",
    "中国", "人工智能", "服务器", "你好", "世界", "数据", "计算", "语言",
    "学习", "深度",     "。",     "，",   "！",   "？",   "“",    "”"};
constexpr std::array<const char*, 16> kJapanese = {
    "こんにちは", "世界", "です", "ます",     "トークナイザー", "東京", "日本語", "の",
    "を",         "は",   "が",   "カタカナ", "ひらがな",       "。",   "、",     "ー"};
constexpr std::array<const char*, 12> kOtherScripts = {"Привет, мир",
                                                       "Γειά σου Κόσμε",
                                                       "مرحبا بالعالم",
                                                       "שלום עולם",
                                                       "สวัสดีชาวโลก",
                                                       "नमस्ते दुनिया",
                                                       "Ça va très bien",
                                                       "naïve café",
                                                       "Zürich Straße",
                                                       "ｆｕｌｌｗｉｄｔｈ",
                                                       "e\xCC\x81\xCC\x80 combining",
                                                       "Tiếng Việt có dấu"};
constexpr std::array<const char*, 24> kEmoji = {"😀",
                                                "😂",
                                                "🥲",
                                                "👍",
                                                "👍🏽",
                                                "❤️",
                                                "🔥",
                                                "🚀",
                                                "🇺🇸",
                                                "🇯🇵",
                                                "👨‍👩‍👧‍👦",
                                                "🏳️‍🌈",
                                                "👩🏽‍💻",
                                                "🧑‍🚀",
                                                "🐦‍⬛",
                                                "1️⃣",
                                                "#️⃣",
                                                "☕",
                                                "✅",
                                                "🤖",
                                                "🫠",
                                                "🙏🏿",
                                                "👁️‍🗨️",
                                                "™"};
constexpr std::array<const char*, 12> kCode = {
    "int main(int argc, char** argv) {\n  return 0;\n}\n",
    "def f(x):\n\tif x > 0:\n\t\treturn x ** 2\n\treturn -x\n",
    "for (size_t i = 0; i < n; ++i) sum += a[i] * b[i];",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
    "const x = arr.map((v) => v?.name ?? '').filter(Boolean);",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "#include <vector>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\n",
    "    if err != nil {\n        return fmt.Errorf(\"wrap: %w\", err)\n    }\n",
    "x<<=2; y>>=3; z&&=w; a||b; c!==d; e===f; g->h; i::j;",
    "<div class=\"row\"><span>&nbsp;&lt;tag&gt;</span></div>",
    "$ ./moeserve tokenize --model /models/v3 --text 'hi' | jq .ids",
    "fn main() { let v: Vec<u8> = vec![0x7f, 0xff]; println!(\"{:?}\", v); }"};
constexpr std::array<const char*, 14> kSpaces = {" ",      "  ",    "   ",      "\t",
                                                 "\n",     "\n\n",  "\r\n",     " \n",
                                                 "\n ",    "\t\t",  "        ", " \t \n  \n\n\n",
                                                 "\u3000", "\u00a0"};

void AppendNumber(Rng& rng, std::string* out) {
  switch (rng.Below(6)) {
    case 0:
    case 1: {  // plain digits, every length 1..40
      const uint32_t len = rng.Range(1, 40);
      for (uint32_t i = 0; i < len; ++i) out->push_back(static_cast<char>('0' + rng.Below(10)));
      break;
    }
    case 2:  // decimals and signs
      *out += std::to_string(rng.Below(100000));
      *out += rng.Chance(50) ? "." : ",";
      *out += std::to_string(rng.Below(1000));
      break;
    case 3:  // grouped
      absl::StrAppend(out, "-", rng.Below(999), ",", 100 + rng.Below(900), ",",
                      100 + rng.Below(900));
      break;
    case 4: {  // non-ASCII digits: full-width, Arabic-Indic, Devanagari
      constexpr std::array<uint32_t, 3> kZero = {0xFF10, 0x0660, 0x0966};
      const uint32_t zero = rng.Pick(kZero);
      const uint32_t len = rng.Range(1, 8);
      for (uint32_t i = 0; i < len; ++i) AppendCodePoint(zero + rng.Below(10), out);
      break;
    }
    default:  // version strings, dates, hex
      absl::StrAppend(out, "v", rng.Below(20), ".", rng.Below(100), ".", rng.Below(1000),
                      " 2025-0", 1 + rng.Below(9), "-1", rng.Below(10), " 0x",
                      rng.Below(1 << 20));
  }
}

void AppendRandomChars(Rng& rng, uint32_t lo, uint32_t hi, uint32_t count, std::string* out) {
  for (uint32_t i = 0; i < count; ++i) AppendCodePoint(rng.Range(lo, hi), out);
}

void AppendFragment(Rng& rng, const std::vector<std::string>& specials, std::string* out) {
  switch (rng.Below(16)) {
    case 0:
    case 1:
    case 2: {  // English sentence
      const uint32_t words = rng.Range(3, 18);
      for (uint32_t i = 0; i < words; ++i) {
        if (i > 0) *out += ' ';
        std::string w = rng.Pick(kEnglish);
        if (i == 0 && w[0] >= 'a' && w[0] <= 'z') w[0] = static_cast<char>(w[0] - 32);
        if (rng.Chance(5)) {
          for (char& c : w) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
        }
        *out += w;
        if (rng.Chance(15)) *out += rng.Pick(kPunct);
      }
      *out += rng.Chance(80) ? ". " : "? ";
      break;
    }
    case 3:
    case 4: {  // Chinese: phrases and random common ideographs
      const uint32_t n = rng.Range(2, 20);
      for (uint32_t i = 0; i < n; ++i) {
        if (rng.Chance(60)) {
          *out += rng.Pick(kChinese);
        } else {
          AppendRandomChars(rng, 0x4E00, 0x9FA5, rng.Range(1, 4), out);
        }
      }
      break;
    }
    case 5: {  // Japanese
      const uint32_t n = rng.Range(2, 12);
      for (uint32_t i = 0; i < n; ++i) {
        if (rng.Chance(50)) {
          *out += rng.Pick(kJapanese);
        } else {
          const bool hiragana = rng.Chance(50);
          AppendRandomChars(rng, hiragana ? 0x3041 : 0x30A1, hiragana ? 0x3096 : 0x30FA,
                            rng.Range(1, 5), out);
        }
      }
      break;
    }
    case 6:  // Korean syllables with spaces
      for (uint32_t i = 0, n = rng.Range(1, 8); i < n; ++i) {
        AppendRandomChars(rng, 0xAC00, 0xD7A3, rng.Range(1, 5), out);
        *out += rng.Chance(70) ? " " : ". ";
      }
      break;
    case 7:
      *out += rng.Pick(kOtherScripts);
      break;
    case 8:
      *out += rng.Pick(kCode);
      break;
    case 9:  // emoji, sometimes glued together or to words
      for (uint32_t i = 0, n = rng.Range(1, 6); i < n; ++i) {
        *out += rng.Pick(kEmoji);
        if (rng.Chance(40)) *out += ' ';
      }
      break;
    case 10:
    case 11:
      AppendNumber(rng, out);
      if (rng.Chance(50)) *out += rng.Chance(50) ? " " : "abc";
      break;
    case 12:
      *out += rng.Pick(kSpaces);
      break;
    case 13: {  // an added token, sometimes cut short or doubled
      const std::string& token =
          specials.empty() ? std::string("<") : specials[rng.Below(specials.size())];
      const uint64_t mode = rng.Below(10);
      if (mode == 0) {
        size_t cut = rng.Below(token.size());
        while (cut > 0 && (static_cast<unsigned char>(token[cut]) & 0xC0) == 0x80) --cut;
        *out += token.substr(0, cut);  // cut short, at a character boundary
      } else {
        if (rng.Chance(30)) *out += ' ';
        *out += token;
        if (mode == 1) *out += token;
        if (rng.Chance(30)) *out += rng.Pick(kSpaces);
      }
      break;
    }
    case 14: {  // assorted BMP symbols, Latin-1, Greek, Cyrillic, box drawing, math, arrows
      constexpr std::array<std::pair<uint32_t, uint32_t>, 8> kRanges = {{{0xA1, 0xFF},
                                                                         {0x370, 0x3FF},
                                                                         {0x400, 0x4FF},
                                                                         {0x2190, 0x21FF},
                                                                         {0x2200, 0x22FF},
                                                                         {0x2500, 0x257F},
                                                                         {0x3000, 0x303F},
                                                                         {0xFF01, 0xFF5E}}};
      const auto& range = rng.Pick(kRanges);
      AppendRandomChars(rng, range.first, range.second, rng.Range(1, 12), out);
      break;
    }
    default: {  // ASCII soup including control characters and punctuation runs
      const uint32_t n = rng.Range(1, 30);
      for (uint32_t i = 0; i < n; ++i) {
        const auto c = static_cast<char>(rng.Chance(10) ? rng.Below(32) : 32 + rng.Below(95));
        out->push_back(c);
      }
      break;
    }
  }
}

}  // namespace

std::vector<std::string> GenerateCorpus(size_t min_bytes, uint64_t seed,
                                        const std::vector<std::string>& special_tokens) {
  Rng rng(seed);
  std::vector<std::string> docs;
  size_t total = 0;
  // Every added token appears at least once, inside text.
  for (size_t i = 0; i < special_tokens.size(); i += 16) {
    std::string doc = "Tokens:";
    for (size_t j = i; j < special_tokens.size() && j < i + 16; ++j) {
      doc += (j % 3 == 0 ? " x" : "y") + special_tokens[j] + (j % 2 == 0 ? "z " : "\n");
    }
    total += doc.size();
    docs.push_back(std::move(doc));
  }
  while (total < min_bytes) {
    std::string doc;
    const size_t target = rng.Chance(10) ? rng.Range(4000, 12000) : rng.Range(100, 2500);
    while (doc.size() < target) {
      AppendFragment(rng, special_tokens, &doc);
      if (rng.Chance(30)) doc += rng.Chance(80) ? " " : "\n";
    }
    total += doc.size();
    docs.push_back(std::move(doc));
  }
  // Edge documents: empty, single characters, long runs.
  docs.push_back("");
  docs.push_back(" ");
  docs.push_back("\n");
  docs.push_back(std::string(3000, ' ') + "x");
  docs.push_back(std::string(2000, '\n'));
  docs.push_back(std::string(5000, 'a'));
  std::string long_cjk;
  for (int i = 0; i < 3000; ++i)
    AppendCodePoint(0x4E00 + static_cast<uint32_t>(i * 7 % 20000), &long_cjk);
  docs.push_back(long_cjk);
  docs.push_back(std::string(4000, '7'));
  return docs;
}

}  // namespace moeserve::engine::testing
