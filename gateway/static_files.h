#ifndef MOESERVE_GATEWAY_STATIC_FILES_H_
#define MOESERVE_GATEWAY_STATIC_FILES_H_

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace moeserve::gateway {

// One file of the playground (gateway/web), compiled into the binary at build time.
struct StaticFile {
  absl::string_view path;          // URL path: "/index.html"
  absl::string_view content_type;  // "text/html; charset=utf-8"
  absl::string_view body;
  absl::string_view etag;  // a strong validator, quotes included: "\"3f2a...\""
};

// Every embedded file. Defined in the source that cmake/EmbedFiles.cmake generates.
absl::Span<const StaticFile> StaticFiles();

// The file served at `path` ("/" is "/index.html"); nullptr when there is none. Never touches
// the file system, so no path can reach outside the embedded set.
const StaticFile* FindStaticFile(absl::string_view path);

// The security headers sent with every embedded file: the page loads only its own scripts,
// styles and images, talks only to its own origin, and cannot be framed.
inline constexpr absl::string_view kStaticContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_STATIC_FILES_H_
