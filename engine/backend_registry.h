#ifndef MOESERVE_ENGINE_BACKEND_REGISTRY_H_
#define MOESERVE_ENGINE_BACKEND_REGISTRY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"

namespace moeserve::engine {

// Makes a backend from a spec: "cpu" (the reference, single-threaded), "cpu:N" (Gemm on N
// threads), "cuda" (device 0) or "cuda:N". Errors: InvalidArgument for an unknown spec;
// FailedPrecondition for "cuda" in a build without the CUDA backend; Unavailable when the CUDA
// runtime finds no usable device (no driver, no GPU). Thread-safe.
absl::StatusOr<BackendPtr> CreateBackend(const std::string& spec);

// The backend names this build can create ("cpu", and "cuda" when built with CUDA), whether or
// not a device is present.
std::vector<std::string> RegisteredBackends();

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_BACKEND_REGISTRY_H_
