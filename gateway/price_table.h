#ifndef MOESERVE_GATEWAY_PRICE_TABLE_H_
#define MOESERVE_GATEWAY_PRICE_TABLE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moeserve::gateway {

// Prices of one model, in the table's currency per million tokens.
struct ModelPrice {
  double input_cache_hit_per_million = 0;   // prompt tokens served from the KV cache
  double input_cache_miss_per_million = 0;  // prompt tokens computed
  double output_per_million = 0;            // generated tokens (reasoning and answer)
};

// What the gateway charges, per model id, with a "*" entry for every model not listed.
// Immutable after construction, so shared by every request thread without locks.
//
// File format (JSON; unknown keys are rejected so a typo never silently prices at the default):
//   {"currency": "USD",
//    "models": {"*":           {"input_cache_hit_per_million": 0.14,
//                               "input_cache_miss_per_million": 0.55,
//                               "output_per_million": 2.19},
//               "deepseek-r1": {...}}}
// "currency" is optional (default "USD", else three upper-case letters); "models" must hold a
// "*" entry; every entry needs all three prices, each a finite number >= 0.
class PriceTable {
 public:
  // The built-in table: only "*", at DeepSeek-R1's published list prices (USD 0.14 cache hit,
  // 0.55 cache miss, 2.19 output per million tokens).
  static PriceTable Default();
  // INVALID_ARGUMENT naming the offending key.
  static absl::StatusOr<PriceTable> Parse(absl::string_view json_text);
  // NOT_FOUND when the file cannot be read; INVALID_ARGUMENT (with the path) when malformed.
  static absl::StatusOr<PriceTable> LoadFile(const std::string& path);

  const std::string& currency() const { return currency_; }
  // The model's own entry, else "*".
  const ModelPrice& For(absl::string_view model) const;
  // The price of one request.
  double Cost(absl::string_view model, int64_t cache_hit_tokens, int64_t cache_miss_tokens,
              int64_t output_tokens) const;
  // The body of GET /v1/prices: {"object":"list","currency":...,"data":[{"model":...,
  // "input_cache_hit_per_million":...,"input_cache_miss_per_million":...,
  // "output_per_million":...}, ...]}, one entry per served model, in the given order (keys in
  // exactly this order).
  nlohmann::ordered_json PricesJson(const std::vector<std::string>& served_models) const;

 private:
  PriceTable() = default;

  std::string currency_ = "USD";
  std::map<std::string, ModelPrice, std::less<>> models_;  // always holds "*"
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_PRICE_TABLE_H_
