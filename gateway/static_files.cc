#include "gateway/static_files.h"

namespace moeserve::gateway {

const StaticFile* FindStaticFile(absl::string_view path) {
  if (path == "/") path = "/index.html";
  for (const StaticFile& file : StaticFiles()) {
    if (file.path == path) return &file;
  }
  return nullptr;
}

}  // namespace moeserve::gateway
