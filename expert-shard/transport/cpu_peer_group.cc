#include "expert-shard/transport/cpu_peer_group.h"

#include <cstring>
#include <deque>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/mutex.h"

namespace moeserve::expert_shard {
namespace {

// Every rank's incoming messages, one FIFO per (sender, receiver) pair.
class Mailboxes {
 public:
  explicit Mailboxes(int size)
      : size_(size), queues_(static_cast<size_t>(size) * size), cancelled_(size, false) {}

  void Put(int from, int to, std::string message) {
    MutexLock lock(&mu_);
    queues_[Index(from, to)].push_back(std::move(message));
    cv_.NotifyAll();
  }

  // The next message from `from` to `to`: OK, Unavailable after `timeout`, or Cancelled once
  // rank `to` is cancelled.
  absl::Status Take(int from, int to, absl::Duration timeout, std::string* message) {
    MutexLock lock(&mu_);
    std::deque<std::string>* q = &queues_[Index(from, to)];
    std::vector<bool>::reference cancelled = cancelled_[to];
    auto ready = [q, &cancelled]() { return !q->empty() || cancelled; };
    if (timeout == absl::InfiniteDuration()) {
      cv_.Wait(&mu_, ready);
    } else if (!cv_.WaitWithTimeout(&mu_, timeout, ready)) {
      return absl::UnavailableError(absl::StrCat("rank ", from, " sent nothing to rank ", to,
                                                 " within ", absl::FormatDuration(timeout)));
    }
    if (cancelled) return absl::CancelledError(absl::StrCat("rank ", to, " was cancelled"));
    *message = std::move(q->front());
    q->pop_front();
    return absl::OkStatus();
  }

  bool IsCancelled(int rank) {
    MutexLock lock(&mu_);
    return cancelled_[rank];
  }

  void Cancel(int rank) {
    MutexLock lock(&mu_);
    cancelled_[rank] = true;
    cv_.NotifyAll();
  }

 private:
  size_t Index(int from, int to) const { return static_cast<size_t>(from) * size_ + to; }

  const int size_;
  // common/mutex.h rather than absl::Mutex, so that the tsan job sees this synchronisation.
  Mutex mu_;
  CondVar cv_;
  std::vector<std::deque<std::string>> queues_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> cancelled_ ABSL_GUARDED_BY(mu_);
};

class CpuPeerGroup final : public PeerGroup {
 public:
  CpuPeerGroup(std::shared_ptr<Mailboxes> boxes, int rank, int size, absl::Duration timeout)
      : boxes_(std::move(boxes)), rank_(rank), size_(size), timeout_(timeout) {}

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Duration timeout() const override { return timeout_; }
  void Cancel() override { boxes_->Cancel(rank_); }

  absl::Status RunFor(absl::Span<const PeerOp> ops, absl::Duration timeout) override {
    if (broken_.ok() && boxes_->IsCancelled(rank_)) {
      broken_ = absl::CancelledError(absl::StrCat("rank ", rank_, " was cancelled"));
    }
    if (!broken_.ok()) return broken_;
    for (const PeerOp& op : ops) {
      if (op.peer < 0 || op.peer >= size_ || op.bytes < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("peer op to rank ", op.peer, " of ", size_, " with ", op.bytes, " bytes"));
      }
    }
    // Sends never block, so posting them all first is what lets a group hold both directions.
    for (const PeerOp& op : ops) {
      if (op.kind != PeerOp::Kind::kSend) continue;
      boxes_->Put(rank_, op.peer,
                  op.bytes > 0 ? std::string(static_cast<const char*>(op.data),
                                             static_cast<size_t>(op.bytes))
                               : std::string());
    }
    std::string message;
    for (const PeerOp& op : ops) {
      if (op.kind != PeerOp::Kind::kRecv) continue;
      if (absl::Status s = boxes_->Take(op.peer, rank_, timeout, &message); !s.ok()) {
        broken_ = s;
        return broken_;
      }
      if (static_cast<int64_t>(message.size()) != op.bytes) {
        broken_ = absl::InternalError(absl::StrCat("rank ", rank_, " expected ", op.bytes,
                                                   " bytes from rank ", op.peer, ", got ",
                                                   message.size()));
        return broken_;
      }
      if (op.bytes > 0) std::memcpy(op.data, message.data(), message.size());
    }
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<Mailboxes> boxes_;
  const int rank_;
  const int size_;
  const absl::Duration timeout_;
  absl::Status broken_;  // set once; every later Run returns it
};

}  // namespace

std::vector<std::unique_ptr<PeerGroup>> MakeCpuPeerGroups(int size, absl::Duration timeout) {
  auto boxes = std::make_shared<Mailboxes>(size);
  std::vector<std::unique_ptr<PeerGroup>> groups;
  for (int r = 0; r < size; ++r) {
    groups.push_back(std::make_unique<CpuPeerGroup>(boxes, r, size, timeout));
  }
  return groups;
}

}  // namespace moeserve::expert_shard
