// Prefill and decode workers and the KV-cache service as real gRPC servers in this process: the
// disaggregated path (prefill on one worker, decode on another, latents through the cache) must
// give exactly the single-process engine's tokens, and so must a resumed (migrated) decode.
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend_registry.h"
#include "engine/engine.h"
#include "engine/model/backend_experts.h"
#include "engine/model/backend_model.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "expert-shard/expert_shard_server.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvcache/kvcache_server.h"
#include "moeserve/v1/worker.grpc.pb.h"
#include "tests/testing/tiny_model.h"
#include "tools/moeserve/mkmodel.h"
#include "worker/worker_server.h"

namespace moeserve::worker {
namespace {

namespace v1 = moeserve::v1;

class WorkerClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::TempDir("worker_cluster"));
    ASSERT_TRUE(cli::WriteRandomCheckpoint(testing::SmallConfig(), *dir_, 21, false).ok());
  }
  static void TearDownTestSuite() { delete dir_; }

  void SetUp() override {
    kvcache::KvCacheServerConfig kc;
    kc.host = "127.0.0.1";
    kc.cache.block_tokens = 4;
    absl::StatusOr<std::unique_ptr<kvcache::KvCacheServer>> kv = kvcache::KvCacheServer::Create(kc);
    ASSERT_TRUE(kv.ok()) << kv.status();
    kv_ = std::move(*kv);
    prefill_ = Start(Role::kPrefill);
    decode_ = Start(Role::kDecode);
  }

  std::unique_ptr<WorkerServer> Start(Role role, std::vector<std::string> shards = {},
                                      const std::string& backend = "",
                                      engine::DType kv_cache_dtype = engine::DType::kF32,
                                      bool decode_graphs = false) {
    WorkerConfig c;
    c.decode_graphs = decode_graphs;
    c.engine.kv_cache_dtype = kv_cache_dtype;
    c.expert_shards = std::move(shards);
    c.backend = backend;
    c.model_dir = *dir_;
    c.role = role;
    c.kvcache = "127.0.0.1:" + std::to_string(kv_->Port());
    c.model.compute = engine::ComputeDType::kF32;
    c.model.threads = 1;
    c.engine.block_tokens = 4;
    c.engine.kv_cache_tokens = 512;
    absl::StatusOr<std::unique_ptr<WorkerServer>> s = WorkerServer::Create(c);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  static std::unique_ptr<v1::Worker::Stub> Stub(const WorkerServer& s) {
    return v1::Worker::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(s.Port()),
                                                   grpc::InsecureChannelCredentials()));
  }

  static v1::GenerationSpec Spec(const std::vector<int32_t>& prompt, int max_new) {
    v1::GenerationSpec s;
    s.set_request_id("req-1");
    for (int32_t t : prompt) s.add_prompt_ids(t);
    s.set_max_new_tokens(max_new);
    s.set_ignore_eos(true);
    s.set_thinking_budget(-1);
    s.mutable_sampling()->set_temperature(1.0);
    s.mutable_sampling()->set_seed(99);
    return s;
  }

  // The single-process reference: the same model, engine and sampler in one process.
  // temperature 0: greedy, over the first sample_vocab ids when > 0. A BF16 cache: the steps
  // on the CPU backend, which holds it.
  static std::vector<int32_t> Reference(const std::vector<int32_t>& prompt, int max_new,
                                        double temperature = 1.0, int64_t sample_vocab = 0,
                                        engine::DType kv_cache_dtype = engine::DType::kF32) {
    engine::ModelOptions mo;
    mo.compute = engine::ComputeDType::kF32;
    std::unique_ptr<engine::Model> m = std::move(*engine::Model::Load(*dir_, mo));
    engine::EngineOptions eo;
    eo.kv_cache_tokens = 512;
    eo.kv_cache_dtype = kv_cache_dtype;
    engine::BackendPtr backend;
    std::unique_ptr<engine::BackendModel> runner;
    if (kv_cache_dtype != engine::DType::kF32) {
      backend = std::move(*engine::CreateBackend("cpu:1"));
      runner = std::move(*engine::BackendModel::Create(
          m.get(), backend.get(), engine::BackendModelOptions::ForEngine(m->config(), eo)));
      eo.runner = runner.get();
    }
    engine::Engine e(m.get(), eo);
    engine::SeqId seq = *e.Add(prompt);
    engine::SamplingParams p;
    p.temperature = temperature;
    p.seed = 99;
    engine::Sampler sampler(p, 0);
    std::vector<int32_t> out;
    while (static_cast<int>(out.size()) < max_new) {
      std::vector<engine::StepOutput> so = *e.Step();
      if (so.empty()) continue;
      absl::Span<const float> logits = so[0].logits;
      if (sample_vocab > 0) logits = logits.subspan(0, static_cast<size_t>(sample_vocab));
      out.push_back(sampler.Sample(logits, prompt, out).token);
      (void)e.Append(seq, out.back());
    }
    return out;
  }

  // Decode from `spec` to the end; returns the tokens and the first chunk's cached count.
  static std::vector<int32_t> Decode(v1::Worker::Stub* stub, const v1::GenerationSpec& spec,
                                     int* cached, grpc::Status* status) {
    grpc::ClientContext ctx;
    v1::DecodeRequest req;
    *req.mutable_spec() = spec;
    std::unique_ptr<grpc::ClientReader<v1::DecodeChunk>> reader = stub->Decode(&ctx, req);
    v1::DecodeChunk chunk;
    std::vector<int32_t> out;
    bool first = true;
    while (reader->Read(&chunk)) {
      if (first && cached != nullptr) *cached = chunk.cached_tokens();
      first = false;
      out.insert(out.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    }
    *status = reader->Finish();
    return out;
  }

  static std::string* dir_;
  std::unique_ptr<kvcache::KvCacheServer> kv_;
  std::unique_ptr<WorkerServer> prefill_, decode_;
};

std::string* WorkerClusterTest::dir_ = nullptr;

TEST_F(WorkerClusterTest, PrefillThenDecodeOnAnotherWorkerEqualsTheSingleProcessEngine) {
  std::vector<int32_t> prompt;
  for (int i = 0; i < 23; ++i) prompt.push_back((i * 17 + 5) % 384);
  const int max_new = 12;
  std::vector<int32_t> expected = Reference(prompt, max_new);

  auto p = Stub(*prefill_);
  grpc::ClientContext ctx;
  v1::PrefillRequest req;
  *req.mutable_spec() = Spec(prompt, max_new);
  v1::PrefillResponse resp;
  grpc::Status st = p->Prefill(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.token_ids_size(), 1);
  EXPECT_EQ(resp.token_ids(0), expected[0]);
  EXPECT_EQ(resp.published_blocks(), 5);  // 23 tokens = 5 full blocks of 4
  EXPECT_EQ(resp.cached_prompt_tokens(), 0);

  v1::GenerationSpec spec = Spec(prompt, max_new);
  spec.add_generated_ids(resp.token_ids(0));
  int cached = -1;
  std::vector<int32_t> rest = Decode(Stub(*decode_).get(), spec, &cached, &st);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(cached, 20);  // the 5 published blocks were fetched, not recomputed
  std::vector<int32_t> got = {resp.token_ids(0)};
  got.insert(got.end(), rest.begin(), rest.end());
  EXPECT_EQ(got, expected);

  // The same prompt again: the prefill reuses the cached prefix and picks the same token.
  grpc::ClientContext ctx2;
  v1::PrefillResponse resp2;
  ASSERT_TRUE(p->Prefill(&ctx2, req, &resp2).ok());
  EXPECT_EQ(resp2.cached_prompt_tokens(), 20);
  EXPECT_EQ(resp2.token_ids(0), expected[0]);

  // Migration: a decode resumed from any point continues with the same tokens.
  for (int cut : {1, 5, 11}) {
    v1::GenerationSpec resumed = Spec(prompt, max_new);
    for (int i = 0; i < cut; ++i) resumed.add_generated_ids(expected[i]);
    std::vector<int32_t> tail = Decode(Stub(*decode_).get(), resumed, nullptr, &st);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(tail, std::vector<int32_t>(expected.begin() + cut, expected.end())) << "cut " << cut;
  }
}

// The backend the Backend tests run the worker's steps on: the CPU backend here, and the GPU's
// when the GPU bundle sets MOESERVE_TEST_BACKEND=cuda (scripts/gpu-bundle.sh). In f32 compute the
// CUDA logits differ from the host's by about 1e-5, far below the sampled tokens' margins here.
std::string TestBackend() {
  const char* b = std::getenv("MOESERVE_TEST_BACKEND");
  return b != nullptr && *b != '\0' ? b : "cpu:2";
}

// Prefill and decode workers on a backend with a bf16 latent cache: the prefill publishes
// bf16 blocks (half the bytes), the decode imports them, and the tokens are a single-process
// engine's over the same kind of cache. Blocks of float32 workers on the same KV-cache service
// are never taken (another hash namespace, other bytes).
TEST_F(WorkerClusterTest, Bf16CacheWorkersShareTheirOwnBlocksAndEqualTheSingleProcessEngine) {
  std::vector<int32_t> prompt;
  for (int i = 0; i < 23; ++i) prompt.push_back((i * 13 + 7) % 384);
  const int max_new = 12;
  const std::vector<int32_t> expected =
      Reference(prompt, max_new, 1.0, 0, engine::DType::kBf16);
  v1::PrefillRequest req;
  *req.mutable_spec() = Spec(prompt, max_new);
  {
    // The float32 prefill worker publishes this prompt's blocks first.
    grpc::ClientContext ctx;
    v1::PrefillResponse resp;
    ASSERT_TRUE(Stub(*prefill_)->Prefill(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.published_blocks(), 5);
  }
  std::unique_ptr<WorkerServer> prefill =
      Start(Role::kPrefill, {}, TestBackend(), engine::DType::kBf16);
  std::unique_ptr<WorkerServer> decode =
      Start(Role::kDecode, {}, TestBackend(), engine::DType::kBf16);
  ASSERT_NE(prefill, nullptr);
  ASSERT_NE(decode, nullptr);
  grpc::ClientContext ctx;
  v1::PrefillResponse resp;
  grpc::Status st = Stub(*prefill)->Prefill(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.cached_prompt_tokens(), 0);  // not the float32 blocks
  EXPECT_EQ(resp.published_blocks(), 5);
  ASSERT_EQ(resp.token_ids_size(), 1);
  EXPECT_EQ(resp.token_ids(0), expected[0]);

  v1::GenerationSpec spec = Spec(prompt, max_new);
  spec.add_generated_ids(resp.token_ids(0));
  int cached = -1;
  std::vector<int32_t> rest = Decode(Stub(*decode).get(), spec, &cached, &st);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(cached, 20);  // the bf16 blocks were fetched, not recomputed
  std::vector<int32_t> got = {resp.token_ids(0)};
  got.insert(got.end(), rest.begin(), rest.end());
  EXPECT_EQ(got, expected);

  // A bf16 cache without a backend is refused at start-up with the reason.
  WorkerConfig c;
  c.model_dir = *dir_;
  c.engine.kv_cache_dtype = engine::DType::kBf16;
  absl::StatusOr<std::unique_ptr<WorkerServer>> bad = WorkerServer::Create(c);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
}

// --gpu-memory-utilization on a worker whose steps and experts run on a backend: the pool is
// what the fraction leaves after the attention-side and expert weights and a step's scratch
// (here a fraction of the host's memory picked to leave exactly 40 blocks), GetLoad reports
// it, and the worker serves the single-process engine's tokens over it.
TEST_F(WorkerClusterTest, AMemoryFractionSizesTheWorkersPoolAfterItsWeights) {
  engine::ModelOptions mo;
  mo.compute = engine::ComputeDType::kF32;
  std::unique_ptr<engine::Model> m = std::move(*engine::Model::Load(*dir_, mo));
  engine::BackendPtr backend = std::move(*engine::CreateBackend("cpu:1"));
  engine::BackendModelOptions bo;
  bo.block_tokens = 4;
  bo.num_blocks = 1;
  const int64_t weights =
      (*engine::BackendModel::Create(m.get(), backend.get(), bo))->weight_bytes() +
      (*engine::BackendExpertExecutor::Create(m.get(), backend.get()))->backend_bytes();
  const int64_t block_bytes = 4 * engine::KvCache::BytesPerToken(m->config());
  const engine::EngineOptions defaults;  // the worker's step size and logit rows
  const int64_t scratch = engine::BackendModel::StepScratchBytes(
      m->config(), defaults.max_step_tokens, defaults.max_logit_rows);
  const engine::MemoryInfo memory = *backend->DeviceMemory();
  WorkerConfig c;
  c.model_dir = *dir_;
  c.kvcache = "127.0.0.1:" + std::to_string(kv_->Port());
  c.backend = TestBackend();
  c.model.compute = engine::ComputeDType::kF32;
  c.model.threads = 1;
  c.engine.block_tokens = 4;
  c.gpu_memory_utilization = static_cast<double>(weights + scratch + 40 * block_bytes +
                                                 block_bytes / 2) /
                             static_cast<double>(memory.total_bytes);
  if (c.backend.rfind("cpu", 0) != 0) GTEST_SKIP() << "the fraction is of the host's memory";
  absl::StatusOr<std::unique_ptr<WorkerServer>> w = WorkerServer::Create(c);
  ASSERT_TRUE(w.ok()) << w.status();
  grpc::ClientContext ctx;
  v1::WorkerLoad load;
  ASSERT_TRUE(Stub(**w)->GetLoad(&ctx, v1::GetLoadRequest(), &load).ok());
  EXPECT_EQ(load.kv_blocks_total(), 40);
  std::vector<int32_t> prompt = {4, 8, 15, 16, 23, 42, 108};
  grpc::Status st;
  EXPECT_EQ(Decode(Stub(**w).get(), Spec(prompt, 6), nullptr, &st), Reference(prompt, 6));
  EXPECT_TRUE(st.ok()) << st.error_message();
}

// Two expert shards over gRPC; `addrs` gets their addresses.
// `backend` set: their products run there.
std::vector<std::unique_ptr<expert_shard::ExpertShardServer>> StartShards(
    const std::string& model_dir, std::vector<std::string>* addrs,
    const std::string& backend = "") {
  std::vector<std::unique_ptr<expert_shard::ExpertShardServer>> shards;
  for (int i = 0; i < 2; ++i) {
    expert_shard::ShardConfig sc;
    sc.model_dir = model_dir;
    sc.host = "127.0.0.1";
    sc.shard_id = i;
    sc.num_shards = 2;
    sc.compute = engine::ComputeDType::kF32;
    sc.threads = 1;
    sc.backend = backend;
    absl::StatusOr<std::unique_ptr<expert_shard::ExpertShardServer>> s =
        expert_shard::ExpertShardServer::Create(sc);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return {};
    addrs->push_back("127.0.0.1:" + std::to_string((*s)->Port()));
    shards.push_back(std::move(*s));
  }
  return shards;
}

TEST_F(WorkerClusterTest, DecodeWithExpertsOnTwoShardsEqualsTheSingleProcessEngine) {
  std::vector<std::string> addrs;
  std::vector<std::unique_ptr<expert_shard::ExpertShardServer>> shards = StartShards(*dir_, &addrs);
  ASSERT_EQ(shards.size(), 2u);
  std::unique_ptr<WorkerServer> both = Start(Role::kBoth, addrs);
  ASSERT_NE(both, nullptr);
  std::vector<int32_t> prompt = {9, 8, 7, 6, 5, 4, 3, 2, 1};
  grpc::Status st;
  std::vector<int32_t> got = Decode(Stub(*both).get(), Spec(prompt, 10), nullptr, &st);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(got, Reference(prompt, 10));
}

// The worker's steps on a Backend (BackendModel + BackendExpertExecutor over the CPU backend,
// the code path a GPU worker takes with --backend cuda) give the single-process engine's tokens.
// Op by op and with decode steps replayed from graphs (--decode-graphs), which the second
// worker really replays.
TEST_F(WorkerClusterTest, DecodeOnABackendEqualsTheSingleProcessEngine) {
  for (bool graphs : {false, true}) {
    std::unique_ptr<WorkerServer> on_backend =
        Start(Role::kBoth, {}, TestBackend(), engine::DType::kF32, graphs);
    ASSERT_NE(on_backend, nullptr);
    std::vector<int32_t> prompt;
    for (int i = 0; i < 11; ++i) prompt.push_back((i * 29 + 3) % 384);
    grpc::Status st;
    std::vector<int32_t> got = Decode(Stub(*on_backend).get(), Spec(prompt, 10), nullptr, &st);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(got, Reference(prompt, 10)) << "graphs " << graphs;
    // Greedy requests take the argmax on the backend (Engine::SetArgmax), over the whole
    // vocabulary and over the first 100 ids only.
    for (int64_t vocab : {0, 100}) {
      v1::GenerationSpec greedy = Spec(prompt, 10);
      greedy.mutable_sampling()->set_temperature(0.0);
      greedy.set_sample_vocab(vocab);
      got = Decode(Stub(*on_backend).get(), greedy, nullptr, &st);
      ASSERT_TRUE(st.ok()) << st.error_message();
      EXPECT_EQ(got, Reference(prompt, 10, 0.0, vocab))
          << "sample_vocab " << vocab << " graphs " << graphs;
      if (vocab > 0) {
        for (int32_t t : got) EXPECT_LT(t, vocab);
      }
    }
    // Three requests of ten tokens: at most the first step of each graph shape runs op by op.
    if (graphs) {
      EXPECT_GE(on_backend->DecodeGraphReplays(), 20);
    } else {
      EXPECT_EQ(on_backend->DecodeGraphReplays(), 0);
    }
  }
  // An unknown backend is refused at start-up with the reason.
  WorkerConfig c;
  c.model_dir = *dir_;
  c.backend = "tpu";
  absl::StatusOr<std::unique_ptr<WorkerServer>> bad = WorkerServer::Create(c);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
}

// Attention on the backend, routed experts on two shards over gRPC whose products run on the
// backend too (the activations go through the host between them): the single-process engine's
// tokens. A shard given a backend it cannot open is refused at start-up.
TEST_F(WorkerClusterTest, DecodeOnABackendWithExpertsOnShardsEqualsTheSingleProcessEngine) {
  std::vector<std::string> addrs;
  std::vector<std::unique_ptr<expert_shard::ExpertShardServer>> shards =
      StartShards(*dir_, &addrs, TestBackend());
  ASSERT_EQ(shards.size(), 2u);
  expert_shard::ShardConfig bad;
  bad.model_dir = *dir_;
  bad.backend = "tpu";
  EXPECT_EQ(expert_shard::ExpertShardServer::Create(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::unique_ptr<WorkerServer> w = Start(Role::kBoth, addrs, TestBackend());
  ASSERT_NE(w, nullptr);
  std::vector<int32_t> prompt = {31, 7, 300, 2, 2, 19, 64, 5, 11, 250, 1, 8, 13};
  grpc::Status st;
  std::vector<int32_t> got = Decode(Stub(*w).get(), Spec(prompt, 12), nullptr, &st);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(got, Reference(prompt, 12));
}

TEST_F(WorkerClusterTest, RolesAndBadInputAreRefusedWithClearStatuses) {
  grpc::Status st;
  Decode(Stub(*prefill_).get(), Spec({1, 2, 3}, 4), nullptr, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  grpc::ClientContext ctx;
  v1::PrefillRequest req;
  *req.mutable_spec() = Spec({1, 2, 5000}, 4);
  v1::PrefillResponse resp;
  st = Stub(*prefill_)->Prefill(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("5000"), std::string::npos) << st.error_message();
  Decode(Stub(*decode_).get(), Spec({}, 4), nullptr, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(WorkerClusterTest, CancelledDecodeFreesItsBlocks) {
  auto stub = Stub(*decode_);
  v1::GenerationSpec spec = Spec({4, 8, 15, 16, 23, 42}, 400);
  grpc::ClientContext ctx;
  v1::DecodeRequest req;
  *req.mutable_spec() = spec;
  std::unique_ptr<grpc::ClientReader<v1::DecodeChunk>> reader = stub->Decode(&ctx, req);
  v1::DecodeChunk chunk;
  ASSERT_TRUE(reader->Read(&chunk));
  ctx.TryCancel();
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The worker notices and frees the sequence (bounded poll on its load report).
  v1::WorkerLoad load;
  for (int i = 0; i < 2000; ++i) {
    grpc::ClientContext lc;
    ASSERT_TRUE(stub->GetLoad(&lc, v1::GetLoadRequest(), &load).ok());
    if (load.running() == 0 && load.kv_blocks_free() == load.kv_blocks_total()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(load.running(), 0);
  EXPECT_EQ(load.kv_blocks_free(), load.kv_blocks_total());
}

}  // namespace
}  // namespace moeserve::worker
