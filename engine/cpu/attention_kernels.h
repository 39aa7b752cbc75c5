#ifndef MOESERVE_ENGINE_CPU_ATTENTION_KERNELS_H_
#define MOESERVE_ENGINE_CPU_ATTENTION_KERNELS_H_

// Internal to engine/cpu: the per-ISA bodies of LatentAttention (attention.cc dispatches).

#include <vector>

#include "engine/cpu/attention.h"

namespace moeserve::engine::cpu::internal {

using LatentAttentionFn = void (*)(const LatentAttentionTile&, std::vector<float>*);

// Null when the CPU (or the compiler target) lacks the instructions.
LatentAttentionFn Avx512LatentAttention();

}  // namespace moeserve::engine::cpu::internal

#endif  // MOESERVE_ENGINE_CPU_ATTENTION_KERNELS_H_
