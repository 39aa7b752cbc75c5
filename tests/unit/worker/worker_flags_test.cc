#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine_loop.h"
#include "worker/worker_server.h"

namespace moeserve::worker {
namespace {

TEST(WorkerFlagsTest, ExpertTransportIsGrpcUnlessNcclIsAsked) {
  absl::StatusOr<WorkerConfig> c = ParseWorkerFlags({"--model", "m"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->expert_transport, "grpc");
  EXPECT_EQ(c->cuda_device, 0);
  c = ParseWorkerFlags({"--model", "m", "--expert-transport", "nccl", "--cuda-device", "3"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->expert_transport, "nccl");
  EXPECT_EQ(c->cuda_device, 3);
}

TEST(WorkerFlagsTest, BadTransportOrDeviceNamesTheFlag) {
  absl::StatusOr<WorkerConfig> c = ParseWorkerFlags({"--model", "m", "--expert-transport", "tcp"});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("--expert-transport"), std::string::npos) << c.status();
  c = ParseWorkerFlags({"--model", "m", "--cuda-device", "-1"});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("--cuda-device"), std::string::npos) << c.status();
}

// --kv-cache-dtype: auto is bf16 only for steps on a backend in bf16 compute; an explicit bf16
// without a backend, or an unknown name, is refused naming what is wrong.
TEST(WorkerFlagsTest, KvCacheDtypeFollowsTheBackendAndComputeUnlessNamed) {
  struct Case {
    std::vector<std::string> flags;
    engine::DType want;
  };
  const std::vector<Case> cases = {
      {{}, engine::DType::kF32},
      {{"--backend", "cpu"}, engine::DType::kBf16},
      {{"--backend", "cpu", "--compute-dtype", "f32"}, engine::DType::kF32},
      {{"--backend", "cpu", "--compute-dtype", "f32", "--kv-cache-dtype", "bf16"},
       engine::DType::kBf16},
      {{"--backend", "cpu", "--kv-cache-dtype", "f32"}, engine::DType::kF32},
      {{"--kv-cache-dtype", "float32"}, engine::DType::kF32},
  };
  for (const Case& k : cases) {
    std::vector<std::string> args = {"--model", "m"};
    args.insert(args.end(), k.flags.begin(), k.flags.end());
    absl::StatusOr<WorkerConfig> c = ParseWorkerFlags(args);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->engine.kv_cache_dtype, k.want) << args.size();
  }
  absl::StatusOr<WorkerConfig> c = ParseWorkerFlags({"--model", "m", "--kv-cache-dtype", "bf16"});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("--backend"), std::string::npos) << c.status();
  c = ParseWorkerFlags({"--model", "m", "--backend", "cpu", "--kv-cache-dtype", "fp8"});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("fp8"), std::string::npos) << c.status();
}

// --gpu-memory-utilization: 0.9 by default on a cuda backend unless the pool is sized by
// hand; given, it must be in (0, 1], with a backend and without --kv-cache-mb/-tokens.
TEST(WorkerFlagsTest, GpuMemoryUtilizationSizesABackendsPool) {
  struct Case {
    std::vector<std::string> flags;
    double want;
  };
  const std::vector<Case> cases = {
      {{}, 0},
      {{"--backend", "cpu"}, 0},
      {{"--backend", "cuda"}, 0.9},
      {{"--backend", "cuda:1"}, 0.9},
      {{"--backend", "cuda", "--kv-cache-mb", "1024"}, 0},
      {{"--backend", "cuda", "--kv-cache-tokens", "4096"}, 0},
      {{"--backend", "cpu", "--gpu-memory-utilization", "0.25"}, 0.25},
      {{"--backend", "cuda", "--gpu-memory-utilization", "1"}, 1.0},
  };
  for (const Case& k : cases) {
    std::vector<std::string> args = {"--model", "m"};
    args.insert(args.end(), k.flags.begin(), k.flags.end());
    absl::StatusOr<WorkerConfig> c = ParseWorkerFlags(args);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->gpu_memory_utilization, k.want) << args.back();
  }
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--gpu-memory-utilization", "0.5"},
        {"--backend", "cuda", "--gpu-memory-utilization", "0"},
        {"--backend", "cuda", "--gpu-memory-utilization", "1.5"},
        {"--backend", "cuda", "--gpu-memory-utilization", "0.5", "--kv-cache-mb", "64"}}) {
    std::vector<std::string> args = {"--model", "m"};
    args.insert(args.end(), bad.begin(), bad.end());
    absl::StatusOr<WorkerConfig> c = ParseWorkerFlags(args);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << args.back();
    EXPECT_NE(c.status().message().find("--gpu-memory-utilization"), std::string::npos)
        << c.status();
  }
}

// --decode-graphs: off by default, on with a backend, refused without one.
TEST(WorkerFlagsTest, DecodeGraphsNeedABackend) {
  absl::StatusOr<WorkerConfig> c = ParseWorkerFlags({"--model", "m", "--backend", "cuda"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->decode_graphs);
  c = ParseWorkerFlags({"--model", "m", "--backend", "cpu:2", "--decode-graphs"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->decode_graphs);
  c = ParseWorkerFlags({"--model", "m", "--decode-graphs"});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("--backend"), std::string::npos) << c.status();
}

// Blocks of a bf16 cache are other bytes: another hash namespace; float32 keeps its old seed.
TEST(WorkerFlagsTest, PrefixSeedSeparatesCacheDtypes) {
  const std::string config = R"({"vocab_size": 10})";
  const uint64_t f32 = PrefixSeed(config, engine::ComputeDType::kBf16);
  EXPECT_EQ(PrefixSeed(config, engine::ComputeDType::kBf16, engine::DType::kF32), f32);
  EXPECT_NE(PrefixSeed(config, engine::ComputeDType::kBf16, engine::DType::kBf16), f32);
  EXPECT_NE(PrefixSeed(config, engine::ComputeDType::kF32, engine::DType::kBf16),
            PrefixSeed(config, engine::ComputeDType::kBf16, engine::DType::kBf16));
}

}  // namespace
}  // namespace moeserve::worker
