#include "engine/weights/tensor_names.h"

#include "absl/strings/strip.h"

namespace moeserve::engine {
namespace {

// Consumes "<digits>." from the front of `s`; false (s unchanged) when there is none.
bool ConsumeIndex(absl::string_view* s, int64_t* value) {
  size_t n = 0;
  int64_t v = 0;
  while (n < s->size() && (*s)[n] >= '0' && (*s)[n] <= '9') {
    if (n >= 18) return false;  // far beyond any layer or expert count; avoids overflow
    v = v * 10 + ((*s)[n] - '0');
    ++n;
  }
  if (n == 0 || n >= s->size() || (*s)[n] != '.') return false;
  s->remove_prefix(n + 1);
  *value = v;
  return true;
}

}  // namespace

TensorLocation LocateTensor(absl::string_view name) {
  TensorLocation loc;
  if (!absl::ConsumePrefix(&name, "model.layers.")) return loc;
  int64_t layer = 0;
  if (!ConsumeIndex(&name, &layer)) return loc;
  loc.layer = layer;
  int64_t expert = 0;
  if (absl::ConsumePrefix(&name, "mlp.experts.") && ConsumeIndex(&name, &expert)) {
    loc.expert = expert;
  }
  return loc;
}

}  // namespace moeserve::engine
