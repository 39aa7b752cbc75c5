#include "expert-shard/transport/collective_transport.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "expert-shard/transport/collective_protocol.h"

namespace moeserve::expert_shard {

using collective::DecodeHeader;
using collective::EncodeHeader;
using collective::Header;
using collective::HeaderWords;
using collective::Reply;

absl::StatusOr<std::unique_ptr<CollectiveTransport>> CollectiveTransport::Create(
    std::unique_ptr<PeerGroup> group, CollectiveOptions options) {
  if (group == nullptr || group->rank() != 0 || group->size() < 2) {
    return absl::InvalidArgumentError(
        "the collective transport needs rank 0 of a group of at least 2 ranks");
  }
  if (options.hidden_size < 1 || options.n_routed_experts < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "collective transport: hidden_size ", options.hidden_size, ", n_routed_experts ",
        options.n_routed_experts));
  }
  return std::unique_ptr<CollectiveTransport>(
      new CollectiveTransport(std::move(group), std::move(options)));
}

CollectiveTransport::~CollectiveTransport() { Stop().IgnoreError(); }

std::string CollectiveTransport::ShardName(int32_t shard) const {
  return absl::StrCat(options_.name, " rank ", shard + 1, " (shard ", shard, ")");
}

absl::Status CollectiveTransport::Stop() {
  if (stopped_) return absl::OkStatus();
  stopped_ = true;
  Header stop;
  stop.op = collective::Op::kStop;
  std::vector<int64_t> words;
  EncodeHeader(stop, options_.n_routed_experts, &words);
  std::vector<PeerOp> ops;
  for (int r = 1; r < group_->size(); ++r) {
    ops.push_back(PeerOp::Send(r, words.data(), words.size() * sizeof(int64_t)));
  }
  return group_->Run(ops);
}

absl::Status CollectiveTransport::Exchange(int64_t layer, absl::Span<const ShardBatch> batches,
                                           std::vector<ShardResult>* results) {
  results->assign(batches.size(), ShardResult());
  if (stopped_) return absl::FailedPreconditionError("the collective transport was stopped");
  std::vector<bool> seen(static_cast<size_t>(num_shards()), false);
  for (const ShardBatch& b : batches) {
    if (b.shard < 0 || b.shard >= num_shards() || seen[b.shard]) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch for shard ", b.shard, " (", num_shards(), " shards, one batch each)"));
    }
    seen[b.shard] = true;
    if (b.layer != layer) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch for layer ", b.layer, " in an exchange of layer ", layer));
    }
    absl::Status ok =
        collective::CheckBatch(b, options_.hidden_size, options_.n_routed_experts);
    if (!ok.ok()) return absl::Status(ok.code(), absl::StrCat(ShardName(b.shard), ": ", ok.message()));
  }
  ++step_;
  const size_t n = batches.size();
  std::vector<std::vector<int64_t>> headers(n);
  std::vector<Reply> replies(n);
  std::vector<PeerOp> sends, rows, answers;
  for (size_t i = 0; i < n; ++i) {
    const ShardBatch& b = batches[i];
    Header h;
    h.step = step_;
    h.layer = layer;
    h.hidden = options_.hidden_size;
    h.experts = b.experts;
    h.counts = b.counts;
    EncodeHeader(h, options_.n_routed_experts, &headers[i]);
    const int peer = b.shard + 1;
    const int64_t bytes = static_cast<int64_t>(b.rows.size() * sizeof(float));
    sends.push_back(PeerOp::Send(peer, headers[i].data(), headers[i].size() * sizeof(int64_t)));
    (*results)[i].outputs.assign(b.rows.size(), 0.0f);
    if (bytes > 0) {
      rows.push_back(PeerOp::Send(peer, b.rows.data(), bytes));
    }
    answers.push_back(PeerOp::Recv(peer, &replies[i], sizeof(Reply)));
    if (bytes > 0) answers.push_back(PeerOp::Recv(peer, (*results)[i].outputs.data(), bytes));
  }
  // The three calls mirror the shard's (collective_protocol.h).
  absl::Status st = group_->Run(sends);
  if (st.ok()) st = group_->Run(rows);
  if (st.ok()) st = group_->Run(answers);
  if (!st.ok()) {
    st = absl::UnavailableError(
        absl::StrCat(options_.name, " exchange of layer ", layer, " failed: ", st.message()));
    for (ShardResult& r : *results) r.status = st;
    return st;
  }
  absl::Status first;
  for (size_t i = 0; i < n; ++i) {
    absl::Status s = collective::DecodeReply(replies[i]);
    if (!s.ok()) {
      s = absl::Status(s.code(), absl::StrCat(ShardName(batches[i].shard), ": ", s.message()));
    }
    (*results)[i].status = s;
    if (first.ok()) first = s;
  }
  return first;
}

absl::Status ServeCollective(PeerGroup* group, int64_t n_routed_experts, const ShardRunner& run) {
  std::vector<int64_t> words(static_cast<size_t>(HeaderWords(n_routed_experts)));
  const int32_t shard = group->rank() - 1;
  ShardBatch batch;
  ShardResult result;
  Header h;
  while (true) {
    // The next exchange may be a long time coming (an idle worker): no timeout on the header.
    PeerOp recv = PeerOp::Recv(0, words.data(), words.size() * sizeof(int64_t));
    absl::Status st = group->RunFor({&recv, 1}, absl::InfiniteDuration());
    if (!st.ok()) return st;
    st = DecodeHeader(words, n_routed_experts, &h);
    if (!st.ok()) return st;
    if (h.op == collective::Op::kStop) return absl::OkStatus();
    const int64_t bytes = collective::RowBytes(h);
    batch.shard = shard;
    batch.layer = h.layer;
    batch.experts = h.experts;
    batch.counts = h.counts;
    batch.rows.resize(static_cast<size_t>(bytes) / sizeof(float));
    if (bytes > 0) {
      PeerOp rows = PeerOp::Recv(0, batch.rows.data(), bytes);
      st = group->Run({&rows, 1});
      if (!st.ok()) return st;
    }
    result = ShardResult();
    absl::Status outcome = run(batch, &result);
    // The reply's size must not depend on success: zeros stand in for missing outputs.
    if (!outcome.ok() || result.outputs.size() != batch.rows.size()) {
      if (outcome.ok()) {
        outcome = absl::InternalError(absl::StrCat("shard computed ", result.outputs.size(),
                                                   " floats for ", batch.rows.size()));
      }
      result.outputs.assign(batch.rows.size(), 0.0f);
    }
    Reply reply;
    collective::EncodeReply(outcome, &reply);
    std::vector<PeerOp> answer = {PeerOp::Send(0, &reply, sizeof(Reply))};
    if (bytes > 0) answer.push_back(PeerOp::Send(0, result.outputs.data(), bytes));
    st = group->Run(answer);
    if (!st.ok()) return st;
  }
}

}  // namespace moeserve::expert_shard
