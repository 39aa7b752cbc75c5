// libFuzzer target: the safetensors parser (engine/weights/safetensors.h) on any bytes.
// Properties: it never crashes; on success every tensor's bytes lie inside the input, tensors are
// sorted by offset and do not overlap, and nbytes matches shape x dtype size.
#include <cstddef>
#include <cstdint>

#include "absl/types/span.h"
#include "engine/dtype.h"
#include "engine/weights/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using moeserve::engine::ParseSafetensors;
  absl::StatusOr<moeserve::engine::SafetensorsFile> file =
      ParseSafetensors(absl::MakeConstSpan(data, size), "fuzz.safetensors");
  if (!file.ok()) {
    MOESERVE_FUZZ_ASSERT(!file.status().message().empty(), "an error without a message");
    return 0;
  }
  const uint8_t* end = data + size;
  const uint8_t* previous_end = nullptr;
  for (const moeserve::engine::TensorInfo& t : file->tensors) {
    int64_t numel = 0;
    MOESERVE_FUZZ_ASSERT(moeserve::engine::CheckedNumel(t.shape, &numel), t.name);
    MOESERVE_FUZZ_ASSERT(t.nbytes == static_cast<uint64_t>(numel) *
                                         moeserve::engine::DTypeSize(t.dtype),
                         t.name);
    if (t.nbytes == 0) continue;
    MOESERVE_FUZZ_ASSERT(t.data >= data && t.data <= end, t.name);
    MOESERVE_FUZZ_ASSERT(t.nbytes <= static_cast<uint64_t>(end - t.data), t.name);
    MOESERVE_FUZZ_ASSERT(previous_end == nullptr || t.data >= previous_end, t.name);
    previous_end = t.data + t.nbytes;
  }
  return 0;
}
