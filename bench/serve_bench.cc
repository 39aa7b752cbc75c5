// bench/serve: the cluster against the single-process engine, on one workload, in one run.
// Prints one JSON object.
//
//   moeserve-bench-serve [--bin-dir DIR] [--model-dir DIR] [--compute-dtype bf16|f32]
//       [--threads N] [--prefill N] [--decode N] [--shards N] [--prompt-tokens N]
//       [--max-tokens N] [--low-concurrency N] [--low-requests N] [--high-concurrency N]
//       [--high-requests N] [--max-seconds S] [--prefix-tokens N] [--prefix-trials N]
//       [--run-dir DIR]
//
// It makes the tiny model when DIR is missing (`moeserve mkmodel`), measures the in-process
// Engine (continuous batching of `concurrency` greedy sequences), then starts `moeserve up` on a
// free loopback port, streams the same prompts through the gateway's /v1/completions with its own
// HTTP/1.1 client (one thread per concurrent client), measures prefix-cache TTFT on a long
// prompt, and stops the cluster with SIGTERM. Prompts are token-id arrays so lengths are exact.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/machine_limits.h"
#include "bench/sse_client.h"
#include "common/process.h"
#include "common/status_macros.h"
#include "engine/dtype.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "nlohmann/json.hpp"
#include "tools/moeserve/flags.h"

namespace moeserve::bench {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct Args {
  std::string bin_dir;
  std::string model_dir;
  std::string compute = "bf16";
  int64_t threads = 1;
  int64_t prefill = 1, decode = 1, shards = 0;
  int64_t block_tokens = 16;
  int64_t kv_cache_mb = 256;
  int64_t prompt_tokens = 128;
  int64_t max_tokens = 32;
  int64_t low_concurrency = 1, low_requests = 16;
  int64_t high_concurrency = 16, high_requests = 32;
  double max_seconds = 60;  // per measured phase
  int64_t prefix_tokens = 4096;
  int64_t prefix_trials = 3;
  std::string run_dir;
};

// ---------------------------------------------------------------------------------------------
// Workload and statistics.

std::vector<int32_t> RandomTokens(uint64_t seed, int64_t n) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(1000, 99999);  // plain ids, well below 128000
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int32_t& t : out) t = id(rng);
  return out;
}

// p50/p90/p99/mean in milliseconds.
Json Summary(const std::vector<double>& seconds) {
  double sum = 0;
  for (double s : seconds) sum += s;
  auto ms = [](double s) { return std::round(s * 1e5) / 100; };
  return {{"p50_ms", ms(Percentile(seconds, 50))},
          {"p90_ms", ms(Percentile(seconds, 90))},
          {"p99_ms", ms(Percentile(seconds, 99))},
          {"mean_ms", ms(seconds.empty() ? 0 : sum / static_cast<double>(seconds.size()))},
          {"n", seconds.size()}};
}

// What one measured phase produced, on either side.
struct Phase {
  int64_t concurrency = 0;
  int64_t requests = 0;  // completed
  int64_t failed = 0;
  int64_t output_tokens = 0;
  double wall_s = 0;
  std::vector<double> ttft, itl, e2e;
  std::string first_error;

  double Throughput() const { return wall_s > 0 ? static_cast<double>(output_tokens) / wall_s : 0; }
  Json ToJson() const {
    Json j = {{"concurrency", concurrency},
              {"requests", requests},
              {"failed", failed},
              {"output_tokens", output_tokens},
              {"wall_s", std::round(wall_s * 1000) / 1000},
              {"output_tokens_per_s", std::round(Throughput() * 100) / 100},
              {"ttft", Summary(ttft)},
              {"itl", Summary(itl)},
              {"e2e", Summary(e2e)}};
    if (!first_error.empty()) j["first_error"] = first_error;
    return j;
  }
};

// ---------------------------------------------------------------------------------------------
// The single-process engine.

absl::StatusOr<Phase> RunEngine(const engine::Model& model, const Args& a,
                                const std::vector<std::vector<int32_t>>& prompts,
                                int64_t concurrency) {
  engine::EngineOptions eo;
  eo.block_tokens = a.block_tokens;
  eo.kv_cache_bytes = a.kv_cache_mb << 20;
  engine::Engine eng(&model, eo);
  engine::SamplingParams greedy;
  greedy.temperature = 0;
  engine::Sampler sampler(greedy, 0);
  struct Active {
    size_t prompt = 0;
    std::vector<int32_t> generated;
    Clock::time_point added, last;
  };
  std::map<engine::SeqId, Active> active;
  Phase p;
  p.concurrency = concurrency;
  const Clock::time_point start = Clock::now();
  size_t next = 0;
  while ((next < prompts.size() || !active.empty()) && !g_stop) {
    while (static_cast<int64_t>(active.size()) < concurrency && next < prompts.size() &&
           Since(start) < a.max_seconds) {
      MOESERVE_ASSIGN_OR_RETURN(engine::SeqId seq, eng.Add(prompts[next]));
      Active& s = active[seq];
      s.prompt = next++;
      s.added = Clock::now();
    }
    if (active.empty()) break;
    MOESERVE_ASSIGN_OR_RETURN(std::vector<engine::StepOutput> outs, eng.Step());
    const Clock::time_point now = Clock::now();
    for (engine::StepOutput& o : outs) {
      auto it = active.find(o.seq);
      if (it == active.end()) continue;
      Active& s = it->second;
      const int32_t token =
          sampler.Sample(o.logits, prompts[s.prompt], s.generated).token;
      const double since_added = std::chrono::duration<double>(now - s.added).count();
      if (s.generated.empty()) {
        p.ttft.push_back(since_added);
      } else {
        p.itl.push_back(std::chrono::duration<double>(now - s.last).count());
      }
      s.last = now;
      s.generated.push_back(token);
      if (static_cast<int64_t>(s.generated.size()) >= a.max_tokens) {
        p.e2e.push_back(since_added);
        p.output_tokens += static_cast<int64_t>(s.generated.size());
        ++p.requests;
        MOESERVE_RETURN_IF_ERROR(eng.Free(o.seq));
        active.erase(it);
      } else {
        MOESERVE_RETURN_IF_ERROR(eng.Append(o.seq, token));
      }
    }
  }
  p.wall_s = Since(start);
  return p;
}

// ---------------------------------------------------------------------------------------------
// Subprocesses: mkmodel and the cluster.

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Tail(const std::string& s, size_t n) {
  return s.size() <= n ? s : s.substr(s.size() - n);
}

absl::Status MakeModelIfMissing(const Args& a) {
  if (std::filesystem::exists(a.model_dir + "/config.json")) return absl::OkStatus();
  std::filesystem::create_directories(std::filesystem::path(a.model_dir).parent_path());
  const std::string log = a.run_dir + "/mkmodel.log";
  MOESERVE_ASSIGN_OR_RETURN(
      pid_t pid,
      SpawnWithLog({a.bin_dir + "/moeserve", "mkmodel", "--out", a.model_dir, "--preset", "tiny"}, log));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("moeserve mkmodel failed: ", Tail(ReadFile(log), 500)));
  }
  return absl::OkStatus();
}

// `moeserve up` as a child process; SIGTERM on Stop() or destruction.
class Cluster {
 public:
  ~Cluster() { Stop(); }

  absl::Status Start(const Args& a) {
    MOESERVE_ASSIGN_OR_RETURN(port_, FreeLoopbackPort());
    log_ = a.run_dir + "/up.log";
    MOESERVE_ASSIGN_OR_RETURN(
        pid_, SpawnWithLog({a.bin_dir + "/moeserve", "up", "--model", a.model_dir, "--port",
                     std::to_string(port_), "--prefill", std::to_string(a.prefill), "--decode",
                     std::to_string(a.decode), "--shards", std::to_string(a.shards),
                     "--compute-dtype", a.compute, "--threads", std::to_string(a.threads),
                     "--block-tokens", std::to_string(a.block_tokens), "--kv-cache-mb",
                     std::to_string(a.kv_cache_mb), "--run-dir", a.run_dir + "/cluster"},
                    log_));
    const Clock::time_point start = Clock::now();
    while (Since(start) < 300 && !g_stop) {
      if (ReadFile(log_).find("moeserve is up") != std::string::npos) {
        startup_s_ = Since(start);
        return absl::OkStatus();
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return absl::FailedPreconditionError(
            absl::StrCat("moeserve up exited: ", Tail(ReadFile(log_), 800)));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return absl::DeadlineExceededError(
        absl::StrCat("moeserve up not ready: ", Tail(ReadFile(log_), 800)));
  }

  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    const Clock::time_point start = Clock::now();
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) != pid_) {
      if (Since(start) > 30) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    pid_ = -1;
  }

  int port() const { return port_; }
  double startup_s() const { return startup_s_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  double startup_s_ = 0;
  std::string log_;
};

// ---------------------------------------------------------------------------------------------
// The cluster side: streamed completions through the gateway.

std::string CompletionBody(const std::string& model, const std::vector<int32_t>& prompt,
                           int64_t max_tokens) {
  Json j = {{"model", model},
            {"prompt", prompt},
            {"max_tokens", max_tokens},
            {"temperature", 0},
            {"ignore_eos", true},  // every request yields max_tokens, as on the engine side
            {"stream", true},
            {"stream_options", {{"include_usage", true}}}};
  return j.dump();
}

Phase RunCluster(int port, const std::string& model, const Args& a,
                 const std::vector<std::vector<int32_t>>& prompts, int64_t concurrency) {
  Phase p;
  p.concurrency = concurrency;
  std::mutex mu;
  std::atomic<size_t> next{0};
  const Clock::time_point start = Clock::now();
  auto client = [&] {
    for (;;) {
      if (g_stop || Since(start) >= a.max_seconds) return;
      const size_t i = next.fetch_add(1);
      if (i >= prompts.size()) return;
      absl::StatusOr<StreamTiming> t = StreamCompletion(
          port, "/v1/completions", CompletionBody(model, prompts[i], a.max_tokens), 120);
      std::lock_guard<std::mutex> lock(mu);
      if (!t.ok()) {
        ++p.failed;
        if (p.first_error.empty()) p.first_error = t.status().ToString();
        continue;
      }
      ++p.requests;
      p.output_tokens += t->output_tokens;
      p.ttft.push_back(t->ttft);
      p.e2e.push_back(t->e2e);
      for (size_t k = 1; k < t->token_times.size(); ++k) {
        p.itl.push_back(t->token_times[k] - t->token_times[k - 1]);
      }
    }
  };
  std::vector<std::thread> threads;
  for (int64_t c = 0; c < concurrency; ++c) threads.emplace_back(client);
  for (std::thread& t : threads) t.join();
  p.wall_s = Since(start);
  return p;
}

// TTFT of a long prompt never seen vs one whose first 90% was just sent (with another tail).
absl::StatusOr<Json> RunPrefixCache(int port, const std::string& model, const Args& a) {
  const int64_t n = a.prefix_tokens;
  const int64_t shared = n * 9 / 10;
  std::vector<double> uncached, cached;
  std::vector<int64_t> hits_uncached, hits_cached;
  for (int64_t trial = 0; trial < a.prefix_trials && !g_stop; ++trial) {
    const uint64_t seed = 7000 + static_cast<uint64_t>(trial) * 10;
    // Uncached: a fresh prompt of n tokens.
    MOESERVE_ASSIGN_OR_RETURN(
        StreamTiming cold,
        StreamCompletion(port, "/v1/completions",
                         CompletionBody(model, RandomTokens(seed, n), 2), 300));
    // Warm the prefix: shared prefix + tail A.
    std::vector<int32_t> prefix = RandomTokens(seed + 1, shared);
    std::vector<int32_t> warm = prefix, hot = prefix;
    std::vector<int32_t> tail_a = RandomTokens(seed + 2, n - shared);
    std::vector<int32_t> tail_b = RandomTokens(seed + 3, n - shared);
    warm.insert(warm.end(), tail_a.begin(), tail_a.end());
    hot.insert(hot.end(), tail_b.begin(), tail_b.end());
    MOESERVE_ASSIGN_OR_RETURN(
        StreamTiming w,
        StreamCompletion(port, "/v1/completions", CompletionBody(model, warm, 2), 300));
    (void)w;
    MOESERVE_ASSIGN_OR_RETURN(
        StreamTiming h,
        StreamCompletion(port, "/v1/completions", CompletionBody(model, hot, 2), 300));
    uncached.push_back(cold.ttft);
    cached.push_back(h.ttft);
    hits_uncached.push_back(cold.cached_tokens);
    hits_cached.push_back(h.cached_tokens);
  }
  const double u = Percentile(uncached, 50), c = Percentile(cached, 50);
  return Json{{"prompt_tokens", n},
              {"shared_prefix_tokens", shared},
              {"trials", uncached.size()},
              {"uncached_ttft", Summary(uncached)},
              {"cached_ttft", Summary(cached)},
              {"uncached_prompt_cache_hit_tokens", hits_uncached},
              {"cached_prompt_cache_hit_tokens", hits_cached},
              {"ratio_cached_over_uncached_p50", u > 0 ? std::round(c / u * 1000) / 1000 : 0.0},
              {"goal", "<= 0.2"}};
}

// ---------------------------------------------------------------------------------------------

absl::StatusOr<Args> ParseArgs(int argc, char** argv) {
  MOESERVE_ASSIGN_OR_RETURN(
      cli::Flags f,
      cli::Flags::Parse(std::vector<std::string>(argv + 1, argv + argc),
                        {"bin-dir", "model-dir", "compute-dtype", "threads", "prefill", "decode",
                         "shards", "block-tokens", "kv-cache-mb", "prompt-tokens", "max-tokens",
                         "low-concurrency", "low-requests", "high-concurrency", "high-requests",
                         "max-seconds", "prefix-tokens", "prefix-trials", "run-dir"},
                        {}));
  Args a;
  a.bin_dir = f.Get("bin-dir").value_or(ExecutableDir());
  a.model_dir = std::filesystem::path(f.Get("model-dir").value_or(a.bin_dir + "/../../bench-models/tiny"))
                    .lexically_normal()
                    .string();
  a.compute = f.Get("compute-dtype").value_or(a.compute);
  a.run_dir = f.Get("run-dir").value_or("");
  struct IntFlag {
    const char* name;
    int64_t* out;
    int64_t min;
  };
  const IntFlag ints[] = {{"threads", &a.threads, 1},
                          {"prefill", &a.prefill, 1},
                          {"decode", &a.decode, 1},
                          {"shards", &a.shards, 0},
                          {"block-tokens", &a.block_tokens, 1},
                          {"kv-cache-mb", &a.kv_cache_mb, 1},
                          {"prompt-tokens", &a.prompt_tokens, 1},
                          {"max-tokens", &a.max_tokens, 1},
                          {"low-concurrency", &a.low_concurrency, 1},
                          {"low-requests", &a.low_requests, 1},
                          {"high-concurrency", &a.high_concurrency, 1},
                          {"high-requests", &a.high_requests, 1},
                          {"prefix-tokens", &a.prefix_tokens, 10},
                          {"prefix-trials", &a.prefix_trials, 0}};
  for (const IntFlag& i : ints) {
    MOESERVE_ASSIGN_OR_RETURN(*i.out, f.GetInt(i.name, *i.out));
    if (*i.out < i.min) {
      return absl::InvalidArgumentError(absl::StrCat("--", i.name, " must be >= ", i.min));
    }
  }
  MOESERVE_ASSIGN_OR_RETURN(a.max_seconds, f.GetDouble("max-seconds", a.max_seconds));
  if (a.compute != "bf16" && a.compute != "f32") {
    return absl::InvalidArgumentError("--compute-dtype must be bf16 or f32");
  }
  return a;
}

double Ratio(double num, double den) { return den > 0 ? std::round(num / den * 1000) / 1000 : 0; }

absl::Status Run(Args a, Json* out) {
  const Clock::time_point start = Clock::now();
  if (a.run_dir.empty()) {
    char tmpl[] = "/tmp/moeserve-bench-serve-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
    a.run_dir = tmpl;
  }
  std::filesystem::create_directories(a.run_dir);
  MOESERVE_RETURN_IF_ERROR(MakeModelIfMissing(a));
  const std::string model_name = std::filesystem::path(a.model_dir).filename().string();

  // The same prompts on both sides: low-concurrency phase, then high, plus one warm-up each.
  auto make_prompts = [&](uint64_t seed, int64_t n) {
    std::vector<std::vector<int32_t>> p;
    for (int64_t i = 0; i < n; ++i) {
      p.push_back(RandomTokens(seed + static_cast<uint64_t>(i), a.prompt_tokens));
    }
    return p;
  };
  const std::vector<std::vector<int32_t>> warmup = make_prompts(100, 2);
  const std::vector<std::vector<int32_t>> low = make_prompts(1000, a.low_requests);
  const std::vector<std::vector<int32_t>> high = make_prompts(2000, a.high_requests);

  (*out)["machine"] = {{"nproc", std::thread::hardware_concurrency()}};
  (*out)["cluster_config"] = {{"prefill_workers", a.prefill},  {"decode_workers", a.decode},
                              {"expert_shards", a.shards},     {"threads_per_process", a.threads},
                              {"compute_dtype", a.compute},    {"block_tokens", a.block_tokens},
                              {"kv_cache_mb", a.kv_cache_mb},  {"model_dir", a.model_dir}};
  (*out)["workload"] = {{"prompt_tokens", a.prompt_tokens},
                        {"max_tokens", a.max_tokens},
                        {"ignore_eos", true},
                        {"temperature", 0},
                        {"max_seconds_per_phase", a.max_seconds}};

  // 1. The engine in this process (before the cluster starts, so nothing competes for cores).
  {
    engine::ModelOptions mo;
    MOESERVE_ASSIGN_OR_RETURN(mo.compute, engine::ParseComputeDType(a.compute));
    mo.threads = static_cast<int>(a.threads);
    MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::Model> model,
                              engine::Model::Load(a.model_dir, mo));
    MOESERVE_RETURN_IF_ERROR(RunEngine(*model, a, warmup, 1).status());
    MOESERVE_ASSIGN_OR_RETURN(Phase e_low, RunEngine(*model, a, low, a.low_concurrency));
    MOESERVE_ASSIGN_OR_RETURN(Phase e_high, RunEngine(*model, a, high, a.high_concurrency));
    (*out)["engine"] = {{"low", e_low.ToJson()}, {"high", e_high.ToJson()}};
    (*out)["engine_tokens_per_s"] = {e_low.Throughput(), e_high.Throughput()};
  }

  // 2. The cluster.
  Cluster cluster;
  MOESERVE_RETURN_IF_ERROR(cluster.Start(a));
  (*out)["cluster_startup_s"] = std::round(cluster.startup_s() * 100) / 100;
  Phase w = RunCluster(cluster.port(), model_name, a, warmup, 1);
  if (w.requests == 0) {
    return absl::UnavailableError(absl::StrCat("warm-up request failed: ", w.first_error));
  }
  Phase c_low = RunCluster(cluster.port(), model_name, a, low, a.low_concurrency);
  Phase c_high = RunCluster(cluster.port(), model_name, a, high, a.high_concurrency);
  (*out)["cluster"] = {{"low", c_low.ToJson()}, {"high", c_high.ToJson()}};
  const double e_low = (*out)["engine_tokens_per_s"][0].get<double>();
  const double e_high = (*out)["engine_tokens_per_s"][1].get<double>();
  out->erase("engine_tokens_per_s");
  (*out)["throughput_ratio_cluster_over_engine"] = {
      {absl::StrCat("c", a.low_concurrency), Ratio(c_low.Throughput(), e_low)},
      {absl::StrCat("c", a.high_concurrency), Ratio(c_high.Throughput(), e_high)},
      {"goal", absl::StrCat(">= 0.8 at c", a.high_concurrency)}};

  // 3. Prefix caching.
  if (a.prefix_trials > 0) {
    absl::StatusOr<Json> prefix = RunPrefixCache(cluster.port(), model_name, a);
    (*out)["prefix_cache"] = prefix.ok() ? *prefix : Json{{"error", prefix.status().ToString()}};
  }
  cluster.Stop();
  (*out)["run_dir"] = a.run_dir;
  (*out)["bench_wall_s"] = std::round(Since(start) * 10) / 10;
  return absl::OkStatus();
}

}  // namespace
}  // namespace moeserve::bench

int main(int argc, char** argv) {
  struct sigaction sa{};
  sa.sa_handler = moeserve::bench::OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  absl::StatusOr<moeserve::bench::Args> args = moeserve::bench::ParseArgs(argc, argv);
  if (!args.ok()) {
    std::cerr << args.status() << "\n";
    return 2;
  }
  nlohmann::json out = {{"bench", "serve"}};
  absl::Status st = moeserve::bench::Run(*args, &out);
  if (!st.ok()) out["error"] = st.ToString();
  std::cout << out.dump(2) << std::endl;
  return st.ok() ? 0 : 1;
}
