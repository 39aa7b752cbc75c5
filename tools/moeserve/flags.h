#ifndef MOESERVE_TOOLS_MOESERVE_FLAGS_H_
#define MOESERVE_TOOLS_MOESERVE_FLAGS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moeserve::cli {

// `--name value`, `--name=value` and boolean `--name` flags of one subcommand. Unknown flags and
// stray positional arguments are InvalidArgument, so a typo never silently changes behaviour.
class Flags {
 public:
  // `value_flags` take a value; `bool_flags` do not.
  static absl::StatusOr<Flags> Parse(const std::vector<std::string>& args,
                                     const std::set<std::string>& value_flags,
                                     const std::set<std::string>& bool_flags);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::optional<std::string> Get(const std::string& name) const;
  absl::StatusOr<std::string> Required(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t dflt) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double dflt) const;
  // A comma-separated list of integers ("0,5,17").
  absl::StatusOr<std::vector<int64_t>> GetIntList(const std::string& name) const;

 private:
  std::map<std::string, std::string> values_;
};

}  // namespace moeserve::cli

#endif  // MOESERVE_TOOLS_MOESERVE_FLAGS_H_
