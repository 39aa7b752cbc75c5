#ifndef MOESERVE_GATEWAY_RESPONSE_FORMAT_H_
#define MOESERVE_GATEWAY_RESPONSE_FORMAT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moeserve::gateway {

// OpenAI's "response_format" of a chat request, read from the request body (re-parsed keeping
// key order, so that properties come out in the order the schema declares them):
//   absent or {"type": "text"}           -> "" (no constraint)
//   {"type": "json_object"}              -> {"type":"object"}
//   {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": ...}}
//                                        -> the schema, compact
// The schema is compiled here too, so anything constrained decoding cannot enforce is a 400
// naming the keyword (param "response_format"), not a surprise at generation time.
absl::StatusOr<std::string> ResponseSchemaFromBody(absl::string_view body);

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_RESPONSE_FORMAT_H_
