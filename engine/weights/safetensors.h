#ifndef MOESERVE_ENGINE_WEIGHTS_SAFETENSORS_H_
#define MOESERVE_ENGINE_WEIGHTS_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/checkpoint.h"

namespace moeserve::engine {

// The parsed contents of one safetensors file held in memory (or mapped).
struct SafetensorsFile {
  std::vector<TensorInfo> tensors;  // sorted by data offset; `data` points into the input bytes
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

// Parses and validates a whole safetensors file given as bytes: the 8-byte little-endian header
// length, the JSON header and the data section. Never crashes on any input (fuzz target).
// Checks: header length within the file; header a JSON object; every entry an object with a
// dtype we load, a shape of non-negative integers and data_offsets [begin, end] with
// begin <= end and end - begin == numel * dtype size; tensors do not overlap; "__metadata__"
// an object of strings. InvalidArgument for a bad header, DataLoss when the data section is
// shorter than the offsets claim. Every message starts with `file` and names the tensor.
// The returned TensorInfo::data pointers borrow from `bytes`; `file` is copied into each.
absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::Span<const uint8_t> bytes,
                                                 absl::string_view file);

// "[4,8]" for error messages.
std::string ShapeString(const std::vector<int64_t>& shape);

// numel of `shape`; false on a negative dimension or overflow past int64.
bool CheckedNumel(const std::vector<int64_t>& shape, int64_t* numel);

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_WEIGHTS_SAFETENSORS_H_
