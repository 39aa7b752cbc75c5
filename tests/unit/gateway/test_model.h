#ifndef MOESERVE_TESTS_UNIT_GATEWAY_TEST_MODEL_H_
#define MOESERVE_TESTS_UNIT_GATEWAY_TEST_MODEL_H_

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "gateway/model_context.h"
#include "tools/moeserve/mkmodel.h"

namespace moeserve::gateway::testing {

// A model folder without weights (tokenizer, R1 chat template, config.json of the tiny preset)
// in a fresh temporary directory; made once per test binary.
inline const std::string& TestModelDir() {
  static const std::string* dir = [] {
    char tmpl[] = "/tmp/moeserve_gateway_model_XXXXXX";
    const char* made = mkdtemp(tmpl);
    auto* d = new std::string(made != nullptr ? made : "");
    absl::StatusOr<nlohmann::json> config = cli::PresetConfig("tiny");
    if (config.ok()) {
      absl::Status s = cli::WriteRandomCheckpoint(*config, *d, 1, false, int64_t{2} << 30,
                                                  /*weights=*/false, cli::DefaultTokenizerDir());
      if (!s.ok()) d->clear();
    }
    std::atexit([] {
      std::error_code ec;
      if (!dir->empty()) std::filesystem::remove_all(*dir, ec);
    });
    return d;
  }();
  return *dir;
}

// The context of the test model, served as `name`.
inline std::unique_ptr<ModelContext> LoadTestModel(const std::string& name = "tiny-r1",
                                                   int32_t default_max_tokens = 64) {
  absl::StatusOr<std::unique_ptr<ModelContext>> m =
      ModelContext::Load(TestModelDir(), name, default_max_tokens);
  return m.ok() ? std::move(*m) : nullptr;
}

}  // namespace moeserve::gateway::testing

#endif  // MOESERVE_TESTS_UNIT_GATEWAY_TEST_MODEL_H_
