#include "engine/weights/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine {
namespace {

using Json = nlohmann::json;

// The reference implementation refuses headers above 100 MB; so do we.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

absl::Status HeaderError(absl::string_view file, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": safetensors header ", what));
}

absl::Status TensorError(absl::string_view file, absl::string_view tensor,
                         absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": tensor '", tensor, "' ", what));
}

// A non-negative JSON integer that fits int64; nullopt-like false otherwise.
bool NonNegativeInt(const Json& j, int64_t* out) {
  if (!j.is_number_unsigned()) return false;  // negative ints are number_integer, floats fail
  uint64_t v = j.get<uint64_t>();
  if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  *out = static_cast<int64_t>(v);
  return true;
}

struct Entry {
  TensorInfo info;
  uint64_t begin = 0;
  uint64_t end = 0;
};

absl::StatusOr<Entry> ParseEntry(const std::string& name, const Json& j, absl::string_view file) {
  if (!j.is_object()) return TensorError(file, name, "entry is not a JSON object");
  Entry e;
  e.info.name = name;
  e.info.file = std::string(file);

  auto dtype = j.find("dtype");
  if (dtype == j.end() || !dtype->is_string()) {
    return TensorError(file, name, "has no string 'dtype'");
  }
  absl::StatusOr<DType> parsed = ParseDType(dtype->get_ref<const std::string&>());
  if (!parsed.ok()) return TensorError(file, name, parsed.status().message());
  e.info.dtype = *parsed;

  auto shape = j.find("shape");
  if (shape == j.end() || !shape->is_array()) {
    return TensorError(file, name, "has no 'shape' array");
  }
  for (const Json& d : *shape) {
    int64_t dim = 0;
    if (!NonNegativeInt(d, &dim)) {
      return TensorError(file, name, "has a shape that is not an array of non-negative integers");
    }
    e.info.shape.push_back(dim);
  }
  int64_t numel = 0;
  if (!CheckedNumel(e.info.shape, &numel)) {
    return TensorError(file, name, absl::StrCat("has shape ", ShapeString(e.info.shape),
                                                " whose element count overflows"));
  }

  auto offsets = j.find("data_offsets");
  int64_t begin = 0;
  int64_t end = 0;
  if (offsets == j.end() || !offsets->is_array() || offsets->size() != 2 ||
      !NonNegativeInt((*offsets)[0], &begin) || !NonNegativeInt((*offsets)[1], &end)) {
    return TensorError(file, name,
                       "has no 'data_offsets' array of two non-negative integers in range");
  }
  if (end < begin) {
    return TensorError(file, name, absl::StrCat("has data_offsets [", begin, ",", end,
                                                "] with end before begin"));
  }
  uint64_t size = static_cast<uint64_t>(DTypeSize(e.info.dtype));
  uint64_t want = static_cast<uint64_t>(numel);
  if (want > std::numeric_limits<uint64_t>::max() / size ||
      static_cast<uint64_t>(end - begin) != want * size) {
    return TensorError(file, name,
                       absl::StrCat("has ", end - begin, " data bytes but shape ",
                                    ShapeString(e.info.shape), " of ", DTypeName(e.info.dtype),
                                    " needs ", numel, " x ", size));
  }
  e.begin = static_cast<uint64_t>(begin);
  e.end = static_cast<uint64_t>(end);
  e.info.nbytes = e.end - e.begin;
  return e;
}

}  // namespace

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

bool CheckedNumel(const std::vector<int64_t>& shape, int64_t* numel) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) return false;
    n *= d;
  }
  *numel = n;
  return true;
}

absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::Span<const uint8_t> bytes,
                                                 absl::string_view file) {
  if (bytes.size() < 8) {
    return HeaderError(file, absl::StrCat("missing: the file has only ", bytes.size(),
                                          " bytes (need at least 8)"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[static_cast<size_t>(i)];
  const uint64_t rest = bytes.size() - 8;
  if (header_len > rest) {
    return HeaderError(file, absl::StrCat("length ", header_len, " is larger than the ", rest,
                                          " bytes that follow it"));
  }
  if (header_len > kMaxHeaderBytes) {
    return HeaderError(file, absl::StrCat("length ", header_len, " exceeds the limit of ",
                                          kMaxHeaderBytes, " bytes"));
  }
  const uint8_t* header_begin = bytes.data() + 8;
  const uint8_t* header_end = header_begin + header_len;
  Json header = Json::parse(header_begin, header_end, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return HeaderError(file, "is not valid JSON");
  if (!header.is_object()) return HeaderError(file, "is not a JSON object");

  const uint8_t* data = header_end;
  const uint64_t data_size = rest - header_len;

  SafetensorsFile out;
  std::vector<Entry> entries;
  entries.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) return HeaderError(file, "'__metadata__' is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return HeaderError(file, absl::StrCat("'__metadata__' value for '", m.key(),
                                                "' is not a string"));
        }
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    if (name.empty()) return HeaderError(file, "has a tensor with an empty name");
    MOESERVE_ASSIGN_OR_RETURN(Entry e, ParseEntry(name, *it, file));
    entries.push_back(std::move(e));
  }

  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const Entry* prev = nullptr;  // the last non-empty tensor
  for (const Entry& e : entries) {
    if (e.end > data_size) {
      return absl::DataLossError(absl::StrCat(
          file, ": tensor '", e.info.name, "' has data_offsets [", e.begin, ",", e.end,
          "] but the data section has only ", data_size, " bytes (truncated file?)"));
    }
    if (e.begin == e.end) continue;
    if (prev != nullptr && e.begin < prev->end) {
      return TensorError(file, e.info.name,
                         absl::StrCat("data [", e.begin, ",", e.end, ") overlaps tensor '",
                                      prev->info.name, "' [", prev->begin, ",", prev->end, ")"));
    }
    prev = &e;
  }
  out.tensors.reserve(entries.size());
  for (Entry& e : entries) {
    e.info.data = data + e.begin;
    out.tensors.push_back(std::move(e.info));
  }
  return out;
}

}  // namespace moeserve::engine
