#include <string>
#include <vector>

#include "gtest/gtest.h"
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

}  // namespace
}  // namespace moeserve::worker
