#include "engine/chat_template.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace moeserve::engine {
namespace {

using nlohmann::ordered_json;

// Renders `source` with `context`; a failed parse or render comes back as "ERROR: <message>".
std::string Render(const std::string& source, const ordered_json& context = ordered_json::object()) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source);
  if (!t.ok()) return absl::StrCat("ERROR: ", t.status().message());
  absl::StatusOr<std::string> out = t->Render(context);
  if (!out.ok()) return absl::StrCat("ERROR: ", out.status().message());
  return *out;
}

TEST(ChatTemplateTest, TextAndExpressions) {
  EXPECT_EQ(Render("Hi {{ name }}!", {{"name", "Bob"}}), "Hi Bob!");
  EXPECT_EQ(Render("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 / 2 }} {{ 7 % 3 }} {{ 2 * 1.5 }}"), "7 9 3.5 1 3.0");
  EXPECT_EQ(Render("{{ 'a' ~ 1 ~ true }} {{ 'a' + 'b' }}"), "a1true ab");
  EXPECT_EQ(Render("{{ true }} {{ none }}|{{ undefined_var }}|"), "true ||");
  EXPECT_EQ(Render("{{ 'it\\'s' }} {{ \"a\\nb\" }} {{ 'x' 'y' }}"), "it's a\nb xy");
  EXPECT_EQ(Render("{{ [1, 'a', 2.5] | tojson }} {{ {'k': [1, {}]} | tojson }}"), "[1, \"a\", 2.5] {\"k\": [1, {}]}");
}

TEST(ChatTemplateTest, WhitespaceControl) {
  EXPECT_EQ(Render("a  {{- 'b' -}}  c"), "abc");
  EXPECT_EQ(Render("a\n  {%- if true %}b{% endif -%}\n  c"), "abc");
  // trim_blocks and lstrip_blocks as @huggingface/jinja applies them.
  EXPECT_EQ(Render("<a>\n  {% if true %}\n  x\n  {% endif %}\n</a>\n"), "<a>\n  x\n</a>");
  EXPECT_EQ(Render("x{# comment #}y"), "xy");
  EXPECT_EQ(Render("{% generation %}kept{% endgeneration %}"), "kept");
}

TEST(ChatTemplateTest, SetNamespaceAndScoping) {
  EXPECT_EQ(Render("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"), "6");
  EXPECT_EQ(Render("{% set x = 1 %}{% for i in [1] %}{% set x = 5 %}{{ x }}{% endfor %}{{ x }}"), "51");
  EXPECT_EQ(Render("{% set a, b = [1, 2] %}{{ b }}{{ a }}"), "21");
  EXPECT_EQ(Render("{% set x %}in{{ 1 }}{% endset %}[{{ x }}]"), "[in1]");
}

TEST(ChatTemplateTest, ForLoops) {
  EXPECT_EQ(Render("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }},{% endfor %}",
                   {{"xs", {"a", "b"}}}),
            "10truefalse2,21falsetrue2,");
  EXPECT_EQ(Render("{% for x in [] %}x{% else %}none{% endfor %}"), "none");
  EXPECT_EQ(Render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {{"d", {{"b", 1}, {"a", 2}}}}), "b=1;a=2;");
  EXPECT_EQ(Render("{% for i in range(9) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}"), "02");
  EXPECT_EQ(Render("{% for x in [1, 2, 3] if x != 2 %}{{ x }}{% endfor %}"), "13");
}

TEST(ChatTemplateTest, ConditionalsAndTests) {
  EXPECT_EQ(Render("{% if x > 2 %}big{% elif x > 1 %}mid{% else %}small{% endif %}", {{"x", 2}}), "mid");
  EXPECT_EQ(Render("{{ 'y' if c else 'n' }}{{ 'z' if not c }}", {{"c", false}}), "nz");
  EXPECT_EQ(Render("{{ x is defined }}{{ y is undefined }}{{ none is none }}{{ 'a' is string }}{{ 1 is number }}"
                   "{{ [] is iterable }}{{ {} is mapping }}{{ 3 is odd }}{{ 4 is even }}{{ 1 is not string }}",
                   {{"x", 1}}),
            "truetruetruetruetruetruetruetruetruetrue");
  EXPECT_EQ(Render("{{ 'a' in 'cat' }}{{ 2 in [1, 2] }}{{ 'k' in {'k': 1} }}{{ 3 not in [1] }}{{ 1 in nope }}"), "truetruetruetruefalse");
  EXPECT_EQ(Render("{{ 1 and 'x' }} {{ 0 or 'y' }} {{ not [] }} {{ [] or 'empty' }}"), "x y false empty");
}

TEST(ChatTemplateTest, Filters) {
  EXPECT_EQ(Render("{{ ' a ' | trim }}|{{ 'abc' | length }}|{{ [1, 2] | first }}{{ [1, 2] | last }}|{{ 'aB' | upper }}{{ 'aB' | lower }}"),
            "a|3|12|ABab");
  EXPECT_EQ(Render("{{ 'hello world' | title }} {{ 'hello' | capitalize }} {{ [1, 2] | join(', ') }} {{ 'abc' | join('.') }}"),
            "Hello World Hello 1, 2 a.b.c");
  EXPECT_EQ(Render("{{ nope | default('d') }} {{ '' | default('e', true) }} {{ 'a-b' | replace('-', '+') }}"), "d e a+b");
  EXPECT_EQ(Render("{{ '42' | int + 1 }} {{ '2.5' | float }} {{ 3.7 | int }} {{ -3 | abs }} {{ 2.5 | round }}"), "43 2.5 3 3 3.0");
  EXPECT_EQ(Render("{{ [3, 1, 2] | sort | join }} {{ [1, 2, 1] | unique | join }} {{ [1, 2] | reverse | join }}"), "123 12 21");
  EXPECT_EQ(Render("{{ ms | selectattr('r', 'equalto', 'u') | map(attribute='c') | join }}"
                   "{{ ms | rejectattr('r', 'equalto', 'u') | map(attribute='c') | join }}",
                   {{"ms", {{{"r", "u"}, {"c", "1"}}, {{"r", "a"}, {"c", "2"}}}}}),
            "12");
  EXPECT_EQ(Render("{{ d | items | length }} {{ 'a\nb' | indent(2) }} {{ '<&>' | escape }} {{ 'x' | safe }}", {{"d", {{"a", 1}}}}),
            "1 a\n  b &lt;&amp;&gt; x");
  EXPECT_EQ(Render("{{ d | tojson(indent=2) }}", {{"d", {{"a", {1, 2}}, {"b", ordered_json::object()}}}}),
            "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {\n  }\n}");
  EXPECT_EQ(Render("{% filter upper %}shout{% endfilter %}"), "SHOUT");
}

TEST(ChatTemplateTest, StringAndDictMethods) {
  EXPECT_EQ(Render("{{ ' x '.strip() }}{{ ' x'.lstrip() }}{{ 'x '.rstrip() }}{{ 'a,b'.split(',') | length }}{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}"),
            "xxx2ABab");
  EXPECT_EQ(Render("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('bc') }}{{ 'aaa'.replace('a', 'b', 2) }}{{ 'a b'.title() }}"),
            "truetruebbaA B");
  EXPECT_EQ(Render("{{ 'x</think>y</think>z'.split('</think>')[-1] }}"), "z");
  EXPECT_EQ(Render("{{ d.get('a') }}{{ d.get('z', 'dflt') }}{{ d.keys() | join }}{{ d.values() | join }}", {{"d", {{"a", 1}}}}),
            "1dflta1");
  EXPECT_EQ(Render("{{ 'hello'[::-1] }} {{ 'hello'[1:] }} {{ [1, 2, 3][:2] | join }} {{ 'héllo'[1] }}"), "olleh ello 12 é");
}

TEST(ChatTemplateTest, Macros) {
  EXPECT_EQ(Render("{% macro m(a, b='B') %}{{ a }}{{ b }}{% endmacro %}{{ m(1) }}{{ m(1, 2) }}{{ m(1, b=3) }}"), "1B1213");
  EXPECT_EQ(Render("{% macro w() %}[{{ caller() }}]{% endmacro %}{% call w() %}in{% endcall %}"), "[in]");
}

TEST(ChatTemplateTest, SyntaxErrorsCarryLineAndColumn) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("line one\n{% if %}x{% endif %}");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(t.status().message(), "line 2, column 7")) << t.status();
  for (const char* bad : {"{{ 'unterminated }}", "{% for x in y %}no end", "{{ a | }}", "{% unknown %}", "{# open",
                          "{{ x[] }}", "{{ 'a\\q' }}", "{% endif %}", "{{ (((((( }}"}) {
    absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    EXPECT_TRUE(absl::StrContains(parsed.status().message(), "syntax error")) << parsed.status();
  }
}

TEST(ChatTemplateTest, RuntimeErrorsAreStatuses) {
  EXPECT_EQ(Render("{{ raise_exception('Only user and assistant roles are supported!') }}"),
            "ERROR: Only user and assistant roles are supported!");
  EXPECT_TRUE(absl::StrContains(Render("{{ 'a' | no_such_filter }}"), "no_such_filter"));
  EXPECT_TRUE(absl::StrContains(Render("{{ x is no_such_test }}"), "no_such_test"));
  EXPECT_TRUE(absl::StrContains(Render("{{ nope + 1 }}"), "undefined"));
  EXPECT_TRUE(absl::StrContains(Render("{% for x in nope %}{% endfor %}"), "ERROR"));
  EXPECT_TRUE(absl::StrContains(Render("{% break %}"), "outside"));
  // Runaway recursion and loops hit limits instead of crashing.
  EXPECT_TRUE(absl::StrContains(Render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"), "recursion"));
  EXPECT_TRUE(absl::StrContains(Render("{{ range(100000000) | length }}"), "ERROR"));
  const std::string deep = std::string(5000, '(') + "1" + std::string(5000, ')');
  EXPECT_TRUE(absl::StrContains(Render("{{ " + deep + " }}"), "nested too deeply"));
  // Self-referencing objects render (and are freed: the asan build checks for leaks).
  EXPECT_EQ(Render("{% set d = {'a': 1} %}{% set d.me = d %}{% set d.get2 = d.get %}{{ d.me.me.a }}"), "1");
  EXPECT_TRUE(absl::StrContains(Render("{% set d = {} %}{% set d.me = d %}{{ d | tojson }}"), "too deeply"));
  EXPECT_EQ(Render("{{ 'abc'[100000000000000000000] }}{{ [1][-99999999999999999999] }}|{{ [1, 2][::100000000000000000000] | join }}"),
            "undefined|1");
  // The context must be an object and must not redeclare globals.
  EXPECT_TRUE(absl::StrContains(Render("{{ 1 }}", {{"range", 1}}), "already declared"));
}

ordered_json Conversation() {
  return ordered_json::parse(R"([
    {"role": "system", "content": "S"},
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "<think>hidden</think>A1"},
    {"role": "user", "content": "Q2"}])");
}

TEST(ChatTemplateTest, DeepseekR1Template) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(DeepseekR1ChatTemplate());
  ASSERT_TRUE(t.ok()) << t.status();
  ChatTemplateInputs inputs;
  inputs.messages = Conversation();
  inputs.add_generation_prompt = true;
  inputs.bos_token = "<｜begin▁of▁sentence｜>";
  absl::StatusOr<std::string> out = ApplyChatTemplate(*t, inputs);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<｜begin▁of▁sentence｜>S<｜User｜>Q1<｜Assistant｜>A1<｜end▁of▁sentence｜><｜User｜>Q2<｜Assistant｜><think>\n");
  inputs.add_generation_prompt = false;
  out = ApplyChatTemplate(*t, inputs);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_FALSE(absl::StrContains(*out, "<think>"));
}

TEST(ChatTemplateTest, LoadChatTemplateForms) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "chat_template_load";
  std::filesystem::create_directories(dir);
  const auto write = [&](const std::string& json) { std::ofstream(dir / "tokenizer_config.json") << json; };
  write(R"({"chat_template": "{{ x }}"})");
  absl::StatusOr<std::string> s = LoadChatTemplate(dir.string());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, "{{ x }}");
  write(R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  s = LoadChatTemplate(dir.string());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, "D");
  write(R"({"bos_token": "<s>"})");
  EXPECT_EQ(LoadChatTemplate(dir.string()).status().code(), absl::StatusCode::kNotFound);
  write("{not json");
  EXPECT_EQ(LoadChatTemplate(dir.string()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadChatTemplate((dir / "missing").string()).status().code(), absl::StatusCode::kNotFound);
}

TEST(ChatTemplateTest, RendersFromUnorderedJsonToo) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("{{ d | tojson }}");
  ASSERT_TRUE(t.ok());
  absl::StatusOr<std::string> out = t->Render(nlohmann::json{{"d", {{"b", 1}, {"a", 2}}}});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "{\"a\": 2, \"b\": 1}");
}

}  // namespace
}  // namespace moeserve::engine
