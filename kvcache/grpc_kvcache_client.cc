#include "kvcache/grpc_kvcache_client.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "kvcache/proto_convert.h"
#include "common/grpc_channel.h"

namespace moeserve::kvcache {

std::unique_ptr<GrpcKvCacheClient> GrpcKvCacheClient::Create(const std::string& target,
                                                             GrpcKvCacheClientOptions options) {
  return std::make_unique<GrpcKvCacheClient>(NewPeerChannel(target, /*unlimited_messages=*/true),
                                             options);
}

GrpcKvCacheClient::GrpcKvCacheClient(std::shared_ptr<grpc::Channel> channel,
                                     GrpcKvCacheClientOptions options)
    : channel_(std::move(channel)),
      stub_(moeserve::v1::KvCache::NewStub(channel_)),
      options_(options) {}

void GrpcKvCacheClient::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
}

absl::StatusOr<LookupResult> GrpcKvCacheClient::Lookup(absl::Span<const BlockHash> hashes,
                                                       bool take_lease) {
  moeserve::v1::LookupRequest request;
  HashesToProto(hashes, request.mutable_block_hashes());
  request.set_take_lease(take_lease);
  moeserve::v1::LookupResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  absl::Status status = FromGrpcStatus(stub_->Lookup(&context, request, &response));
  if (!status.ok()) return status;
  LookupResult result;
  result.present_blocks = response.present_blocks();
  result.present_tokens = response.present_tokens();
  if (response.lease_id() != 0) {
    result.lease =
        Lease{response.lease_id(), absl::FromUnixMillis(response.lease_expires_unix_ms())};
  }
  return result;
}

absl::StatusOr<PublishResult> GrpcKvCacheClient::Publish(absl::Span<const BlockView> blocks) {
  if (blocks.empty()) return PublishOne(blocks);  // let the server explain the error
  PublishResult total;
  size_t begin = 0;
  while (begin < blocks.size()) {
    size_t end = begin;
    int64_t bytes = 0;
    while (end < blocks.size() &&
           static_cast<int64_t>(end - begin) < options_.max_blocks_per_request &&
           (end == begin || bytes + static_cast<int64_t>(blocks[end].data.size()) <=
                                options_.max_publish_request_bytes)) {
      bytes += static_cast<int64_t>(blocks[end].data.size());
      ++end;
    }
    absl::StatusOr<PublishResult> part = PublishOne(blocks.subspan(begin, end - begin));
    if (!part.ok()) return part.status();
    total.outcomes.insert(total.outcomes.end(), part->outcomes.begin(), part->outcomes.end());
    total.stored += part->stored;
    total.already_present += part->already_present;
    total.dropped += part->dropped;
    begin = end;
  }
  return total;
}

absl::StatusOr<PublishResult> GrpcKvCacheClient::PublishOne(absl::Span<const BlockView> blocks) {
  moeserve::v1::PublishRequest request;
  for (const BlockView& block : blocks) {
    moeserve::v1::KvBlock* out = request.add_blocks();
    out->set_hash(block.hash.ToBytes());
    out->set_data(std::string(block.data));
  }
  moeserve::v1::PublishResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  absl::Status status = FromGrpcStatus(stub_->Publish(&context, request, &response));
  if (!status.ok()) return status;
  if (response.outcomes_size() != static_cast<int>(blocks.size())) {
    return absl::InternalError(absl::StrCat("publish answered ", response.outcomes_size(),
                                            " outcomes for ", blocks.size(), " blocks"));
  }
  PublishResult result;
  for (int outcome : response.outcomes()) {
    absl::StatusOr<PublishOutcome> o =
        PublishOutcomeFromProto(static_cast<moeserve::v1::PublishOutcome>(outcome));
    if (!o.ok()) return o.status();
    result.outcomes.push_back(*o);
  }
  result.stored = response.stored();
  result.already_present = response.already_present();
  result.dropped = response.dropped();
  return result;
}

absl::StatusOr<FetchResult> GrpcKvCacheClient::Fetch(absl::Span<const BlockHash> hashes) {
  moeserve::v1::FetchRequest request;
  HashesToProto(hashes, request.mutable_block_hashes());
  grpc::ClientContext context;
  SetDeadline(&context);
  std::unique_ptr<grpc::ClientReader<moeserve::v1::FetchResponse>> reader =
      stub_->Fetch(&context, request);
  FetchResult result;
  moeserve::v1::FetchResponse message;
  bool malformed = false;
  while (!malformed && reader->Read(&message)) {
    for (moeserve::v1::FetchedBlock& block : *message.mutable_blocks()) {
      std::optional<BlockHash> hash = BlockHash::FromBytes(block.hash());
      if (!hash.has_value()) {
        malformed = true;
        break;
      }
      result.blocks.push_back(FetchedBlock{*hash, std::move(*block.mutable_data())});
    }
    if (!message.missing_hash().empty()) {
      std::optional<BlockHash> hash = BlockHash::FromBytes(message.missing_hash());
      if (hash.has_value()) {
        result.first_missing = *hash;
      } else {
        malformed = true;
      }
    }
  }
  if (malformed) {
    context.TryCancel();
    reader->Finish();
    return absl::InternalError("fetch stream carried a malformed block hash");
  }
  absl::Status status = FromGrpcStatus(reader->Finish());
  if (!status.ok()) return status;
  if (!result.first_missing.has_value() && result.blocks.size() < hashes.size()) {
    result.first_missing = hashes[result.blocks.size()];
  }
  return result;
}

absl::Status GrpcKvCacheClient::Release(uint64_t lease_id) {
  moeserve::v1::ReleaseLeaseRequest request;
  request.set_lease_id(lease_id);
  moeserve::v1::ReleaseLeaseResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  return FromGrpcStatus(stub_->ReleaseLease(&context, request, &response));
}

absl::StatusOr<KvCacheStats> GrpcKvCacheClient::Stats() {
  moeserve::v1::StatsRequest request;
  moeserve::v1::StatsResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  absl::Status status = FromGrpcStatus(stub_->Stats(&context, request, &response));
  if (!status.ok()) return status;
  return StatsFromProto(response);
}

}  // namespace moeserve::kvcache
