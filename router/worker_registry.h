#ifndef MOESERVE_ROUTER_WORKER_REGISTRY_H_
#define MOESERVE_ROUTER_WORKER_REGISTRY_H_

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "moeserve/v1/router.pb.h"
#include "router/policy.h"
#include "router/worker_client.h"

namespace moeserve::router {

// A worker as configured: its address and the phases it serves.
struct WorkerEndpoint {
  std::string address;
  bool prefill = false;
  bool decode = false;
};

// Merges the --prefill and --decode lists: an address in both serves both. INVALID_ARGUMENT for
// an empty or malformed address (not host:port) or a duplicate within one list.
absl::StatusOr<std::vector<WorkerEndpoint>> MergeWorkerLists(
    const std::vector<std::string>& prefill, const std::vector<std::string>& decode);

struct RegistryOptions {
  absl::Duration poll_interval = absl::Seconds(1);
  absl::Duration poll_deadline = absl::Milliseconds(500);  // per GetLoad call
  // A worker whose last successful poll is older than this is unhealthy.
  absl::Duration stale_after = absl::Seconds(5);
};

using WorkerClientFactory = std::function<WorkerClientPtr(const WorkerEndpoint&)>;

// The static set of workers (WorkerId = index in the endpoint list) with their last known load and
// health. Health: a worker starts healthy (optimistically, so the router serves before the first
// poll); a failed GetLoad or a ReportFailure from the relay makes it unhealthy until a poll
// succeeds again; and a worker not seen for stale_after is unhealthy.
//
// PollOnce() is the whole refresh, so tests drive it by hand with a fake clock and fake clients;
// Start() runs it every poll_interval on a background thread. Thread-safe.
class WorkerRegistry {
 public:
  WorkerRegistry(std::vector<WorkerEndpoint> endpoints, const WorkerClientFactory& factory,
                 RegistryOptions options, const Clock* clock);
  ~WorkerRegistry();  // Stop()
  WorkerRegistry(const WorkerRegistry&) = delete;
  WorkerRegistry& operator=(const WorkerRegistry&) = delete;

  size_t size() const { return workers_.size(); }
  // The policies' view of every worker, in id order.
  std::vector<WorkerLoad> Snapshot() const;
  // Valid for 0 <= id < size(); never null.
  WorkerClientPtr Client(WorkerId id) const { return workers_[id].client; }
  const std::string& Address(WorkerId id) const { return workers_[id].endpoint.address; }

  // Calls GetLoad on every worker (one at a time, each with poll_deadline) and records the result.
  void PollOnce();
  // The relay saw this worker fail (UNAVAILABLE, ...): unhealthy until the next successful poll.
  void ReportFailure(WorkerId id);

  // For Router.ListWorkers.
  std::vector<v1::WorkerStatus> List() const;

  // Starts / stops the background poller. Stop is idempotent and joins the thread.
  void Start();
  void Stop();

 private:
  struct Worker {
    WorkerEndpoint endpoint;
    WorkerClientPtr client;
  };
  struct State {
    v1::WorkerLoad load;
    bool failed = false;  // last poll failed, or a failure was reported since
    absl::Time last_ok;
  };
  bool Healthy(const State& state, absl::Time now) const;

  const std::vector<Worker> workers_;  // immutable after construction
  const RegistryOptions options_;
  const Clock* clock_;
  RealClock real_clock_;

  mutable absl::Mutex mu_;
  std::vector<State> states_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread poller_;
};

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_WORKER_REGISTRY_H_
