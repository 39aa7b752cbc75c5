#include "engine/tokenizer.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine {

using tokenizer_internal::AddedToken;
using tokenizer_internal::AddedTokenMatcher;
using tokenizer_internal::BpeModel;
using tokenizer_internal::PreTokenizer;

namespace {

enum Kind : uint8_t { kAbsent = 0, kVocab = 1, kAdded = 2, kSpecial = 3 };

// Per-thread buffers so that Encode does not allocate in steady state.
struct EncodeScratch {
  std::vector<tokenizer_internal::Segment> segments;
  std::vector<tokenizer_internal::Span> spans;
  tokenizer_internal::PreTokenizerScratch pre;
  tokenizer_internal::BpeScratch bpe;
};

EncodeScratch& ThreadScratch() {
  thread_local EncodeScratch scratch;
  return scratch;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return contents.str();
}

absl::Status CheckSupported(const nlohmann::json& root) {
  const auto normalizer = root.find("normalizer");
  if (normalizer != root.end() && !normalizer->is_null()) {
    const bool empty_sequence = normalizer->value("type", std::string()) == "Sequence" &&
                                normalizer->contains("normalizers") &&
                                (*normalizer)["normalizers"].is_array() &&
                                (*normalizer)["normalizers"].empty();
    if (!empty_sequence) return absl::UnimplementedError("only an empty normalizer is supported");
  }
  const auto decoder = root.find("decoder");
  if (decoder != root.end() && !decoder->is_null() &&
      decoder->value("type", std::string()) != "ByteLevel") {
    return absl::UnimplementedError("only the ByteLevel decoder is supported");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const nlohmann::json& root) {
  std::vector<AddedToken> tokens;
  const auto list = root.find("added_tokens");
  if (list == root.end() || list->is_null()) return tokens;
  if (!list->is_array()) return absl::InvalidArgumentError("added_tokens is not an array");
  for (const auto& entry : *list) {
    if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_integer() ||
        !entry.contains("content") || !entry["content"].is_string() ||
        entry["id"].get<int64_t>() < 0 || entry["id"].get<int64_t>() >= (1 << 30)) {
      return absl::InvalidArgumentError("added_tokens entry without a valid id and content");
    }
    AddedToken token;
    token.id = static_cast<int32_t>(entry["id"].get<int64_t>());
    token.content = entry["content"].get<std::string>();
    if (tokenizer_internal::FindInvalidUtf8(token.content) != absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("added token ", token.id, " is not UTF-8"));
    }
    token.special = entry.value("special", false);
    token.lstrip = entry.value("lstrip", false);
    token.rstrip = entry.value("rstrip", false);
    token.single_word = entry.value("single_word", false);
    token.normalized = entry.value("normalized", !token.special);
    tokens.push_back(std::move(token));
  }
  return tokens;
}

// The content of a token entry in tokenizer_config.json: a string or {"content": ...}.
std::optional<std::string> ConfigToken(const nlohmann::json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return std::nullopt;
}

// Hugging Face's ByteLevel decoder: map each character back through the byte alphabet, or
// use the token's own UTF-8 when some character is outside it.
std::string AddedTokenBytes(const std::string& content) {
  std::string bytes;
  if (tokenizer_internal::UnicodeToBytes(content, &bytes)) return bytes;
  return content;
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& model_dir) {
  const std::string json_path = absl::StrCat(model_dir, "/tokenizer.json");
  const std::string config_path = absl::StrCat(model_dir, "/tokenizer_config.json");
  absl::StatusOr<std::string> json = ReadFile(json_path);
  if (!json.ok()) return json.status();
  std::string config;
  if (std::ifstream(config_path).good()) {
    absl::StatusOr<std::string> contents = ReadFile(config_path);
    if (!contents.ok()) return contents.status();
    config = *std::move(contents);
  }
  auto tokenizer = FromJson(*json, config);
  if (!tokenizer.ok()) {
    // Name the file: config errors say "tokenizer_config.json" themselves.
    const std::string& message = std::string(tokenizer.status().message());
    const bool about_config = message.rfind("tokenizer_config.json", 0) == 0;
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(about_config ? config_path : json_path, ": ", message));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view tokenizer_json,
                                                               absl::string_view config_json) {
  const nlohmann::json root = nlohmann::json::parse(tokenizer_json, nullptr, false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError("tokenizer.json is not a JSON object");
  }
  if (absl::Status status = CheckSupported(root); !status.ok()) return status;
  auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer());

  absl::StatusOr<std::unique_ptr<BpeModel>> bpe =
      BpeModel::FromJson(root.contains("model") ? root["model"] : nlohmann::json());
  if (!bpe.ok()) return bpe.status();
  tokenizer->bpe_ = *std::move(bpe);

  absl::StatusOr<PreTokenizer> pre = PreTokenizer::FromJson(
      root.contains("pre_tokenizer") ? root["pre_tokenizer"] : nlohmann::json());
  if (!pre.ok()) return pre.status();
  tokenizer->pre_tokenizer_ = std::make_unique<PreTokenizer>(*std::move(pre));

  absl::StatusOr<std::vector<AddedToken>> added = ParseAddedTokens(root);
  if (!added.ok()) return added.status();

  // The id table: vocab entries, then added tokens (which win on a clash, as in HF).
  size_t size = tokenizer->bpe_->id_space();
  for (const AddedToken& token : *added) size = std::max(size, static_cast<size_t>(token.id) + 1);
  tokenizer->token_bytes_.resize(size);
  tokenizer->kind_.assign(size, kAbsent);
  for (size_t id = 0; id < tokenizer->bpe_->id_space(); ++id) {
    if (const std::string* bytes = tokenizer->bpe_->IdToBytes(static_cast<int32_t>(id))) {
      tokenizer->token_bytes_[id] = *bytes;
      tokenizer->kind_[id] = kVocab;
    }
  }
  for (const AddedToken& token : *added) {
    tokenizer->token_bytes_[token.id] = AddedTokenBytes(token.content);
    tokenizer->kind_[token.id] = token.special ? kSpecial : kAdded;
  }
  tokenizer->added_ = std::make_unique<AddedTokenMatcher>(*std::move(added));

  if (!config_json.empty()) {
    const nlohmann::json config = nlohmann::json::parse(config_json, nullptr, false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError("tokenizer_config.json is not a JSON object");
    }
    tokenizer->add_bos_ = config.value("add_bos_token", false);
    tokenizer->add_eos_ = config.value("add_eos_token", false);
    for (auto [key, target] : {std::pair("bos_token", &tokenizer->bos_id_),
                               std::pair("eos_token", &tokenizer->eos_id_)}) {
      const std::optional<std::string> content = ConfigToken(config, key);
      if (!content) continue;
      *target = tokenizer->TokenToId(*content);
      if (!*target) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: ", key, " '",
                                                       *content, "' is not in the vocabulary"));
      }
    }
    if ((tokenizer->add_bos_ && !tokenizer->bos_id_) ||
        (tokenizer->add_eos_ && !tokenizer->eos_id_)) {
      return absl::InvalidArgumentError(
          "tokenizer_config.json: add_bos_token/add_eos_token without the token");
    }
  }
  return tokenizer;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text,
                                                       const EncodeOptions& options) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  absl::Status status = EncodeTo(text, options, &ids);
  if (!status.ok()) return status;
  return ids;
}

absl::Status Tokenizer::EncodeTo(absl::string_view text, const EncodeOptions& options,
                                 std::vector<int32_t>* ids) const {
  if (text.size() >= (size_t{1} << 32)) {
    return absl::InvalidArgumentError("text is 4 GiB or longer");
  }
  if (const size_t bad = tokenizer_internal::FindInvalidUtf8(text);
      bad != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("text is not valid UTF-8 at byte offset ", bad));
  }
  if (options.add_special_tokens && add_bos_) ids->push_back(*bos_id_);
  EncodeScratch& scratch = ThreadScratch();
  scratch.segments.clear();
  added_->Split(text, options.parse_special_tokens, &scratch.segments);
  for (const auto& segment : scratch.segments) {
    if (segment.token_id >= 0) {
      ids->push_back(segment.token_id);
      continue;
    }
    const absl::string_view piece = text.substr(segment.begin, segment.size);
    scratch.spans.clear();
    absl::Status status = pre_tokenizer_->Split(piece, &scratch.pre, &scratch.spans);
    if (!status.ok()) return status;
    for (const auto& span : scratch.spans) {
      bpe_->Encode(piece.substr(span.begin, span.size), &scratch.bpe, ids);
    }
  }
  if (options.add_special_tokens && add_eos_) ids->push_back(*eos_id_);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              const DecodeOptions& options) const {
  std::string bytes;
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || kind_[id] == kAbsent) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the vocabulary (size ", vocab_size(), ")"));
    }
    if (options.skip_special_tokens && kind_[id] == kSpecial) continue;
    bytes += token_bytes_[id];
  }
  std::string text;
  text.reserve(bytes.size());
  tokenizer_internal::AppendUtf8Lossy(bytes, /*final=*/true, &text);
  return text;
}

std::optional<absl::string_view> Tokenizer::TokenBytes(int32_t id, bool skip_special) const {
  if (id < 0 || id >= vocab_size() || kind_[id] == kAbsent) return std::nullopt;
  if (skip_special && kind_[id] == kSpecial) return absl::string_view();
  return absl::string_view(token_bytes_[id]);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= vocab_size() || kind_[id] == kAbsent) return std::nullopt;
  for (const AddedToken& token : added_->tokens()) {
    if (token.id == id) return token.content;
  }
  std::string token;
  for (const char b : token_bytes_[id]) {
    token += tokenizer_internal::ByteToUnicodeString(static_cast<uint8_t>(b));
  }
  return token;
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  for (const AddedToken& added : added_->tokens()) {
    if (added.content == token) return added.id;
  }
  std::string bytes;
  if (!tokenizer_internal::UnicodeToBytes(token, &bytes)) return std::nullopt;
  const int32_t id = bpe_->BytesToId(bytes);
  if (id < 0) return std::nullopt;
  return id;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && kind_[id] == kSpecial;
}

}  // namespace moeserve::engine
