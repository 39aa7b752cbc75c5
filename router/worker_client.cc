#include "router/worker_client.h"

#include <utility>

namespace moeserve::router {

void CancelToken::Cancel() {
  absl::MutexLock lock(&mu_);
  if (cancelled_) return;
  cancelled_ = true;
  if (callback_) callback_();
}

bool CancelToken::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

void CancelToken::SetCallback(std::function<void()> callback) {
  absl::MutexLock lock(&mu_);
  callback_ = std::move(callback);
  if (cancelled_ && callback_) callback_();
}

}  // namespace moeserve::router
