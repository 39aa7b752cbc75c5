#include "router/policy.h"

#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moeserve::router {
namespace {

int64_t Load(const WorkerLoad& w) { return int64_t{w.running} + w.waiting; }

absl::Status NoneEligible(const char* phase, size_t total, size_t excluded) {
  return absl::UnavailableError(absl::StrCat("no eligible ", phase, " worker (", total,
                                             " known, ", excluded, " excluded after failures)"));
}

}  // namespace

absl::StatusOr<WorkerId> PickPrefillWorker(absl::Span<const WorkerLoad> workers,
                                           const PrefixHits& hits,
                                           const PrefillPolicyOptions& options,
                                           const WorkerIdSet& excluded) {
  std::optional<WorkerId> best;
  double best_score = 0;
  int64_t best_load = 0;
  for (const WorkerLoad& w : workers) {
    if (!w.healthy || !w.can_prefill || excluded.contains(w.id)) continue;
    auto it = hits.find(w.id);
    const int64_t cached_blocks = it == hits.end() ? 0 : it->second;
    const double score =
        static_cast<double>(cached_blocks * options.block_tokens) -
        options.alpha * static_cast<double>(Load(w) * options.load_cost_tokens);
    const bool better =
        !best.has_value() || score > best_score ||
        (score == best_score && (Load(w) < best_load || (Load(w) == best_load && w.id < *best)));
    if (better) {
      best = w.id;
      best_score = score;
      best_load = Load(w);
    }
  }
  if (!best.has_value()) return NoneEligible("prefill", workers.size(), excluded.size());
  return *best;
}

absl::StatusOr<WorkerId> PickDecodeWorker(absl::Span<const WorkerLoad> workers,
                                          const WorkerIdSet& excluded) {
  const WorkerLoad* best = nullptr;
  for (const WorkerLoad& w : workers) {
    if (!w.healthy || !w.can_decode || excluded.contains(w.id)) continue;
    const bool better =
        best == nullptr || Load(w) < Load(*best) ||
        (Load(w) == Load(*best) &&
         (w.kv_blocks_free > best->kv_blocks_free ||
          (w.kv_blocks_free == best->kv_blocks_free && w.id < best->id)));
    if (better) best = &w;
  }
  if (best == nullptr) return NoneEligible("decode", workers.size(), excluded.size());
  return best->id;
}

}  // namespace moeserve::router
