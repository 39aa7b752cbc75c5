#include "router/worker_registry.h"

#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace moeserve::router {
namespace {

absl::Status CheckAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(absl::string_view(address).substr(colon + 1), &port) || port <= 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker address '", address, "' is not host:port"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<WorkerEndpoint>> MergeWorkerLists(
    const std::vector<std::string>& prefill, const std::vector<std::string>& decode) {
  std::vector<WorkerEndpoint> endpoints;
  absl::flat_hash_map<std::string, size_t> index;
  auto add = [&](const std::vector<std::string>& list, bool is_prefill) -> absl::Status {
    absl::flat_hash_map<std::string, bool> seen;
    for (const std::string& address : list) {
      if (absl::Status s = CheckAddress(address); !s.ok()) return s;
      if (!seen.emplace(address, true).second) {
        return absl::InvalidArgumentError(absl::StrCat("worker '", address, "' listed twice in --",
                                                       is_prefill ? "prefill" : "decode"));
      }
      auto [it, inserted] = index.emplace(address, endpoints.size());
      if (inserted) endpoints.push_back(WorkerEndpoint{address, false, false});
      WorkerEndpoint& e = endpoints[it->second];
      (is_prefill ? e.prefill : e.decode) = true;
    }
    return absl::OkStatus();
  };
  if (absl::Status s = add(prefill, true); !s.ok()) return s;
  if (absl::Status s = add(decode, false); !s.ok()) return s;
  return endpoints;
}

WorkerRegistry::WorkerRegistry(std::vector<WorkerEndpoint> endpoints,
                               const WorkerClientFactory& factory, RegistryOptions options,
                               const Clock* clock)
    : workers_([&] {
        std::vector<Worker> workers;
        for (WorkerEndpoint& e : endpoints) {
          WorkerClientPtr client = factory(e);
          workers.push_back(Worker{std::move(e), std::move(client)});
        }
        return workers;
      }()),
      options_(options),
      clock_(clock != nullptr ? clock : &real_clock_) {
  absl::MutexLock lock(&mu_);
  states_.resize(workers_.size());
  const absl::Time now = clock_->Now();
  for (State& s : states_) s.last_ok = now;
}

WorkerRegistry::~WorkerRegistry() { Stop(); }

bool WorkerRegistry::Healthy(const State& state, absl::Time now) const {
  return !state.failed && now - state.last_ok <= options_.stale_after;
}

std::vector<WorkerLoad> WorkerRegistry::Snapshot() const {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  std::vector<WorkerLoad> out;
  out.reserve(workers_.size());
  for (size_t i = 0; i < workers_.size(); ++i) {
    const State& s = states_[i];
    WorkerLoad w;
    w.id = static_cast<WorkerId>(i);
    w.can_prefill = workers_[i].endpoint.prefill;
    w.can_decode = workers_[i].endpoint.decode;
    w.healthy = Healthy(s, now);
    w.running = s.load.running();
    w.waiting = s.load.waiting();
    w.kv_blocks_free = s.load.kv_blocks_free();
    w.kv_blocks_total = s.load.kv_blocks_total();
    out.push_back(w);
  }
  return out;
}

void WorkerRegistry::PollOnce() {
  for (size_t i = 0; i < workers_.size(); ++i) {
    CallOptions call;
    call.deadline = clock_->Now() + options_.poll_deadline;
    absl::StatusOr<v1::WorkerLoad> load = workers_[i].client->GetLoad(call);
    const absl::Time now = clock_->Now();
    absl::MutexLock lock(&mu_);
    State& s = states_[i];
    if (load.ok()) {
      s.load = *std::move(load);
      s.failed = false;
      s.last_ok = now;
    } else {
      s.failed = true;
    }
  }
}

void WorkerRegistry::ReportFailure(WorkerId id) {
  if (id < 0 || static_cast<size_t>(id) >= workers_.size()) return;
  absl::MutexLock lock(&mu_);
  states_[id].failed = true;
}

std::vector<v1::WorkerStatus> WorkerRegistry::List() const {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  std::vector<v1::WorkerStatus> out;
  for (size_t i = 0; i < workers_.size(); ++i) {
    const WorkerEndpoint& e = workers_[i].endpoint;
    v1::WorkerStatus status;
    status.set_address(e.address);
    status.set_role(e.prefill && e.decode ? "both" : (e.prefill ? "prefill" : "decode"));
    status.set_healthy(Healthy(states_[i], now));
    *status.mutable_load() = states_[i].load;
    out.push_back(std::move(status));
  }
  return out;
}

void WorkerRegistry::Start() {
  absl::MutexLock lock(&mu_);
  if (poller_.joinable() || stop_) return;
  poller_ = std::thread([this] {
    while (true) {
      PollOnce();
      absl::MutexLock l(&mu_);
      // Real time here on purpose: the poller only paces itself; tests call PollOnce directly.
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.poll_interval)) return;
    }
  });
}

void WorkerRegistry::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (poller_.joinable()) poller_.join();
}

}  // namespace moeserve::router
