#include "gateway/multipart.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace moeserve::gateway {
namespace {

// RFC 2046 bchars: DIGIT / ALPHA / "'()+_,-./:=?" and space (not last).
bool IsBoundaryChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         absl::string_view("'()+_,-./:=? ").find(c) != absl::string_view::npos;
}

// The value of parameter `name` in a header's `; a=b; c="d"` list; found=false when absent.
std::string HeaderParam(absl::string_view header, absl::string_view name, bool* found) {
  *found = false;
  for (absl::string_view item : absl::StrSplit(header, ';')) {
    item = absl::StripAsciiWhitespace(item);
    const size_t eq = item.find('=');
    if (eq == absl::string_view::npos) continue;
    if (!absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(item.substr(0, eq)), name)) continue;
    absl::string_view value = absl::StripAsciiWhitespace(item.substr(eq + 1));
    *found = true;
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
      std::string out;
      for (size_t i = 0; i < value.size(); ++i) {
        if (value[i] == '\\' && i + 1 < value.size()) ++i;
        out.push_back(value[i]);
      }
      return out;
    }
    return std::string(value);
  }
  return "";
}

absl::Status ParsePartHeaders(absl::string_view headers, FormPart* part) {
  bool disposition = false;
  for (absl::string_view line : absl::StrSplit(headers, "\r\n")) {
    if (line.empty()) continue;
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError("multipart: a part header line has no ':'");
    }
    const absl::string_view name = absl::StripAsciiWhitespace(line.substr(0, colon));
    const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (absl::EqualsIgnoreCase(name, "Content-Disposition")) {
      if (!absl::StartsWithIgnoreCase(value, "form-data")) {
        return absl::InvalidArgumentError("multipart: Content-Disposition is not form-data");
      }
      bool found = false;
      part->name = HeaderParam(value, "name", &found);
      if (!found || part->name.empty()) {
        return absl::InvalidArgumentError("multipart: a part has no name");
      }
      part->filename = HeaderParam(value, "filename", &part->has_filename);
      disposition = true;
    } else if (absl::EqualsIgnoreCase(name, "Content-Type")) {
      part->content_type = std::string(value);
    }
  }
  if (!disposition) {
    return absl::InvalidArgumentError("multipart: a part has no Content-Disposition header");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> MultipartBoundary(absl::string_view content_type) {
  const absl::string_view type =
      absl::StripAsciiWhitespace(content_type.substr(0, content_type.find(';')));
  if (!absl::EqualsIgnoreCase(type, "multipart/form-data")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected Content-Type multipart/form-data, got '", content_type.substr(0, 100), "'"));
  }
  bool found = false;
  const size_t semi = content_type.find(';');
  std::string boundary = semi == absl::string_view::npos
                             ? ""
                             : HeaderParam(content_type.substr(semi + 1), "boundary", &found);
  if (!found || boundary.empty()) {
    return absl::InvalidArgumentError("multipart/form-data without a boundary");
  }
  if (boundary.size() > 70 || boundary.back() == ' ') {
    return absl::InvalidArgumentError(
        "multipart boundary longer than 70 characters or ends in space");
  }
  for (char c : boundary) {
    if (!IsBoundaryChar(c)) {
      return absl::InvalidArgumentError("multipart boundary has a character RFC 2046 forbids");
    }
  }
  return boundary;
}

absl::StatusOr<std::vector<FormPart>> ParseMultipart(absl::string_view body,
                                                     absl::string_view boundary,
                                                     const MultipartLimits& limits) {
  if (boundary.empty()) return absl::InvalidArgumentError("multipart: empty boundary");
  const std::string open = absl::StrCat("--", boundary);
  const std::string delimiter = absl::StrCat("\r\n--", boundary);
  // A preamble before the first boundary is allowed (RFC 2046) but clients send none; accept the
  // body starting with the boundary or with a CRLF-preceded one.
  size_t pos;
  if (absl::StartsWith(body, open)) {
    pos = open.size();
  } else {
    pos = body.find(delimiter);
    if (pos == absl::string_view::npos) {
      return absl::InvalidArgumentError("multipart: the body does not contain the boundary");
    }
    pos += delimiter.size();
  }
  std::vector<FormPart> parts;
  while (true) {
    // After a boundary: "--" (the end) or transport padding then CRLF.
    if (body.substr(pos, 2) == "--") return parts;
    while (pos < body.size() && (body[pos] == ' ' || body[pos] == '\t')) ++pos;
    if (body.substr(pos, 2) != "\r\n") {
      return absl::InvalidArgumentError("multipart: a boundary is not followed by CRLF");
    }
    pos += 2;
    if (parts.size() >= limits.max_parts) {
      return absl::InvalidArgumentError(
          absl::StrCat("multipart: more than ", limits.max_parts, " parts"));
    }
    // A part with no headers starts directly with the blank line: it cannot be named.
    if (body.substr(pos, 2) == "\r\n") {
      return absl::InvalidArgumentError("multipart: a part has no Content-Disposition header");
    }
    const size_t header_end = body.find("\r\n\r\n", pos);
    if (header_end == absl::string_view::npos) {
      return absl::InvalidArgumentError("multipart: a part's headers do not end (no blank line)");
    }
    if (header_end - pos > limits.max_header_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("multipart: a part's headers exceed ", limits.max_header_bytes, " bytes"));
    }
    FormPart part;
    if (absl::Status s = ParsePartHeaders(body.substr(pos, header_end - pos), &part); !s.ok()) {
      return s;
    }
    const size_t content = header_end + 4;
    const size_t end = body.find(delimiter, content);
    if (end == absl::string_view::npos) {
      return absl::InvalidArgumentError("multipart: the closing boundary is missing");
    }
    if (limits.max_part_bytes > 0 && end - content > limits.max_part_bytes) {
      return absl::OutOfRangeError(absl::StrCat("multipart: part '", part.name, "' exceeds ",
                                                limits.max_part_bytes, " bytes"));
    }
    part.body = std::string(body.substr(content, end - content));
    parts.push_back(std::move(part));
    pos = end + delimiter.size();
  }
}

}  // namespace moeserve::gateway
