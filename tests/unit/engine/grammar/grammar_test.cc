#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/grammar/json_matcher.h"
#include "engine/grammar/json_schema.h"
#include "engine/grammar/token_constraint.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moeserve::engine::grammar {
namespace {

using Json = nlohmann::json;

std::shared_ptr<const SchemaGraph> Compile(const std::string& schema) {
  absl::StatusOr<std::shared_ptr<const SchemaGraph>> g = CompileJsonSchema(schema);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *g : nullptr;
}

// Whether the matcher takes `text` whole and calls it complete.
bool Matches(const SchemaGraph& schema, const std::string& text) {
  JsonMatcher m(&schema);
  return m.AdvanceBytes(text) && m.IsComplete();
}

// Whether `text` is a prefix the matcher can continue.
bool Prefix(const SchemaGraph& schema, const std::string& text) {
  JsonMatcher m(&schema);
  return m.AdvanceBytes(text);
}

const char* kPerson = R"({
  "type": "object",
  "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 5},
    "age": {"type": "integer"},
    "tags": {"type": "array", "items": {"enum": ["a", "b", 3, null]}, "maxItems": 2},
    "pet": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/pet"}]}
  },
  "required": ["name", "age"],
  "additionalProperties": false,
  "$defs": {"pet": {"type": "object", "properties": {"kind": {"const": "cat"}}, "required": ["kind"]}}
})";

TEST(JsonSchemaTest, RejectsWhatDecodingCannotEnforce) {
  struct Case {
    const char* schema;
    const char* message_part;
  };
  const Case cases[] = {
      {R"({"type":"string","pattern":"^a"})", "'pattern'"},
      {R"({"type":"object","properties":{"n":{"type":"integer","minimum":3}}})",
       "#/properties/n: the keyword 'minimum'"},
      {R"({"type":"widget"})", "unknown type 'widget'"},
      {R"({"$ref":"#/$defs/missing"})", "#/$defs/missing"},
      {R"({"type":"object","required":["x"]})", "'required'"},
      {R"({"type":"string","minLength":3,"maxLength":2})", "'maxLength' is below"},
      {R"({"enum":[]})", "'enum'"},
      {R"({"allOf":[{"type":"string"},{"maxLength":3}]})", "'allOf'"},
      {R"(false)", "matches nothing"},
      {R"({"type": )", "not valid JSON"},
      {R"({"type":"array","items":[{"type":"string"}]})", "tuple"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::shared_ptr<const SchemaGraph>> g = CompileJsonSchema(c.schema);
    ASSERT_FALSE(g.ok()) << c.schema;
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(g.status().message()).find(c.message_part), std::string::npos)
        << g.status() << " for " << c.schema;
  }
}

TEST(JsonMatcherTest, AcceptsWhatTheSchemaAllowsInDeclaredOrder) {
  auto g = Compile(kPerson);
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(Matches(*g, R"({"name":"Ann","age":30})"));
  EXPECT_TRUE(Matches(*g, "{ \"name\" : \"\xc3\xa9t\\u00e9\" ,\n  \"age\": -7 }\n"));
  EXPECT_TRUE(Matches(*g, R"({"name":"x","age":0,"tags":["a",3,null]})") == false);  // maxItems 2
  EXPECT_TRUE(Matches(*g, R"({"name":"x","age":0,"tags":["a",3]})"));
  EXPECT_TRUE(Matches(*g, R"({"name":"x","age":0,"pet":null})"));
  EXPECT_TRUE(Matches(*g, R"({"name":"x","age":0,"tags":[],"pet":{"kind":"cat"}})"));
  // Rejections, each for one reason.
  EXPECT_FALSE(Prefix(*g, R"({"age":1)"));                  // required "name" skipped
  EXPECT_FALSE(Prefix(*g, R"({"name":"")"));                // "" shorter than minLength 1
  EXPECT_FALSE(Prefix(*g, R"({"name":"abcdef")"));          // longer than maxLength 5
  EXPECT_FALSE(Prefix(*g, R"({"name":"a","age":1.5)"));     // integer
  EXPECT_FALSE(Prefix(*g, R"({"name":"a","age":01)"));      // leading zero
  EXPECT_FALSE(Prefix(*g, R"({"name":"a","age":1,})"));     // a comma needs a property after it
  EXPECT_FALSE(Prefix(*g, R"({"name":"a","age":1,"x")"));   // undeclared key
  EXPECT_FALSE(Prefix(*g, R"({"name":"a","age":1,"tags":["c")"));  // not in enum
  EXPECT_FALSE(Prefix(*g, R"({"name":"a","age":1,"pet":{"kind":"dog")"));
  EXPECT_FALSE(Prefix(*g, "{\"name\":\"a\nb"));              // raw control byte in a string
  EXPECT_FALSE(Prefix(*g, "{\"name\":\"\xc3\x28"));          // broken UTF-8
  EXPECT_FALSE(Prefix(*g, "{\"name\":\"\xed\xa0\x80"));      // UTF-8 surrogate
  EXPECT_FALSE(Prefix(*g, R"({"name":"a\q)"));               // bad escape
  EXPECT_FALSE(Matches(*g, R"({"name":"a","age":1)"));       // not closed
  EXPECT_FALSE(Matches(*g, R"({"name":"a","age":1}})"));     // extra byte after the value
  EXPECT_FALSE(Prefix(*g, std::string("{") + std::string(JsonMatcher::kMaxWhitespace + 1, ' ')));
}

TEST(JsonMatcherTest, AnyJsonObjectTakesAnyObjectAndNothingElse) {
  auto g = AnyJsonObjectSchema();
  EXPECT_TRUE(Matches(*g, R"({})"));
  EXPECT_TRUE(Matches(*g, R"({"a":[1,2.5e-3,{"b":null}],"c":"d","e":true,"f":false,"a":-0})"));
  EXPECT_FALSE(Prefix(*g, R"([)"));
  EXPECT_FALSE(Prefix(*g, R"("x")"));
  EXPECT_FALSE(Prefix(*g, R"({1)"));
  EXPECT_FALSE(Prefix(*g, R"({"a":tru})"));
  EXPECT_FALSE(Prefix(*g, R"({"a":1.})"));
  EXPECT_FALSE(Matches(*g, R"({"a":1)"));
}

TEST(JsonMatcherTest, TopLevelNumbersEndAtTheEndOfInput) {
  auto g = Compile(R"({"type":"number"})");
  EXPECT_TRUE(Matches(*g, "12.5e+3"));
  EXPECT_TRUE(Matches(*g, "0"));
  EXPECT_FALSE(Matches(*g, "12."));
  EXPECT_FALSE(Matches(*g, "-"));
  EXPECT_FALSE(Prefix(*g, std::string(17, '1')));  // more integer digits than the bound
}

TEST(JsonMatcherTest, RecursiveRefsNest) {
  auto g = Compile(R"({"$ref":"#/$defs/node","$defs":{"node":{"type":"object",
      "properties":{"v":{"type":"integer"},"kids":{"type":"array","items":{"$ref":"#/$defs/node"}}},
      "required":["v"],"additionalProperties":false}}})");
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(Matches(*g, R"({"v":1,"kids":[{"v":2},{"v":3,"kids":[{"v":4}]}]})"));
  EXPECT_FALSE(Prefix(*g, R"({"v":1,"kids":[{"kids")"));
  // A cycle through anyOf that consumes nothing terminates (and matches nothing).
  auto loop = Compile(R"({"$ref":"#/$defs/a","$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"}]}}})");
  ASSERT_NE(loop, nullptr);
  EXPECT_FALSE(Prefix(*loop, "1"));
}

// A random walk through the matcher: at each step pick uniformly among the printable bytes (and
// a few UTF-8 sequences) it accepts, and stop once complete. Every document it produces must
// parse with an independent JSON parser and satisfy the schema checked by hand below.
TEST(JsonMatcherTest, RandomWalksProduceValidDocuments) {
  auto g = Compile(kPerson);
  ASSERT_NE(g, nullptr);
  std::mt19937 rng(7);
  const std::vector<std::string> pieces = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
  int completed = 0;
  for (int trial = 0; trial < 300; ++trial) {
    JsonMatcher m(g.get());
    std::string text;
    for (int step = 0; step < 400; ++step) {
      if (m.IsComplete() && rng() % 4 == 0) break;
      std::vector<std::string> options;
      for (int c = 0x20; c < 0x7f; ++c) {
        JsonMatcher copy = m;
        if (copy.Advance(static_cast<uint8_t>(c))) options.push_back(std::string(1, static_cast<char>(c)));
      }
      for (const std::string& p : pieces) {
        JsonMatcher copy = m;
        if (copy.AdvanceBytes(p)) options.push_back(p);
      }
      if (options.empty()) break;
      const std::string& pick = options[rng() % options.size()];
      ASSERT_TRUE(m.AdvanceBytes(pick));
      text += pick;
    }
    if (!m.IsComplete()) continue;
    ++completed;
    Json doc = Json::parse(text, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << text;
    ASSERT_TRUE(doc.is_object()) << text;
    ASSERT_TRUE(doc.contains("name") && doc["name"].is_string()) << text;
    ASSERT_TRUE(doc.contains("age") && doc["age"].is_number_integer()) << text;
    for (auto& [key, value] : doc.items()) {
      ASSERT_TRUE(key == "name" || key == "age" || key == "tags" || key == "pet") << text;
      (void)value;
    }
    if (doc.contains("tags")) {
      ASSERT_TRUE(doc["tags"].is_array() && doc["tags"].size() <= 2) << text;
      for (const Json& t : doc["tags"]) {
        ASSERT_TRUE(t == "a" || t == "b" || t == 3 || t.is_null()) << text;
      }
    }
    if (doc.contains("pet")) {
      ASSERT_TRUE((doc["pet"].is_null() || doc["pet"] == Json{{"kind", "cat"}})) << text;
    }
  }
  EXPECT_GT(completed, 100);
}

// Token masks against brute force: every token tried byte by byte on a copy of the matcher.
TEST(TokenConstraintTest, MaskEqualsTryingEveryToken) {
  auto g = Compile(kPerson);
  ASSERT_NE(g, nullptr);
  std::vector<std::string> vocab = {"", "{", "}", "\"", "\"name", "\":", "\"age\":", "1", "12",
                                    "0", "-", " ", "\n", ",", ", \"", "ab", "abc", "abcdef",
                                    "\",", "{\"", "\xc3", "\xa9", "\xc3\xa9", "a", "[", "]",
                                    "null", "\"pet\":", "\"tags\":[", "3", "\"b\"", ":"};
  // Make every byte a token too, as byte-level BPE vocabularies have.
  for (int c = 0; c < 256; ++c) vocab.push_back(std::string(1, static_cast<char>(c)));
  const int32_t end = 0;  // id 0 ("" above) is the end token
  auto v = std::make_shared<Vocabulary>(vocab, end);
  std::mt19937 rng(3);
  for (int trial = 0; trial < 40; ++trial) {
    TokenConstraint tc(v, g);
    for (int step = 0; step < 60; ++step) {
      std::vector<float> logits(vocab.size() + 3, 0.0f);
      tc.MaskLogits(absl::MakeSpan(logits));
      std::vector<int32_t> allowed;
      for (size_t id = 0; id < logits.size(); ++id) {
        const bool masked = std::isinf(logits[id]);
        const bool expect = id < vocab.size() && tc.Allows(static_cast<int32_t>(id));
        ASSERT_EQ(!masked, expect) << "token " << id << " at step " << step;
        if (expect) allowed.push_back(static_cast<int32_t>(id));
      }
      ASSERT_FALSE(allowed.empty());
      const int32_t pick = allowed[rng() % allowed.size()];
      if (pick == end) {
        EXPECT_TRUE(tc.IsComplete());
        break;
      }
      ASSERT_TRUE(tc.Accept(pick).ok());
    }
  }
  TokenConstraint tc(v, g);
  EXPECT_EQ(tc.Accept(2).code(), absl::StatusCode::kFailedPrecondition);  // "}" cannot start
  EXPECT_FALSE(tc.Allows(end));
  EXPECT_FALSE(tc.Allows(-1));
  EXPECT_FALSE(tc.Allows(static_cast<int32_t>(vocab.size())));
}

}  // namespace
}  // namespace moeserve::engine::grammar
