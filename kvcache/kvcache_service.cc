#include "kvcache/kvcache_service.h"

#include <atomic>
#include <deque>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/grpc_status.h"
#include "kvcache/proto_convert.h"

namespace moeserve::kvcache {
namespace {

using moeserve::v1::FetchResponse;

// Streams the requested blocks: loads a batch from the cache on the work queue, writes it one
// message at a time, loads the next batch, and ends after the first missing block. At most one
// batch is held in memory and at most one write is outstanding, so the members need no lock: each
// step is started by the previous one (queue task -> StartWrite -> OnWriteDone -> ...).
class FetchReactor final : public grpc::ServerWriteReactor<FetchResponse> {
 public:
  FetchReactor(KvCache* cache, WorkQueue* queue, int batch_blocks, std::vector<BlockHash> hashes)
      : cache_(cache), queue_(queue), batch_blocks_(batch_blocks), hashes_(std::move(hashes)) {
    ScheduleLoad();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(ToGrpcStatus(absl::CancelledError("fetch stream broken: the client went away")));
      return;
    }
    WriteNext();
  }
  void OnCancel() override { cancelled_.store(true); }
  void OnDone() override { delete this; }

 private:
  void ScheduleLoad() {
    queue_->Submit([this] { LoadBatch(); });
  }

  void LoadBatch() {
    if (cancelled_.load()) {
      Finish(ToGrpcStatus(absl::CancelledError("fetch cancelled")));
      return;
    }
    const size_t count = std::min<size_t>(batch_blocks_, hashes_.size() - next_);
    absl::StatusOr<FetchResult> result =
        cache_->Fetch(absl::MakeConstSpan(hashes_).subspan(next_, count));
    if (!result.ok()) {
      Finish(ToGrpcStatus(result.status()));
      return;
    }
    next_ += result->blocks.size();
    for (FetchedBlock& block : result->blocks) {
      if (pending_.empty() || pending_bytes_ >= kMessageBytes) {
        pending_.emplace_back();
        pending_bytes_ = 0;
      }
      moeserve::v1::FetchedBlock* out = pending_.back().add_blocks();
      out->set_hash(block.hash.ToBytes());
      pending_bytes_ += block.data.size();
      out->set_data(std::move(block.data));
    }
    if (result->first_missing.has_value()) {
      if (pending_.empty()) pending_.emplace_back();
      pending_.back().set_missing_hash(result->first_missing->ToBytes());
      done_ = true;
    } else if (next_ == hashes_.size()) {
      done_ = true;
    }
    WriteNext();
  }

  void WriteNext() {
    // A partly filled last message waits for the next batch unless the stream is complete.
    if (!pending_.empty() && (pending_.size() > 1 || done_ || pending_bytes_ >= kMessageBytes)) {
      current_ = std::move(pending_.front());
      pending_.pop_front();
      if (pending_.empty()) pending_bytes_ = 0;
      StartWrite(&current_);
    } else if (done_) {
      Finish(grpc::Status::OK);
    } else {
      ScheduleLoad();
    }
  }

  KvCache* const cache_;
  WorkQueue* const queue_;
  const int batch_blocks_;
  const std::vector<BlockHash> hashes_;
  size_t next_ = 0;  // first hash not loaded yet
  static constexpr size_t kMessageBytes = 4 << 20;  // block data per message, about
  std::deque<FetchResponse> pending_;
  size_t pending_bytes_ = 0;  // data bytes in pending_.back()
  FetchResponse current_;
  bool done_ = false;
  std::atomic<bool> cancelled_{false};
};

// A write reactor that only reports an error.
class FailedFetchReactor final : public grpc::ServerWriteReactor<FetchResponse> {
 public:
  explicit FailedFetchReactor(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerUnaryReactor* KvCacheService::Lookup(grpc::CallbackServerContext* context,
                                                 const moeserve::v1::LookupRequest* request,
                                                 moeserve::v1::LookupResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::vector<BlockHash>> hashes = HashesFromProto(request->block_hashes());
  if (!hashes.ok()) {
    reactor->Finish(ToGrpcStatus(hashes.status()));
    return reactor;
  }
  queue_->Submit([this, reactor, request, response, hashes = std::move(*hashes)] {
    absl::StatusOr<LookupResult> result = cache_->Lookup(hashes, request->take_lease());
    if (result.ok()) {
      response->set_present_blocks(result->present_blocks);
      response->set_present_tokens(result->present_tokens);
      if (result->lease.has_value()) {
        response->set_lease_id(result->lease->id);
        response->set_lease_expires_unix_ms(absl::ToUnixMillis(result->lease->expires));
      }
    }
    reactor->Finish(ToGrpcStatus(result.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* KvCacheService::Publish(grpc::CallbackServerContext* context,
                                                  const moeserve::v1::PublishRequest* request,
                                                  moeserve::v1::PublishResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::vector<BlockView> blocks;
  blocks.reserve(request->blocks_size());
  for (int i = 0; i < request->blocks_size(); ++i) {
    const moeserve::v1::KvBlock& block = request->blocks(i);
    std::optional<BlockHash> hash = BlockHash::FromBytes(block.hash());
    if (!hash.has_value()) {
      reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
          "block ", i, " hash has ", block.hash().size(), " bytes, want ", kBlockHashBytes))));
      return reactor;
    }
    blocks.push_back(BlockView{*hash, block.data()});  // views into the request, alive to Finish
  }
  queue_->Submit([this, reactor, response, blocks = std::move(blocks)] {
    absl::StatusOr<PublishResult> result = cache_->Publish(blocks);
    if (result.ok()) {
      for (PublishOutcome outcome : result->outcomes) {
        response->add_outcomes(PublishOutcomeToProto(outcome));
      }
      response->set_stored(result->stored);
      response->set_already_present(result->already_present);
      response->set_dropped(result->dropped);
    }
    reactor->Finish(ToGrpcStatus(result.status()));
  });
  return reactor;
}

grpc::ServerWriteReactor<FetchResponse>* KvCacheService::Fetch(
    grpc::CallbackServerContext* /*context*/, const moeserve::v1::FetchRequest* request) {
  absl::StatusOr<std::vector<BlockHash>> hashes = HashesFromProto(request->block_hashes());
  if (!hashes.ok()) return new FailedFetchReactor(hashes.status());
  if (absl::Status s = cache_->ValidateHashes(*hashes); !s.ok()) return new FailedFetchReactor(s);
  return new FetchReactor(cache_, queue_, fetch_batch_blocks_, std::move(*hashes));
}

grpc::ServerUnaryReactor* KvCacheService::ReleaseLease(
    grpc::CallbackServerContext* context, const moeserve::v1::ReleaseLeaseRequest* request,
    moeserve::v1::ReleaseLeaseResponse* /*response*/) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(cache_->ReleaseLease(request->lease_id())));
  return reactor;
}

grpc::ServerUnaryReactor* KvCacheService::Stats(grpc::CallbackServerContext* context,
                                                const moeserve::v1::StatsRequest* /*request*/,
                                                moeserve::v1::StatsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  StatsToProto(cache_->Stats(), response);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace moeserve::kvcache
