#ifndef MOESERVE_ENGINE_MODEL_CHUNKS_H_
#define MOESERVE_ENGINE_MODEL_CHUNKS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/config.h"
#include "engine/model.h"

namespace moeserve::engine {

// One token of a forward step: its chunk and its position in that chunk's sequence.
struct TokenRef {
  int64_t chunk;
  int64_t pos;
};

// Flattens a step's chunks into tokens, checking what Model::Forward promises to check:
// InvalidArgument for an empty chunk, token ids outside the vocabulary, positions beyond
// max_position_embeddings, a block table too short for the chunk (`block_tokens` per block), or
// logits_tokens outside [0, the chunk's tokens], argmax_vocab outside [0, vocab_size] or set
// with logits_tokens other than 1.
absl::Status FlattenChunks(const ModelConfig& config, absl::Span<const SequenceChunk> chunks,
                           int64_t block_tokens, std::vector<TokenRef>* refs,
                           std::vector<int32_t>* ids);

// The step's token rows whose logits the chunks ask for (each chunk's last logits_tokens), in
// the order Model::Forward returns them.
std::vector<int64_t> LogitRows(absl::Span<const SequenceChunk> chunks);

// Turns Model::Forward's rows into a StepRunner's answer: every chunk with argmax_vocab > 0 has
// its row replaced by the row's argmax (ArgmaxOf, engine/backend.h), appended to `argmax` in chunk order (cleared first).
void TakeArgmaxRows(absl::Span<const SequenceChunk> chunks, std::vector<std::vector<float>>* logits,
                    std::vector<int32_t>* argmax);

}  // namespace moeserve::engine

#endif  // MOESERVE_ENGINE_MODEL_CHUNKS_H_
