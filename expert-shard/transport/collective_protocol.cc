#include "expert-shard/transport/collective_protocol.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace moeserve::expert_shard::collective {
namespace {

constexpr int64_t kFixedWords = 6;  // magic, op, step, layer, hidden, entries

}  // namespace

void EncodeHeader(const Header& header, int64_t n_routed, std::vector<int64_t>* words) {
  words->assign(static_cast<size_t>(HeaderWords(n_routed)), 0);
  int64_t* w = words->data();
  w[0] = kMagic;
  w[1] = static_cast<int64_t>(header.op);
  w[2] = static_cast<int64_t>(header.step);
  w[3] = header.layer;
  w[4] = header.hidden;
  w[5] = static_cast<int64_t>(header.experts.size());
  for (size_t i = 0; i < header.experts.size(); ++i) {
    w[kFixedWords + 2 * i] = header.experts[i];
    w[kFixedWords + 2 * i + 1] = header.counts[i];
  }
}

absl::Status DecodeHeader(absl::Span<const int64_t> words, int64_t n_routed, Header* header) {
  if (static_cast<int64_t>(words.size()) != HeaderWords(n_routed) || words[0] != kMagic) {
    return absl::InternalError("corrupt collective header (bad size or magic)");
  }
  if (words[1] != static_cast<int64_t>(Op::kExchange) &&
      words[1] != static_cast<int64_t>(Op::kStop)) {
    return absl::InternalError(absl::StrCat("collective header with unknown op ", words[1]));
  }
  header->op = static_cast<Op>(words[1]);
  header->step = static_cast<uint64_t>(words[2]);
  header->layer = words[3];
  header->hidden = words[4];
  const int64_t entries = words[5];
  if (entries < 0 || entries > n_routed || header->hidden < 0) {
    return absl::InternalError(absl::StrCat("corrupt collective header: ", entries,
                                            " entries, row width ", header->hidden));
  }
  header->experts.resize(static_cast<size_t>(entries));
  header->counts.resize(static_cast<size_t>(entries));
  int64_t rows = 0;
  for (int64_t i = 0; i < entries; ++i) {
    const int64_t e = words[kFixedWords + 2 * i];
    const int64_t count = words[kFixedWords + 2 * i + 1];
    if (e < 0 || e >= n_routed || count < 0 || count > kMaxRowBytes) {
      return absl::InternalError(
          absl::StrCat("corrupt collective header entry: expert ", e, ", ", count, " rows"));
    }
    header->experts[i] = static_cast<int32_t>(e);
    header->counts[i] = count;
    rows += count;
  }
  // rows <= n_routed * kMaxRowBytes fits easily; the product with the width may not.
  if (header->hidden > 0 && rows > kMaxRowBytes / 4 / header->hidden) {
    return absl::InternalError(absl::StrCat("collective header announces ", rows,
                                            " rows of width ", header->hidden,
                                            ", beyond the exchange bound"));
  }
  return absl::OkStatus();
}

int64_t RowBytes(const Header& header) {
  int64_t rows = 0;
  for (int64_t c : header.counts) rows += c;
  return rows * header.hidden * static_cast<int64_t>(sizeof(float));
}

absl::Status CheckBatch(const ShardBatch& batch, int64_t hidden, int64_t n_routed) {
  if (batch.experts.size() != batch.counts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("batch names ", batch.experts.size(),
                                                   " experts but has ", batch.counts.size(),
                                                   " row counts"));
  }
  int64_t rows = 0;
  for (size_t i = 0; i < batch.experts.size(); ++i) {
    const int32_t e = batch.experts[i];
    if (e < 0 || e >= n_routed || (i > 0 && e <= batch.experts[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch experts must be ascending, distinct and below ", n_routed,
                       " (expert ", e, ")"));
    }
    if (batch.counts[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative row count ", batch.counts[i], " for expert ", e));
    }
    rows += batch.counts[i];
  }
  if (static_cast<int64_t>(batch.rows.size()) != rows * hidden) {
    return absl::InvalidArgumentError(absl::StrCat("batch carries ", batch.rows.size(),
                                                   " floats; ", rows, " rows of width ", hidden,
                                                   " need ", rows * hidden));
  }
  if (rows * hidden > kMaxRowBytes / 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch of ", rows, " rows exceeds the exchange bound"));
  }
  return absl::OkStatus();
}

void EncodeReply(const absl::Status& status, Reply* reply) {
  *reply = Reply();
  reply->code = static_cast<int64_t>(status.code());
  const size_t n = std::min(status.message().size(), static_cast<size_t>(kMessageBytes));
  reply->message_bytes = static_cast<int64_t>(n);
  if (n > 0) std::memcpy(reply->message, status.message().data(), n);  // OK has no message
}

absl::Status DecodeReply(const Reply& reply) {
  if (reply.magic != kMagic || reply.message_bytes < 0 || reply.message_bytes > kMessageBytes ||
      reply.code < 0 || reply.code > static_cast<int64_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::InternalError("corrupt collective reply");
  }
  if (reply.code == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(reply.code),
                      std::string(reply.message, static_cast<size_t>(reply.message_bytes)));
}

}  // namespace moeserve::expert_shard::collective
