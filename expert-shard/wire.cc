#include "expert-shard/wire.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace moeserve::expert_shard {

void BatchToProto(const ShardBatch& batch, int64_t hidden, uint64_t step,
                  moeserve::v1::ExchangeRequest* request) {
  request->Clear();
  request->set_step(step);
  request->set_layer(batch.layer);
  request->set_hidden_size(hidden);
  const char* src = reinterpret_cast<const char*>(batch.rows.data());
  for (size_t i = 0; i < batch.experts.size(); ++i) {
    moeserve::v1::ExpertRows* r = request->add_batches();
    r->set_expert(batch.experts[i]);
    r->set_rows(batch.counts[i]);
    const size_t bytes = static_cast<size_t>(batch.counts[i] * hidden) * sizeof(float);
    r->set_activations(src, bytes);
    src += bytes;
  }
}

absl::Status BatchFromProto(const moeserve::v1::ExchangeRequest& request, int64_t hidden,
                            ShardBatch* batch) {
  if (request.hidden_size() != hidden) {
    return absl::InvalidArgumentError(absl::StrCat(
        "row width ", request.hidden_size(), " does not match the model's hidden size ", hidden));
  }
  batch->layer = request.layer();
  batch->experts.clear();
  batch->counts.clear();
  batch->rows.clear();
  int64_t total = 0;
  const size_t row_bytes = static_cast<size_t>(hidden) * sizeof(float);
  for (const moeserve::v1::ExpertRows& r : request.batches()) {
    // Compared by division: rows * row_bytes could overflow for a hostile row count.
    if (r.rows() < 0 || hidden <= 0 || r.activations().size() % row_bytes != 0 ||
        static_cast<uint64_t>(r.rows()) != r.activations().size() / row_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert ", r.expert(), ": ", r.activations().size(), " bytes are not ",
                       r.rows(), " rows of ", hidden, " float32 values"));
    }
    total += r.rows();
  }
  batch->rows.resize(static_cast<size_t>(total * hidden));
  char* dst = reinterpret_cast<char*>(batch->rows.data());
  for (const moeserve::v1::ExpertRows& r : request.batches()) {
    batch->experts.push_back(r.expert());
    batch->counts.push_back(r.rows());
    if (r.activations().empty()) continue;  // dst may be null when every batch is empty
    std::memcpy(dst, r.activations().data(), r.activations().size());
    dst += r.activations().size();
  }
  return absl::OkStatus();
}

void ResultToProto(const ShardBatch& batch, const ShardResult& result, int64_t hidden,
                   moeserve::v1::ExchangeResponse* response) {
  response->set_layer(batch.layer);
  const char* src = reinterpret_cast<const char*>(result.outputs.data());
  for (size_t i = 0; i < batch.experts.size(); ++i) {
    moeserve::v1::ExpertOutputs* o = response->add_outputs();
    o->set_expert(batch.experts[i]);
    o->set_rows(batch.counts[i]);
    const size_t bytes = static_cast<size_t>(batch.counts[i] * hidden) * sizeof(float);
    o->set_outputs(src, bytes);
    src += bytes;
  }
}

absl::Status ResultFromProto(const moeserve::v1::ExchangeResponse& response, const ShardBatch& sent,
                             int64_t hidden, ShardResult* result) {
  if (response.outputs_size() != static_cast<int>(sent.experts.size())) {
    return absl::InternalError(absl::StrCat("response has ", response.outputs_size(),
                                            " expert outputs for ", sent.experts.size(),
                                            " experts sent"));
  }
  result->outputs.resize(sent.rows.size());
  char* dst = reinterpret_cast<char*>(result->outputs.data());
  for (int i = 0; i < response.outputs_size(); ++i) {
    const moeserve::v1::ExpertOutputs& o = response.outputs(i);
    const size_t bytes = static_cast<size_t>(sent.counts[i] * hidden) * sizeof(float);
    if (o.expert() != sent.experts[i] || o.rows() != sent.counts[i] ||
        o.outputs().size() != bytes) {
      return absl::InternalError(absl::StrCat("response entry ", i, " (expert ", o.expert(), ", ",
                                              o.rows(), " rows, ", o.outputs().size(),
                                              " bytes) does not answer expert ", sent.experts[i],
                                              " with ", sent.counts[i], " rows"));
    }
    std::memcpy(dst, o.outputs().data(), bytes);
    dst += bytes;
  }
  return absl::OkStatus();
}

}  // namespace moeserve::expert_shard
