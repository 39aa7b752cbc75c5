#include "engine/grammar/json_schema.h"

#include <map>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine::grammar {

using Json = nlohmann::ordered_json;  // keeps "properties" in declared order

// Builds the node graph of one schema document. A `$ref` gets its node the first time it is
// seen and is filled after, so recursive definitions point back at themselves.
class SchemaCompiler {
 public:
  explicit SchemaCompiler(const Json* document) : document_(document) {
    graph_ = std::make_shared<SchemaGraph>();
  }

  absl::StatusOr<std::shared_ptr<const SchemaGraph>> Compile() {
    MOESERVE_ASSIGN_OR_RETURN(graph_->root_, Node(*document_, "#"));
    while (!pending_.empty()) {
      auto [node, target, pointer] = pending_.back();
      pending_.pop_back();
      MOESERVE_RETURN_IF_ERROR(Fill(node, *target, pointer));
    }
    return std::shared_ptr<const SchemaGraph>(graph_);
  }

 private:
  struct Pending {
    SchemaNode* node;
    const Json* target;
    std::string pointer;
  };

  static absl::Status Error(const std::string& pointer, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("response_format schema at ", pointer, ": ", what));
  }

  SchemaNode* NewNode(SchemaNode::Kind kind) {
    graph_->nodes_.emplace_back();
    graph_->nodes_.back().kind = kind;
    return &graph_->nodes_.back();
  }

  absl::StatusOr<const SchemaNode*> Node(const Json& s, const std::string& pointer) {
    if (++nodes_seen_ > kMaxNodes) return Error(pointer, "the schema is too large");
    if (s.is_boolean()) {
      if (!s.get<bool>()) return Error(pointer, "the schema 'false' matches nothing");
      return NewNode(SchemaNode::Kind::kAny);
    }
    if (!s.is_object()) return Error(pointer, "a schema must be an object or a boolean");
    if (auto ref = s.find("$ref"); ref != s.end()) {
      if (s.size() > 1) {
        for (auto& [key, value] : s.items()) {
          if (key != "$ref" && !IsAnnotation(key) && key != "$defs" && key != "definitions") {
            return Error(pointer, absl::StrCat("'", key, "' beside '$ref' is not supported"));
          }
        }
      }
      if (!ref->is_string()) return Error(pointer, "'$ref' must be a string");
      return Ref(ref->get<std::string>(), pointer);
    }
    SchemaNode* node = NewNode(SchemaNode::Kind::kAny);
    MOESERVE_RETURN_IF_ERROR(Fill(node, s, pointer));
    return node;
  }

  absl::StatusOr<const SchemaNode*> Ref(const std::string& ref, const std::string& pointer) {
    if (auto it = refs_.find(ref); it != refs_.end()) return it->second;
    const Json* target = nullptr;
    if (ref == "#") {
      target = document_;
    } else {
      for (const std::string prefix : {"#/$defs/", "#/definitions/"}) {
        if (ref.rfind(prefix, 0) != 0) continue;
        const std::string section = prefix.substr(2, prefix.size() - 3);
        const std::string name = ref.substr(prefix.size());
        auto defs = document_->find(section);
        if (defs != document_->end() && defs->is_object() && defs->contains(name)) {
          target = &(*defs)[name];
        }
      }
    }
    if (target == nullptr) {
      return Error(pointer, absl::StrCat("'$ref' \"", ref,
                                         "\" is not \"#\" or a member of #/$defs or #/definitions"));
    }
    if (target->is_object() && target->contains("$ref")) {
      return Error(pointer, absl::StrCat("'$ref' \"", ref, "\" points at another '$ref'"));
    }
    SchemaNode* node = NewNode(SchemaNode::Kind::kAny);
    refs_[ref] = node;
    if (target->is_boolean()) {
      if (!target->get<bool>()) return Error(ref, "the schema 'false' matches nothing");
      return node;
    }
    pending_.push_back(Pending{node, target, ref});
    return node;
  }

  static bool IsAnnotation(const std::string& key) {
    static const absl::flat_hash_set<std::string> kAnnotations = {
        "title", "description", "default", "examples", "format", "$schema", "$id", "$comment",
        "deprecated", "readOnly", "writeOnly", "strict", "discriminator", "nullable"};
    return kAnnotations.contains(key);
  }

  static absl::StatusOr<int64_t> Count(const Json& s, const char* key, int64_t fallback,
                                       const std::string& pointer) {
    auto it = s.find(key);
    if (it == s.end()) return fallback;
    if (!it->is_number_integer() || it->get<int64_t>() < 0) {
      return Error(pointer, absl::StrCat("'", key, "' must be a non-negative integer"));
    }
    return it->get<int64_t>();
  }

  absl::Status Fill(SchemaNode* node, const Json& s, const std::string& pointer) {
    static const absl::flat_hash_set<std::string> kUnsupported = {
        "pattern", "patternProperties", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "multipleOf", "not", "if", "then", "else", "uniqueItems",
        "contains", "minContains", "maxContains", "prefixItems", "minProperties",
        "maxProperties", "propertyNames", "dependentRequired", "dependentSchemas",
        "dependencies", "unevaluatedProperties", "unevaluatedItems", "additionalItems",
        "contentEncoding", "contentMediaType", "$dynamicRef", "$anchor"};
    for (auto& [key, value] : s.items()) {
      if (kUnsupported.contains(key)) {
        return Error(pointer, absl::StrCat("the keyword '", key,
                                           "' is not supported by constrained decoding"));
      }
      (void)value;
    }
    if (auto e = s.find("enum"); e != s.end()) {
      if (!e->is_array() || e->empty()) return Error(pointer, "'enum' must be a non-empty array");
      node->kind = SchemaNode::Kind::kLiterals;
      for (const Json& v : *e) node->literals.push_back(v.dump());
      return OnlyWith(s, pointer, "enum");
    }
    if (auto c = s.find("const"); c != s.end()) {
      node->kind = SchemaNode::Kind::kLiterals;
      node->literals.push_back(c->dump());
      return OnlyWith(s, pointer, "const");
    }
    for (const char* key : {"anyOf", "oneOf"}) {
      auto a = s.find(key);
      if (a == s.end()) continue;
      if (!a->is_array() || a->empty()) {
        return Error(pointer, absl::StrCat("'", key, "' must be a non-empty array"));
      }
      MOESERVE_RETURN_IF_ERROR(OnlyWith(s, pointer, key));
      node->kind = SchemaNode::Kind::kAnyOf;
      for (size_t i = 0; i < a->size(); ++i) {
        MOESERVE_ASSIGN_OR_RETURN(const SchemaNode* alt,
                                  Node((*a)[i], absl::StrCat(pointer, "/", key, "/", i)));
        node->alternatives.push_back(alt);
      }
      return absl::OkStatus();
    }
    if (auto a = s.find("allOf"); a != s.end()) {
      if (!a->is_array() || a->size() != 1) {
        return Error(pointer, "'allOf' is supported only with exactly one member");
      }
      MOESERVE_RETURN_IF_ERROR(OnlyWith(s, pointer, "allOf"));
      node->kind = SchemaNode::Kind::kAnyOf;
      MOESERVE_ASSIGN_OR_RETURN(const SchemaNode* only, Node((*a)[0], pointer + "/allOf/0"));
      node->alternatives.push_back(only);
      return absl::OkStatus();
    }

    std::vector<std::string> types;
    if (auto t = s.find("type"); t != s.end()) {
      if (t->is_string()) {
        types.push_back(t->get<std::string>());
      } else if (t->is_array() && !t->empty()) {
        for (const Json& one : *t) {
          if (!one.is_string()) return Error(pointer, "'type' entries must be strings");
          types.push_back(one.get<std::string>());
        }
      } else {
        return Error(pointer, "'type' must be a string or a non-empty array of strings");
      }
    } else if (s.contains("properties") || s.contains("required") ||
               s.contains("additionalProperties")) {
      types.push_back("object");
    } else if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) {
      types.push_back("array");
    } else if (s.contains("minLength") || s.contains("maxLength")) {
      types.push_back("string");
    } else {
      node->kind = SchemaNode::Kind::kAny;
      return absl::OkStatus();
    }
    if (types.size() == 1) return FillTyped(node, types[0], s, pointer);
    node->kind = SchemaNode::Kind::kAnyOf;
    for (const std::string& type : types) {
      SchemaNode* alt = NewNode(SchemaNode::Kind::kAny);
      MOESERVE_RETURN_IF_ERROR(FillTyped(alt, type, s, pointer));
      node->alternatives.push_back(alt);
    }
    return absl::OkStatus();
  }

  // enum/const/anyOf/oneOf/allOf take the whole node: other value keywords beside them would
  // need an intersection, which generation does not do.
  static absl::Status OnlyWith(const Json& s, const std::string& pointer, const char* keyword) {
    for (auto& [key, value] : s.items()) {
      (void)value;
      if (key == keyword || key == "type" || key == "$defs" || key == "definitions" ||
          IsAnnotation(key)) {
        continue;
      }
      if (kKnownValueKeywords().contains(key)) {
        return Error(pointer, absl::StrCat("'", key, "' beside '", keyword, "' is not supported"));
      }
    }
    return absl::OkStatus();
  }

  static const absl::flat_hash_set<std::string>& kKnownValueKeywords() {
    static const absl::flat_hash_set<std::string> k = {
        "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
        "minLength", "maxLength", "enum", "const", "anyOf", "oneOf", "allOf"};
    return k;
  }

  absl::Status FillTyped(SchemaNode* node, const std::string& type, const Json& s,
                         const std::string& pointer) {
    if (type == "object") return FillObject(node, s, pointer);
    if (type == "array") {
      node->kind = SchemaNode::Kind::kArray;
      MOESERVE_ASSIGN_OR_RETURN(node->min_items, Count(s, "minItems", 0, pointer));
      MOESERVE_ASSIGN_OR_RETURN(node->max_items, Count(s, "maxItems", -1, pointer));
      if (node->max_items >= 0 && node->max_items < node->min_items) {
        return Error(pointer, "'maxItems' is below 'minItems'");
      }
      if (auto it = s.find("items"); it != s.end()) {
        if (it->is_array()) return Error(pointer, "tuple 'items' (an array) is not supported");
        MOESERVE_ASSIGN_OR_RETURN(node->items, Node(*it, pointer + "/items"));
      } else {
        node->items = NewNode(SchemaNode::Kind::kAny);
      }
      return absl::OkStatus();
    }
    if (type == "string") {
      node->kind = SchemaNode::Kind::kString;
      MOESERVE_ASSIGN_OR_RETURN(node->min_length, Count(s, "minLength", 0, pointer));
      MOESERVE_ASSIGN_OR_RETURN(node->max_length, Count(s, "maxLength", -1, pointer));
      if (node->max_length >= 0 && node->max_length < node->min_length) {
        return Error(pointer, "'maxLength' is below 'minLength'");
      }
      return absl::OkStatus();
    }
    if (type == "number") node->kind = SchemaNode::Kind::kNumber;
    else if (type == "integer") node->kind = SchemaNode::Kind::kInteger;
    else if (type == "boolean") node->kind = SchemaNode::Kind::kBoolean;
    else if (type == "null") node->kind = SchemaNode::Kind::kNull;
    else return Error(pointer, absl::StrCat("unknown type '", type, "'"));
    return absl::OkStatus();
  }

  absl::Status FillObject(SchemaNode* node, const Json& s, const std::string& pointer) {
    node->kind = SchemaNode::Kind::kObject;
    absl::flat_hash_set<std::string> required;
    if (auto r = s.find("required"); r != s.end()) {
      if (!r->is_array()) return Error(pointer, "'required' must be an array of strings");
      for (const Json& name : *r) {
        if (!name.is_string()) return Error(pointer, "'required' must be an array of strings");
        required.insert(name.get<std::string>());
      }
    }
    size_t found = 0;
    if (auto p = s.find("properties"); p != s.end()) {
      if (!p->is_object()) return Error(pointer, "'properties' must be an object");
      for (auto& [name, sub] : p->items()) {
        SchemaNode::Property prop;
        prop.key = Json(name).dump();
        prop.required = required.contains(name);
        found += prop.required ? 1 : 0;
        MOESERVE_ASSIGN_OR_RETURN(prop.value, Node(sub, absl::StrCat(pointer, "/properties/", name)));
        node->properties.push_back(std::move(prop));
      }
    }
    if (found != required.size()) {
      return Error(pointer, "every name in 'required' must be declared in 'properties'");
    }
    if (node->properties.empty()) {
      auto a = s.find("additionalProperties");
      if (a == s.end() || (a->is_boolean() && a->get<bool>())) {
        node->extra_values = NewNode(SchemaNode::Kind::kAny);
      } else if (a->is_object()) {
        MOESERVE_ASSIGN_OR_RETURN(node->extra_values, Node(*a, pointer + "/additionalProperties"));
      } else if (!a->is_boolean()) {
        return Error(pointer, "'additionalProperties' must be a boolean or a schema");
      }
    }
    return absl::OkStatus();
  }

  static constexpr int kMaxNodes = 10000;

  const Json* document_;
  std::shared_ptr<SchemaGraph> graph_;
  std::map<std::string, const SchemaNode*> refs_;
  std::vector<Pending> pending_;
  int nodes_seen_ = 0;
};

absl::StatusOr<std::shared_ptr<const SchemaGraph>> CompileJsonSchema(absl::string_view schema_json) {
  Json document = Json::parse(schema_json.begin(), schema_json.end(), nullptr, false);
  if (document.is_discarded()) {
    return absl::InvalidArgumentError("response_format schema is not valid JSON");
  }
  SchemaCompiler compiler(&document);
  return compiler.Compile();
}

std::shared_ptr<const SchemaGraph> AnyJsonObjectSchema() {
  static const std::shared_ptr<const SchemaGraph> graph = [] {
    absl::StatusOr<std::shared_ptr<const SchemaGraph>> g = CompileJsonSchema(R"({"type":"object"})");
    return *g;
  }();
  return graph;
}

}  // namespace moeserve::engine::grammar
