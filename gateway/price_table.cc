#include "gateway/price_table.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace moeserve::gateway {
namespace {

constexpr const char* kPriceKeys[] = {"input_cache_hit_per_million", "input_cache_miss_per_million",
                                      "output_per_million"};

absl::StatusOr<ModelPrice> ParsePrice(const std::string& model, const nlohmann::json& entry) {
  if (!entry.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("price table: models[\"", model, "\"] must be an object"));
  }
  for (const auto& [key, value] : entry.items()) {
    bool known = false;
    for (const char* k : kPriceKeys) known = known || key == k;
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrCat("price table: models[\"", model, "\"] has unknown key \"", key, "\""));
    }
  }
  double prices[3] = {0, 0, 0};
  for (int i = 0; i < 3; ++i) {
    const auto it = entry.find(kPriceKeys[i]);
    if (it == entry.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("price table: models[\"", model, "\"] lacks \"", kPriceKeys[i], "\""));
    }
    if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("price table: models[\"", model, "\"].", kPriceKeys[i],
                       " must be a finite number >= 0, got ", it->dump()));
    }
    prices[i] = it->get<double>();
  }
  return ModelPrice{prices[0], prices[1], prices[2]};
}

bool IsCurrencyCode(const std::string& s) {
  if (s.size() != 3) return false;
  for (char c : s) {
    if (c < 'A' || c > 'Z') return false;
  }
  return true;
}

}  // namespace

PriceTable PriceTable::Default() {
  PriceTable table;
  table.models_["*"] = ModelPrice{0.14, 0.55, 2.19};
  return table;
}

absl::StatusOr<PriceTable> PriceTable::Parse(absl::string_view json_text) {
  const nlohmann::json doc = nlohmann::json::parse(json_text.begin(), json_text.end(), nullptr,
                                                   /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError("price table: not valid JSON");
  if (!doc.is_object()) return absl::InvalidArgumentError("price table: must be a JSON object");
  PriceTable table;
  for (const auto& [key, value] : doc.items()) {
    if (key != "currency" && key != "models") {
      return absl::InvalidArgumentError(
          absl::StrCat("price table: unknown key \"", key, "\" (expected currency, models)"));
    }
  }
  if (const auto it = doc.find("currency"); it != doc.end()) {
    if (!it->is_string() || !IsCurrencyCode(it->get<std::string>())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "price table: currency must be three upper-case letters (ISO 4217), got ", it->dump()));
    }
    table.currency_ = it->get<std::string>();
  }
  const auto models = doc.find("models");
  if (models == doc.end() || !models->is_object()) {
    return absl::InvalidArgumentError("price table: \"models\" must be an object of model ids");
  }
  for (const auto& [model, entry] : models->items()) {
    if (model.empty()) return absl::InvalidArgumentError("price table: empty model id");
    MOESERVE_ASSIGN_OR_RETURN(ModelPrice price, ParsePrice(model, entry));
    table.models_[model] = price;
  }
  if (table.models_.count("*") == 0) {
    return absl::InvalidArgumentError(
        "price table: models needs a \"*\" entry (the price of every model not listed)");
  }
  return table;
}

absl::StatusOr<PriceTable> PriceTable::LoadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("price table: cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  absl::StatusOr<PriceTable> table = Parse(text.str());
  if (!table.ok()) {
    return absl::Status(table.status().code(), absl::StrCat(path, ": ", table.status().message()));
  }
  return table;
}

const ModelPrice& PriceTable::For(absl::string_view model) const {
  const auto it = models_.find(model);
  return it != models_.end() ? it->second : models_.find("*")->second;
}

double PriceTable::Cost(absl::string_view model, int64_t cache_hit_tokens,
                        int64_t cache_miss_tokens, int64_t output_tokens) const {
  const ModelPrice& p = For(model);
  return (static_cast<double>(cache_hit_tokens) * p.input_cache_hit_per_million +
          static_cast<double>(cache_miss_tokens) * p.input_cache_miss_per_million +
          static_cast<double>(output_tokens) * p.output_per_million) /
         1e6;
}

nlohmann::ordered_json PriceTable::PricesJson(const std::vector<std::string>& served_models) const {
  nlohmann::ordered_json data = nlohmann::ordered_json::array();
  for (const std::string& model : served_models) {
    const ModelPrice& p = For(model);
    data.push_back(
        nlohmann::ordered_json{{"model", model},
                               {"input_cache_hit_per_million", p.input_cache_hit_per_million},
                               {"input_cache_miss_per_million", p.input_cache_miss_per_million},
                               {"output_per_million", p.output_per_million}});
  }
  return nlohmann::ordered_json{
      {"object", "list"}, {"currency", currency_}, {"data", std::move(data)}};
}

}  // namespace moeserve::gateway
