#ifndef MOESERVE_EXPERT_SHARD_EXPERT_SHARD_SERVER_H_
#define MOESERVE_EXPERT_SHARD_EXPERT_SHARD_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/metrics.h"
#include "engine/dtype.h"
#include "engine/model.h"
#include "expert-shard/collective_host.h"
#include "expert-shard/compute_thread.h"
#include "expert-shard/expert_shard_service.h"
#include "expert-shard/placement.h"
#include "expert-shard/shard_compute.h"
#include "expert-shard/shard_metrics.h"
#include "grpcpp/server.h"

namespace moeserve::expert_shard {

struct ShardConfig {
  std::string model_dir;
  std::string host = "0.0.0.0";
  int port = 0;  // 0: any free port (read it back with Port())
  int metrics_port = -1;  // Prometheus /metrics: -1 off, 0 any free port
  int32_t shard_id = 0;
  int num_shards = 1;
  std::string placement = "round_robin";
  engine::ComputeDType compute = engine::ComputeDType::kBf16;
  int threads = 0;  // 0: one per core
  int cuda_device = 0;  // the GPU this shard's NCCL rank uses (JoinCollective)
  // Where the expert products run: empty for the host, or a backend spec ("cuda", "cuda:N",
  // "cpu:N"; engine/backend_registry.h), which holds this shard's experts' weights.
  std::string backend;
  // Joins a worker's collective group; unset: an NCCL rank on cuda_device where the build has
  // NCCL, else JoinCollective is refused. Tests inject in-process groups.
  GroupJoiner collective_joiner;
};

// One expert shard: the model's routed experts that the placement assigns to this shard (no
// attention weights), the compute thread, and a grpc::Server with the ExpertShard service and the
// standard health service (serving "" and "moeserve.v1.ExpertShard").
// Thread-safety: Port() from any thread; Shutdown() once, from one thread (the destructor calls
// it when it has not run).
class ExpertShardServer {
 public:
  // Errors: InvalidArgument for a bad placement or shard id; the model loader's errors (NotFound,
  // InvalidArgument naming the file and tensor); Unavailable when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<ExpertShardServer>> Create(const ShardConfig& config);
  ~ExpertShardServer();

  int Port() const { return port_; }
  int MetricsPort() const { return metrics_endpoint_ ? metrics_endpoint_->Port() : 0; }
  // Stops accepting calls, lets in-flight ones finish (up to a short grace period), then stops
  // the compute thread.
  // Drain (SIGTERM): health NOT_SERVING so that clients stop picking this process. Its calls
  // are short unary ones: Shutdown's grace period lets those in flight finish.
  void StartDrain();
  void Shutdown();
  // Blocks until Shutdown has been called (from another thread).
  void Wait();

 private:
  ExpertShardServer() = default;

  std::unique_ptr<Placement> placement_;
  std::unique_ptr<ShardMetrics> metrics_;
  std::unique_ptr<engine::Model> model_;
  engine::BackendPtr backend_;  // with config.backend; outlive the compute that uses them
  std::unique_ptr<engine::BackendExpertExecutor> backend_experts_;
  std::unique_ptr<ShardCompute> compute_;
  std::unique_ptr<ComputeThread> thread_;
  std::unique_ptr<CollectiveHost> collective_;
  std::unique_ptr<ExpertShardService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace moeserve::expert_shard

#endif  // MOESERVE_EXPERT_SHARD_EXPERT_SHARD_SERVER_H_
