// ValidateCheckpoint: the checkpoint holds exactly the tensors a config needs.
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "engine/checkpoint.h"
#include "engine/weights/safetensors.h"
#include "engine/weights/tensor_names.h"

namespace moeserve::engine {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

absl::Status Missing(absl::string_view name, const Checkpoint& checkpoint,
                     absl::string_view why = "") {
  return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is missing", why,
                                                 " (checkpoint ", checkpoint.dir(), ")"));
}

absl::Status Bad(const TensorInfo& t, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor '", t.name, "' ", what));
}

absl::Status CheckExpected(const ExpectedTensor& e, const Checkpoint& checkpoint) {
  const TensorInfo* t = checkpoint.Find(e.name);
  if (t == nullptr) return Missing(e.name, checkpoint);
  if (t->shape != e.shape) {
    return Bad(*t, absl::StrCat("has shape ", ShapeString(t->shape), ", expected ",
                                ShapeString(e.shape)));
  }
  if (t->dtype == DType::kF8E4M3 && !e.quantizable) {
    return Bad(*t, "has dtype F8_E4M3, but only Linear weights may be stored as FP8");
  }
  const std::string scale_name = absl::StrCat(e.name, kScaleInvSuffix);
  const TensorInfo* scale = checkpoint.Find(scale_name);
  if (t->dtype != DType::kF8E4M3) {
    if (scale != nullptr) {
      return Bad(*scale, absl::StrCat("is unexpected: '", e.name, "' is ", DTypeName(t->dtype),
                                      ", not F8_E4M3"));
    }
    return absl::OkStatus();
  }
  if (scale == nullptr) {
    return Missing(scale_name, checkpoint,
                   absl::StrCat(" (block scales of F8_E4M3 tensor '", e.name, "')"));
  }
  if (scale->dtype != DType::kF32) {
    return Bad(*scale, absl::StrCat("has dtype ", DTypeName(scale->dtype), ", expected F32"));
  }
  std::vector<int64_t> want = {CeilDiv(e.shape[0], 128), CeilDiv(e.shape[1], 128)};
  if (scale->shape != want) {
    return Bad(*scale, absl::StrCat("has shape ", ShapeString(scale->shape), ", expected ",
                                    ShapeString(want), " (128x128 blocks of ",
                                    ShapeString(e.shape), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateCheckpoint(const Checkpoint& checkpoint, const ModelConfig& config,
                                const TensorFilter& filter) {
  const std::vector<ExpectedTensor> expected = ExpectedTensors(config);
  absl::flat_hash_map<std::string, const ExpectedTensor*> by_name;
  for (const ExpectedTensor& e : expected) by_name[e.name] = &e;

  for (const ExpectedTensor& e : expected) {
    if (!filter.Wants(e.layer, e.expert)) continue;
    absl::Status s = CheckExpected(e, checkpoint);
    if (!s.ok()) return s;
  }

  for (const std::string& name : checkpoint.Names()) {
    if (by_name.contains(name)) continue;
    absl::string_view base = name;
    if (absl::ConsumeSuffix(&base, kScaleInvSuffix)) {
      auto it = by_name.find(base);
      if (it != by_name.end()) {
        // Wanted bases had their scales checked above. Unwanted ones cannot be judged without
        // mapping their shard; an F8 scale for a non-quantizable tensor is always wrong.
        if (it->second->quantizable) continue;
        return absl::InvalidArgumentError(absl::StrCat(
            checkpoint.FileOf(name), ": unexpected tensor '", name, "': '", base,
            "' is never stored as F8_E4M3"));
      }
    }
    TensorLocation loc = LocateTensor(name);
    if (config.num_nextn_predict_layers > 0 && loc.layer >= config.num_hidden_layers) {
      continue;  // multi-token-prediction layers: present in V3 checkpoints, never run
    }
    return absl::InvalidArgumentError(
        absl::StrCat(checkpoint.FileOf(name), ": unexpected tensor '", name, "' (not part of a ",
                     config.model_type, " model with this config)"));
  }
  return absl::OkStatus();
}

}  // namespace moeserve::engine
