#ifndef MOESERVE_ENGINE_CPU_ATTENTION_H_
#define MOESERVE_ENGINE_CPU_ATTENTION_H_

#include <cstdint>
#include <vector>

namespace moeserve::engine::cpu {

// Queries per attention tile (one float32 lane each in the AVX-512 path, two vectors of 16: each
// broadcast key element then feeds two multiply-adds, where one vector of queries left the score
// loop bound by its loads).
inline constexpr int kAttentionLanes = 32;

// Up to kAttentionLanes queries of one sequence attending, MLA's weight-absorbed way, over that
// sequence's paged latent cache of one layer. A key row is `lat` floats: the normalised latent
// (the first `kvr`, which are also the values) then the rotated rope key.
struct LatentAttentionTile {
  // Queries transposed: qt[d * kAttentionLanes + i] is element d of query i (its latent-space
  // part, then its rope part), for d < lat; lanes at or past nq must hold zeros.
  const float* qt = nullptr;
  int nq = 0;
  const int64_t* len = nullptr;  // query i sees key positions [0, len[i]); len[i] >= 1
  // blocks[b] is the first row of key positions [b * block_tokens, (b + 1) * block_tokens);
  // rows within a block are `lat` floats apart.
  const float* const* blocks = nullptr;
  int64_t block_tokens = 0;
  int64_t lat = 0;
  int64_t kvr = 0;
  float scale = 1;
  float* out = nullptr;  // query i's attention-weighted latent: out[i * out_stride + c], c < kvr
  int64_t out_stride = 0;
};

// out_i = sum_s softmax_s(scale * <q_i, row_s>) * row_s[0..kvr). Numerics: each score is one
// multiply-add per element in increasing d (fused in the AVX-512 path); the softmax uses the row max, exp, and a sum in
// increasing s; the output accumulates exp-weighted rows in increasing s and is multiplied by the
// reciprocal of the sum at the end. A query's result depends on neither the other queries in its
// tile nor the thread that runs it, so batching never changes it. `scratch` is reused memory.
void LatentAttention(const LatentAttentionTile& tile, std::vector<float>* scratch);

}  // namespace moeserve::engine::cpu

#endif  // MOESERVE_ENGINE_CPU_ATTENTION_H_
