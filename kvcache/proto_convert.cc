#include "kvcache/proto_convert.h"

#include "absl/strings/str_cat.h"

namespace moeserve::kvcache {

absl::StatusOr<std::vector<BlockHash>> HashesFromProto(
    const google::protobuf::RepeatedPtrField<std::string>& hashes) {
  std::vector<BlockHash> out;
  out.reserve(hashes.size());
  for (int i = 0; i < hashes.size(); ++i) {
    std::optional<BlockHash> hash = BlockHash::FromBytes(hashes[i]);
    if (!hash.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("block hash ", i, " has ", hashes[i].size(),
                                                     " bytes, want ", kBlockHashBytes));
    }
    out.push_back(*hash);
  }
  return out;
}

void HashesToProto(absl::Span<const BlockHash> hashes,
                   google::protobuf::RepeatedPtrField<std::string>* out) {
  out->Reserve(static_cast<int>(hashes.size()));
  for (const BlockHash& hash : hashes) *out->Add() = hash.ToBytes();
}

moeserve::v1::PublishOutcome PublishOutcomeToProto(PublishOutcome outcome) {
  switch (outcome) {
    case PublishOutcome::kStored:
      return moeserve::v1::PUBLISH_OUTCOME_STORED;
    case PublishOutcome::kAlreadyPresent:
      return moeserve::v1::PUBLISH_OUTCOME_ALREADY_PRESENT;
    case PublishOutcome::kDroppedUnavailable:
      return moeserve::v1::PUBLISH_OUTCOME_DROPPED_UNAVAILABLE;
    case PublishOutcome::kDroppedNoSpace:
      return moeserve::v1::PUBLISH_OUTCOME_DROPPED_NO_SPACE;
  }
  return moeserve::v1::PUBLISH_OUTCOME_UNSPECIFIED;
}

absl::StatusOr<PublishOutcome> PublishOutcomeFromProto(moeserve::v1::PublishOutcome outcome) {
  switch (outcome) {
    case moeserve::v1::PUBLISH_OUTCOME_STORED:
      return PublishOutcome::kStored;
    case moeserve::v1::PUBLISH_OUTCOME_ALREADY_PRESENT:
      return PublishOutcome::kAlreadyPresent;
    case moeserve::v1::PUBLISH_OUTCOME_DROPPED_UNAVAILABLE:
      return PublishOutcome::kDroppedUnavailable;
    case moeserve::v1::PUBLISH_OUTCOME_DROPPED_NO_SPACE:
      return PublishOutcome::kDroppedNoSpace;
    default:
      break;
  }
  return absl::InternalError(absl::StrCat("unknown publish outcome ", static_cast<int>(outcome)));
}

void StatsToProto(const KvCacheStats& s, moeserve::v1::StatsResponse* out) {
  out->set_blocks(s.index.blocks);
  out->set_bytes(s.index.bytes);
  out->set_budget_bytes(s.index.budget_bytes);
  out->set_block_tokens(s.block_tokens);
  out->set_lookups(s.index.lookups);
  out->set_lookup_blocks(s.index.lookup_blocks);
  out->set_hit_blocks(s.index.hit_blocks);
  out->set_hit_tokens(s.hit_tokens);
  out->set_miss_blocks(s.index.miss_blocks);
  out->set_fetched_blocks(s.fetched_blocks);
  out->set_fetch_misses(s.fetch_misses);
  out->set_published_blocks(s.published_blocks);
  out->set_duplicate_blocks(s.duplicate_blocks);
  out->set_dropped_blocks(s.dropped_blocks);
  out->set_evictions(s.index.evictions);
  out->set_active_leases(s.index.active_leases);
  out->set_expired_leases(s.index.expired_leases);
  out->set_forgotten_blocks(s.index.forgotten_blocks);
  out->set_redis_errors(s.store_errors);
}

KvCacheStats StatsFromProto(const moeserve::v1::StatsResponse& in) {
  KvCacheStats s;
  s.index.blocks = in.blocks();
  s.index.bytes = in.bytes();
  s.index.budget_bytes = in.budget_bytes();
  s.block_tokens = in.block_tokens();
  s.index.lookups = in.lookups();
  s.index.lookup_blocks = in.lookup_blocks();
  s.index.hit_blocks = in.hit_blocks();
  s.hit_tokens = in.hit_tokens();
  s.index.miss_blocks = in.miss_blocks();
  s.fetched_blocks = in.fetched_blocks();
  s.fetch_misses = in.fetch_misses();
  s.published_blocks = in.published_blocks();
  s.duplicate_blocks = in.duplicate_blocks();
  s.dropped_blocks = in.dropped_blocks();
  s.index.evictions = in.evictions();
  s.index.active_leases = in.active_leases();
  s.index.expired_leases = in.expired_leases();
  s.index.forgotten_blocks = in.forgotten_blocks();
  s.store_errors = in.redis_errors();
  return s;
}

}  // namespace moeserve::kvcache
