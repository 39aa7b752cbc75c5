#include "router/worker_registry.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace moeserve::router {
namespace {

// Splits `host:port` at its last colon; false when it is not one (port 1..65535, host non-empty).
bool SplitHostPort(absl::string_view address, std::string* host, std::string* port) {
  const size_t colon = address.rfind(':');
  int n = 0;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &n) || n <= 0 || n > 65535) {
    return false;
  }
  *host = std::string(address.substr(0, colon));
  *port = std::string(address.substr(colon + 1));
  return true;
}

absl::Status CheckAddress(const std::string& address) {
  std::string host, port;
  const bool dns = absl::StartsWith(address, kDnsPrefix);
  const absl::string_view rest =
      dns ? absl::string_view(address).substr(sizeof(kDnsPrefix) - 1) : address;
  if (!SplitHostPort(rest, &host, &port)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker address '", address, "' is not ", dns ? "dns:name:port" : "host:port"));
  }
  return absl::OkStatus();
}

// "1.2.3.4:5" or "[::1]:5", as gRPC targets are written.
std::string JoinHostPort(const std::string& ip, const std::string& port) {
  return ip.find(':') != std::string::npos ? absl::StrCat("[", ip, "]:", port)
                                           : absl::StrCat(ip, ":", port);
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

absl::StatusOr<std::vector<std::string>> ResolveHost(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &result);
  if (rc == EAI_NONAME || rc == EAI_NODATA) return std::vector<std::string>();
  if (rc != 0) {
    return absl::UnavailableError(absl::StrCat("resolving '", host, "': ", gai_strerror(rc)));
  }
  std::vector<std::string> out;
  absl::flat_hash_set<std::string> seen;
  for (const addrinfo* a = result; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    const void* addr = nullptr;
    if (a->ai_family == AF_INET) {
      addr = &reinterpret_cast<const sockaddr_in*>(a->ai_addr)->sin_addr;
    } else if (a->ai_family == AF_INET6) {
      addr = &reinterpret_cast<const sockaddr_in6*>(a->ai_addr)->sin6_addr;
    } else {
      continue;
    }
    if (inet_ntop(a->ai_family, addr, text, sizeof(text)) == nullptr) continue;
    if (seen.insert(text).second) out.push_back(text);
  }
  freeaddrinfo(result);
  return out;
}

WorkerRegistry::WorkerRegistry(std::vector<WorkerEndpoint> endpoints,
                               const WorkerClientFactory& factory, RegistryOptions options,
                               const Clock* clock)
    : factory_(factory),
      options_(std::move(options)),
      clock_(clock != nullptr ? clock : &real_clock_) {
  for (const WorkerEndpoint& e : endpoints) {
    if (!absl::StartsWith(e.address, kDnsPrefix)) continue;
    Source source;
    source.prefill = e.prefill;
    source.decode = e.decode;
    // MergeWorkerLists checked the form; an unchecked malformed entry simply resolves to nothing.
    SplitHostPort(absl::string_view(e.address).substr(sizeof(kDnsPrefix) - 1), &source.host,
                  &source.port);
    sources_.push_back(std::move(source));
  }
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  for (WorkerEndpoint& e : endpoints) {
    if (absl::StartsWith(e.address, kDnsPrefix)) continue;
    Worker w;
    w.client = factory_(e);
    w.is_static = true;
    w.static_prefill = e.prefill;
    w.static_decode = e.decode;
    w.listed_by.assign(sources_.size(), false);
    w.last_ok = now;
    w.endpoint = std::move(e);
    const WorkerId id = next_id_++;
    by_address_[w.endpoint.address] = id;
    workers_.emplace(id, std::move(w));
  }
}

WorkerRegistry::~WorkerRegistry() { Stop(); }

bool WorkerRegistry::Healthy(const Worker& w, absl::Time now) const {
  return !w.failed && now - w.last_ok <= options_.stale_after;
}

void WorkerRegistry::SetRoles(Worker* w, const std::vector<Source>& sources) {
  w->endpoint.prefill = w->static_prefill;
  w->endpoint.decode = w->static_decode;
  for (size_t i = 0; i < sources.size(); ++i) {
    if (!w->listed_by[i]) continue;
    w->endpoint.prefill |= sources[i].prefill;
    w->endpoint.decode |= sources[i].decode;
  }
}

size_t WorkerRegistry::size() const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [id, w] : workers_) n += w.in_pool ? 1 : 0;
  return n;
}

std::vector<WorkerLoad> WorkerRegistry::Snapshot() const {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  std::vector<WorkerLoad> out;
  out.reserve(workers_.size());
  for (const auto& [id, w] : workers_) {
    if (!w.in_pool) continue;
    WorkerLoad load;
    load.id = id;
    load.can_prefill = w.endpoint.prefill;
    load.can_decode = w.endpoint.decode;
    load.healthy = Healthy(w, now);
    load.running = w.load.running();
    load.waiting = w.load.waiting();
    load.kv_blocks_free = w.load.kv_blocks_free();
    load.kv_blocks_total = w.load.kv_blocks_total();
    out.push_back(load);
  }
  return out;
}

WorkerClientPtr WorkerRegistry::Client(WorkerId id) const {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : it->second.client;
}

std::string WorkerRegistry::Address(WorkerId id) const {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  return it == workers_.end() ? std::string() : it->second.endpoint.address;
}

void WorkerRegistry::Poll(const std::vector<std::pair<WorkerId, WorkerClientPtr>>& clients) {
  for (const auto& [id, client] : clients) {
    CallOptions call;
    call.deadline = clock_->Now() + options_.poll_deadline;
    absl::StatusOr<v1::WorkerLoad> load = client->GetLoad(call);
    const absl::Time now = clock_->Now();
    absl::MutexLock lock(&mu_);
    auto it = workers_.find(id);
    if (it == workers_.end()) continue;  // forgotten meanwhile
    Worker& w = it->second;
    if (load.ok()) {
      w.load = *std::move(load);
      w.failed = false;
      w.last_ok = now;
    } else {
      w.failed = true;
    }
  }
}

void WorkerRegistry::PollOnce() {
  std::vector<std::pair<WorkerId, WorkerClientPtr>> clients;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, w] : workers_) {
      if (w.in_pool) clients.emplace_back(id, w.client);
    }
  }
  Poll(clients);
}

void WorkerRegistry::RefreshMembership() {
  if (sources_.empty()) return;
  const Resolver& resolve = options_.resolver ? options_.resolver : Resolver(ResolveHost);
  // Each source's addresses (host:port), or nullopt when its resolution failed.
  std::vector<std::optional<absl::flat_hash_set<std::string>>> listed(sources_.size());
  for (size_t i = 0; i < sources_.size(); ++i) {
    absl::StatusOr<std::vector<std::string>> ips = resolve(sources_[i].host);
    if (!ips.ok()) {
      LogLine("W", absl::StrCat("worker discovery: ", ips.status().message(),
                                "; keeping the previous workers of dns:", sources_[i].host));
      continue;
    }
    listed[i].emplace();
    for (const std::string& ip : *ips) listed[i]->insert(JoinHostPort(ip, sources_[i].port));
  }

  // New addresses get a client and a first GetLoad outside the lock.
  std::vector<std::string> fresh;
  {
    absl::MutexLock lock(&mu_);
    absl::flat_hash_set<std::string> seen;
    for (const auto& addresses : listed) {
      if (!addresses.has_value()) continue;
      for (const std::string& a : *addresses) {
        if (!by_address_.contains(a) && seen.insert(a).second) fresh.push_back(a);
      }
    }
  }
  // Ids in address order, not in the resolver's (DNS answers rotate).
  std::sort(fresh.begin(), fresh.end());
  std::vector<Worker> joining;
  for (const std::string& address : fresh) {
    Worker w;
    w.endpoint.address = address;
    w.client = factory_(w.endpoint);
    w.listed_by.assign(sources_.size(), false);
    CallOptions call;
    call.deadline = clock_->Now() + options_.poll_deadline;
    absl::StatusOr<v1::WorkerLoad> load = w.client->GetLoad(call);
    w.last_ok = clock_->Now();
    w.failed = !load.ok();
    if (load.ok()) w.load = *std::move(load);
    joining.push_back(std::move(w));
  }

  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  for (Worker& w : joining) {
    if (by_address_.contains(w.endpoint.address)) continue;
    const WorkerId id = next_id_++;
    by_address_[w.endpoint.address] = id;
    LogInfo(absl::StrCat("worker discovery: ", w.endpoint.address, " joins as worker ", id,
                         w.failed ? " (not answering yet)" : ""));
    workers_.emplace(id, std::move(w));
  }
  for (auto it = workers_.begin(); it != workers_.end();) {
    Worker& w = it->second;
    bool listed_anywhere = false;
    for (size_t i = 0; i < sources_.size(); ++i) {
      if (listed[i].has_value()) w.listed_by[i] = listed[i]->contains(w.endpoint.address);
      listed_anywhere |= w.listed_by[i];
    }
    SetRoles(&w, sources_);
    const bool member = w.is_static || listed_anywhere;
    if (member && !w.in_pool) {
      LogInfo(absl::StrCat("worker discovery: ", w.endpoint.address, " is back"));
      w.in_pool = true;
    } else if (!member && w.in_pool) {
      LogInfo(absl::StrCat("worker discovery: ", w.endpoint.address, " leaves the pool"));
      w.in_pool = false;
      w.left = now;
    }
    if (!w.in_pool && now - w.left >= options_.forget_after) {
      by_address_.erase(w.endpoint.address);
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

void WorkerRegistry::ReportFailure(WorkerId id) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it != workers_.end()) it->second.failed = true;
}

v1::WorkerStatus WorkerRegistry::Status(const Worker& w, absl::Time now) const {
  v1::WorkerStatus status;
  status.set_address(w.endpoint.address);
  status.set_role(w.endpoint.prefill && w.endpoint.decode
                      ? "both"
                      : (w.endpoint.prefill ? "prefill" : (w.endpoint.decode ? "decode" : "none")));
  status.set_healthy(Healthy(w, now));
  *status.mutable_load() = w.load;
  return status;
}

std::vector<v1::WorkerStatus> WorkerRegistry::List() const {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  std::vector<v1::WorkerStatus> out;
  for (const auto& [id, w] : workers_) {
    if (w.in_pool) out.push_back(Status(w, now));
  }
  return out;
}

void WorkerRegistry::Start() {
  absl::MutexLock lock(&mu_);
  if (poller_.joinable() || stop_) return;
  poller_ = std::thread([this] {
    // Real time here on purpose: the poller only paces itself; tests call the refreshes directly.
    absl::Time next_resolve = absl::Now() + options_.resolve_interval;
    while (true) {
      if (absl::Now() >= next_resolve) {
        RefreshMembership();
        next_resolve = absl::Now() + options_.resolve_interval;
      }
      PollOnce();
      absl::MutexLock l(&mu_);
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
