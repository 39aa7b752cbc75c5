#ifndef MOESERVE_GATEWAY_MULTIPART_H_
#define MOESERVE_GATEWAY_MULTIPART_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moeserve::gateway {

// One part of a multipart/form-data body (RFC 7578).
struct FormPart {
  std::string name;      // Content-Disposition name
  std::string filename;  // Content-Disposition filename; empty for a plain field
  bool has_filename = false;
  std::string content_type;
  std::string body;
};

struct MultipartLimits {
  size_t max_parts = 16;
  size_t max_header_bytes = 8192;  // of one part's header block
  size_t max_part_bytes = 0;       // of one part's body; 0: no limit beyond the body's own size
};

// The boundary of a `Content-Type: multipart/form-data; boundary=...` header (quoted or not).
// INVALID_ARGUMENT when the type is not multipart/form-data or the boundary is missing, empty,
// longer than 70 characters (RFC 2046) or has characters outside its alphabet.
absl::StatusOr<std::string> MultipartBoundary(absl::string_view content_type);

// The parts of a multipart/form-data body. Pure. INVALID_ARGUMENT (naming what is wrong) when the
// body does not start with the boundary, a part has no header end, no Content-Disposition
// form-data name, or the closing boundary is missing; OUT_OF_RANGE (the HTTP layer answers 413)
// when a part is larger than limits.max_part_bytes; INVALID_ARGUMENT for more than max_parts
// parts or a header block over max_header_bytes.
absl::StatusOr<std::vector<FormPart>> ParseMultipart(absl::string_view body,
                                                     absl::string_view boundary,
                                                     const MultipartLimits& limits);

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_MULTIPART_H_
