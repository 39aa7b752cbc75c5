#include "gateway/response_format.h"

#include "absl/strings/str_cat.h"
#include "common/http_status.h"
#include "engine/grammar/json_schema.h"
#include "nlohmann/json.hpp"

namespace moeserve::gateway {
namespace {

using Json = nlohmann::ordered_json;

absl::Status Invalid(absl::string_view message) {
  return WithErrorParam(absl::InvalidArgumentError(message), "response_format");
}

bool ValidSchemaName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> ResponseSchemaFromBody(absl::string_view body) {
  // The caller has already parsed and validated the body as JSON.
  Json j = Json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::string();
  auto rf = j.find("response_format");
  if (rf == j.end() || rf->is_null()) return std::string();
  if (!rf->is_object()) return Invalid("'response_format' must be an object");
  auto type = rf->find("type");
  if (type == rf->end() || !type->is_string()) {
    return Invalid("'response_format.type' must be one of 'text', 'json_object', 'json_schema'");
  }
  const std::string kind = type->get<std::string>();
  if (kind == "text") return std::string();
  if (kind == "json_object") return std::string(R"({"type":"object"})");
  if (kind != "json_schema") {
    return Invalid(absl::StrCat("unknown 'response_format.type' '", kind,
                                "' (expected 'text', 'json_object' or 'json_schema')"));
  }
  auto spec = rf->find("json_schema");
  if (spec == rf->end() || !spec->is_object()) {
    return Invalid("'response_format.json_schema' must be an object with 'name' and 'schema'");
  }
  auto name = spec->find("name");
  if (name == spec->end() || !name->is_string() || !ValidSchemaName(name->get<std::string>())) {
    return Invalid(
        "'response_format.json_schema.name' must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'");
  }
  if (auto strict = spec->find("strict"); strict != spec->end() && !strict->is_boolean() &&
                                          !strict->is_null()) {
    return Invalid("'response_format.json_schema.strict' must be a boolean");
  }
  auto schema = spec->find("schema");
  if (schema == spec->end() || schema->is_null()) {
    // OpenAI treats a missing schema as "any JSON"; the answer is at least valid JSON.
    return std::string("{}");
  }
  if (!schema->is_object()) return Invalid("'response_format.json_schema.schema' must be an object");
  const std::string text = schema->dump();
  absl::StatusOr<std::shared_ptr<const engine::grammar::SchemaGraph>> compiled =
      engine::grammar::CompileJsonSchema(text);
  if (!compiled.ok()) return Invalid(compiled.status().message());
  return text;
}

}  // namespace moeserve::gateway
