#ifndef MOESERVE_PROTO_LOGPROB_CONVERSION_H_
#define MOESERVE_PROTO_LOGPROB_CONVERSION_H_

#include <vector>

#include "engine/sampler.h"
#include "moeserve/v1/common.pb.h"

namespace moeserve {

// One engine logprob as a moeserve.v1.TokenLogprob.
inline void ToProtoLogprob(const engine::SampleResult& r, v1::TokenLogprob* lp) {
  lp->set_token_id(r.token);
  lp->set_logprob(r.logprob);
  lp->set_rank(r.rank);
  for (const engine::TokenLogprob& t : r.top_logprobs) {
    lp->add_top_ids(t.token);
    lp->add_top_logprobs(t.logprob);
  }
}

// Appends engine logprobs to a repeated moeserve.v1.TokenLogprob field (the worker's events,
// the gateway's Inference responses).
inline void AppendProtoLogprobs(const std::vector<engine::SampleResult>& logprobs,
                                google::protobuf::RepeatedPtrField<v1::TokenLogprob>* out) {
  for (const engine::SampleResult& r : logprobs) ToProtoLogprob(r, out->Add());
}

}  // namespace moeserve

#endif  // MOESERVE_PROTO_LOGPROB_CONVERSION_H_
