// Integration: real shard servers (in-process on port 0, and the moeserve-expert-shard binary as a
// subprocess) behind GrpcTransport; a worker's logits must equal the whole model's exactly.
#include "expert-shard/transport/grpc_transport.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "expert-shard/expert_shard_server.h"
#include "expert-shard/remote_expert_executor.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "tests/unit/expert-shard/shard_test_util.h"

namespace moeserve::expert_shard {
namespace {

using engine::ComputeDType;
using engine::Model;

constexpr int kDecodeSteps = 2;

std::unique_ptr<ExpertShardServer> StartShard(int32_t id, int num_shards, const std::string& spec,
                                              ComputeDType compute) {
  ShardConfig c;
  c.model_dir = testing::SmallModelDir();
  c.host = "127.0.0.1";
  c.port = 0;
  c.shard_id = id;
  c.num_shards = num_shards;
  c.placement = spec;
  c.compute = compute;
  c.threads = 1;
  absl::StatusOr<std::unique_ptr<ExpertShardServer>> s = ExpertShardServer::Create(c);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

std::string Address(int port) { return absl::StrCat("127.0.0.1:", port); }

std::unique_ptr<GrpcTransport> Connect(const std::vector<std::string>& addresses, int64_t hidden,
                                       absl::Duration deadline = absl::Seconds(20)) {
  GrpcTransportOptions options;
  options.addresses = addresses;
  options.hidden_size = hidden;
  options.deadline = deadline;
  absl::StatusOr<std::unique_ptr<GrpcTransport>> t = GrpcTransport::Create(options);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

struct Worker {
  std::unique_ptr<Model> model;
  std::unique_ptr<Placement> placement;
};

Worker MakeWorker(ComputeDType compute, const std::string& spec, int num_shards) {
  Worker w;
  absl::StatusOr<std::unique_ptr<Model>> m = testing::LoadWorker(compute);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return w;
  w.model = std::move(*m);
  absl::StatusOr<Placement> p =
      Placement::Parse(spec, num_shards, MoeShape::FromConfig(w.model->config()));
  EXPECT_TRUE(p.ok()) << p.status();
  if (p.ok()) w.placement = std::make_unique<Placement>(*std::move(p));
  return w;
}

std::vector<std::vector<float>> Reference(ComputeDType compute) {
  absl::StatusOr<std::unique_ptr<Model>> whole = testing::LoadPart(compute, true, nullptr, 2);
  EXPECT_TRUE(whole.ok()) << whole.status();
  if (!whole.ok()) return {};
  absl::StatusOr<std::vector<std::vector<float>>> ref =
      testing::RunBatch(**whole, nullptr, testing::Prompts(), kDecodeSteps);
  EXPECT_TRUE(ref.ok()) << ref.status();
  return ref.ok() ? *ref : std::vector<std::vector<float>>{};
}

class GrpcParityTest : public ::testing::TestWithParam<ComputeDType> {};

TEST_P(GrpcParityTest, TwoShardServersEqualTheWholeModelExactly) {
  const std::string spec = "round_robin";
  std::unique_ptr<ExpertShardServer> s0 = StartShard(0, 2, spec, GetParam());
  std::unique_ptr<ExpertShardServer> s1 = StartShard(1, 2, spec, GetParam());
  ASSERT_TRUE(s0 && s1);
  Worker w = MakeWorker(GetParam(), spec, 2);
  ASSERT_TRUE(w.placement);
  std::unique_ptr<GrpcTransport> t =
      Connect({Address(s0->Port()), Address(s1->Port())}, w.model->config().hidden_size);
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(t->VerifyShards(*w.placement, w.model->config()).ok());
  absl::StatusOr<moeserve::v1::ShardInfoResponse> info = t->Info(1);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->shard_id(), 1);
  EXPECT_EQ(info->model().hidden_size(), w.model->config().hidden_size);
  ASSERT_EQ(info->layers_size(), 2);
  EXPECT_EQ(info->layers(0).experts_size(), 8);
  EXPECT_EQ(info->layers(0).experts(0), 1);

  RemoteExpertExecutor remote(w.placement.get(), t.get(), w.model->config().hidden_size);
  absl::StatusOr<std::vector<std::vector<float>>> got =
      testing::RunBatch(*w.model, &remote, testing::Prompts(), kDecodeSteps);
  ASSERT_TRUE(got.ok()) << got.status();
  std::vector<std::vector<float>> ref = Reference(GetParam());
  ASSERT_EQ(got->size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_EQ((*got)[i], ref[i]) << "logits " << i;
}

INSTANTIATE_TEST_SUITE_P(ComputeDTypes, GrpcParityTest,
                         ::testing::Values(ComputeDType::kF32, ComputeDType::kBf16),
                         [](const ::testing::TestParamInfo<ComputeDType>& p) {
                           return p.param == ComputeDType::kF32 ? "F32" : "Bf16";
                         });

TEST(GrpcTransportTest, RedundantCopiesOverGrpcEqualTheWholeModel) {
  const std::string spec = "contiguous,replicas=2";
  std::vector<std::unique_ptr<ExpertShardServer>> shards;
  std::vector<std::string> addresses;
  for (int32_t i = 0; i < 3; ++i) {
    shards.push_back(StartShard(i, 3, spec, ComputeDType::kF32));
    ASSERT_NE(shards.back(), nullptr);
    addresses.push_back(Address(shards.back()->Port()));
  }
  Worker w = MakeWorker(ComputeDType::kF32, spec, 3);
  ASSERT_TRUE(w.placement);
  std::unique_ptr<GrpcTransport> t = Connect(addresses, w.model->config().hidden_size);
  ASSERT_NE(t, nullptr);
  RemoteExpertExecutor remote(w.placement.get(), t.get(), w.model->config().hidden_size,
                              ReplicaChoice::kSpreadByToken);
  absl::StatusOr<std::vector<std::vector<float>>> got =
      testing::RunBatch(*w.model, &remote, testing::Prompts(), kDecodeSteps);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, Reference(ComputeDType::kF32));
}

TEST(GrpcTransportTest, ExpertNotHeldIsFailedPreconditionNamingTheShard) {
  std::unique_ptr<ExpertShardServer> s0 = StartShard(0, 2, "round_robin", ComputeDType::kF32);
  std::unique_ptr<ExpertShardServer> s1 = StartShard(1, 2, "round_robin", ComputeDType::kF32);
  ASSERT_TRUE(s0 && s1);
  // The worker was configured with another placement than the shards.
  Worker w = MakeWorker(ComputeDType::kF32, "contiguous", 2);
  ASSERT_TRUE(w.placement);
  const int64_t hidden = w.model->config().hidden_size;
  const std::string a0 = Address(s0->Port());
  std::unique_ptr<GrpcTransport> t = Connect({a0, Address(s1->Port())}, hidden);
  ASSERT_NE(t, nullptr);
  absl::Status v = t->VerifyShards(*w.placement, w.model->config());
  EXPECT_EQ(v.code(), absl::StatusCode::kFailedPrecondition) << v;
  EXPECT_NE(v.message().find(absl::StrCat("expert shard 0 at ", a0, ": does not hold expert 1")),
            absl::string_view::npos)
      << v;

  RemoteExpertExecutor remote(w.placement.get(), t.get(), hidden);
  std::vector<float> x(hidden, 0.5f), out(hidden);
  std::vector<int32_t> ids = {1, 2};
  std::vector<float> wts = {0.5f, 0.5f};
  absl::Status s = remote.Run(1, x.data(), 1, 2, ids.data(), wts.data(), out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(
      s.message().find(absl::StrCat("expert shard 0 at ", a0, ": expert 1 of layer 1 is not held")),
      absl::string_view::npos)
      << s;
}

TEST(GrpcTransportTest, MalformedRequestsAreInvalidArgument) {
  std::unique_ptr<ExpertShardServer> s0 = StartShard(0, 1, "round_robin", ComputeDType::kF32);
  ASSERT_NE(s0, nullptr);
  auto stub = moeserve::v1::ExpertShard::NewStub(
      grpc::CreateChannel(Address(s0->Port()), grpc::InsecureChannelCredentials()));
  const int64_t hidden = 64;  // SmallConfig
  auto call = [&](const moeserve::v1::ExchangeRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    moeserve::v1::ExchangeResponse resp;
    return stub->Exchange(&ctx, req, &resp);
  };
  moeserve::v1::ExchangeRequest req;
  req.set_layer(1);
  req.set_hidden_size(hidden);
  moeserve::v1::ExpertRows* rows = req.add_batches();
  rows->set_expert(0);
  rows->set_rows(2);
  rows->set_activations(std::string(2 * hidden * 4, '\0'));
  EXPECT_TRUE(call(req).ok());

  moeserve::v1::ExchangeRequest narrow = req;
  narrow.set_hidden_size(hidden - 1);
  grpc::Status st = call(narrow);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_NE(st.error_message().find("row width 63"), std::string::npos) << st.error_message();

  moeserve::v1::ExchangeRequest short_rows = req;
  short_rows.mutable_batches(0)->set_activations(std::string(2 * hidden * 4 - 4, '\0'));
  EXPECT_EQ(call(short_rows).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  moeserve::v1::ExchangeRequest dense = req;
  dense.set_layer(0);
  EXPECT_EQ(call(dense).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST(GrpcTransportTest, DeadShardIsUnavailableWithoutHanging) {
  int port = 0;
  {
    std::unique_ptr<ExpertShardServer> s = StartShard(0, 1, "round_robin", ComputeDType::kF32);
    ASSERT_NE(s, nullptr);
    port = s->Port();
    s->Shutdown();
  }
  Worker w = MakeWorker(ComputeDType::kF32, "round_robin", 1);
  ASSERT_TRUE(w.placement);
  const int64_t hidden = w.model->config().hidden_size;
  std::unique_ptr<GrpcTransport> t = Connect({Address(port)}, hidden, absl::Seconds(5));
  ASSERT_NE(t, nullptr);
  RemoteExpertExecutor remote(w.placement.get(), t.get(), hidden);
  std::vector<float> x(hidden, 0.5f), out(hidden);
  std::vector<int32_t> ids = {0};
  std::vector<float> wts = {1.0f};
  const absl::Time start = absl::Now();
  absl::Status s = remote.Run(1, x.data(), 1, 1, ids.data(), wts.data(), out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find(absl::StrCat("expert shard 0 at ", Address(port))),
            absl::string_view::npos)
      << s;
  EXPECT_LT(absl::Now() - start, absl::Seconds(6));
}

TEST(GrpcTransportTest, SilentShardHitsTheDeadlineAsUnavailable) {
  // A socket that listens but never answers: the connection is accepted by the kernel, and no
  // HTTP/2 frame ever comes back. Only the deadline ends the call.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 16), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);

  std::unique_ptr<GrpcTransport> t = Connect({Address(port)}, 64, absl::Milliseconds(500));
  ASSERT_NE(t, nullptr);
  ShardBatch b{0, 1, {0}, {1}, std::vector<float>(64, 1.0f)};
  std::vector<ShardResult> results;
  const absl::Time start = absl::Now();
  absl::Status s = t->Exchange(1, {b}, &results);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("DEADLINE_EXCEEDED"), absl::string_view::npos) << s;
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  close(fd);
}

// The binary: started with --port 0, its port read back from its log line.
class ShardProcess {
 public:
  explicit ShardProcess(const std::vector<std::string>& flags) {
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], STDERR_FILENO);
      close(fds[0]);
      std::vector<std::string> args = {MOESERVE_EXPERT_SHARD_BIN};
      args.insert(args.end(), flags.begin(), flags.end());
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    err_ = fds[0];
  }
  ~ShardProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      kill(pid_, SIGCONT);  // a stopped process handles its SIGTERM only once continued
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    if (err_ >= 0) close(err_);
  }

  // Reads the log until "serving on port N" (or EOF / 60 s); 0 when it never came. The log read
  // so far goes to *log.
  int WaitForPort(std::string* log_out) {
    std::string& log = *log_out;
    const absl::Time end = absl::Now() + absl::Seconds(60);
    while (absl::Now() < end) {
      pollfd p{err_, POLLIN, 0};
      if (poll(&p, 1, 1000) <= 0) continue;
      char buf[512];
      ssize_t n = read(err_, buf, sizeof(buf));
      if (n <= 0) break;
      log.append(buf, n);
      size_t at = log.find("serving on port ");
      size_t eol = at == std::string::npos ? at : log.find('\n', at);
      int port = 0;
      if (eol != std::string::npos && absl::SimpleAtoi(log.substr(at + 16, eol - at - 16), &port)) {
        return port;
      }
    }
    return 0;
  }

  pid_t pid() const { return pid_; }

  // Waits for the process to exit; its exit code (-1 when killed by a signal).
  int Wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  int err_ = -1;
};

TEST(ExpertShardBinaryTest, TwoShardProcessesEqualTheWholeModel) {
  std::vector<std::unique_ptr<ShardProcess>> procs;
  std::vector<std::string> addresses;
  for (int i = 0; i < 2; ++i) {
    procs.push_back(std::make_unique<ShardProcess>(std::vector<std::string>{
        "--model", testing::SmallModelDir(), "--host", "127.0.0.1", "--port", "0", "--shard-id",
        std::to_string(i), "--num-shards", "2", "--placement", "contiguous", "--compute-dtype",
        "bf16", "--threads", "1"}));
  }
  for (auto& p : procs) {
    std::string log;
    int port = p->WaitForPort(&log);
    ASSERT_GT(port, 0) << "shard never reported its port; log:\n" << log;
    addresses.push_back(Address(port));
  }
  Worker w = MakeWorker(ComputeDType::kBf16, "contiguous", 2);
  ASSERT_TRUE(w.placement);
  std::unique_ptr<GrpcTransport> t = Connect(addresses, w.model->config().hidden_size);
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(t->VerifyShards(*w.placement, w.model->config()).ok());
  RemoteExpertExecutor remote(w.placement.get(), t.get(), w.model->config().hidden_size);
  absl::StatusOr<std::vector<std::vector<float>>> got =
      testing::RunBatch(*w.model, &remote, testing::Prompts(), kDecodeSteps);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, Reference(ComputeDType::kBf16));
}

TEST(ExpertShardBinaryTest, BadFlagsExitWithAClearError) {
  ShardProcess p({"--model", testing::SmallModelDir(), "--shard-id", "2", "--num-shards", "2"});
  std::string log;
  EXPECT_EQ(p.WaitForPort(&log), 0);
  EXPECT_EQ(p.Wait(), 2);
  EXPECT_NE(log.find("--shard-id 2 must be below --num-shards 2"), std::string::npos) << log;
}

// Whether process `pid` is stopped (state T in /proc/PID/stat). kill(SIGSTOP) returns before every
// thread of the target has stopped, so a fast exchange could still be answered in between.
bool IsStopped(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');  // the state follows the command name in parentheses
  return close != std::string::npos && close + 2 < stat.size() &&
         (stat[close + 2] == 'T' || stat[close + 2] == 't');
}

// A hung shard (SIGSTOP: the kernel still accepts its connections, nothing answers) fails the
// exchange Unavailable through the transport's liveness pings long before the call's deadline
// (120 s here, so a DEADLINE_EXCEEDED in the message would mean the pings did not work), both on
// the open connection and on a new one (the handshake times out); after SIGCONT it serves again.
TEST(ExpertShardBinaryTest, HungShardFailsWithinTheLivenessBoundAndServesAfterSigcont) {
  ShardProcess p({"--model", testing::SmallModelDir(), "--host", "127.0.0.1", "--port", "0",
                  "--shard-id", "0", "--num-shards", "1", "--placement", "round_robin",
                  "--compute-dtype", "f32", "--threads", "1"});
  std::string log;
  const int port = p.WaitForPort(&log);
  ASSERT_GT(port, 0) << "shard never reported its port; log:\n" << log;
  Worker w = MakeWorker(ComputeDType::kF32, "round_robin", 1);
  ASSERT_TRUE(w.placement);
  const int64_t hidden = w.model->config().hidden_size;
  auto connect = [&] {
    GrpcTransportOptions o;
    o.addresses = {Address(port)};
    o.hidden_size = hidden;
    o.deadline = absl::Seconds(120);
    o.liveness = absl::Milliseconds(500);
    absl::StatusOr<std::unique_ptr<GrpcTransport>> t = GrpcTransport::Create(o);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  };
  std::unique_ptr<GrpcTransport> open = connect();
  ASSERT_NE(open, nullptr);
  const ShardBatch b{0, 1, {0}, {1}, std::vector<float>(hidden, 0.5f)};
  std::vector<ShardResult> results;
  ASSERT_TRUE(open->Exchange(1, {b}, &results).ok());

  ASSERT_EQ(kill(p.pid(), SIGSTOP), 0);
  for (int i = 0; i < 5000 && !IsStopped(p.pid()); ++i) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_TRUE(IsStopped(p.pid())) << "the shard did not stop";
  absl::Status s = open->Exchange(1, {b}, &results);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(s.message().find("DEADLINE_EXCEEDED"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find(absl::StrCat("expert shard 0 at ", Address(port))),
            absl::string_view::npos)
      << s;
  std::unique_ptr<GrpcTransport> fresh = connect();
  ASSERT_NE(fresh, nullptr);
  s = fresh->Exchange(1, {b}, &results);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(s.message().find("DEADLINE_EXCEEDED"), absl::string_view::npos) << s;

  ASSERT_EQ(kill(p.pid(), SIGCONT), 0);
  // The channel reconnects (its backoff is at most 1 s); calls fail fast until it has.
  bool served = false;
  for (int i = 0; i < 100 && !served; ++i) {
    served = open->Exchange(1, {b}, &results).ok();
    if (!served) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(served) << "the shard never served again after SIGCONT";
}

}  // namespace
}  // namespace moeserve::expert_shard
