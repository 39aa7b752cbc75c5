#ifndef MOESERVE_ENGINE_MODEL_OPS_H_
#define MOESERVE_ENGINE_MODEL_OPS_H_

#include <cstdint>
#include <vector>

#include "common/thread_pool.h"
#include "engine/config.h"

// Small element-wise and routing operations of the DeepSeek model (the matrix products live in
// engine/cpu/linear.h). Pure functions over float32 buffers.
namespace moeserve::engine::ops {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]. out may alias x.
void RmsNorm(const float* x, const float* w, int64_t dim, double eps, float* out);

// Rope inverse frequencies for qk_rope_head_dim, with YaRN's interpolation when configured, and
// the cos/sin magnitude factor (YaRN mscale / mscale_all_dim).
void RopeFrequencies(const ModelConfig& config, std::vector<float>* inv_freq, double* mscale);

// cos/sin tables for one position: cos_sin has 2 * inv_freq.size() values (cos..., sin...).
void RopeAngles(const std::vector<float>& inv_freq, double mscale, int64_t pos, float* cos_sin);

// Rotates consecutive pairs (x[2i], x[2i+1]) by angle i in place. Hugging Face's DeepSeek code
// de-interleaves the pairs before rotating; the two layouts differ only by a fixed permutation
// applied to both q and k, so their dot products (all the model uses) are identical.
void ApplyRope(float* x, int64_t dim, const float* cos_sin);

// out[i] = silu(gate[i]) * up[i].
void SiluMul(const float* gate, const float* up, int64_t n, float* out);
// SiluMul with the elements shared out over `pool` (may be null); the same results.
void SiluMul(const float* gate, const float* up, int64_t n, float* out, ThreadPool* pool);

// o[i] += w * x[i]: a rounded product, then a rounded sum. The AVX-512 form never fuses them, so
// it gives the scalar form's bits on x86-64 (whose base ISA has no FMA).
void AddScaled(float w, const float* x, int64_t n, float* o);

// In-place softmax over n values (max-subtracted, float32 sums).
void Softmax(float* x, int64_t n);

// The MoE gate's choice for one token: from the gate logits [n_routed] (and the noaux_tc
// correction bias, may be null otherwise) writes num_experts_per_tok ids and combine weights,
// ordered by descending choice score (ties: lower id first). Semantics of the Hugging Face
// DeepSeek-V2/V3 gates; two decisions recorded in DESIGN.md: experts of dropped groups are never
// chosen, and routed_scaling_factor always multiplies the weights.
void RouteToken(const ModelConfig& config, const float* logits, const float* bias, int32_t* ids,
                float* weights);

}  // namespace moeserve::engine::ops

#endif  // MOESERVE_ENGINE_MODEL_OPS_H_
