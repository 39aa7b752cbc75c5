#ifndef MOESERVE_TESTS_INTEGRATION_KVCACHE_REDIS_PROCESS_H_
#define MOESERVE_TESTS_INTEGRATION_KVCACHE_REDIS_PROCESS_H_

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace moeserve::testing {

using RedisReplyPtr = std::unique_ptr<redisReply, decltype(&freeReplyObject)>;
using RedisContextPtr = std::unique_ptr<redisContext, decltype(&redisFree)>;

// A free TCP port on 127.0.0.1 (bound to port 0, read back, released).
inline absl::StatusOr<int> FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return absl::InternalError("bind to 127.0.0.1:0");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

// A private redis-server on 127.0.0.1 with a temp working dir, no persistence, 64 MB of memory
// and allkeys-lru (what kvcache/redis_block_store.h asks for). Start() returns once it answers
// PING; Kill() stops it by pid; Restart() brings up an empty one on the same port.
class RedisProcess {
 public:
  static absl::StatusOr<std::unique_ptr<RedisProcess>> Start() {
    absl::StatusOr<int> port = FreeLoopbackPort();
    if (!port.ok()) return port.status();
    std::string dir =
        (std::filesystem::temp_directory_path() / "moeserve-kv-redis-XXXXXX").string();
    if (mkdtemp(dir.data()) == nullptr) return absl::InternalError("mkdtemp");
    std::unique_ptr<RedisProcess> redis(new RedisProcess(*port, dir));
    if (absl::Status s = redis->Spawn(); !s.ok()) return s;
    return redis;
  }

  ~RedisProcess() {
    Kill();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  int port() const { return port_; }
  std::string endpoint() const { return absl::StrCat("127.0.0.1:", port_); }

  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  absl::Status Restart() {
    Kill();
    return Spawn();
  }

  // Runs one command on a fresh connection (the test's view, independent of the service's).
  RedisReplyPtr Command(const std::vector<std::string>& args) const {
    RedisContextPtr ctx(redisConnect("127.0.0.1", port_), &redisFree);
    if (ctx == nullptr || ctx->err != 0) return RedisReplyPtr(nullptr, &freeReplyObject);
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return RedisReplyPtr(static_cast<redisReply*>(redisCommandArgv(
                             ctx.get(), static_cast<int>(argv.size()), argv.data(), lens.data())),
                         &freeReplyObject);
  }
  int64_t Integer(const std::vector<std::string>& args) const {
    RedisReplyPtr reply = Command(args);
    return reply != nullptr && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
  }

 private:
  RedisProcess(int port, std::string dir) : port_(port), dir_(std::move(dir)) {}

  absl::Status Spawn() {
    std::vector<std::string> args = {"redis-server",
                                     "--port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--maxmemory",
                                     "64mb",
                                     "--maxmemory-policy",
                                     "allkeys-lru",
                                     "--daemonize",
                                     "no",
                                     "--dir",
                                     dir_,
                                     "--logfile",
                                     dir_ + "/redis.log"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    if (posix_spawnp(&pid, "redis-server", nullptr, nullptr, argv.data(), environ) != 0) {
      return absl::FailedPreconditionError("cannot run redis-server (scripts/install-deps.sh)");
    }
    pid_ = pid;
    // Wait for readiness by asking it, not by sleeping a guessed time; give up if it exits.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < give_up) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return absl::InternalError(absl::StrCat("redis-server exited; see ", dir_, "/redis.log"));
      }
      RedisReplyPtr pong = Command({"PING"});
      if (pong != nullptr && pong->type == REDIS_REPLY_STATUS && std::string(pong->str) == "PONG") {
        return absl::OkStatus();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return absl::DeadlineExceededError("redis-server did not answer PING within 30 s");
  }

  const int port_;
  const std::string dir_;
  pid_t pid_ = -1;
};

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_INTEGRATION_KVCACHE_REDIS_PROCESS_H_
