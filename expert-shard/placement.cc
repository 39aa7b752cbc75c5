#include "expert-shard/placement.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace moeserve::expert_shard {
namespace {

absl::StatusOr<int64_t> ParseIndex(absl::string_view text, absl::string_view what,
                                   absl::string_view token) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(text, &v) || v < 0) {
    return absl::InvalidArgumentError(absl::StrCat("placement token '", token, "': ", what, " '",
                                                   text, "' is not a non-negative integer"));
  }
  return v;
}

const std::vector<int32_t>& EmptyShards() {
  static const std::vector<int32_t>* const kEmpty = new std::vector<int32_t>();
  return *kEmpty;
}

// An extra copy: experts [first, last] of `layer` (-1: every MoE layer) on `shard`.
struct Copy {
  int64_t layer;
  int64_t first, last;
  int32_t shard;
};

// Parses "[L<layer>:]<e>[-<e2>]@<shard>".
absl::StatusOr<Copy> ParseCopy(absl::string_view token, const Placement& p, int num_shards,
                               int64_t n_experts) {
  Copy c{-1, 0, 0, 0};
  absl::string_view rest = token;
  if (absl::ConsumePrefix(&rest, "L")) {
    size_t colon = rest.find(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement token '", token, "': expected L<layer>:<experts>@<shard>"));
    }
    absl::StatusOr<int64_t> l = ParseIndex(rest.substr(0, colon), "layer", token);
    if (!l.ok()) return l.status();
    if (!p.IsMoeLayer(*l)) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement token '", token, "': layer ", *l, " is not a MoE layer"));
    }
    c.layer = *l;
    rest.remove_prefix(colon + 1);
  }
  size_t at = rest.find('@');
  if (at == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "placement token '", token, "': expected replicas=R or [L<layer>:]<e>[-<e2>]@<shard>"));
  }
  absl::string_view range = rest.substr(0, at);
  absl::StatusOr<int64_t> shard = ParseIndex(rest.substr(at + 1), "shard", token);
  if (!shard.ok()) return shard.status();
  if (*shard >= num_shards) {
    return absl::InvalidArgumentError(absl::StrCat("placement token '", token, "': shard ", *shard,
                                                   " outside [0, ", num_shards, ")"));
  }
  c.shard = static_cast<int32_t>(*shard);
  size_t dash = range.find('-');
  absl::StatusOr<int64_t> first = ParseIndex(range.substr(0, dash), "expert", token);
  if (!first.ok()) return first.status();
  c.first = c.last = *first;
  if (dash != absl::string_view::npos) {
    absl::StatusOr<int64_t> last = ParseIndex(range.substr(dash + 1), "expert", token);
    if (!last.ok()) return last.status();
    c.last = *last;
  }
  if (c.first > c.last || c.last >= n_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement token '", token, "': experts outside [0, ", n_experts, ")"));
  }
  return c;
}

}  // namespace

MoeShape MoeShape::FromConfig(const engine::ModelConfig& config) {
  MoeShape s;
  s.num_layers = config.num_hidden_layers;
  s.n_routed_experts = config.n_routed_experts;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (config.IsMoeLayer(l)) s.moe_layers.push_back(l);
  }
  return s;
}

bool Placement::IsMoeLayer(int64_t layer) const {
  return layer >= 0 && layer < static_cast<int64_t>(layer_index_.size()) &&
         layer_index_[layer] >= 0;
}

std::vector<int32_t>* Placement::MutableReplicas(int64_t layer, int64_t expert) {
  return &replicas_[layer_index_[layer]][expert];
}

const std::vector<int32_t>& Placement::Replicas(int64_t layer, int64_t expert) const {
  if (!IsMoeLayer(layer) || expert < 0 || expert >= shape_.n_routed_experts) return EmptyShards();
  return replicas_[layer_index_[layer]][expert];
}

bool Placement::Holds(int32_t shard, int64_t layer, int64_t expert) const {
  const std::vector<int32_t>& r = Replicas(layer, expert);
  return std::binary_search(r.begin(), r.end(), shard);
}

std::vector<int32_t> Placement::ExpertsOf(int32_t shard, int64_t layer) const {
  std::vector<int32_t> out;
  if (!IsMoeLayer(layer)) return out;
  for (int64_t e = 0; e < shape_.n_routed_experts; ++e) {
    if (Holds(shard, layer, e)) out.push_back(static_cast<int32_t>(e));
  }
  return out;
}

absl::StatusOr<Placement> Placement::Parse(absl::string_view spec, int num_shards,
                                           const MoeShape& shape) {
  if (num_shards < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement needs at least one shard, got ", num_shards));
  }
  const int64_t n_experts = shape.n_routed_experts;
  Placement p;
  p.num_shards_ = num_shards;
  p.shape_ = shape;
  p.spec_ = std::string(spec);
  p.layer_index_.assign(std::max<int64_t>(shape.num_layers, 0), -1);
  for (int64_t l : shape.moe_layers) {
    if (l < 0 || l >= shape.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("MoE layer ", l, " outside [0, ", shape.num_layers, ")"));
    }
    p.layer_index_[l] = static_cast<int64_t>(p.replicas_.size());
    p.replicas_.emplace_back(n_experts);
  }

  std::vector<absl::string_view> tokens = absl::StrSplit(spec, ',', absl::SkipWhitespace());
  if (tokens.empty()) return absl::InvalidArgumentError("placement spec is empty");
  const absl::string_view layout = absl::StripAsciiWhitespace(tokens[0]);
  const int64_t per_range = (n_experts + num_shards - 1) / num_shards;
  auto base_shard = [&](int64_t e) -> int32_t {
    return static_cast<int32_t>(layout == "round_robin" ? e % num_shards : e / per_range);
  };
  if (layout != "round_robin" && layout != "contiguous" && layout != "explicit") {
    return absl::InvalidArgumentError(absl::StrCat(
        "placement layout '", layout, "' is not one of round_robin, contiguous, explicit"));
  }
  int64_t replicas = 1;
  std::vector<Copy> copies;
  for (size_t i = 1; i < tokens.size(); ++i) {
    const absl::string_view token = absl::StripAsciiWhitespace(tokens[i]);
    absl::string_view rest = token;
    if (absl::ConsumePrefix(&rest, "replicas=")) {
      absl::StatusOr<int64_t> r = ParseIndex(rest, "replicas", token);
      if (!r.ok()) return r.status();
      if (*r < 1 || *r > num_shards) {
        return absl::InvalidArgumentError(absl::StrCat(
            "placement token '", token, "': replicas must be in [1, ", num_shards, "]"));
      }
      replicas = *r;
      continue;
    }
    absl::StatusOr<Copy> c = ParseCopy(token, p, num_shards, n_experts);
    if (!c.ok()) return c.status();
    copies.push_back(*c);
  }
  if (layout == "explicit" && replicas != 1) {
    return absl::InvalidArgumentError("placement: replicas=R needs round_robin or contiguous");
  }

  for (int64_t l : shape.moe_layers) {
    for (int64_t e = 0; e < n_experts; ++e) {
      std::vector<int32_t>* r = p.MutableReplicas(l, e);
      if (layout == "explicit") continue;
      for (int64_t j = 0; j < replicas; ++j) {
        r->push_back(static_cast<int32_t>((base_shard(e) + j) % num_shards));
      }
    }
  }
  for (const Copy& c : copies) {
    for (int64_t l : shape.moe_layers) {
      if (c.layer >= 0 && c.layer != l) continue;
      for (int64_t e = c.first; e <= c.last; ++e) p.MutableReplicas(l, e)->push_back(c.shard);
    }
  }
  for (int64_t l : shape.moe_layers) {
    for (int64_t e = 0; e < n_experts; ++e) {
      std::vector<int32_t>* r = p.MutableReplicas(l, e);
      std::sort(r->begin(), r->end());
      r->erase(std::unique(r->begin(), r->end()), r->end());
      if (r->empty()) {
        return absl::InvalidArgumentError(absl::StrCat("placement '", spec, "': expert ", e,
                                                       " of MoE layer ", l, " is on no shard"));
      }
    }
  }
  return p;
}

}  // namespace moeserve::expert_shard
