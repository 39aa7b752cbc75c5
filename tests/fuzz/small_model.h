#ifndef MOESERVE_TESTS_FUZZ_SMALL_MODEL_H_
#define MOESERVE_TESTS_FUZZ_SMALL_MODEL_H_

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/testing/tiny_model.h"
#include "tools/moeserve/mkmodel.h"

namespace moeserve::fuzz {

// A small random checkpoint with weights (tests/testing/tiny_model.h SmallConfig: vocabulary
// 384, context 512), written once per process into a temporary folder removed at exit.
inline const std::string& SmallModelDir() {
  static const std::string* dir = [] {
    auto* d = new std::string(moeserve::testing::TempDir("fuzz_small_model"));
    absl::Status s = cli::WriteRandomCheckpoint(moeserve::testing::SmallConfig(), *d, 21, false);
    if (!s.ok()) {
      std::fprintf(stderr, "fuzz: cannot write the small model: %s\n", s.ToString().c_str());
      std::abort();
    }
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(*dir, ec);
    });
    return d;
  }();
  return *dir;
}

}  // namespace moeserve::fuzz

#endif  // MOESERVE_TESTS_FUZZ_SMALL_MODEL_H_
