#ifndef MOESERVE_ROUTER_POLICY_H_
#define MOESERVE_ROUTER_POLICY_H_

#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace moeserve::router {

// Workers are named by their index in the registry (stable for the router's lifetime).
using WorkerId = int32_t;
using WorkerIdSet = absl::flat_hash_set<WorkerId>;

// One worker as the policies see it: a snapshot taken by the WorkerRegistry.
struct WorkerLoad {
  WorkerId id = 0;
  bool can_prefill = false;
  bool can_decode = false;
  bool healthy = false;
  int32_t running = 0;
  int32_t waiting = 0;
  int64_t kv_blocks_free = 0;
  int64_t kv_blocks_total = 0;
};

// For each worker, how many leading blocks of this prompt it computed recently (PrefixIndex).
// Workers that are absent have no cached prefix.
using PrefixHits = absl::flat_hash_map<WorkerId, int64_t>;

struct PrefillPolicyOptions {
  int64_t block_tokens = 16;  // tokens per KV block
  // Weight of load against prefix reuse. A queued or running request on a worker costs
  // alpha * load_cost_tokens prompt tokens of recomputation (see PickPrefillWorker).
  double alpha = 1.0;
  int64_t load_cost_tokens = 256;
};

// Chooses the prefill worker. Among workers that are healthy, can prefill and are not in
// `excluded`, maximises
//   score = cached_blocks * block_tokens - alpha * (running + waiting) * load_cost_tokens
// i.e. the prompt tokens a worker would not recompute, minus the work queued ahead of this
// request expressed in tokens. Ties go to the lower load (running + waiting), then to the lower id.
// Pure: no clock, no I/O. UNAVAILABLE when no worker is eligible.
absl::StatusOr<WorkerId> PickPrefillWorker(absl::Span<const WorkerLoad> workers,
                                           const PrefixHits& hits,
                                           const PrefillPolicyOptions& options,
                                           const WorkerIdSet& excluded = {});

// Chooses the decode worker among healthy decode-capable workers not in `excluded`: fewest
// running + waiting, then most free KV blocks, then the lowest id. UNAVAILABLE when none is
// eligible.
absl::StatusOr<WorkerId> PickDecodeWorker(absl::Span<const WorkerLoad> workers,
                                          const WorkerIdSet& excluded = {});

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_POLICY_H_
