// Checkpoint::Open: a Hugging Face safetensors directory, memory-mapped read-only.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "engine/checkpoint.h"
#include "engine/weights/safetensors.h"
#include "engine/weights/tensor_names.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine {
namespace {

using Json = nlohmann::json;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

std::string JoinPath(const std::string& dir, absl::string_view name) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// A read-only private mapping of a whole file; unmapped on destruction.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      std::string msg = absl::StrCat(path, ": cannot open: ", std::strerror(err));
      if (err == ENOENT) return absl::NotFoundError(msg);
      return absl::PermissionDeniedError(msg);
    }
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
    }
    auto file = std::unique_ptr<MappedFile>(new MappedFile(path));
    file->size_ = static_cast<size_t>(st.st_size);
    if (file->size_ > 0) {
      void* addr = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (addr == MAP_FAILED) {
        int err = errno;
        ::close(fd);
        return absl::ResourceExhaustedError(
            absl::StrCat(path, ": mmap failed: ", std::strerror(err)));
      }
      file->addr_ = static_cast<const uint8_t*>(addr);
      // Weights are streamed once per step: ask for huge pages (fewer TLB misses where the
      // kernel maps file-backed large folios) and sequential read-ahead. Advice only: failures
      // are ignored.
      (void)::madvise(addr, file->size_, MADV_HUGEPAGE);
    }
    ::close(fd);  // the mapping keeps the file alive
    return file;
  }

  ~MappedFile() {
    if (addr_ != nullptr) ::munmap(const_cast<uint8_t*>(addr_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  absl::Span<const uint8_t> bytes() const { return {addr_, size_}; }
  const std::string& path() const { return path_; }

 private:
  explicit MappedFile(std::string path) : path_(std::move(path)) {}

  std::string path_;
  const uint8_t* addr_ = nullptr;
  size_t size_ = 0;
};

class MappedCheckpoint final : public Checkpoint {
 public:
  explicit MappedCheckpoint(std::string dir) : dir_(std::move(dir)) {}

  const TensorInfo* Find(absl::string_view name) const override {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
  }
  std::vector<std::string> Names() const override {
    std::vector<std::string> names;
    names.reserve(declared_.size());
    for (const auto& [name, file] : declared_) names.push_back(name);
    return names;
  }
  const std::string& dir() const override { return dir_; }
  std::string FileOf(absl::string_view name) const override {
    auto it = declared_.find(std::string(name));
    return it == declared_.end() ? std::string() : it->second;
  }
  std::vector<std::string> MappedFiles() const override {
    std::vector<std::string> paths;
    for (const auto& f : files_) paths.push_back(f->path());
    std::sort(paths.begin(), paths.end());
    return paths;
  }

  // Maps `path` and adds its tensors. When `expected` is given (sharded), the file must hold
  // exactly the tensors the index assigns to it.
  absl::Status AddFile(const std::string& path, const std::set<std::string>* expected,
                       absl::string_view index_path) {
    MOESERVE_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
    MOESERVE_ASSIGN_OR_RETURN(SafetensorsFile parsed, ParseSafetensors(file->bytes(), path));
    for (TensorInfo& t : parsed.tensors) {
      if (expected != nullptr && expected->count(t.name) == 0) {
        auto it = declared_.find(t.name);
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": tensor '", t.name, "' is not assigned to this shard by ", index_path,
            it == declared_.end() ? std::string(" (not listed at all)")
                                  : absl::StrCat(" (listed in ", it->second, ")")));
      }
      if (expected == nullptr) declared_[t.name] = path;
      std::string name = t.name;
      tensors_.emplace(std::move(name), std::move(t));
    }
    if (expected != nullptr) {
      for (const std::string& name : *expected) {
        if (tensors_.find(name) == tensors_.end()) {
          return absl::InvalidArgumentError(absl::StrCat(
              index_path, ": tensor '", name, "' is assigned to ", path,
              ", which does not contain it"));
        }
      }
    }
    files_.push_back(std::move(file));
    return absl::OkStatus();
  }

  void Declare(const std::string& name, const std::string& path) { declared_[name] = path; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  absl::flat_hash_map<std::string, TensorInfo> tensors_;  // mapped tensors; data into files_
  std::map<std::string, std::string> declared_;            // every declared name -> file path
};

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return ss.str();
}

// A shard file name from the index: relative, no "..", no empty components.
bool SafeShardName(absl::string_view name) {
  if (name.empty() || name.front() == '/') return false;
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir,
                                                             const ModelConfig* config,
                                                             const TensorFilter* filter) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("checkpoint directory '", dir, "' does not exist"));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat("checkpoint path '", dir, "' is not a directory"));
  }
  auto checkpoint = std::make_unique<MappedCheckpoint>(dir);

  const std::string index_path = JoinPath(dir, kIndexFile);
  if (!IsRegularFile(index_path)) {
    const std::string single = JoinPath(dir, kSingleFile);
    if (!IsRegularFile(single)) {
      return absl::NotFoundError(absl::StrCat("checkpoint directory '", dir, "' has neither ",
                                              kSingleFile, " nor ", kIndexFile));
    }
    MOESERVE_RETURN_IF_ERROR(checkpoint->AddFile(single, nullptr, ""));
    return std::unique_ptr<Checkpoint>(std::move(checkpoint));
  }

  MOESERVE_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(index_path));
  Json index = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": not a JSON object"));
  }
  auto weight_map = index.find("weight_map");
  if (weight_map == index.end() || !weight_map->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": no 'weight_map' object"));
  }

  // shard file name -> tensor names; and whether any of them is wanted.
  std::map<std::string, std::set<std::string>> shards;
  std::set<std::string> wanted_shards;
  for (auto it = weight_map->begin(); it != weight_map->end(); ++it) {
    if (!it->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map entry for tensor '",
                                                     it.key(), "' is not a file name string"));
    }
    const std::string& shard = it->get_ref<const std::string&>();
    if (!SafeShardName(shard)) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor '", it.key(),
                                                     "' names an invalid shard file '", shard,
                                                     "'"));
    }
    shards[shard].insert(it.key());
    checkpoint->Declare(it.key(), JoinPath(dir, shard));
    bool wanted = true;
    if (filter != nullptr) {
      TensorLocation loc = LocateTensor(it.key());
      if (config != nullptr && loc.layer >= config->num_hidden_layers) {
        wanted = false;  // MTP layers: never run
      } else {
        wanted = filter->Wants(loc.layer, loc.expert);
      }
    }
    if (wanted) wanted_shards.insert(shard);
  }

  for (const auto& [shard, names] : shards) {
    if (wanted_shards.count(shard) == 0) continue;
    const std::string path = JoinPath(dir, shard);
    if (!IsRegularFile(path)) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": shard '", shard,
                                                     "' (holding tensor '", *names.begin(),
                                                     "') does not exist in ", dir));
    }
    MOESERVE_RETURN_IF_ERROR(checkpoint->AddFile(path, &names, index_path));
  }
  return std::unique_ptr<Checkpoint>(std::move(checkpoint));
}

}  // namespace moeserve::engine
