#include "engine/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/string_view.h"
#include "engine/cpu/attention_kernels.h"
#include "engine/cpu/linear.h"

namespace moeserve::engine::cpu {
namespace {

constexpr int kL = kAttentionLanes;

// The portable path: the same algorithm lane by lane (the compiler vectorises the lane loops).
void PortableLatentAttention(const LatentAttentionTile& t, std::vector<float>* scratch) {
  int64_t max_len = 0;
  for (int i = 0; i < t.nq; ++i) max_len = std::max(max_len, t.len[i]);
  scratch->resize(static_cast<size_t>(max_len) * kL);
  float* scores = scratch->data();
  for (int64_t s = 0; s < max_len; ++s) {
    const float* row = t.blocks[s / t.block_tokens] + (s % t.block_tokens) * t.lat;
    float acc[kL] = {0};
    for (int64_t d = 0; d < t.lat; ++d) {
      const float* q = t.qt + d * kL;
      for (int l = 0; l < kL; ++l) acc[l] += q[l] * row[d];
    }
    for (int l = 0; l < kL; ++l) scores[s * kL + l] = acc[l] * t.scale;
  }
  for (int i = 0; i < t.nq; ++i) {
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t s = 0; s < t.len[i]; ++s) mx = std::max(mx, scores[s * kL + i]);
    float sum = 0;
    float* out = t.out + i * t.out_stride;
    std::memset(out, 0, sizeof(float) * t.kvr);
    for (int64_t s = 0; s < t.len[i]; ++s) {
      const float e = std::exp(scores[s * kL + i] - mx);
      sum += e;
      const float* row = t.blocks[s / t.block_tokens] + (s % t.block_tokens) * t.lat;
      for (int64_t c = 0; c < t.kvr; ++c) out[c] += e * row[c];
    }
    const float inv = 1.0f / sum;
    for (int64_t c = 0; c < t.kvr; ++c) out[c] *= inv;
  }
}

internal::LatentAttentionFn Chosen() {
  // Follows Linear's choice, so forcing a kernel (MOESERVE_KERNEL, tests) forces both.
  const absl::string_view linear = LinearKernelName();
  if (linear.substr(0, 6) == "avx512") {
    if (internal::LatentAttentionFn f = internal::Avx512LatentAttention()) return f;
  }
  return &PortableLatentAttention;
}

}  // namespace

void LatentAttention(const LatentAttentionTile& tile, std::vector<float>* scratch) {
  Chosen()(tile, scratch);
}

}  // namespace moeserve::engine::cpu
