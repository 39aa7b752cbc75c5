#ifndef MOESERVE_ROUTER_WORKER_REGISTRY_H_
#define MOESERVE_ROUTER_WORKER_REGISTRY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "moeserve/v1/router.pb.h"
#include "router/policy.h"
#include "router/worker_client.h"

namespace moeserve::router {

// A worker as configured: its address and the phases it serves. The address is either a worker's
// `host:port`, or `dns:NAME:PORT`: a discovery source, re-resolved while the router runs, each
// address NAME resolves to being a worker at PORT (a Kubernetes headless Service lists the ready
// pods of a Deployment this way, so scaling the Deployment scales the router's pool).
struct WorkerEndpoint {
  std::string address;
  bool prefill = false;
  bool decode = false;
};

inline constexpr char kDnsPrefix[] = "dns:";

// Merges the --prefill and --decode lists: an entry in both serves both. INVALID_ARGUMENT for an
// empty or malformed entry (not host:port or dns:name:port) or a duplicate within one list.
absl::StatusOr<std::vector<WorkerEndpoint>> MergeWorkerLists(
    const std::vector<std::string>& prefill, const std::vector<std::string>& decode);

// Resolves a host name to its addresses (numeric, IPv6 ones without brackets). A name that exists
// but has no address, or does not exist, is an empty list (a headless Service with no ready pod
// answers NXDOMAIN); other failures (the resolver unreachable) are errors.
using Resolver = std::function<absl::StatusOr<std::vector<std::string>>(const std::string& host)>;
// getaddrinfo(3), TCP, IPv4 and IPv6.
absl::StatusOr<std::vector<std::string>> ResolveHost(const std::string& host);

struct RegistryOptions {
  absl::Duration poll_interval = absl::Seconds(1);
  absl::Duration poll_deadline = absl::Milliseconds(500);  // per GetLoad call
  // A worker whose last successful poll is older than this is unhealthy.
  absl::Duration stale_after = absl::Seconds(5);
  // How often dns: sources are resolved again (by the background poller).
  absl::Duration resolve_interval = absl::Seconds(5);
  // A worker that left every source is forgotten (its id and channel released) this long after.
  absl::Duration forget_after = absl::Minutes(2);
  Resolver resolver;  // null: ResolveHost
};

using WorkerClientFactory = std::function<WorkerClientPtr(const WorkerEndpoint&)>;

// The router's pool of workers with their last known load and health.
//
// Membership: static `host:port` entries are members for the router's lifetime; each `dns:` source
// contributes the addresses its last successful resolution returned. A worker that a source stops
// listing leaves the pool (no new requests; requests already on it finish through their own client
// reference) and is forgotten after forget_after; one that comes back before then keeps its id.
// A failed resolution keeps the source's previous members (a DNS outage must not empty the pool).
// Ids (WorkerId) are never reused, so the relay's prefix index can never credit a new worker with
// an old one's cache.
//
// Health: a static worker starts healthy (optimistically, so the router serves before the first
// poll); a discovered worker joins healthy only if a GetLoad to it succeeds. A failed GetLoad or a
// ReportFailure from the relay makes a worker unhealthy until a poll succeeds again; and a worker
// not seen for stale_after is unhealthy.
//
// PollOnce() and RefreshMembership() are the whole refresh, so tests drive them by hand with a fake
// clock, fake clients and a fake resolver; Start() runs them on a background thread. Thread-safe.
class WorkerRegistry {
 public:
  // `endpoints` as MergeWorkerLists returns them.
  WorkerRegistry(std::vector<WorkerEndpoint> endpoints, const WorkerClientFactory& factory,
                 RegistryOptions options, const Clock* clock);
  ~WorkerRegistry();  // Stop()
  WorkerRegistry(const WorkerRegistry&) = delete;
  WorkerRegistry& operator=(const WorkerRegistry&) = delete;

  // Workers in the pool now.
  size_t size() const;
  // The policies' view of every worker in the pool, in id order.
  std::vector<WorkerLoad> Snapshot() const;
  // Null when `id` is unknown or forgotten (the caller treats it as an unavailable worker).
  WorkerClientPtr Client(WorkerId id) const;
  // Empty when `id` is unknown or forgotten.
  std::string Address(WorkerId id) const;

  // Calls GetLoad on every worker in the pool (one at a time, each with poll_deadline) and records
  // the result.
  void PollOnce();
  // Resolves every dns: source and updates the pool (a no-op without sources).
  void RefreshMembership();
  // The relay saw this worker fail (UNAVAILABLE, ...): unhealthy until the next successful poll.
  void ReportFailure(WorkerId id);

  // For Router.ListWorkers and the per-worker gauges: the workers in the pool, in id order.
  std::vector<v1::WorkerStatus> List() const;

  // Starts / stops the background poller (PollOnce every poll_interval, RefreshMembership every
  // resolve_interval). Stop is idempotent and joins the thread.
  void Start();
  void Stop();

 private:
  struct Source {
    std::string host;
    std::string port;
    bool prefill = false;
    bool decode = false;
  };
  struct Worker {
    WorkerEndpoint endpoint;  // roles: the union over its static entry and the sources listing it
    WorkerClientPtr client;
    bool is_static = false;
    bool static_prefill = false;
    bool static_decode = false;
    std::vector<bool> listed_by;  // per source
    bool in_pool = true;
    absl::Time left;  // when it left the pool
    v1::WorkerLoad load;
    bool failed = false;  // last poll failed, or a failure was reported since
    absl::Time last_ok;
  };
  bool Healthy(const Worker& w, absl::Time now) const;
  static void SetRoles(Worker* w, const std::vector<Source>& sources);
  v1::WorkerStatus Status(const Worker& w, absl::Time now) const;
  // Polls `clients` (id, client) outside the lock and records the results.
  void Poll(const std::vector<std::pair<WorkerId, WorkerClientPtr>>& clients);

  const WorkerClientFactory factory_;
  const RegistryOptions options_;
  const Clock* clock_;
  RealClock real_clock_;
  std::vector<Source> sources_;  // immutable after construction

  mutable absl::Mutex mu_;
  // Ordered by id (ids only grow), so iteration is in id order.
  std::map<WorkerId, Worker> workers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, WorkerId> by_address_ ABSL_GUARDED_BY(mu_);
  WorkerId next_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread poller_;
};

}  // namespace moeserve::router

#endif  // MOESERVE_ROUTER_WORKER_REGISTRY_H_
