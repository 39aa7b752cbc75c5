#ifndef MOESERVE_ENGINE_CPU_LINEAR_INTERNAL_H_
#define MOESERVE_ENGINE_CPU_LINEAR_INTERNAL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace moeserve::engine::cpu {

// The SIMD paths Linear can take on this CPU, best first ("avx512", "avx2", "scalar").
std::vector<std::string> AvailableLinearKernels();

// Forces the path Linear uses from now on (process-wide; for tests and benchmarks). The default
// is the best available one, or the one named by the environment variable
// MOESERVE_KERNEL=scalar|avx2|avx512. InvalidArgument for an unknown name, FailedPrecondition
// for a path this CPU lacks. Not to be called while another thread runs Linear.
absl::Status SetLinearKernel(absl::string_view name);

}  // namespace moeserve::engine::cpu

#endif  // MOESERVE_ENGINE_CPU_LINEAR_INTERNAL_H_
