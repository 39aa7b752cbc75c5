#ifndef MOESERVE_ENGINE_GRAMMAR_JSON_SCHEMA_H_
#define MOESERVE_ENGINE_GRAMMAR_JSON_SCHEMA_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moeserve::engine::grammar {

// One node of a compiled JSON schema: the subset of JSON Schema that constrained decoding
// enforces (see CompileJsonSchema). Nodes point at each other (a `$ref` may recurse), and all of
// them live in the SchemaGraph that compiled them.
struct SchemaNode {
  enum class Kind {
    kAny,       // any JSON value
    kObject,
    kArray,
    kString,
    kNumber,
    kInteger,
    kBoolean,
    kNull,
    kLiterals,  // one of `literals`, each a compact JSON text (enum / const)
    kAnyOf,     // one of `alternatives`
  };
  struct Property {
    std::string key;  // the key as a JSON string literal, quotes included: "\"name\""
    const SchemaNode* value = nullptr;
    bool required = false;
  };

  Kind kind = Kind::kAny;
  // kObject. With declared properties, generation emits them in declared order, each optional
  // one possibly skipped, and no others (a valid subset of what additionalProperties allows).
  // Without declared properties, any keys whose values match `extra_values` (null: only {}).
  std::vector<Property> properties;
  const SchemaNode* extra_values = nullptr;
  // kArray.
  const SchemaNode* items = nullptr;  // never null for kArray (kAny when unconstrained)
  int64_t min_items = 0;
  int64_t max_items = -1;  // -1: unbounded
  // kString (length in code points; an escape counts as one).
  int64_t min_length = 0;
  int64_t max_length = -1;
  // kLiterals.
  std::vector<std::string> literals;
  // kAnyOf.
  std::vector<const SchemaNode*> alternatives;
};

// The compiled form of one schema; immutable and shareable across threads once built.
class SchemaGraph {
 public:
  const SchemaNode* root() const { return root_; }

 private:
  friend class SchemaCompiler;
  std::deque<SchemaNode> nodes_;
  const SchemaNode* root_ = nullptr;
};

// Compiles `schema_json` (a JSON Schema document, as OpenAI's response_format.json_schema.schema
// carries it). Supported: type (a name or a list of names), properties, required,
// additionalProperties (false, true or a schema), items, minItems, maxItems, minLength,
// maxLength, enum, const, anyOf, oneOf (generated as anyOf), allOf with one member, $ref to
// "#", "#/$defs/..." or "#/definitions/..." (recursion allowed), and the annotations title,
// description, default, examples, format (not enforced), $schema, $id, $comment. Keywords that
// would constrain values in ways decoding cannot enforce (pattern, minimum, maximum,
// multipleOf, not, if/then/else, uniqueItems, ...) are InvalidArgument naming the keyword and its
// JSON pointer, so a client never gets output that silently ignores its schema.
absl::StatusOr<std::shared_ptr<const SchemaGraph>> CompileJsonSchema(absl::string_view schema_json);

// The schema of OpenAI's response_format {"type": "json_object"}: any JSON object.
std::shared_ptr<const SchemaGraph> AnyJsonObjectSchema();

}  // namespace moeserve::engine::grammar

#endif  // MOESERVE_ENGINE_GRAMMAR_JSON_SCHEMA_H_
