#ifndef MOESERVE_WORKER_WORKER_SERVER_H_
#define MOESERVE_WORKER_WORKER_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/model.h"
#include "engine/model/backend_experts.h"
#include "engine/model/backend_model.h"
#include "grpcpp/grpcpp.h"
#include "kvcache/kvcache_client.h"
#include "expert-shard/placement.h"
#include "expert-shard/remote_expert_executor.h"
#include "expert-shard/transport/collective_transport.h"
#include "expert-shard/transport/grpc_transport.h"
#include "common/metrics.h"
#include "worker/engine_loop.h"
#include "worker/worker_metrics.h"
#include "worker/worker_service.h"

namespace moeserve::worker {

struct WorkerConfig {
  std::string model_dir;
  std::string host = "127.0.0.1";
  int port = 0;  // 0: a free port (read back with Port())
  int metrics_port = -1;  // Prometheus /metrics: -1 off, 0 any free port
  Role role = Role::kBoth;
  std::string kvcache;  // host:port of the KV-cache service; empty: no shared cache
  // Expert shards (host:port, shard i at index i) and their placement spec; empty: the routed
  // experts are loaded and run in this process.
  std::vector<std::string> expert_shards;
  std::string placement = "round_robin";
  // The data plane to the shards: "grpc" (Exchange calls) or "nccl" (a communicator set up
  // through the shards' JoinCollective; this worker's rank on GPU cuda_device).
  std::string expert_transport = "grpc";
  int cuda_device = 0;
  // Where the engine's steps run: empty for the host engine, or a backend spec ("cuda",
  // "cuda:N", "cpu:N"; engine/backend_registry.h). With a backend and no shards, the routed
  // experts run on it too.
  std::string backend;
  // > 0 (with a backend): the KV pool takes what is left of this fraction of the backend's
  // memory after this worker's weights and a step's scratch, instead of engine.kv_cache_* (vLLM's
  // --gpu-memory-utilization; BackendModelOptions::memory_fraction). The flag's default is 0.9
  // on a cuda backend when no --kv-cache-mb or --kv-cache-tokens is given, else 0.
  double gpu_memory_utilization = 0;
  // --decode-graphs (with a backend): decode steps replayed from graphs, CUDA graphs on a GPU
  // (BackendModelOptions::graphs). Off by default.
  bool decode_graphs = false;
  engine::ModelOptions model;
  engine::EngineOptions engine;
};

inline constexpr char kWorkerUsage[] =
    "usage: moeserve-worker --model DIR [--port N] [--host ADDR] [--role prefill|decode|both]\n"
    "         [--kvcache HOST:PORT] [--expert-shards HOST:PORT[,...]] [--placement SPEC]\n"
    "         [--expert-transport grpc|nccl] [--cuda-device N] [--backend cuda[:N]|cpu[:N]]\n"
    "         [--compute-dtype bf16|f32] [--threads N] [--kv-cache-tokens N] [--kv-cache-mb N]\n"
    "         [--block-tokens N] [--max-step-tokens N] [--metrics-port N]\n"
    "         [--kv-cache-dtype auto|bf16|f32]   (auto: bf16 on a backend in bf16 compute)\n"
    "         [--gpu-memory-utilization F]   (the KV pool from the backend's memory; default\n"
    "                                         0.9 on cuda without --kv-cache-mb/--kv-cache-tokens)\n"
    "         [--decode-graphs]   (decode steps replayed from graphs: CUDA graphs on a GPU)\n";

// Parses the worker's flags (see kWorkerUsage); InvalidArgument naming the flag.
absl::StatusOr<WorkerConfig> ParseWorkerFlags(const std::vector<std::string>& args);

// A worker process: loads the model, owns the engine loop and the gRPC server (Worker service,
// standard health service, reflection). Create returns once it listens.
class WorkerServer {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerServer>> Create(const WorkerConfig& config);
  ~WorkerServer();
  int Port() const { return port_; }
  // Decode steps replayed from graphs so far (--decode-graphs; 0 without a backend).
  int64_t DecodeGraphReplays() const;
  int MetricsPort() const { return metrics_endpoint_ ? metrics_endpoint_->Port() : 0; }
  // Graceful drain: health NOT_SERVING, new work UNAVAILABLE; Idle() once no call is left.
  void StartDrain();
  bool Idle() const { return service_->calls() == 0; }
  void Shutdown();
  void Wait();

 private:
  WorkerServer() = default;
  std::unique_ptr<WorkerMetrics> metrics_;
  std::unique_ptr<engine::Model> model_;
  std::unique_ptr<kvcache::KvCacheClient> kv_;
  std::unique_ptr<expert_shard::Placement> placement_;
  std::unique_ptr<expert_shard::GrpcTransport> transport_;  // control plane, and data plane
  std::unique_ptr<expert_shard::CollectiveTransport> collective_;  // data plane with nccl
  std::unique_ptr<expert_shard::RemoteExpertExecutor> remote_experts_;
  engine::BackendPtr backend_;  // with --backend; outlive the loop that steps on them
  std::unique_ptr<engine::BackendModel> backend_model_;
  std::unique_ptr<engine::BackendExpertExecutor> backend_experts_;
  std::unique_ptr<EngineLoop> loop_;
  std::unique_ptr<WorkerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  int port_ = 0;
};

}  // namespace moeserve::worker

#endif  // MOESERVE_WORKER_WORKER_SERVER_H_
