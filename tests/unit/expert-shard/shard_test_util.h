#ifndef MOESERVE_TESTS_UNIT_EXPERT_SHARD_SHARD_TEST_UTIL_H_
#define MOESERVE_TESTS_UNIT_EXPERT_SHARD_SHARD_TEST_UTIL_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "expert-shard/placement.h"
#include "tests/testing/tiny_model.h"
#include "tools/moeserve/mkmodel.h"

namespace moeserve::expert_shard::testing {

// A small random checkpoint shared by the tests of one binary (written once).
inline const std::string& SmallModelDir() {
  static const std::string* const kDir = [] {
    auto* dir = new std::string(moeserve::testing::TempDir("expert_shard"));
    absl::Status s = cli::WriteRandomCheckpoint(moeserve::testing::SmallConfig(), *dir, 23, false);
    if (!s.ok()) *dir = "";  // tests fail loading it, with the path in the error
    return dir;
  }();
  return *kDir;
}

inline absl::StatusOr<std::unique_ptr<engine::Model>> LoadPart(
    engine::ComputeDType compute, bool attention_side,
    std::function<bool(int64_t, int64_t)> want_expert, int threads = 1) {
  engine::ModelOptions o;
  o.compute = compute;
  o.threads = threads;
  o.filter.attention_side = attention_side;
  o.filter.want_expert = std::move(want_expert);
  return engine::Model::Load(SmallModelDir(), o);
}

// The worker side: everything but the routed experts.
inline absl::StatusOr<std::unique_ptr<engine::Model>> LoadWorker(engine::ComputeDType compute) {
  return LoadPart(
      compute, true, [](int64_t, int64_t) { return false; }, 2);
}

// Shard `id`'s experts under `placement`, no attention weights.
inline absl::StatusOr<std::unique_ptr<engine::Model>> LoadShard(engine::ComputeDType compute,
                                                                const Placement& placement,
                                                                int32_t id) {
  return LoadPart(compute, false,
                  [&placement, id](int64_t l, int64_t e) { return placement.Holds(id, l, e); });
}

inline int32_t Argmax(const std::vector<float>& v) {
  int32_t best = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] > v[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

// Prefills several prompts in one batch, then decodes `decode_steps` greedy tokens for all of
// them together; returns every logits vector produced, in (step, sequence) order.
inline absl::StatusOr<std::vector<std::vector<float>>> RunBatch(
    const engine::Model& model, engine::ExpertExecutor* experts,
    const std::vector<std::vector<int32_t>>& prompts, int decode_steps) {
  engine::EngineOptions eo;
  eo.kv_cache_tokens = 1024;
  engine::Engine e(&model, eo);
  std::vector<engine::SeqId> seqs;
  for (const auto& p : prompts) {
    absl::StatusOr<engine::SeqId> s = e.Add(p);
    if (!s.ok()) return s.status();
    seqs.push_back(*s);
  }
  std::vector<std::vector<float>> all;
  std::map<engine::SeqId, std::vector<float>> last;
  for (int step = 0; step <= decode_steps; ++step) {
    if (step > 0) {
      for (engine::SeqId s : seqs) {
        absl::Status st = e.Append(s, Argmax(last[s]));
        if (!st.ok()) return st;
      }
    }
    last.clear();
    for (int guard = 0; last.size() < seqs.size(); ++guard) {
      if (guard > 100) return absl::InternalError("sequences never finished");
      absl::StatusOr<std::vector<engine::StepOutput>> out = e.Step(experts);
      if (!out.ok()) return out.status();
      for (engine::StepOutput& o : *out) last[o.seq] = std::move(o.logits);
    }
    for (engine::SeqId s : seqs) all.push_back(last[s]);
  }
  return all;
}

inline std::vector<std::vector<int32_t>> Prompts() {
  return {{3, 1, 4, 1, 5, 9, 2, 6}, {0, 17, 33, 250, 9, 100, 7}, {42}, {5, 5, 5, 5}};
}

}  // namespace moeserve::expert_shard::testing

#endif  // MOESERVE_TESTS_UNIT_EXPERT_SHARD_SHARD_TEST_UTIL_H_
