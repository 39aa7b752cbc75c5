// moeserve up: a whole cluster on loopback. Starts a private redis-server for the KV cache and
// another for the gateway's Batch API (durable: no eviction, append-only file), the KV-cache service,
// the expert shards, prefill and decode workers, the router and the gateway (each a separate
// process from the binaries beside this one), waits until every one accepts connections, prints
// the URL, and on SIGINT/SIGTERM stops every process it started. With --restart-delay-s it also
// supervises them: a process that dies is started again, with the same argv, after that delay.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "engine/backend_registry.h"
#include "engine/dtype.h"
#include "common/process.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/moeserve/commands.h"
#include "tools/moeserve/flags.h"
#include "tools/moeserve/mkmodel.h"

namespace moeserve::cli {
namespace {

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

struct Child {
  std::string name;
  pid_t pid = -1;
  int port = 0;
  std::string log;
  std::vector<std::string> argv;  // kept to restart it exactly as it was started
  int64_t restarts = 0;
  // When a supervised child died: when to start it again.
  std::optional<std::chrono::steady_clock::time_point> restart_at;
};

absl::StatusOr<Child> Spawn(const std::string& name, const std::vector<std::string>& argv,
                            int port, const std::string& run_dir) {
  Child c{name, -1, port, run_dir + "/" + name + ".log", argv, 0, std::nullopt};
  MOESERVE_ASSIGN_OR_RETURN(c.pid, SpawnWithLog(argv, c.log));
  return c;
}

// cluster.json's "processes": each child's name, pid (0 while it waits for a restart), port and
// restart count, so that tools and tests can find (and kill) a given process.
nlohmann::json ProcessTable(const std::vector<Child>& children) {
  nlohmann::json out = nlohmann::json::array();
  for (const Child& c : children) {
    out.push_back({{"name", c.name},
                   {"pid", c.pid > 0 ? c.pid : 0},
                   {"port", c.port},
                   {"restarts", c.restarts}});
  }
  return out;
}

// Writes `info` to `path` through a temporary file and a rename, so a reader never sees half.
void WriteJsonAtomically(const std::string& path, const nlohmann::json& info) {
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << info.dump(2) << "\n";
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) LogLine("W", absl::StrCat("cannot write ", path, ": ", ec.message()));
}

// Waits until `c` accepts connections; FailedPrecondition when it exited first (its log tail
// is in the message), DeadlineExceeded after `seconds`.
absl::Status WaitReady(const Child& c, int seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline && !g_stop) {
    int status = 0;
    if (waitpid(c.pid, &status, WNOHANG) == c.pid) {
      return absl::FailedPreconditionError(
          absl::StrCat(c.name, " exited during start-up; see ", c.log));
    }
    if (LoopbackPortAccepts(c.port)) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (g_stop) return absl::CancelledError("interrupted");
  return absl::DeadlineExceededError(absl::StrCat(c.name, " did not start in ", seconds,
                                                  " s; see ", c.log));
}

// Stops the children front to back: the gateway first, so it drains (up to `drain_s`) while
// the router and workers still serve its requests in flight; then the router, and so on. An
// idle service exits at once, so a stop without traffic stays quick. SIGKILL after drain + 10 s.
void StopAll(std::vector<Child>* children, int64_t drain_s) {
  for (auto it = children->rbegin(); it != children->rend(); ++it) {
    Child& c = *it;
    if (c.pid <= 0) continue;
    kill(c.pid, SIGTERM);
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(drain_s + 10);
    while (true) {
      int status;
      if (waitpid(c.pid, &status, WNOHANG) == c.pid) break;
      if (std::chrono::steady_clock::now() > deadline) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    c.pid = -1;
  }
}

// "prefill-0" -> "worker", "expert-shard-1" -> "expert-shard", "router" -> "router".
std::string ComponentOf(const std::string& name) {
  std::string base = name;
  const size_t dash = base.find_last_of('-');
  if (dash != std::string::npos && dash + 1 < base.size() && std::isdigit(base[dash + 1])) {
    base.resize(dash);
  }
  return base == "prefill" || base == "decode" ? "worker" : base;
}

struct UpOptions {
  std::string model = "models/tiny";
  int port = 8000;
  int64_t prefill = 1, decode = 1, shards = 0;
  std::string compute = "bf16";
  int64_t block_tokens = 16;
  int64_t kv_cache_mb = 0;  // the workers' --kv-cache-mb; 0: theirs (see gpu_memory_utilization)
  // The workers' --gpu-memory-utilization; empty: on a cuda backend without --kv-cache-mb, 0.9
  // split evenly between the workers (they share the device), else none.
  std::string gpu_memory_utilization;
  int64_t threads = 1;
  std::string run_dir;
  std::string price_table;  // passed to the gateway when set
  std::string api_keys;     // likewise
  std::string stream_resume_grace_s;  // likewise (--stream-resume-grace-s)
  std::string batch_concurrency;      // likewise (--batch-concurrency)
  int64_t drain_s = 5;       // --drain-timeout-s of every service (and of the stop)
  int64_t relay_threads = 64, max_queue = 512;  // the router's
  std::string placement;       // expert placement spec for shards and workers ("" = theirs)
  std::string backend;         // the workers' and shards' --backend ("" = the host)
  std::string kv_cache_dtype = "auto";  // the workers' --kv-cache-dtype
  bool decode_graphs = false;            // the workers' --decode-graphs
  int64_t restart_delay_s = -1;  // restart a process that dies after this long; -1: never
};

absl::Status Up(const UpOptions& o) {
  if (!std::filesystem::exists(o.model + "/config.json")) {
    std::cout << "making the default model in " << o.model << "\n";
    MkmodelOptions mk;
    mk.out_dir = o.model;
    mk.preset = "tiny";
    MOESERVE_RETURN_IF_ERROR(MakeModel(mk));
  }
  const std::string bin = ExecutableDir();
  std::string run_dir = o.run_dir;
  if (run_dir.empty()) {
    char tmpl[] = "/tmp/moeserve-up-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
    run_dir = tmpl;
  }
  std::filesystem::create_directories(run_dir);
  std::vector<Child> children;
  // Every moeserve service gets a Prometheus /metrics port; cluster.json lists them.
  nlohmann::json metrics = nlohmann::json::array();
  auto start = [&](const std::string& name, std::vector<std::string> argv,
                   int port) -> absl::Status {
    if (name != "redis" && name != "redis-batch") {
      argv.push_back("--drain-timeout-s");
      argv.push_back(std::to_string(o.drain_s));
      MOESERVE_ASSIGN_OR_RETURN(int metrics_port, FreeLoopbackPort());
      argv.push_back("--metrics-port");
      argv.push_back(std::to_string(metrics_port));
      metrics.push_back({{"name", name},
                         {"component", ComponentOf(name)},
                         {"address", absl::StrCat("127.0.0.1:", metrics_port)}});
    }
    absl::StatusOr<Child> c = Spawn(name, argv, port, run_dir);
    if (!c.ok()) return c.status();
    children.push_back(*c);
    return absl::OkStatus();
  };
  auto run = [&]() -> absl::Status {
    MOESERVE_ASSIGN_OR_RETURN(int redis_port, FreeLoopbackPort());
    MOESERVE_RETURN_IF_ERROR(start(
        "redis", {"redis-server", "--port", std::to_string(redis_port), "--bind", "127.0.0.1",
                  "--save", "", "--appendonly", "no", "--maxmemory", "512mb",
                  "--maxmemory-policy", "allkeys-lru", "--dir", run_dir},
        redis_port));
    MOESERVE_RETURN_IF_ERROR(WaitReady(children.back(), 30));
    // The Batch API's files and batches: a Redis of their own, because the KV cache's evicts
    // (allkeys-lru) and keeps nothing on disk, while a batch must survive both memory pressure
    // and a Redis restart.
    MOESERVE_ASSIGN_OR_RETURN(int batch_redis_port, FreeLoopbackPort());
    MOESERVE_RETURN_IF_ERROR(start(
        "redis-batch",
        {"redis-server", "--port", std::to_string(batch_redis_port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
         "--appendfilename", "batch.aof", "--maxmemory-policy", "noeviction", "--dir", run_dir},
        batch_redis_port));
    MOESERVE_RETURN_IF_ERROR(WaitReady(children.back(), 30));
    MOESERVE_ASSIGN_OR_RETURN(int kv_port, FreeLoopbackPort());
    MOESERVE_RETURN_IF_ERROR(start(
        "kvcache", {bin + "/moeserve-kvcache", "--host", "127.0.0.1", "--port",
                    std::to_string(kv_port), "--redis", absl::StrCat("127.0.0.1:", redis_port),
                    "--budget-mb", "384", "--block-tokens", std::to_string(o.block_tokens)},
        kv_port));
    std::vector<std::string> shard_addrs;
    for (int64_t i = 0; i < o.shards; ++i) {
      MOESERVE_ASSIGN_OR_RETURN(int p, FreeLoopbackPort());
      std::vector<std::string> argv = {
          bin + "/moeserve-expert-shard", "--model", o.model, "--port", std::to_string(p),
          "--shard-id", std::to_string(i), "--num-shards", std::to_string(o.shards),
          "--compute-dtype", o.compute, "--threads", std::to_string(o.threads)};
      if (!o.placement.empty()) {
        argv.push_back("--placement");
        argv.push_back(o.placement);
      }
      if (!o.backend.empty()) {  // the shards' expert products on the backend too
        argv.push_back("--backend");
        argv.push_back(o.backend);
      }
      MOESERVE_RETURN_IF_ERROR(start(absl::StrCat("expert-shard-", i), argv, p));
      shard_addrs.push_back(absl::StrCat("127.0.0.1:", p));
    }
    for (const Child& c : children) MOESERVE_RETURN_IF_ERROR(WaitReady(c, 120));
    std::vector<std::string> prefill_addrs, decode_addrs;
    for (int64_t i = 0; i < o.prefill + o.decode; ++i) {
      const bool is_prefill = i < o.prefill;
      MOESERVE_ASSIGN_OR_RETURN(int p, FreeLoopbackPort());
      std::vector<std::string> argv = {
          bin + "/moeserve-worker", "--model", o.model, "--port", std::to_string(p),
          "--role", is_prefill ? "prefill" : "decode", "--kvcache",
          absl::StrCat("127.0.0.1:", kv_port), "--compute-dtype", o.compute,
          "--block-tokens", std::to_string(o.block_tokens), "--threads",
          std::to_string(o.threads), "--kv-cache-dtype", o.kv_cache_dtype};
      if (o.kv_cache_mb > 0) {
        argv.push_back("--kv-cache-mb");
        argv.push_back(std::to_string(o.kv_cache_mb));
      }
      if (!o.backend.empty()) {
        argv.push_back("--backend");
        argv.push_back(o.backend);
      }
      if (o.decode_graphs) argv.push_back("--decode-graphs");
      if (!o.gpu_memory_utilization.empty()) {
        argv.push_back("--gpu-memory-utilization");
        argv.push_back(o.gpu_memory_utilization);
      } else if (o.kv_cache_mb == 0 && o.backend.rfind("cuda", 0) == 0) {
        argv.push_back("--gpu-memory-utilization");
        argv.push_back(absl::StrCat(0.9 / static_cast<double>(o.prefill + o.decode)));
      }
      if (!shard_addrs.empty()) {
        argv.push_back("--expert-shards");
        argv.push_back(absl::StrJoin(shard_addrs, ","));
        if (!o.placement.empty()) {
          argv.push_back("--placement");
          argv.push_back(o.placement);
        }
      }
      std::string name = is_prefill ? absl::StrCat("prefill-", i) : absl::StrCat("decode-", i - o.prefill);
      MOESERVE_RETURN_IF_ERROR(start(name, argv, p));
      (is_prefill ? prefill_addrs : decode_addrs).push_back(absl::StrCat("127.0.0.1:", p));
    }
    for (const Child& c : children) MOESERVE_RETURN_IF_ERROR(WaitReady(c, 300));
    MOESERVE_ASSIGN_OR_RETURN(int router_port, FreeLoopbackPort());
    MOESERVE_RETURN_IF_ERROR(start(
        "router", {bin + "/moeserve-router", "--port", std::to_string(router_port), "--prefill",
                   absl::StrJoin(prefill_addrs, ","), "--decode", absl::StrJoin(decode_addrs, ","),
                   "--block-tokens", std::to_string(o.block_tokens), "--relay-threads",
                   std::to_string(o.relay_threads), "--max-queue", std::to_string(o.max_queue)},
        router_port));
    MOESERVE_RETURN_IF_ERROR(WaitReady(children.back(), 60));
    MOESERVE_ASSIGN_OR_RETURN(int grpc_port, FreeLoopbackPort());
    std::vector<std::string> gateway_argv = {
        bin + "/moeserve-gateway", "--model", o.model, "--port", std::to_string(o.port),
        "--grpc-port", std::to_string(grpc_port), "--router",
        absl::StrCat("127.0.0.1:", router_port), "--redis",
        absl::StrCat("127.0.0.1:", batch_redis_port)};
    if (!o.batch_concurrency.empty()) {
      gateway_argv.push_back("--batch-concurrency");
      gateway_argv.push_back(o.batch_concurrency);
    }
    if (!o.price_table.empty()) {
      gateway_argv.push_back("--price-table");
      gateway_argv.push_back(o.price_table);
    }
    if (!o.api_keys.empty()) {
      gateway_argv.push_back("--api-keys");
      gateway_argv.push_back(o.api_keys);
    }
    if (!o.stream_resume_grace_s.empty()) {
      gateway_argv.push_back("--stream-resume-grace-s");
      gateway_argv.push_back(o.stream_resume_grace_s);
    }
    MOESERVE_RETURN_IF_ERROR(start("gateway", gateway_argv, o.port));
    MOESERVE_RETURN_IF_ERROR(WaitReady(children.back(), 60));
    std::string name = std::filesystem::path(o.model).filename().string();
    const std::string info_path = run_dir + "/cluster.json";
    nlohmann::json info;
    {
      // Where everything listens, for tools and tests (moeserve status --router ...).
      info = {{"http", absl::StrCat("127.0.0.1:", o.port)},
                             {"grpc", absl::StrCat("127.0.0.1:", grpc_port)},
                             {"router", absl::StrCat("127.0.0.1:", router_port)},
                             {"kvcache", absl::StrCat("127.0.0.1:", kv_port)},
                             {"redis", absl::StrCat("127.0.0.1:", redis_port)},
                             {"batch_redis", absl::StrCat("127.0.0.1:", batch_redis_port)},
                             {"prefill", prefill_addrs},
                             {"decode", decode_addrs},
                             {"expert_shards", shard_addrs},
                             {"metrics", metrics},
                             {"model", name},
                             {"processes", ProcessTable(children)}};
      WriteJsonAtomically(info_path, info);
    }
    std::cout << "moeserve is up: http://127.0.0.1:" << o.port << "/v1  (gRPC Inference on "
              << "127.0.0.1:" << grpc_port << "; logs in " << run_dir << ")\n"
              << "try:\n  curl -s http://127.0.0.1:" << o.port
              << "/v1/chat/completions -H 'Content-Type: application/json' -d '{\"model\": \""
              << name << "\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}], "
              << "\"max_tokens\": 32}'\n"
              << "or watch it think: open http://127.0.0.1:" << o.port
              << "/ in a browser, or run: moeserve chat --url http://127.0.0.1:" << o.port
              << "/v1\n"
              << "Ctrl-C stops the cluster.\n"
              << std::flush;
    while (!g_stop) {
      bool changed = false;
      const auto now = std::chrono::steady_clock::now();
      for (Child& c : children) {
        int status;
        if (c.pid > 0 && waitpid(c.pid, &status, WNOHANG) == c.pid) {
          LogLine("W", absl::StrCat(c.name, " exited (status ", status, "); see ", c.log));
          c.pid = -1;
          changed = true;
          if (o.restart_delay_s >= 0) c.restart_at = now + std::chrono::seconds(o.restart_delay_s);
        }
        if (c.pid <= 0 && c.restart_at && now >= *c.restart_at) {
          c.restart_at.reset();
          absl::StatusOr<pid_t> pid = SpawnWithLog(c.argv, c.log, /*append=*/true);
          if (!pid.ok()) {
            LogError(pid.status());
            continue;
          }
          c.pid = *pid;
          ++c.restarts;
          changed = true;
          LogLine("I", absl::StrCat("restarted ", c.name, " (pid ", c.pid, ", restart ",
                                    c.restarts, ")"));
        }
      }
      if (changed) {
        info["processes"] = ProcessTable(children);
        WriteJsonAtomically(info_path, info);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return absl::OkStatus();
  };
  absl::Status st = run();
  StopAll(&children, o.drain_s);
  std::cout << "moeserve stopped (" << children.size() << " processes)\n";
  return st;
}

}  // namespace

int RunUp(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> f = Flags::Parse(
      args, {"model", "port", "prefill", "decode", "shards", "compute-dtype", "block-tokens",
             "kv-cache-mb", "threads", "run-dir", "price-table", "api-keys", "drain-timeout-s",
             "relay-threads", "max-queue", "placement", "restart-delay-s",
             "stream-resume-grace-s", "batch-concurrency", "backend", "kv-cache-dtype",
             "gpu-memory-utilization"},
      {"decode-graphs"});
  if (!f.ok()) {
    LogError(f.status());
    return 2;
  }
  UpOptions o;
  o.model = f->Get("model").value_or(o.model);
  o.compute = f->Get("compute-dtype").value_or(o.compute);
  o.run_dir = f->Get("run-dir").value_or("");
  o.price_table = f->Get("price-table").value_or("");
  o.api_keys = f->Get("api-keys").value_or("");
  o.placement = f->Get("placement").value_or("");
  o.stream_resume_grace_s = f->Get("stream-resume-grace-s").value_or("");
  o.batch_concurrency = f->Get("batch-concurrency").value_or("");
  o.backend = f->Get("backend").value_or("");
  o.kv_cache_dtype = f->Get("kv-cache-dtype").value_or(o.kv_cache_dtype);
  o.gpu_memory_utilization = f->Get("gpu-memory-utilization").value_or("");
  o.decode_graphs = f->Has("decode-graphs");
  auto get = [&](const char* name, int64_t dflt, int64_t lo, int64_t* out) -> bool {
    absl::StatusOr<int64_t> v = f->GetInt(name, dflt);
    if (!v.ok() || *v < lo) {
      LogError(v.ok() ? absl::InvalidArgumentError(absl::StrCat("--", name, " must be >= ", lo))
                      : v.status());
      return false;
    }
    *out = *v;
    return true;
  };
  int64_t port;
  if (!get("port", 8000, 1, &port) || !get("prefill", 1, 1, &o.prefill) ||
      !get("decode", 1, 1, &o.decode) || !get("shards", 0, 0, &o.shards) ||
      !get("block-tokens", 16, 1, &o.block_tokens) || !get("kv-cache-mb", 0, f->Has("kv-cache-mb") ? 1 : 0, &o.kv_cache_mb) ||
      !get("threads", 1, 1, &o.threads) || !get("drain-timeout-s", 5, 0, &o.drain_s) ||
      !get("relay-threads", 64, 1, &o.relay_threads) || !get("max-queue", 512, 0, &o.max_queue) ||
      !get("restart-delay-s", -1, -1, &o.restart_delay_s)) {
    return 2;
  }
  o.port = static_cast<int>(port);
  if (o.compute != "bf16" && o.compute != "f32") {
    LogError(absl::InvalidArgumentError("--compute-dtype must be bf16 or f32"));
    return 2;
  }
  // The workers' own check, made before anything starts (o.compute was checked above).
  if (absl::StatusOr<engine::DType> kv = engine::ParseKvCacheDType(
          o.kv_cache_dtype, *engine::ParseComputeDType(o.compute), !o.backend.empty());
      !kv.ok()) {
    LogError(kv.status());
    return 2;
  }
  if (o.decode_graphs && o.backend.empty()) {
    LogError(absl::InvalidArgumentError(
        "--decode-graphs replays a backend's steps: it needs --backend"));
    return 2;
  }
  if (!o.backend.empty()) {
    // Refuse a backend the workers could not open before starting anything.
    absl::StatusOr<engine::BackendPtr> probe = engine::CreateBackend(o.backend);
    if (!probe.ok()) {
      LogError(probe.status());
      return 2;
    }
  }
  struct sigaction sa{};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  absl::Status st = Up(o);
  if (!st.ok()) {
    LogError(st);
    return 1;
  }
  return 0;
}

}  // namespace moeserve::cli
