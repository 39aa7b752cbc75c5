// WriteSafetensors: one safetensors file from in-memory tensors (tests, conversion tools).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint.h"
#include "engine/weights/safetensors.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine {
namespace {

// Files at least this large are flushed and dropped from the page cache once written.
constexpr uint64_t kEvictAfterWriteBytes = uint64_t{64} << 20;

absl::Status IoError(const std::string& path, absl::string_view what) {
  return absl::InternalError(absl::StrCat(path, ": ", what, ": ", std::strerror(errno)));
}

}  // namespace

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") {
      return absl::InvalidArgumentError(absl::StrCat(path, ": invalid tensor name '", t.name, "'"));
    }
    if (!seen.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": duplicate tensor '", t.name, "'"));
    }
    int64_t numel = 0;
    if (!CheckedNumel(t.shape, &numel) ||
        static_cast<uint64_t>(numel) >
            std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(DTypeSize(t.dtype)) ||
        static_cast<uint64_t>(numel) * static_cast<uint64_t>(DTypeSize(t.dtype)) !=
            t.bytes.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", t.name, "' has ", t.bytes.size(), " bytes but shape ",
                       ShapeString(t.shape), " of ", DTypeName(t.dtype), " needs ",
                       numel, " x ", DTypeSize(t.dtype)));
    }
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  // Names are arbitrary bytes; replace invalid UTF-8 rather than throw.
  std::string json = header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  json.append((8 - json.size() % 8) % 8, ' ');

  uint8_t len[8];
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));

  const std::string tmp = absl::StrCat(path, ".tmp");
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return IoError(tmp, "cannot create");
  bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(json.data(), 1, json.size(), f) == json.size();
  for (const TensorToWrite& t : tensors) {
    if (!ok) break;
    ok = t.bytes.empty() || std::fwrite(t.bytes.data(), 1, t.bytes.size(), f) == t.bytes.size();
  }
  if (!ok) {
    absl::Status s = IoError(tmp, "write failed");
    std::fclose(f);
    std::remove(tmp.c_str());
    return s;
  }
  if (offset >= kEvictAfterWriteBytes && std::fflush(f) == 0 && ::fdatasync(fileno(f)) == 0) {
    // Pages written through write() sit in the page cache as small folios, which a later mmap
    // maps with 4 KiB entries. Dropping them (clean now) lets the first load read the file back
    // through the MADV_HUGEPAGE mapping, whose read-ahead fills 2 MiB folios mapped whole: decode
    // streams the weights measurably faster from those (docs/DESIGN-NOTES.md). Advice only.
    (void)::posix_fadvise(fileno(f), 0, 0, POSIX_FADV_DONTNEED);
  }
  if (std::fclose(f) != 0) {
    absl::Status s = IoError(tmp, "close failed");
    std::remove(tmp.c_str());
    return s;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = IoError(path, "rename failed");
    std::remove(tmp.c_str());
    return s;
  }
  return absl::OkStatus();
}

}  // namespace moeserve::engine
