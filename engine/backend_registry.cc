#include "engine/backend_registry.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_backend.h"

// The one place in the tree that knows whether the CUDA backend was built (STYLE.md): CMake
// defines MOESERVE_HAVE_CUDA=1 on this file only.
#if MOESERVE_HAVE_CUDA
#include "engine/cuda/cuda_backend.h"

namespace moeserve::engine {
namespace {
constexpr bool kHaveCuda = true;
absl::StatusOr<BackendPtr> MakeCuda(int device) { return cuda::CreateCudaBackend(device); }
}  // namespace
}  // namespace moeserve::engine
#else
namespace moeserve::engine {
namespace {
constexpr bool kHaveCuda = false;
absl::StatusOr<BackendPtr> MakeCuda(int /*device*/) {
  return absl::FailedPreconditionError(
      "backend 'cuda': this build has no CUDA backend (configure with nvcc installed, or "
      "-DMOESERVE_ENABLE_CUDA=ON)");
}
}  // namespace
}  // namespace moeserve::engine
#endif

namespace moeserve::engine {
namespace {

// "name" -> fallback; "name:N" -> N. InvalidArgument for anything else.
absl::StatusOr<int> ParseIndex(const std::string& spec, absl::string_view name, int fallback) {
  if (spec == name) return fallback;
  int n = 0;
  if (!absl::SimpleAtoi(absl::string_view(spec).substr(name.size() + 1), &n) || n < 0) {
    return absl::InvalidArgumentError(absl::StrCat("backend spec '", spec, "': bad index"));
  }
  return n;
}

}  // namespace

absl::StatusOr<BackendPtr> CreateBackend(const std::string& spec) {
  if (spec == "cpu" || absl::StartsWith(spec, "cpu:")) {
    absl::StatusOr<int> threads = ParseIndex(spec, "cpu", 1);
    if (!threads.ok()) return threads.status();
    return BackendPtr(new cpu::CpuBackend(*threads));
  }
  if (spec == "cuda" || absl::StartsWith(spec, "cuda:")) {
    absl::StatusOr<int> device = ParseIndex(spec, "cuda", 0);
    if (!device.ok()) return device.status();
    return MakeCuda(*device);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend '", spec, "' (known: ", kHaveCuda ? "cpu, cuda" : "cpu", ")"));
}

std::vector<std::string> RegisteredBackends() {
  std::vector<std::string> names = {"cpu"};
  if (kHaveCuda) names.push_back("cuda");
  return names;
}

}  // namespace moeserve::engine
