#ifndef MOESERVE_ENGINE_CUDA_OP_PROFILE_H_
#define MOESERVE_ENGINE_CUDA_OP_PROFILE_H_

#include <cuda_runtime.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace moeserve::engine::cuda {

// MOESERVE_CUDA_PROFILE=1: each op's device time (a pair of CUDA events around it on the
// backend's stream) and host time (the op call itself, enqueueing included), summed by op name
// and printed to stderr when the backend goes away. Device time well below the step's wall time
// with host time close to it means the step is bound by the host (launches, copies, waits).
// Off by default: no events and no clock reads. One thread at a time, like the backend.
class OpProfile {
 public:
  OpProfile();
  ~OpProfile();
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  bool on() const { return on_; }
  // While paused (a graph capture: its calls enqueue nothing) scopes record nothing.
  void Pause(bool paused) { paused_ = paused; }

  // Times one op from construction to destruction; does nothing when profiling is off.
  class Scope {
   public:
    Scope(OpProfile* profile, const char* name, cudaStream_t stream);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    OpProfile* profile_;
    const char* name_;
    cudaStream_t stream_;
    bool active_ = false;
    cudaEvent_t start_ = nullptr;
    std::chrono::steady_clock::time_point host_start_;
  };

  // Adds the device times of the ops whose end has passed (after a synchronisation, all).
  void Collect();
  // One line per op name, the largest device time first.
  std::string Report() const;

 private:
  struct Pending {
    const char* name;
    cudaEvent_t start;
    cudaEvent_t end;
  };
  struct Total {
    long calls = 0;
    double device_ms = 0;
    double host_ms = 0;
  };
  cudaEvent_t Take();

  bool on_ = false;
  bool paused_ = false;
  std::vector<Pending> pending_;
  std::vector<cudaEvent_t> free_;
  std::map<std::string, Total> totals_;
};

}  // namespace moeserve::engine::cuda

#endif  // MOESERVE_ENGINE_CUDA_OP_PROFILE_H_
