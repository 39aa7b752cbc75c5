#include "expert-shard/collective_host.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/log.h"
#include "expert-shard/transport/collective_transport.h"
#include "expert-shard/transport/nccl_peer_group.h"

namespace moeserve::expert_shard {

GroupJoiner NcclGroupJoiner(int device) {
  return [device](const CollectiveJoin& join) {
    NcclGroupOptions o;
    o.unique_id = join.unique_id;
    o.rank = join.rank;
    o.size = join.size;
    o.device = device;
    o.timeout = join.timeout;
    return CreateNcclPeerGroup(o);
  };
}

CollectiveHost::CollectiveHost(ShardCompute* compute, ComputeThread* thread, int32_t shard_id,
                               int num_shards, GroupJoiner join, std::string transport_name,
                               ShardMetrics* metrics)
    : compute_(compute),
      thread_(thread),
      shard_id_(shard_id),
      num_shards_(num_shards),
      join_(std::move(join)),
      transport_name_(std::move(transport_name)),
      metrics_(metrics) {}

CollectiveHost::~CollectiveHost() {
  std::vector<std::unique_ptr<Session>> sessions;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    for (const std::unique_ptr<Session>& s : sessions_) {
      if (s->group != nullptr) s->group->Cancel();
    }
    sessions.swap(sessions_);
  }
  // A session still joining notices closing_ once its join returns (at its timeout at most).
  for (const std::unique_ptr<Session>& s : sessions) s->thread.join();
}

int CollectiveHost::active_groups() const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const std::unique_ptr<Session>& s : sessions_) n += s->done ? 0 : 1;
  return n;
}

absl::Status CollectiveHost::last_status() const {
  absl::MutexLock lock(&mu_);
  return last_status_;
}

absl::Status CollectiveHost::Join(const CollectiveJoin& join) {
  if (join.rank != shard_id_ + 1 || join.size != num_shards_ + 1 || join.unique_id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shard ", shard_id_, " of ", num_shards_, " is rank ", shard_id_ + 1, " of ",
        num_shards_ + 1, " in a collective group; asked to be rank ", join.rank, " of ",
        join.size, join.unique_id.empty() ? " with no communicator id" : ""));
  }
  std::vector<std::unique_ptr<Session>> ended;
  {
    absl::MutexLock lock(&mu_);
    if (closing_) return absl::FailedPreconditionError("the shard is shutting down");
    int active = 0;
    for (std::unique_ptr<Session>& s : sessions_) {
      if (s->done) {
        ended.push_back(std::move(s));
        continue;
      }
      if (s->id == join.unique_id) {
        return absl::FailedPreconditionError(
            absl::StrCat("shard ", shard_id_, " already joined this collective group"));
      }
      ++active;
    }
    std::erase(sessions_, nullptr);
    if (active >= kMaxGroups) {
      return absl::ResourceExhaustedError(
          absl::StrCat("shard ", shard_id_, " already serves ", active, " collective groups"));
    }
    auto session = std::make_unique<Session>();
    session->id = join.unique_id;
    Session* raw = session.get();
    session->thread = std::thread([this, raw, join] { Serve(raw, join); });
    sessions_.push_back(std::move(session));
  }
  for (const std::unique_ptr<Session>& s : ended) s->thread.join();  // already finished
  return absl::OkStatus();
}

void CollectiveHost::Serve(Session* session, const CollectiveJoin& join) {
  absl::StatusOr<std::unique_ptr<PeerGroup>> group = join_(join);
  absl::Status st = group.status();
  if (group.ok()) {
    {
      absl::MutexLock lock(&mu_);
      session->group = group->get();
      if (closing_) session->group->Cancel();
    }
    LogInfo(absl::StrCat("expert shard ", shard_id_, " joined a ", transport_name_,
                         " group as rank ", join.rank, " of ", join.size));
    using Clock = std::chrono::steady_clock;
    const int64_t n_routed = compute_->model().config().n_routed_experts;
    st = ServeCollective(
        group->get(), n_routed, [this](const ShardBatch& batch, ShardResult* result) {
          const Clock::time_point arrived = Clock::now();
          absl::Notification done;
          absl::Status s;
          thread_->Post([&] {
            s = compute_->Run(batch, result);
            done.Notify();
          });
          done.WaitForNotification();
          if (metrics_ != nullptr) {
            if (s.ok()) metrics_->CountTokens(batch);
            const double seconds = std::chrono::duration<double>(Clock::now() - arrived).count();
            const int64_t bytes = static_cast<int64_t>(batch.rows.size() * sizeof(float));
            metrics_->Exchanged(transport_name_, s, seconds, seconds, bytes, s.ok() ? bytes : 0);
          }
          return s;
        });
    {
      absl::MutexLock lock(&mu_);
      session->group = nullptr;
    }
    group->reset();  // the communicator goes before the session counts as ended
  }
  if (st.ok()) {
    LogInfo(absl::StrCat("expert shard ", shard_id_, ": a worker ended its ", transport_name_,
                         " group"));
  } else if (!absl::IsCancelled(st)) {
    LogLine("W", absl::StrCat("expert shard ", shard_id_, ": ", transport_name_,
                              " group ended: ", st.ToString()));
  }
  absl::MutexLock lock(&mu_);
  last_status_ = st;
  session->done = true;
}

}  // namespace moeserve::expert_shard
