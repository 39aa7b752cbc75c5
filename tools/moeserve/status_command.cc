// moeserve status: the workers a router sees, with their load and KV pool, as JSON.
#include <iostream>

#include "common/grpc_status.h"
#include "common/log.h"
#include "grpcpp/grpcpp.h"
#include "moeserve/v1/router.grpc.pb.h"
#include "moeserve/v1/worker.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tools/moeserve/commands.h"
#include "tools/moeserve/flags.h"

namespace moeserve::cli {

int RunStatus(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> f = Flags::Parse(args, {"router", "timeout-ms"}, {});
  absl::StatusOr<std::string> router = f.ok() ? f->Required("router") : f.status();
  absl::StatusOr<int64_t> timeout = f.ok() ? f->GetInt("timeout-ms", 5000) : f.status();
  if (!router.ok() || !timeout.ok()) {
    LogError(!router.ok() ? router.status() : timeout.status());
    return 2;
  }
  auto stub = moeserve::v1::Router::NewStub(
      grpc::CreateChannel(*router, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(*timeout));
  moeserve::v1::ListWorkersResponse resp;
  grpc::Status st = stub->ListWorkers(&ctx, moeserve::v1::ListWorkersRequest(), &resp);
  if (!st.ok()) {
    LogError(FromGrpcStatus(st));
    return 1;
  }
  // The router's view is refreshed by polling; ask every worker for its load now.
  nlohmann::json out = nlohmann::json::array();
  for (const moeserve::v1::WorkerStatus& w : resp.workers()) {
    moeserve::v1::WorkerLoad load = w.load();
    auto worker = moeserve::v1::Worker::NewStub(
        grpc::CreateChannel(w.address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext wctx;
    wctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(*timeout));
    const bool fresh = worker->GetLoad(&wctx, moeserve::v1::GetLoadRequest(), &load).ok();
    out.push_back({{"address", w.address()},
                   {"role", w.role()},
                   {"healthy", fresh},
                   {"running", load.running()},
                   {"waiting", load.waiting()},
                   {"kv_blocks_free", load.kv_blocks_free()},
                   {"kv_blocks_total", load.kv_blocks_total()}});
  }
  std::cout << nlohmann::json{{"workers", out}}.dump() << "\n";
  return 0;
}

}  // namespace moeserve::cli
