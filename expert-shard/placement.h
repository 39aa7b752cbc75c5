#ifndef MOESERVE_EXPERT_SHARD_PLACEMENT_H_
#define MOESERVE_EXPERT_SHARD_PLACEMENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/config.h"

namespace moeserve::expert_shard {

// The MoE part of a model's shape: what a placement has to cover.
struct MoeShape {
  int64_t num_layers = 0;           // all transformer layers (dense ones included)
  int64_t n_routed_experts = 0;     // routed experts per MoE layer
  std::vector<int64_t> moe_layers;  // ascending layer indices that are MoE layers

  static MoeShape FromConfig(const engine::ModelConfig& config);
};

// Which shard holds which routed expert of which MoE layer. Pure and immutable; thread-safe.
//
// Spec grammar (comma-separated tokens, the first one is the layout):
//   round_robin            expert e of every MoE layer on shard e % N
//   contiguous             experts dealt in contiguous ranges of ceil(E / N)
//   explicit               nothing by default; the items below must cover every expert
// followed by any number of:
//   replicas=R             every expert also on the next R-1 shards ((s + 1) % N, ...)
//   [L<layer>:]<e>[-<e2>]@<shard>
//                          an extra copy of experts e..e2 (inclusive) of one layer, or of every
//                          MoE layer when L<layer>: is left out, on <shard>
// Examples: "round_robin", "contiguous,replicas=2", "contiguous,3@1,L2:0-3@0",
// "explicit,0-7@0,8-15@1".
class Placement {
 public:
  // InvalidArgument, naming the offending token, for: an unknown layout or token, num_shards < 1,
  // a shard id outside [0, num_shards), an expert outside [0, E), a layer that is not a MoE
  // layer, replicas outside [1, num_shards], or an expert of a MoE layer that no shard holds.
  static absl::StatusOr<Placement> Parse(absl::string_view spec, int num_shards,
                                         const MoeShape& shape);

  int num_shards() const { return num_shards_; }
  const MoeShape& shape() const { return shape_; }
  const std::string& spec() const { return spec_; }
  bool IsMoeLayer(int64_t layer) const;

  // The shards holding `expert` of `layer`, ascending; empty for a non-MoE layer or an id out of
  // range.
  const std::vector<int32_t>& Replicas(int64_t layer, int64_t expert) const;
  bool Holds(int32_t shard, int64_t layer, int64_t expert) const;
  // The experts of `layer` that `shard` holds, ascending.
  std::vector<int32_t> ExpertsOf(int32_t shard, int64_t layer) const;

 private:
  Placement() = default;
  std::vector<int32_t>* MutableReplicas(int64_t layer, int64_t expert);

  int num_shards_ = 0;
  MoeShape shape_;
  std::string spec_;
  std::vector<int64_t> layer_index_;                         // [layer] -> index in replicas_, or -1
  std::vector<std::vector<std::vector<int32_t>>> replicas_;  // [moe layer][expert] -> shards
};

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_PLACEMENT_H_
