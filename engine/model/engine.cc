#include "engine/engine.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/backend.h"
#include "engine/model/chunks.h"

namespace moeserve::engine {
int64_t Engine::PoolBlocks(const ModelConfig& config, const EngineOptions& o) {
  int64_t bt = std::max<int64_t>(1, o.block_tokens);
  if (o.kv_cache_tokens > 0) return (o.kv_cache_tokens + bt - 1) / bt;
  return KvCache::BlocksForBytes(config, bt, o.kv_cache_bytes, o.kv_cache_dtype);
}

Engine::Engine(const Model* model, const EngineOptions& options)
    : model_(model),
      options_(options),
      // Rows in host memory only for the host runner; a backend runner holds its own.
      cache_(model->config(), options.block_tokens, PoolBlocks(model->config(), options),
             options.kv_cache_dtype, options.runner == nullptr),
      host_runner_(model),
      runner_(options.runner != nullptr ? options.runner : &host_runner_) {}

namespace {

absl::Status CheckHostRows(const KvCache& cache) {
  if (cache.has_rows()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("the host runner computes over a float32 cache in host memory; a ",
                   DTypeName(cache.dtype()), " KV cache needs a backend runner (--backend)"));
}

}  // namespace

absl::Status HostStepRunner::Forward(absl::Span<const SequenceChunk> chunks, KvCache* cache,
                                     ExpertExecutor* experts,
                                     std::vector<std::vector<float>>* logits,
                                     std::vector<int32_t>* argmax) {
  // Model::Forward refuses a cache without host rows itself.
  MOESERVE_RETURN_IF_ERROR(model_->Forward(chunks, cache, experts, logits));
  TakeArgmaxRows(chunks, logits, argmax);
  return absl::OkStatus();
}

absl::Status HostStepRunner::CopyBlock(KvCache* cache, int32_t src, int32_t dst, int64_t tokens) {
  MOESERVE_RETURN_IF_ERROR(CheckHostRows(*cache));
  cache->CopyBlock(src, dst, tokens);
  return absl::OkStatus();
}

absl::Status HostStepRunner::WriteBlock(KvCache* cache, int32_t block, absl::string_view bytes) {
  MOESERVE_RETURN_IF_ERROR(CheckHostRows(*cache));
  const int64_t layers = model_->config().num_hidden_layers;
  const size_t layer_bytes =
      static_cast<size_t>(cache->block_tokens() * cache->latent_dim()) * sizeof(float);
  if (bytes.size() != layer_bytes * layers) {
    return absl::InvalidArgumentError(absl::StrCat("block of ", bytes.size(), " bytes, expected ",
                                                   layer_bytes * layers));
  }
  for (int64_t l = 0; l < layers; ++l) {
    std::memcpy(cache->Row(block, l, 0), bytes.data() + l * layer_bytes, layer_bytes);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> HostStepRunner::ReadBlock(const KvCache& cache, int32_t block) const {
  MOESERVE_RETURN_IF_ERROR(CheckHostRows(cache));
  const int64_t layers = model_->config().num_hidden_layers;
  const size_t layer_bytes =
      static_cast<size_t>(cache.block_tokens() * cache.latent_dim()) * sizeof(float);
  std::string out(layer_bytes * layers, '\0');
  for (int64_t l = 0; l < layers; ++l) {
    std::memcpy(out.data() + l * layer_bytes, cache.Row(block, l, 0), layer_bytes);
  }
  return out;
}

Engine::~Engine() {
  for (auto& [id, s] : seqs_) {
    for (int32_t b : s.blocks) cache_.Release(b);
  }
}

absl::Status Engine::CheckTokens(const std::vector<int32_t>& tokens) const {
  const ModelConfig& c = model_->config();
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at position ", i,
                                                     " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
    }
  }
  if (static_cast<int64_t>(tokens.size()) > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("sequence of ", tokens.size(),
                                                   " tokens exceeds the model's context of ",
                                                   c.max_position_embeddings));
  }
  const int64_t capacity = cache_.num_blocks() * cache_.block_tokens();
  if (static_cast<int64_t>(tokens.size()) > capacity) {
    return absl::ResourceExhaustedError(absl::StrCat("sequence of ", tokens.size(),
                                                     " tokens exceeds the KV cache capacity of ",
                                                     capacity, " tokens"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Engine::Sequence*> Engine::Find(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::InvalidArgumentError(absl::StrCat("no sequence ", seq));
  return &it->second;
}

absl::StatusOr<SeqId> Engine::Add(const std::vector<int32_t>& prompt,
                                  PositionLogitsFn position_logits) {
  if (prompt.empty()) return absl::InvalidArgumentError("empty prompt");
  MOESERVE_RETURN_IF_ERROR(CheckTokens(prompt));
  SeqId id = next_id_++;
  Sequence& s = seqs_[id];
  s.tokens = prompt;
  s.position_logits = std::move(position_logits);
  s.prompt_len = static_cast<int64_t>(prompt.size());
  return id;
}

absl::StatusOr<SeqId> Engine::Fork(SeqId seq, int64_t prefix_len) {
  MOESERVE_ASSIGN_OR_RETURN(Sequence * src, Find(seq));
  if (prefix_len <= 0 || prefix_len > src->cached) {
    return absl::InvalidArgumentError(absl::StrCat("fork prefix ", prefix_len,
                                                   " must be in [1, ", src->cached,
                                                   "] (the cached length)"));
  }
  const int64_t bt = cache_.block_tokens();
  Sequence fork;
  fork.tokens.assign(src->tokens.begin(), src->tokens.begin() + prefix_len);
  fork.cached = prefix_len;
  const int64_t full = prefix_len / bt;
  for (int64_t b = 0; b < full; ++b) {
    cache_.Retain(src->blocks[b]);
    fork.blocks.push_back(src->blocks[b]);
  }
  if (prefix_len % bt != 0) {
    absl::StatusOr<int32_t> copy = cache_.Allocate();
    if (!copy.ok()) {
      for (int32_t b : fork.blocks) cache_.Release(b);
      return copy.status();
    }
    absl::Status copied = runner_->CopyBlock(&cache_, src->blocks[full], *copy, prefix_len % bt);
    if (!copied.ok()) {
      cache_.Release(*copy);
      for (int32_t b : fork.blocks) cache_.Release(b);
      return copied;
    }
    fork.blocks.push_back(*copy);
  }
  SeqId id = next_id_++;
  seqs_[id] = std::move(fork);
  return id;
}

absl::Status Engine::Append(SeqId seq, int32_t token) {
  MOESERVE_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  std::vector<int32_t> one = {token};
  MOESERVE_RETURN_IF_ERROR(CheckTokens(one));
  if (static_cast<int64_t>(s->tokens.size()) + 1 > model_->config().max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("sequence reached the model's context of ",
                                                   model_->config().max_position_embeddings,
                                                   " tokens"));
  }
  s->tokens.push_back(token);
  return absl::OkStatus();
}

absl::Status Engine::Free(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::InvalidArgumentError(absl::StrCat("no sequence ", seq));
  for (int32_t b : it->second.blocks) cache_.Release(b);
  seqs_.erase(it);
  return absl::OkStatus();
}

absl::Status Engine::SetArgmax(SeqId seq, int64_t vocab) {
  MOESERVE_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (vocab < 0 || vocab > model_->config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("argmax vocab ", vocab, " outside [0, ",
                                                   model_->config().vocab_size, "]"));
  }
  s->argmax_vocab = vocab;
  return absl::OkStatus();
}

int64_t Engine::BlockBytes() const { return cache_.block_bytes(); }

absl::StatusOr<int64_t> Engine::ImportPrefix(SeqId seq, absl::Span<const std::string> blocks) {
  MOESERVE_ASSIGN_OR_RETURN(Sequence * s, Find(seq));
  if (s->cached != 0 || !s->blocks.empty()) {
    return absl::InvalidArgumentError("ImportPrefix needs a sequence that has not run yet");
  }
  if (s->position_logits) {
    return absl::InvalidArgumentError(
        "ImportPrefix: the sequence wants every position's logits, so every position runs");
  }
  const int64_t bt = cache_.block_tokens();
  const int64_t usable = (static_cast<int64_t>(s->tokens.size()) - 1) / bt;
  const int64_t n = std::min<int64_t>(usable, static_cast<int64_t>(blocks.size()));
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<int64_t>(blocks[i].size()) != BlockBytes()) {
      return absl::InvalidArgumentError(absl::StrCat("cached block ", i, " has ",
                                                     blocks[i].size(), " bytes, expected ",
                                                     BlockBytes()));
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    absl::StatusOr<int32_t> b = cache_.Allocate();
    if (!b.ok()) return b.status();
    s->blocks.push_back(*b);
    MOESERVE_RETURN_IF_ERROR(runner_->WriteBlock(&cache_, *b, blocks[i]));
    s->cached += bt;
  }
  return s->cached;
}

absl::StatusOr<std::string> Engine::ExportBlock(SeqId seq, int64_t index) const {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::InvalidArgumentError(absl::StrCat("no sequence ", seq));
  const Sequence& s = it->second;
  const int64_t bt = cache_.block_tokens();
  if (index < 0 || (index + 1) * bt > s.cached) {
    return absl::InvalidArgumentError(absl::StrCat("block ", index, " of sequence ", seq,
                                                   " is not fully computed"));
  }
  return runner_->ReadBlock(cache_, s.blocks[index]);
}

absl::StatusOr<int64_t> Engine::CachedTokens(SeqId seq) const {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::InvalidArgumentError(absl::StrCat("no sequence ", seq));
  return it->second.cached;
}

bool Engine::HasPending() const {
  for (const auto& [id, s] : seqs_) {
    if (s.cached < static_cast<int64_t>(s.tokens.size())) return true;
  }
  return false;
}

absl::StatusOr<int64_t> Engine::Length(SeqId seq) const {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::InvalidArgumentError(absl::StrCat("no sequence ", seq));
  return static_cast<int64_t>(it->second.tokens.size());
}

bool Engine::Reserve(Sequence* s, int64_t tokens) {
  const int64_t bt = cache_.block_tokens();
  while (static_cast<int64_t>(s->blocks.size()) * bt < tokens) {
    absl::StatusOr<int32_t> b = cache_.Allocate();
    if (!b.ok()) return false;
    s->blocks.push_back(*b);
  }
  return true;
}

absl::StatusOr<std::vector<StepOutput>> Engine::Step(ExpertExecutor* experts) {
  std::vector<SequenceChunk> chunks;
  std::vector<SeqId> chunk_seq;
  std::vector<bool> completes;
  const int64_t max_logit_rows = std::max<int64_t>(1, options_.max_logit_rows);
  int64_t budget = std::max<int64_t>(1, options_.max_step_tokens);
  bool any_pending = false;
  // Decode-phase sequences (one pending token) go first so a long prompt never stalls them;
  // then prompts in id (arrival) order.
  for (int pass = 0; pass < 2 && budget > 0; ++pass) {
    for (auto& [id, s] : seqs_) {
      const int64_t pending = static_cast<int64_t>(s.tokens.size()) - s.cached;
      if (pending <= 0 || (pass == 0) != (pending == 1)) continue;
      any_pending = true;
      if (budget <= 0) break;
      int64_t take = std::min(pending, budget);
      // Positions below prompt_len - 1 score prompt tokens; past them only the last wants logits.
      const int64_t scored_end = s.position_logits ? s.prompt_len - 1 : 0;
      if (s.cached < scored_end) take = std::min(take, max_logit_rows);
      if (!Reserve(&s, s.cached + take)) {
        // Take what fits in the blocks already held; otherwise the sequence waits.
        take = std::min(take, static_cast<int64_t>(s.blocks.size()) * cache_.block_tokens() -
                                  s.cached);
        if (take <= 0) continue;
      }
      SequenceChunk ch;
      ch.tokens = absl::MakeConstSpan(s.tokens).subspan(s.cached, take);
      ch.start_pos = s.cached;
      ch.block_table = absl::MakeConstSpan(s.blocks);
      const bool complete = take == pending;
      // Every row of a chunk that holds scored positions (they are a prefix of the sequence);
      // else the last row when the chunk completes the sequence.
      ch.logits_tokens = s.cached < scored_end ? take : (complete ? 1 : 0);
      // A greedy sequence's next token comes back as the argmax (a scored chunk keeps its rows;
      // its last one is reduced on the host below).
      if (ch.logits_tokens == 1 && complete && s.cached >= scored_end) {
        ch.argmax_vocab = s.argmax_vocab;
      }
      chunks.push_back(ch);
      chunk_seq.push_back(id);
      completes.push_back(complete);
      budget -= take;
    }
  }
  std::vector<StepOutput> outputs;
  if (chunks.empty()) {
    if (any_pending) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "KV cache full: no waiting sequence can get a block (", cache_.num_blocks(),
          " blocks of ", cache_.block_tokens(), " tokens all held); free or finish sequences"));
    }
    return outputs;
  }
  size_t logit_rows = 0;
  for (const SequenceChunk& ch : chunks) {
    if (ch.argmax_vocab == 0) logit_rows += static_cast<size_t>(ch.logits_tokens);
  }
  while (step_logits_.size() > logit_rows) {
    spare_logits_.push_back(std::move(step_logits_.back()));
    step_logits_.pop_back();
  }
  while (step_logits_.size() < logit_rows && !spare_logits_.empty()) {
    step_logits_.push_back(std::move(spare_logits_.back()));
    spare_logits_.pop_back();
  }
  std::vector<std::vector<float>>& logits = step_logits_;
  MOESERVE_RETURN_IF_ERROR(runner_->Forward(chunks, &cache_, experts, &logits, &step_argmax_));
  size_t next_logits = 0, next_argmax = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    Sequence& s = seqs_[chunk_seq[i]];
    const int64_t take = static_cast<int64_t>(chunks[i].tokens.size());
    s.cached += take;
    if (chunks[i].argmax_vocab > 0) {
      outputs.push_back({chunk_seq[i], {}, step_argmax_[next_argmax++]});
      continue;
    }
    const int64_t rows = chunks[i].logits_tokens;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t position = s.cached - rows + r;
      std::vector<float>& row = logits[next_logits + r];
      if (s.position_logits && position < s.prompt_len - 1) s.position_logits(position, row);
    }
    next_logits += rows;
    if (!completes[i]) continue;
    std::vector<float>& last = logits[next_logits - 1];
    if (s.argmax_vocab > 0) {
      outputs.push_back({chunk_seq[i], {}, ArgmaxOf(last, s.argmax_vocab)});
    } else {
      outputs.push_back({chunk_seq[i], std::move(last)});
    }
  }
  return outputs;
}

}  // namespace moeserve::engine
