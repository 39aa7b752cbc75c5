#ifndef MOESERVE_TESTS_UNIT_ENGINE_MODEL_SMALL_MODEL_H_
#define MOESERVE_TESTS_UNIT_ENGINE_MODEL_SMALL_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>

#include "engine/model.h"
#include "gtest/gtest.h"
#include "tests/testing/tiny_model.h"
#include "tools/moeserve/mkmodel.h"

namespace moeserve::testing {

// A fresh random checkpoint of SmallConfig(patch) in its own temporary folder, loaded on 2
// threads; null (with a test failure) when writing or loading fails.
inline std::unique_ptr<engine::Model> LoadSmall(const std::string& name,
                                                engine::ComputeDType compute,
                                        const nlohmann::json& patch = nlohmann::json::object(),
                                        bool fp8 = false, uint64_t seed = 7) {
  std::string dir = TempDir(name);
  absl::Status st = cli::WriteRandomCheckpoint(SmallConfig(patch), dir, seed, fp8);
  EXPECT_TRUE(st.ok()) << st;
  engine::ModelOptions o;
  o.compute = compute;
  o.threads = 2;
  absl::StatusOr<std::unique_ptr<engine::Model>> m = engine::Model::Load(dir, o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_UNIT_ENGINE_MODEL_SMALL_MODEL_H_
