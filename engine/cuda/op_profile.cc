#include "engine/cuda/op_profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace moeserve::engine::cuda {

OpProfile::OpProfile() {
  const char* v = std::getenv("MOESERVE_CUDA_PROFILE");
  on_ = v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

OpProfile::~OpProfile() {
  for (const Pending& p : pending_) {
    cudaEventDestroy(p.start);
    cudaEventDestroy(p.end);
  }
  for (cudaEvent_t e : free_) cudaEventDestroy(e);
}

cudaEvent_t OpProfile::Take() {
  if (!free_.empty()) {
    cudaEvent_t e = free_.back();
    free_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  if (cudaEventCreate(&e) != cudaSuccess) return nullptr;
  return e;
}

OpProfile::Scope::Scope(OpProfile* profile, const char* name, cudaStream_t stream)
    : profile_(profile), name_(name), stream_(stream), active_(profile->on_ && !profile->paused_) {
  if (!active_) return;
  host_start_ = std::chrono::steady_clock::now();
  start_ = profile_->Take();
  if (start_ != nullptr) cudaEventRecord(start_, stream_);
}

OpProfile::Scope::~Scope() {
  if (!active_) return;
  Total& t = profile_->totals_[name_];
  ++t.calls;
  t.host_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                         host_start_)
                   .count();
  if (start_ == nullptr) return;
  cudaEvent_t end = profile_->Take();
  if (end == nullptr) {
    profile_->free_.push_back(start_);
    return;
  }
  cudaEventRecord(end, stream_);
  profile_->pending_.push_back({name_, start_, end});
  // Bound the events in flight between synchronisations.
  if (profile_->pending_.size() > 4096) {
    cudaEventSynchronize(profile_->pending_.front().end);
    profile_->Collect();
  }
}

void OpProfile::Collect() {
  if (!on_) return;
  std::vector<Pending> still;
  for (const Pending& p : pending_) {
    if (cudaEventQuery(p.end) != cudaSuccess) {
      cudaGetLastError();  // cudaErrorNotReady is not sticky; clear it for later callers
      still.push_back(p);
      continue;
    }
    float ms = 0;
    if (cudaEventElapsedTime(&ms, p.start, p.end) == cudaSuccess) totals_[p.name].device_ms += ms;
    free_.push_back(p.start);
    free_.push_back(p.end);
  }
  pending_ = std::move(still);
}

std::string OpProfile::Report() const {
  std::vector<std::pair<std::string, Total>> rows(totals_.begin(), totals_.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.device_ms > b.second.device_ms; });
  std::string out = "cuda op profile (MOESERVE_CUDA_PROFILE): op, calls, device ms, host ms\n";
  double device = 0, host = 0;
  char line[256];
  for (const auto& [name, t] : rows) {
    std::snprintf(line, sizeof(line), "  %-28s %10ld %12.3f %12.3f\n", name.c_str(), t.calls,
                  t.device_ms, t.host_ms);
    out += line;
    device += t.device_ms;
    host += t.host_ms;
  }
  std::snprintf(line, sizeof(line), "  %-28s %10s %12.3f %12.3f\n", "total", "", device, host);
  out += line;
  return out;
}

}  // namespace moeserve::engine::cuda
