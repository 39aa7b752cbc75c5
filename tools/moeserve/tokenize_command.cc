// `moeserve tokenize` and `moeserve detokenize`: the engine tokenizer from the command line.
//
//   moeserve tokenize   --model DIR (--text TEXT | --file PATH) [--no-bos] [--no-special] [--json]
//   moeserve detokenize --model DIR --ids 1,2,3 [--skip-special] [--json]
//
// tokenize prints the ids space-separated, or {"ids":[...]} with --json. BOS is added when the
// model's tokenizer_config.json asks for it, unless --no-bos. --no-special treats special-token
// text in the input as plain text. detokenize prints the text, or {"text": "..."} with --json.
// Errors go to stderr with exit code 2.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tools/moeserve/commands.h"
#include "tools/moeserve/flags.h"

namespace moeserve::cli {

int RunTokenize(const std::vector<std::string>& args);
int RunDetokenize(const std::vector<std::string>& args);

namespace {

int Fail(const absl::Status& status) {
  std::cerr << "error: " << status.message() << "\n";
  return 2;
}

absl::StatusOr<std::string> InputText(const Flags& flags) {
  const std::optional<std::string> text = flags.Get("text");
  const std::optional<std::string> file = flags.Get("file");
  if (text.has_value() == file.has_value()) {
    return absl::InvalidArgumentError("give exactly one of --text and --file");
  }
  if (text) return *text;
  std::ifstream in(*file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", *file));
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

absl::StatusOr<std::unique_ptr<engine::Tokenizer>> LoadTokenizer(const Flags& flags) {
  absl::StatusOr<std::string> dir = flags.Required("model");
  if (!dir.ok()) return dir.status();
  return engine::Tokenizer::Load(*dir);
}

}  // namespace

int RunTokenize(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> flags =
      Flags::Parse(args, {"model", "text", "file"}, {"no-bos", "no-special", "json"});
  if (!flags.ok()) return Fail(flags.status());
  absl::StatusOr<std::string> text = InputText(*flags);
  if (!text.ok()) return Fail(text.status());
  auto tokenizer = LoadTokenizer(*flags);
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  engine::EncodeOptions options;
  options.add_special_tokens = !flags->Has("no-bos");
  options.parse_special_tokens = !flags->Has("no-special");
  absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode(*text, options);
  if (!ids.ok()) return Fail(ids.status());
  if (flags->Has("json")) {
    std::cout << nlohmann::json{{"ids", *ids}}.dump() << "\n";
  } else {
    std::cout << absl::StrJoin(*ids, " ") << "\n";
  }
  return 0;
}

int RunDetokenize(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> flags = Flags::Parse(args, {"model", "ids"}, {"skip-special", "json"});
  if (!flags.ok()) return Fail(flags.status());
  if (!flags->Has("ids")) return Fail(absl::InvalidArgumentError("--ids is required"));
  absl::StatusOr<std::vector<int64_t>> wide = flags->GetIntList("ids");
  if (!wide.ok()) return Fail(wide.status());
  auto tokenizer = LoadTokenizer(*flags);
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  std::vector<int32_t> ids;
  for (int64_t id : *wide) {
    if (id < 0 || id >= (*tokenizer)->vocab_size()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "token id ", id, " is outside the vocabulary (size ", (*tokenizer)->vocab_size(), ")")));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  engine::DecodeOptions options;
  options.skip_special_tokens = flags->Has("skip-special");
  absl::StatusOr<std::string> text = (*tokenizer)->Decode(ids, options);
  if (!text.ok()) return Fail(text.status());
  if (flags->Has("json")) {
    std::cout << nlohmann::json{{"text", *text}}.dump() << "\n";
  } else {
    std::cout << *text << "\n";
  }
  return 0;
}

}  // namespace moeserve::cli
