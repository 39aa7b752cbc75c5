// The NCCL PeerGroup (see nccl_peer_group.h). Host-compiled: only cuda_runtime.h and nccl.h.
#include "expert-shard/transport/nccl_peer_group.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace moeserve::expert_shard {
namespace {

// Polling without burning a core while a shard waits for an idle worker: spin briefly, then
// sleep a little between looks.
class Backoff {
 public:
  void Pause() {
    if (++spins_ < 1000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

 private:
  int spins_ = 0;
};

absl::Status CudaError(cudaError_t e, const char* what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

absl::Status NcclError(ncclResult_t r, const char* what, ncclComm_t comm = nullptr) {
  std::string detail = ncclGetErrorString(r);
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && *last != '\0') absl::StrAppend(&detail, " (", last, ")");
  }
  return absl::UnavailableError(absl::StrCat(what, ": ", detail));
}

// Waits for a non-blocking communicator's pending operation (init, group end, finalize) to leave
// ncclInProgress, up to `deadline` or until `*cancel`.
absl::Status AwaitComm(ncclComm_t comm, absl::Time deadline, const char* what,
                       const std::atomic<bool>* cancel = nullptr) {
  Backoff backoff;
  while (true) {
    if (cancel != nullptr && cancel->load()) {
      return absl::CancelledError(absl::StrCat(what, ": cancelled"));
    }
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) return NcclError(r, what, comm);
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) return NcclError(state, what, comm);
    if (absl::Now() > deadline) {
      return absl::UnavailableError(absl::StrCat(what, ": timed out"));
    }
    backoff.Pause();
  }
}

class NcclPeerGroup final : public PeerGroup {
 public:
  NcclPeerGroup(const NcclGroupOptions& options, ncclComm_t comm, cudaStream_t stream)
      : options_(options), comm_(comm), stream_(stream) {}

  ~NcclPeerGroup() override {
    cudaSetDevice(options_.device);
    if (!aborted_) {
      const ncclResult_t r = ncclCommFinalize(comm_);
      const bool clean = (r == ncclSuccess || r == ncclInProgress) &&
                         AwaitComm(comm_, absl::Now() + options_.timeout, "finalize").ok();
      if (clean) {
        ncclCommDestroy(comm_);
      } else {
        ncclCommAbort(comm_);
      }
    }
    cudaStreamDestroy(stream_);
    if (device_ != nullptr) cudaFree(device_);
    if (pinned_ != nullptr) cudaFreeHost(pinned_);
  }

  int rank() const override { return options_.rank; }
  int size() const override { return options_.size; }
  absl::Duration timeout() const override { return options_.timeout; }
  void Cancel() override { cancel_.store(true); }

  absl::Status RunFor(absl::Span<const PeerOp> ops, absl::Duration timeout) override {
    if (broken_.ok() && cancel_.load()) {
      broken_ = absl::CancelledError("the NCCL group was cancelled");
      ncclCommAbort(comm_);
      aborted_ = true;
    }
    if (!broken_.ok()) return broken_;
    // Each op gets a 256-byte-aligned slice of the staging buffers.
    std::vector<size_t> offset(ops.size());
    size_t total = 0;
    for (size_t i = 0; i < ops.size(); ++i) {
      const PeerOp& op = ops[i];
      if (op.peer < 0 || op.peer >= options_.size || op.bytes < 0) {
        return absl::InvalidArgumentError(absl::StrCat("peer op to rank ", op.peer, " of ",
                                                       options_.size, " with ", op.bytes,
                                                       " bytes"));
      }
      offset[i] = total;
      total += (static_cast<size_t>(op.bytes) + 255) / 256 * 256;
    }
    absl::Status st = RunStaged(ops, offset, total, absl::Now() + timeout);
    if (!st.ok()) {
      broken_ = absl::Status(
          absl::IsCancelled(st) ? absl::StatusCode::kCancelled : absl::StatusCode::kUnavailable,
          absl::StrCat("nccl rank ", options_.rank, " of ", options_.size, ": ", st.message()));
      ncclCommAbort(comm_);
      aborted_ = true;
    }
    return broken_;
  }

 private:
  absl::Status Reserve(size_t bytes) {
    if (bytes <= capacity_) return absl::OkStatus();
    if (device_ != nullptr) cudaFree(device_);
    if (pinned_ != nullptr) cudaFreeHost(pinned_);
    device_ = nullptr;
    pinned_ = nullptr;
    capacity_ = 0;
    cudaError_t e = cudaMalloc(&device_, bytes);
    if (e != cudaSuccess) return CudaError(e, "staging buffer on the device");
    e = cudaMallocHost(&pinned_, bytes);
    if (e != cudaSuccess) return CudaError(e, "pinned staging buffer");
    capacity_ = bytes;
    return absl::OkStatus();
  }

  absl::Status RunStaged(absl::Span<const PeerOp> ops, const std::vector<size_t>& offset,
                         size_t total, absl::Time deadline) {
    cudaError_t e = cudaSetDevice(options_.device);
    if (e != cudaSuccess) return CudaError(e, "select the device");
    if (absl::Status s = Reserve(total); !s.ok()) return s;
    char* dev = static_cast<char*>(device_);
    char* host = static_cast<char*>(pinned_);
    for (size_t i = 0; i < ops.size(); ++i) {
      const PeerOp& op = ops[i];
      if (op.kind != PeerOp::Kind::kSend || op.bytes == 0) continue;
      std::memcpy(host + offset[i], op.data, static_cast<size_t>(op.bytes));
      e = cudaMemcpyAsync(dev + offset[i], host + offset[i], static_cast<size_t>(op.bytes),
                          cudaMemcpyHostToDevice, stream_);
      if (e != cudaSuccess) return CudaError(e, "copy a send to the device");
    }
    ncclResult_t r = ncclGroupStart();
    if (r != ncclSuccess) return NcclError(r, "group start", comm_);
    for (size_t i = 0; i < ops.size(); ++i) {
      const PeerOp& op = ops[i];
      if (op.bytes == 0) continue;
      const size_t n = static_cast<size_t>(op.bytes);
      r = op.kind == PeerOp::Kind::kSend
              ? ncclSend(dev + offset[i], n, ncclUint8, op.peer, comm_, stream_)
              : ncclRecv(dev + offset[i], n, ncclUint8, op.peer, comm_, stream_);
      if (r != ncclSuccess && r != ncclInProgress) {
        ncclGroupEnd();
        return NcclError(r, "post a send or receive", comm_);
      }
    }
    r = ncclGroupEnd();
    if (r != ncclSuccess && r != ncclInProgress) return NcclError(r, "group end", comm_);
    if (absl::Status s = AwaitComm(comm_, deadline, "group end", &cancel_); !s.ok()) return s;
    for (size_t i = 0; i < ops.size(); ++i) {
      const PeerOp& op = ops[i];
      if (op.kind != PeerOp::Kind::kRecv || op.bytes == 0) continue;
      e = cudaMemcpyAsync(host + offset[i], dev + offset[i], static_cast<size_t>(op.bytes),
                          cudaMemcpyDeviceToHost, stream_);
      if (e != cudaSuccess) return CudaError(e, "copy a receive to the host");
    }
    // Poll rather than synchronise: a peer that never sends must not hang this thread.
    Backoff backoff;
    while ((e = cudaStreamQuery(stream_)) == cudaErrorNotReady) {
      ncclResult_t state = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state != ncclSuccess &&
          state != ncclInProgress) {
        return NcclError(state, "transfer", comm_);
      }
      if (cancel_.load()) return absl::CancelledError("transfer cancelled");
      if (absl::Now() > deadline) return absl::UnavailableError("transfer timed out");
      backoff.Pause();
    }
    if (e != cudaSuccess) return CudaError(e, "transfer");
    for (size_t i = 0; i < ops.size(); ++i) {
      const PeerOp& op = ops[i];
      if (op.kind != PeerOp::Kind::kRecv || op.bytes == 0) continue;
      std::memcpy(op.data, host + offset[i], static_cast<size_t>(op.bytes));
    }
    return absl::OkStatus();
  }

  NcclGroupOptions options_;
  ncclComm_t comm_;
  cudaStream_t stream_;
  void* device_ = nullptr;
  void* pinned_ = nullptr;
  size_t capacity_ = 0;
  bool aborted_ = false;
  std::atomic<bool> cancel_{false};
  absl::Status broken_;
};

}  // namespace

bool NcclBuilt() { return true; }

int CudaDeviceCount() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

absl::StatusOr<std::string> NewNcclUniqueId() {
  ncclUniqueId id;
  ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) return NcclError(r, "make an NCCL unique id");
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<PeerGroup>> CreateNcclPeerGroup(const NcclGroupOptions& options) {
  ncclUniqueId id;
  if (options.unique_id.size() != sizeof(id.internal) || options.size < 1 || options.rank < 0 ||
      options.rank >= options.size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "NCCL group: rank ", options.rank, " of ", options.size, ", unique id of ",
        options.unique_id.size(), " bytes (want ", sizeof(id.internal), ")"));
  }
  std::memcpy(id.internal, options.unique_id.data(), sizeof(id.internal));
  cudaError_t e = cudaSetDevice(options.device);
  if (e != cudaSuccess) return CudaError(e, "select the CUDA device for NCCL");
  cudaStream_t stream = nullptr;
  e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) return CudaError(e, "create the communication stream");
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so that setup and transfers can time out
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, options.size, id, options.rank, &config);
  absl::Status st;
  if (r != ncclSuccess && r != ncclInProgress) {
    st = NcclError(r, "join the NCCL communicator");
  } else {
    st = AwaitComm(comm, absl::Now() + options.timeout, "join the NCCL communicator");
  }
  if (!st.ok()) {
    if (comm != nullptr) ncclCommAbort(comm);
    cudaStreamDestroy(stream);
    return st;
  }
  return std::unique_ptr<PeerGroup>(new NcclPeerGroup(options, comm, stream));
}

}  // namespace moeserve::expert_shard
