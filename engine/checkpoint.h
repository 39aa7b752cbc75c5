#ifndef MOESERVE_ENGINE_CHECKPOINT_H_
#define MOESERVE_ENGINE_CHECKPOINT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "engine/config.h"
#include "engine/dtype.h"

namespace moeserve::engine {

// One tensor of a memory-mapped safetensors file. `data` points into the mapping, which lives as
// long as the Checkpoint that handed it out.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  std::string file;  // the file it came from, for error messages
};

// Which tensors a process needs. The attention side (a worker) wants everything but the routed
// experts; an expert shard wants only the routed experts it owns. Default: everything.
struct TensorFilter {
  bool attention_side = true;
  // Routed experts to load; an empty function means all of them.
  std::function<bool(int64_t layer, int64_t expert)> want_expert;

  // True when the tensor of `layer` (-1: not in a layer) and `expert` (nullopt: not a routed
  // expert) is wanted.
  bool Wants(int64_t layer, std::optional<int64_t> expert) const {
    if (!expert) return attention_side;
    return !want_expert || want_expert(layer, *expert);
  }
};

// The tensor a config requires: name, shape, and whether it may be stored as F8_E4M3 with a
// `<name>_scale_inv` F32 block-scale tensor of shape [ceil(rows/128), ceil(cols/128)].
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
  bool quantizable = false;
  int64_t layer = -1;                  // -1 for embedding, final norm, lm_head
  std::optional<int64_t> expert;       // set for routed-expert weights
};

// Every tensor a model of this config has, in a stable order (Hugging Face names).
std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config);

// A Hugging Face checkpoint directory: `model.safetensors`, or shards listed by
// `model.safetensors.index.json`. Files are memory-mapped read-only.
//
// Errors (all name the file, and the tensor where there is one): NotFound for a missing directory
// or file; InvalidArgument ("DataLoss" for truncated data) for a bad header, a dtype we do not
// load, overlapping or out-of-range data offsets, an index naming a missing shard.
// Thread-safety: immutable after Open; safe to read from many threads.
class Checkpoint {
 public:
  // Opens the directory. When `filter` is given and the checkpoint is sharded, only shards that
  // hold at least one wanted tensor are mapped.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir,
                                                          const ModelConfig* config = nullptr,
                                                          const TensorFilter* filter = nullptr);
  virtual ~Checkpoint() = default;

  // nullptr when absent (or in a shard that was not mapped).
  virtual const TensorInfo* Find(absl::string_view name) const = 0;
  // All tensor names the checkpoint declares (every shard, mapped or not).
  virtual std::vector<std::string> Names() const = 0;
  virtual const std::string& dir() const = 0;

  // The file that declares `name` (full path; also for tensors in unmapped shards), or "" when
  // no file declares it. For error messages.
  virtual std::string FileOf(absl::string_view name) const {
    const TensorInfo* t = Find(name);
    return t ? t->file : std::string();
  }
  // Full paths of the files that are memory-mapped, sorted (tests check shard filtering).
  virtual std::vector<std::string> MappedFiles() const { return {}; }
};

// Checks the checkpoint against the config: every wanted expected tensor is present with its
// shape and a loadable dtype; F8_E4M3 tensors have a scale tensor of the right shape; nothing
// is unexpected (MTP layers at index >= num_hidden_layers are allowed and ignored).
// InvalidArgument naming the tensor and the file on the first problem.
absl::Status ValidateCheckpoint(const Checkpoint& checkpoint, const ModelConfig& config,
                                const TensorFilter& filter);

// Writes tensors as one safetensors file (header padded to 8 bytes, data in the given order).
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // little-endian, exactly numel * DTypeSize(dtype)
};
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors);

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_CHECKPOINT_H_
