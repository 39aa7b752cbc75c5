#include "worker/worker_server.h"

#include <filesystem>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "common/log.h"
#include "engine/backend_registry.h"
#include "expert-shard/collective_connect.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "kvcache/grpc_kvcache_client.h"
#include "nlohmann/json.hpp"
#include "tools/moeserve/flags.h"

namespace moeserve::worker {

absl::StatusOr<WorkerConfig> ParseWorkerFlags(const std::vector<std::string>& args) {
  MOESERVE_ASSIGN_OR_RETURN(
      cli::Flags f, cli::Flags::Parse(args,
                                      {"model", "port", "role", "kvcache", "compute-dtype",
                                       "threads", "kv-cache-tokens", "kv-cache-mb",
                                       "block-tokens", "max-step-tokens", "expert-shards",
                                       "placement", "host", "metrics-port",
                                       "expert-transport", "cuda-device", "backend",
                                       "kv-cache-dtype", "gpu-memory-utilization"},
                                      {"decode-graphs"}));
  WorkerConfig c;
  MOESERVE_ASSIGN_OR_RETURN(c.model_dir, f.Required("model"));
  MOESERVE_ASSIGN_OR_RETURN(int64_t port, f.GetInt("port", 0));
  if (port < 0 || port > 65535) return absl::InvalidArgumentError("--port out of range");
  c.port = static_cast<int>(port);
  c.host = f.Get("host").value_or(c.host);
  if (c.host.empty()) return absl::InvalidArgumentError("--host must not be empty");
  MOESERVE_ASSIGN_OR_RETURN(int64_t metrics_port, f.GetInt("metrics-port", -1));
  if (metrics_port < -1 || metrics_port > 65535) {
    return absl::InvalidArgumentError("--metrics-port out of range");
  }
  c.metrics_port = static_cast<int>(metrics_port);
  MOESERVE_ASSIGN_OR_RETURN(c.role, ParseRole(f.Get("role").value_or("both")));
  c.kvcache = f.Get("kvcache").value_or("");
  c.placement = f.Get("placement").value_or(c.placement);
  if (auto shards = f.Get("expert-shards")) {
    c.expert_shards = absl::StrSplit(*shards, ',', absl::SkipEmpty());
  }
  c.expert_transport = f.Get("expert-transport").value_or("grpc");
  if (c.expert_transport != "grpc" && c.expert_transport != "nccl") {
    return absl::InvalidArgumentError(absl::StrCat("--expert-transport must be grpc or nccl, not '",
                                                   c.expert_transport, "'"));
  }
  MOESERVE_ASSIGN_OR_RETURN(int64_t cuda_device, f.GetInt("cuda-device", 0));
  if (cuda_device < 0 || cuda_device > 1024) {
    return absl::InvalidArgumentError("--cuda-device out of range");
  }
  c.cuda_device = static_cast<int>(cuda_device);
  c.backend = f.Get("backend").value_or("");
  MOESERVE_ASSIGN_OR_RETURN(c.model.compute,
                            engine::ParseComputeDType(f.Get("compute-dtype").value_or("bf16")));
  MOESERVE_ASSIGN_OR_RETURN(c.engine.kv_cache_dtype,
                            engine::ParseKvCacheDType(f.Get("kv-cache-dtype").value_or("auto"),
                                                      c.model.compute, !c.backend.empty()));
  MOESERVE_ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads", 0));
  c.model.threads = static_cast<int>(threads);
  MOESERVE_ASSIGN_OR_RETURN(c.engine.kv_cache_tokens, f.GetInt("kv-cache-tokens", 0));
  MOESERVE_ASSIGN_OR_RETURN(int64_t mb, f.GetInt("kv-cache-mb", 256));
  c.engine.kv_cache_bytes = mb << 20;
  MOESERVE_ASSIGN_OR_RETURN(c.engine.block_tokens, f.GetInt("block-tokens", 16));
  MOESERVE_ASSIGN_OR_RETURN(c.engine.max_step_tokens, f.GetInt("max-step-tokens", 512));
  if (c.engine.block_tokens <= 0 || c.engine.max_step_tokens <= 0 || mb <= 0) {
    return absl::InvalidArgumentError(
        "--block-tokens, --max-step-tokens and --kv-cache-mb must be positive");
  }
  const bool sized = f.Has("kv-cache-mb") || f.Has("kv-cache-tokens");
  if (f.Has("gpu-memory-utilization")) {
    MOESERVE_ASSIGN_OR_RETURN(c.gpu_memory_utilization, f.GetDouble("gpu-memory-utilization", 0));
    if (!(c.gpu_memory_utilization > 0 && c.gpu_memory_utilization <= 1)) {
      return absl::InvalidArgumentError("--gpu-memory-utilization must be in (0, 1]");
    }
    if (c.backend.empty() || sized) {
      return absl::InvalidArgumentError(
          "--gpu-memory-utilization sizes a backend's KV pool: it needs --backend, and replaces "
          "--kv-cache-mb and --kv-cache-tokens");
    }
  } else if (!sized && absl::StartsWith(c.backend, "cuda")) {
    c.gpu_memory_utilization = 0.9;
  }
  c.decode_graphs = f.Has("decode-graphs");
  if (c.decode_graphs && c.backend.empty()) {
    return absl::InvalidArgumentError("--decode-graphs replays a backend's steps: it needs --backend");
  }
  return c;
}

namespace {

// Ids of tokenizer.json's added tokens (DeepSeek marks even its chat markers special=false).
std::vector<int32_t> AddedTokenIds(const std::string& model_dir) {
  std::ifstream in(model_dir + "/tokenizer.json");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json tok = nlohmann::json::parse(ss.str(), nullptr, false);
  std::vector<int32_t> ids;
  if (tok.is_discarded() || !tok.is_object() || !tok.contains("added_tokens") ||
      !tok["added_tokens"].is_array()) {
    return ids;
  }
  for (const nlohmann::json& t : tok["added_tokens"]) {
    if (t.is_object() && t.contains("id") && t["id"].is_number_integer()) {
      ids.push_back(t["id"].get<int32_t>());
    }
  }
  return ids;
}

}  // namespace

int64_t WorkerServer::DecodeGraphReplays() const {
  return backend_model_ ? backend_model_->graph_replays() : 0;
}

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Create(const WorkerConfig& config) {
  if (config.gpu_memory_utilization > 0 && config.backend.empty()) {
    return absl::InvalidArgumentError("--gpu-memory-utilization needs --backend");
  }
  if (config.engine.kv_cache_dtype != engine::DType::kF32 && config.backend.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ", engine::DTypeName(config.engine.kv_cache_dtype),
                     " KV cache needs the steps on a backend (--backend)"));
  }
  std::unique_ptr<WorkerServer> s(new WorkerServer());
  s->metrics_ = std::make_unique<WorkerMetrics>(std::string(RoleName(config.role)));
  engine::ModelOptions model_options = config.model;
  if (!config.expert_shards.empty()) {
    // The routed experts live on the shards: load none of them here.
    model_options.filter.want_expert = [](int64_t, int64_t) { return false; };
  }
  MOESERVE_ASSIGN_OR_RETURN(s->model_, engine::Model::Load(config.model_dir, model_options));
  engine::ExpertExecutor* experts = nullptr;
  if (!config.expert_shards.empty()) {
    const engine::ModelConfig& mc = s->model_->config();
    MOESERVE_ASSIGN_OR_RETURN(
        expert_shard::Placement placement,
        expert_shard::Placement::Parse(config.placement,
                                       static_cast<int>(config.expert_shards.size()),
                                       expert_shard::MoeShape::FromConfig(mc)));
    s->placement_ = std::make_unique<expert_shard::Placement>(std::move(placement));
    expert_shard::GrpcTransportOptions to;
    to.addresses = config.expert_shards;
    to.hidden_size = mc.hidden_size;
    MOESERVE_ASSIGN_OR_RETURN(s->transport_, expert_shard::GrpcTransport::Create(to));
    MOESERVE_RETURN_IF_ERROR(s->transport_->VerifyShards(*s->placement_, mc));
    expert_shard::ActivationTransport* data_plane = s->transport_.get();
    if (config.expert_transport == "nccl") {
      MOESERVE_ASSIGN_OR_RETURN(
          s->collective_,
          expert_shard::ConnectNcclTransport(s->transport_.get(), mc, config.cuda_device));
      data_plane = s->collective_.get();
    }
    s->remote_experts_ = std::make_unique<expert_shard::RemoteExpertExecutor>(
        s->placement_.get(), data_plane, mc.hidden_size);
    experts = s->remote_experts_.get();
  }
  if (!config.kvcache.empty()) s->kv_ = kvcache::GrpcKvCacheClient::Create(config.kvcache);
  std::ifstream in(config.model_dir + "/config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  LoopOptions lo;
  lo.engine = config.engine;
  if (!config.backend.empty()) {
    // The engine's steps on a backend (a GPU): the same blocks, their bytes in backend memory.
    MOESERVE_ASSIGN_OR_RETURN(s->backend_, engine::CreateBackend(config.backend));
    engine::BackendModelOptions bo =
        engine::BackendModelOptions::ForEngine(s->model_->config(), config.engine);
    if (experts == nullptr) {
      // First, so that a pool sized from the memory left sees the experts' weights.
      MOESERVE_ASSIGN_OR_RETURN(
          s->backend_experts_,
          engine::BackendExpertExecutor::Create(s->model_.get(), s->backend_.get()));
      experts = s->backend_experts_.get();
      bo.other_bytes = s->backend_experts_->backend_bytes();
    }
    bo.memory_fraction = config.gpu_memory_utilization;
    bo.graphs = config.decode_graphs;
    MOESERVE_ASSIGN_OR_RETURN(s->backend_model_,
                              engine::BackendModel::Create(s->model_.get(), s->backend_.get(), bo));
    lo.engine.runner = s->backend_model_.get();
    if (config.gpu_memory_utilization > 0) {
      lo.engine.kv_cache_tokens = s->backend_model_->num_blocks() * config.engine.block_tokens;
    }
    LogInfo(absl::StrCat("worker steps run on backend '", s->backend_->name(), "'; KV pool ",
                         s->backend_model_->num_blocks() * config.engine.block_tokens,
                         " tokens of ", engine::DTypeName(config.engine.kv_cache_dtype),
                         config.decode_graphs ? "; decode steps from graphs" : ""));
  }
  lo.hash_seed = PrefixSeed(ss.str(), config.model.compute, config.engine.kv_cache_dtype);
  lo.metrics = s->metrics_.get();
  // Structured output masks tokens by their bytes: take them from the model's tokenizer.
  if (std::filesystem::exists(config.model_dir + "/tokenizer.json")) {
    MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::Tokenizer> tokenizer,
                              engine::Tokenizer::Load(config.model_dir));
    const std::optional<int64_t> eos = s->model_->config().eos_token_id;
    lo.vocabulary = engine::grammar::VocabularyFromTokenizer(
        *tokenizer, eos ? static_cast<int32_t>(*eos) : -1, AddedTokenIds(config.model_dir));
  }
  s->loop_ = std::make_unique<EngineLoop>(s->model_.get(), experts, s->kv_.get(), lo);
  s->service_ = std::make_unique<WorkerService>(s->loop_.get(), config.role);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(config.host, ":", config.port),
                           grpc::InsecureServerCredentials(), &s->port_);
  builder.RegisterService(s->service_.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("worker cannot listen on port ", config.port));
  }
  if (config.metrics_port >= 0) {
    MOESERVE_ASSIGN_OR_RETURN(
        s->metrics_endpoint_,
        MetricsEndpoint::Start(config.host, config.metrics_port, s->metrics_->registry()));
  }
  return s;
}

WorkerServer::~WorkerServer() { Shutdown(); }

void WorkerServer::StartDrain() {
  service_->StartDrain();
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(false);
  }
}

void WorkerServer::Shutdown() {
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  loop_.reset();  // ends unfinished jobs (Cancelled) before the server object goes
}

void WorkerServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace moeserve::worker
