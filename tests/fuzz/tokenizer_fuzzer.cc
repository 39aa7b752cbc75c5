// libFuzzer target: the DeepSeek tokenizer (engine/tokenizer.h) of the gateway's model (the R1
// flavour, as served) on any bytes. The first byte picks the mode:
//   even: the rest is text. Encode succeeds exactly when the text is UTF-8 (checked by an
//         independent validator); every id is in the vocabulary; Decode(Encode(text)) == text,
//         with and without special-token parsing; streaming decode == Decode.
//   odd:  the rest is little-endian int32 ids. Decode succeeds exactly when every id has token
//         bytes; its text is UTF-8; StreamDecoder's deltas plus Flush() equal Decode, with and
//         without skip_special_tokens.
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/unit/gateway/test_model.h"

namespace {

using moeserve::engine::DecodeOptions;
using moeserve::engine::EncodeOptions;
using moeserve::engine::StreamDecoder;
using moeserve::engine::Tokenizer;
using moeserve::fuzz::IsUtf8;

const Tokenizer& Tok() {
  static const moeserve::gateway::ModelContext* model =
      moeserve::gateway::testing::LoadTestModel().release();
  if (model == nullptr) {
    std::fprintf(stderr, "tokenizer_fuzzer: cannot load the test model\n");
    std::abort();
  }
  return *model->tokenizer;
}

std::string Streamed(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  DecodeOptions options;
  options.skip_special_tokens = skip_special;
  StreamDecoder decoder(tok, options);
  std::string out;
  for (int32_t id : ids) {
    absl::StatusOr<std::string> delta = decoder.Add(id);
    MOESERVE_FUZZ_ASSERT(delta.ok(), delta.status().ToString());
    MOESERVE_FUZZ_ASSERT(IsUtf8(*delta), "a streamed delta is not UTF-8");
    out += *delta;
  }
  out += decoder.Flush();
  return out;
}

void CheckDecode(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  bool all_known = true;
  for (int32_t id : ids) all_known = all_known && tok.TokenBytes(id).has_value();
  for (bool skip : {false, true}) {
    DecodeOptions options;
    options.skip_special_tokens = skip;
    absl::StatusOr<std::string> text = tok.Decode(ids, options);
    MOESERVE_FUZZ_ASSERT(text.ok() == all_known, text.status().ToString());
    if (!text.ok()) continue;
    MOESERVE_FUZZ_ASSERT(IsUtf8(*text), "Decode returned text that is not UTF-8");
    MOESERVE_FUZZ_ASSERT(Streamed(tok, ids, skip) == *text, "streamed decode != Decode");
  }
}

void CheckText(const Tokenizer& tok, absl::string_view text) {
  for (bool parse_special : {true, false}) {
    EncodeOptions options;
    options.add_special_tokens = false;
    options.parse_special_tokens = parse_special;
    absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(text, options);
    MOESERVE_FUZZ_ASSERT(ids.ok() == IsUtf8(text), ids.status().ToString());
    if (!ids.ok()) {
      MOESERVE_FUZZ_ASSERT(ids.status().code() == absl::StatusCode::kInvalidArgument,
                           ids.status().ToString());
      return;
    }
    for (int32_t id : *ids) {
      MOESERVE_FUZZ_ASSERT(id >= 0 && id < tok.vocab_size(), absl::StrCat("id ", id));
    }
    absl::StatusOr<std::string> back = tok.Decode(*ids);
    MOESERVE_FUZZ_ASSERT(back.ok(), back.status().ToString());
    MOESERVE_FUZZ_ASSERT(*back == text, absl::StrCat("round trip changed the text to '", *back,
                                                     "' (parse_special=", parse_special, ")"));
    MOESERVE_FUZZ_ASSERT(Streamed(tok, *ids, false) == text, "streamed decode != text");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizer& tok = Tok();
  uint8_t mode = 0;
  if (!moeserve::fuzz::TakeSelector(&data, &size, &mode)) return 0;
  if (mode % 2 == 0) {
    CheckText(tok, moeserve::fuzz::AsText(data, size));
    return 0;
  }
  std::vector<int32_t> ids(size / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  // Mostly ids near the vocabulary (the top bits of random bytes would make nearly all invalid).
  if (mode % 4 == 1) {
    for (int32_t& id : ids) id = static_cast<int32_t>(static_cast<uint32_t>(id) % 130000u);
  }
  CheckDecode(tok, ids);
  return 0;
}
