// Model::Forward: one batched step of the DeepSeek-V2/V3 decoder over a paged latent cache.
//
// Attention uses MLA's weight-absorbed form for every token (prefill chunks and decode alike):
// queries are mapped into the latent space with kv_b's key rows, scored against the cached
// normalised latents plus the rotated rope keys, and the attention-weighted latent is mapped to
// values with kv_b's value rows. The cache therefore only ever holds the compressed latent.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/backend.h"
#include "engine/cpu/attention.h"
#include "engine/cpu/linear.h"
#include "engine/model.h"
#include "engine/model/chunks.h"
#include "engine/model/ops.h"
#include "engine/model/scratch.h"

namespace moeserve::engine {
namespace {

void CopyRow(const Matrix& m, int64_t row, float* out) {
  if (m.dtype == DType::kF32) {
    std::memcpy(out, m.f32() + row * m.cols, sizeof(float) * m.cols);
  } else {
    const uint16_t* src = m.bf16() + row * m.cols;
    for (int64_t c = 0; c < m.cols; ++c) out[c] = Bf16ToF32(src[c]);
  }
}

struct QueryTile {
  int64_t chunk = 0;
  int64_t first = 0;  // first query item (token * heads + head) of the batch
  int nq = 0;
  int64_t max_len = 0;  // keys the last (longest) query sees
};

// Runs stage(t0, t1, products) over a step's n tokens. A prefill big enough to split by rows
// (cpu::kMinRowsPerThread each) is one parallel region: thread i runs the stage over the tokens
// [cpu::RowsBefore(n, i, T), cpu::RowsBefore(n, i + 1, T)) with its products on itself
// (products = null), so a run of products and per-token work meets no barrier between them and
// each core reads only rows it wrote. Otherwise this thread runs the stage over all tokens, and
// each product shares its columns out over the pool (products = pool). Products give the same
// bits either way.
void ForTokenStage(ThreadPool* pool, int64_t n,
                   const std::function<void(int64_t, int64_t, ThreadPool*)>& stage) {
  const int threads = pool == nullptr ? 1 : pool->num_threads();
  if (threads > 1 && n >= cpu::kMinRowsPerThread * threads) {
    pool->RunOnAll([&](int i) {
      stage(cpu::RowsBefore(n, i, threads), cpu::RowsBefore(n, i + 1, threads), nullptr);
    });
    return;
  }
  stage(0, n, pool);
}

// The tiles' indices, the longest (most keys) first: a causal prefill's last tiles cost up to its
// length times the first ones, and equal runs of tiles in order (ParallelFor's chunks) left one
// core waiting for the other's last chunk.
std::vector<int64_t> LongestFirst(const std::vector<QueryTile>& tiles) {
  const int64_t count = static_cast<int64_t>(tiles.size());
  std::vector<int64_t> order(tiles.size());
  for (int64_t i = 0; i < count; ++i) order[i] = count - 1 - i;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return tiles[a].max_len * tiles[a].nq > tiles[b].max_len * tiles[b].nq;
  });
  return order;
}

// Runs fn on every thread of the pool (on this one alone without a pool or with one tile); fn
// calls next() for the index of a tile to run until it returns -1. Tiles go out one at a time in
// `order`. Which thread runs a tile never changes its result.
void ForTiles(ThreadPool* pool, const std::vector<int64_t>& order,
              const std::function<void(const std::function<int64_t()>&)>& fn) {
  const int64_t count = static_cast<int64_t>(order.size());
  std::atomic<int64_t> claimed{0};
  const std::function<int64_t()> next = [&]() -> int64_t {
    const int64_t i = claimed.fetch_add(1, std::memory_order_relaxed);
    return i < count ? order[i] : -1;
  };
  if (pool == nullptr || count < 2) {
    fn(next);
    return;
  }
  pool->RunOnAll([&](int) { fn(next); });
}

// out[r, hidden] = down(silu(gate(xn)) * up(xn)) for the r rows at xn, the step's rows from t0:
// the dense MLP or the shared experts. g and u have room for the step's rows, inter wide.
void DenseMlp(const LayerWeights& w, const float* xn, int64_t r, int64_t hidden, float* g,
              float* u, int64_t t0, float* out, ThreadPool* products) {
  const int64_t inter = w.gate.rows;
  g += t0 * inter;
  u += t0 * inter;
  cpu::LinearMany({{xn, r, hidden, &w.gate, g, inter}, {xn, r, hidden, &w.up, u, inter}},
                  products);
  ops::SiluMul(g, u, r * inter, g);
  cpu::Linear(g, r, inter, w.down, out, hidden, products);
}

}  // namespace

absl::Status FlattenChunks(const ModelConfig& config, absl::Span<const SequenceChunk> chunks,
                           int64_t bt, std::vector<TokenRef>* refs, std::vector<int32_t>* ids) {
  refs->clear();
  ids->clear();
  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    const SequenceChunk& ch = chunks[ci];
    const int64_t end = ch.start_pos + static_cast<int64_t>(ch.tokens.size());
    if (ch.tokens.empty()) return absl::InvalidArgumentError("empty sequence chunk");
    if (end > config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("sequence length ", end,
                                                     " exceeds max_position_embeddings ",
                                                     config.max_position_embeddings));
    }
    if ((end + bt - 1) / bt > static_cast<int64_t>(ch.block_table.size())) {
      return absl::InvalidArgumentError("block table too short for the chunk");
    }
    if (ch.logits_tokens < 0 || ch.logits_tokens > static_cast<int64_t>(ch.tokens.size())) {
      return absl::InvalidArgumentError(absl::StrCat("logits_tokens ", ch.logits_tokens,
                                                     " is outside [0, ", ch.tokens.size(),
                                                     "] (the chunk's tokens)"));
    }
    if (ch.argmax_vocab < 0 || ch.argmax_vocab > config.vocab_size ||
        (ch.argmax_vocab > 0 && ch.logits_tokens != 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "argmax_vocab ", ch.argmax_vocab, " needs logits_tokens 1 (got ", ch.logits_tokens,
          ") and a value in [0, ", config.vocab_size, "]"));
    }
    for (size_t i = 0; i < ch.tokens.size(); ++i) {
      int32_t t = ch.tokens[i];
      if (t < 0 || t >= config.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", t, " is outside the vocabulary [0, ", config.vocab_size, ")"));
      }
      refs->push_back({static_cast<int64_t>(ci), ch.start_pos + static_cast<int64_t>(i)});
      ids->push_back(t);
    }
  }
  return absl::OkStatus();
}

std::vector<int64_t> LogitRows(absl::Span<const SequenceChunk> chunks) {
  std::vector<int64_t> rows;
  int64_t end = 0;
  for (const SequenceChunk& ch : chunks) {
    end += static_cast<int64_t>(ch.tokens.size());
    for (int64_t r = end - ch.logits_tokens; r < end; ++r) rows.push_back(r);
  }
  return rows;
}

void TakeArgmaxRows(absl::Span<const SequenceChunk> chunks, std::vector<std::vector<float>>* logits,
                    std::vector<int32_t>* argmax) {
  argmax->clear();
  size_t row = 0, kept = 0;
  for (const SequenceChunk& ch : chunks) {
    for (int64_t r = 0; r < ch.logits_tokens; ++r, ++row) {
      if (ch.argmax_vocab > 0) {
        argmax->push_back(ArgmaxOf((*logits)[row], ch.argmax_vocab));
      } else {
        if (kept != row) (*logits)[kept] = std::move((*logits)[row]);
        ++kept;
      }
    }
  }
  logits->resize(kept);
}

absl::Status Model::Forward(absl::Span<const SequenceChunk> chunks, KvCache* cache,
                            ExpertExecutor* experts, std::vector<std::vector<float>>* logits) const {
  const ModelConfig& c = config_;
  if (!options_.filter.attention_side) {
    return absl::FailedPreconditionError("this process loaded no attention-side weights");
  }
  if (!cache->has_rows()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the host engine computes over a float32 cache in host memory; a ",
        DTypeName(cache->dtype()), " KV cache needs a backend runner (--backend)"));
  }
  if (experts == nullptr) experts = local_experts_.get();
  const int64_t hidden = c.hidden_size;
  const int64_t heads = c.num_attention_heads;
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vdim = c.v_head_dim;
  const int64_t qhd = c.q_head_dim();
  const int64_t kvr = c.kv_lora_rank;
  const int64_t lat = c.latent_dim();
  const int64_t bt = cache->block_tokens();

  std::vector<TokenRef> refs;
  std::vector<int32_t> ids;
  MOESERVE_RETURN_IF_ERROR(FlattenChunks(c, chunks, bt, &refs, &ids));
  const int64_t n = static_cast<int64_t>(refs.size());
  ThreadPool* pool = pool_.get();

  // One arena per thread: Forward runs on the engine thread, concurrently only in tests.
  thread_local ScratchArena arena;
  arena.Reset();
  auto floats = [&](int64_t count) { return arena.Alloc<float>(count); };
  float* x = floats(n * hidden);
  float* xn = floats(n * hidden);
  float* cos_sin = floats(n * rope);
  ForTokenStage(pool, n, [&](int64_t t0, int64_t t1, ThreadPool*) {
    for (int64_t t = t0; t < t1; ++t) {
      CopyRow(embed_, ids[t], &x[t * hidden]);
      ops::RopeAngles(inv_freq_, rope_mscale_, refs[t].pos, &cos_sin[t * rope]);
      if (c.num_hidden_layers > 0) {
        ops::RmsNorm(&x[t * hidden], layers_[0].input_norm.data(), hidden, c.rms_norm_eps,
                     &xn[t * hidden]);
      }
    }
  });
  auto cache_row = [&](int64_t t, int64_t layer, int64_t pos) {
    const SequenceChunk& ch = chunks[refs[t].chunk];
    return cache->Row(ch.block_table[pos / bt], layer, pos % bt);
  };

  float* qa = floats(c.q_lora_rank ? n * *c.q_lora_rank : 0);
  float* q = floats(n * heads * qhd);
  float* kva = floats(n * lat);
  float* qlat = floats(n * heads * kvr);
  float* olat = floats(n * heads * kvr);
  float* attn = floats(n * heads * vdim);
  float* tmp = floats(n * hidden);
  float* mlp = floats(n * hidden);
  const float scale = static_cast<float>(c.SoftmaxScale());

  // Attention tiles: runs of up to kAttentionLanes consecutive (token, head) items of one chunk.
  std::vector<QueryTile> tiles;
  {
    int64_t t0 = 0;
    for (size_t ci = 0; ci < chunks.size(); ++ci) {
      const int64_t items = static_cast<int64_t>(chunks[ci].tokens.size()) * heads;
      for (int64_t i = 0; i < items; i += cpu::kAttentionLanes) {
        QueryTile tile;
        tile.chunk = static_cast<int64_t>(ci);
        tile.first = t0 * heads + i;
        tile.nq = static_cast<int>(std::min<int64_t>(cpu::kAttentionLanes, items - i));
        tile.max_len = refs[(tile.first + tile.nq - 1) / heads].pos + 1;
        tiles.push_back(tile);
      }
      t0 += static_cast<int64_t>(chunks[ci].tokens.size());
    }
  }
  std::vector<std::vector<const float*>> tile_blocks(tiles.size());
  const std::vector<int64_t> tile_order = LongestFirst(tiles);

  // Temporaries of the MLPs (dense or shared experts) and of routing, for every layer.
  int64_t mlp_inter = 0;
  for (const LayerWeights& w : layers_) {
    if (!w.moe || w.has_shared) mlp_inter = std::max(mlp_inter, w.gate.rows);
  }
  float* mlp_g = floats(n * mlp_inter);
  float* mlp_u = floats(n * mlp_inter);
  const int64_t n_experts = c.n_routed_experts, top_k = c.num_experts_per_tok;
  float* gate_logits = floats(n * n_experts);
  float* route_weights = floats(n * top_k);
  int32_t* chosen = arena.Alloc<int32_t>(n * top_k);

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& w = layers_[l];
    const int64_t qr = c.q_lora_rank.value_or(0);
    const float* next_norm =
        l + 1 < c.num_hidden_layers ? layers_[l + 1].input_norm.data() : nullptr;
    // x += mlp (+ the shared experts' tmp): the same two float additions in the same order;
    // then the next layer's input norm.
    auto residual = [&](int64_t t0, int64_t t1, bool shared) {
      for (int64_t i = t0 * hidden; i < t1 * hidden; ++i) {
        x[i] += shared ? mlp[i] + tmp[i] : mlp[i];
      }
      if (next_norm == nullptr) return;
      for (int64_t t = t0; t < t1; ++t) {
        ops::RmsNorm(&x[t * hidden], next_norm, hidden, c.rms_norm_eps, &xn[t * hidden]);
      }
    };
    // Up to attention. xn holds x under this layer's input norm (made with the embedding or the
    // last residual). The latent (normalised, its rope key rotated) goes to the cache in the
    // same pass over the tokens as q_a's norm; the queries' rope part is rotated where attention
    // reads it. Then kv_b's key part is absorbed into the queries: qlat[t, h] = q_nope[t, h] *
    // W_UK[h].
    ForTokenStage(pool, n, [&](int64_t t0, int64_t t1, ThreadPool* products) {
      const int64_t r = t1 - t0;
      const float* xr = &xn[t0 * hidden];
      float* qrows = &q[t0 * heads * qhd];
      if (qr > 0) {
        cpu::LinearMany({{xr, r, hidden, &w.q_a, &qa[t0 * qr], qr},
                         {xr, r, hidden, &w.kv_a, &kva[t0 * lat], lat}},
                        products);
      } else {
        cpu::LinearMany({{xr, r, hidden, &w.q, qrows, heads * qhd},
                         {xr, r, hidden, &w.kv_a, &kva[t0 * lat], lat}},
                        products);
      }
      for (int64_t t = t0; t < t1; ++t) {
        if (qr > 0) ops::RmsNorm(&qa[t * qr], w.q_a_norm.data(), qr, c.rms_norm_eps, &qa[t * qr]);
        float* row = cache_row(t, l, refs[t].pos);
        ops::RmsNorm(&kva[t * lat], w.kv_a_norm.data(), kvr, c.rms_norm_eps, row);
        std::memcpy(row + kvr, &kva[t * lat + kvr], sizeof(float) * rope);
        ops::ApplyRope(row + kvr, rope, &cos_sin[t * rope]);
      }
      if (qr > 0) cpu::Linear(&qa[t0 * qr], r, qr, w.q_b, qrows, heads * qhd, products);
      std::vector<cpu::LinearJob> head_jobs;
      for (int64_t h = 0; h < heads; ++h) {
        head_jobs.push_back({qrows + h * qhd, r, heads * qhd, &w.uk_t[h],
                             &qlat[(t0 * heads + h) * kvr], heads * kvr});
      }
      cpu::LinearMany(head_jobs, products);
    });
    // Scores over every cached position of the token's sequence, causal, in tiles of up to
    // kAttentionLanes consecutive (token, head) queries of one chunk.
    for (size_t ti = 0; ti < tiles.size(); ++ti) {
      tile_blocks[ti].clear();
      const SequenceChunk& ch = chunks[tiles[ti].chunk];
      const int64_t blocks = (tiles[ti].max_len + bt - 1) / bt;
      for (int64_t b = 0; b < blocks; ++b) {
        tile_blocks[ti].push_back(cache->Row(ch.block_table[b], l, 0));
      }
    }
    ForTiles(pool, tile_order, [&](const std::function<int64_t()>& next) {
      std::vector<float> qt(lat * cpu::kAttentionLanes), qpe(rope), scratch;
      for (int64_t ti = next(); ti >= 0; ti = next()) {
        const QueryTile& tile = tiles[ti];
        std::fill(qt.begin(), qt.end(), 0.0f);
        int64_t lens[cpu::kAttentionLanes];
        for (int i = 0; i < tile.nq; ++i) {
          const int64_t item = tile.first + i;  // t * heads + h
          const int64_t t = item / heads;
          const float* ql = &qlat[item * kvr];
          std::memcpy(qpe.data(), &q[item * qhd + nope], sizeof(float) * rope);
          ops::ApplyRope(qpe.data(), rope, &cos_sin[t * rope]);
          for (int64_t d = 0; d < kvr; ++d) qt[d * cpu::kAttentionLanes + i] = ql[d];
          for (int64_t d = 0; d < rope; ++d) qt[(kvr + d) * cpu::kAttentionLanes + i] = qpe[d];
          lens[i] = refs[t].pos + 1;
        }
        cpu::LatentAttentionTile args;
        args.qt = qt.data();
        args.nq = tile.nq;
        args.len = lens;
        args.blocks = tile_blocks[ti].data();
        args.block_tokens = bt;
        args.lat = lat;
        args.kvr = kvr;
        args.scale = scale;
        args.out = &olat[tile.first * kvr];
        args.out_stride = kvr;
        cpu::LatentAttention(args, &scratch);
      }
    });
    // From attention's output to the MLP (a dense layer ends here) or to the routing.
    const float* bias = w.router_bias.empty() ? nullptr : w.router_bias.data();
    ForTokenStage(pool, n, [&](int64_t t0, int64_t t1, ThreadPool* products) {
      const int64_t r = t1 - t0;
      std::vector<cpu::LinearJob> head_jobs;
      for (int64_t h = 0; h < heads; ++h) {
        head_jobs.push_back({&olat[(t0 * heads + h) * kvr], r, heads * kvr, &w.uv[h],
                             &attn[(t0 * heads + h) * vdim], heads * vdim});
      }
      cpu::LinearMany(head_jobs, products);
      cpu::Linear(&attn[t0 * heads * vdim], r, heads * vdim, w.o, &tmp[t0 * hidden], hidden,
                  products);
      for (int64_t i = t0 * hidden; i < t1 * hidden; ++i) x[i] += tmp[i];
      for (int64_t t = t0; t < t1; ++t) {
        ops::RmsNorm(&x[t * hidden], w.post_norm.data(), hidden, c.rms_norm_eps, &xn[t * hidden]);
      }
      if (!w.moe) {
        DenseMlp(w, &xn[t0 * hidden], r, hidden, mlp_g, mlp_u, t0, &mlp[t0 * hidden], products);
        residual(t0, t1, false);
        return;
      }
      cpu::Linear(&xn[t0 * hidden], r, hidden, w.router, &gate_logits[t0 * n_experts], n_experts,
                  products);
      for (int64_t t = t0; t < t1; ++t) {
        ops::RouteToken(c, &gate_logits[t * n_experts], bias, &chosen[t * top_k],
                        &route_weights[t * top_k]);
      }
    });
    if (!w.moe) continue;
    MOESERVE_RETURN_IF_ERROR(experts->Run(l, xn, n, top_k, chosen, route_weights, mlp));
    ForTokenStage(pool, n, [&](int64_t t0, int64_t t1, ThreadPool* products) {
      if (w.has_shared) {
        DenseMlp(w, &xn[t0 * hidden], t1 - t0, hidden, mlp_g, mlp_u, t0, &tmp[t0 * hidden],
                 products);
      }
      residual(t0, t1, w.has_shared);
    });
  }

  // Final norm and LM head for the last logits_tokens tokens of every chunk.
  std::vector<int64_t> rows = LogitRows(chunks);
  if (rows.empty()) {
    logits->clear();
    return absl::OkStatus();
  }
  const int64_t r = static_cast<int64_t>(rows.size());
  float* normed = floats(r * hidden);
  float* out = floats(r * c.vocab_size);
  for (int64_t i = 0; i < r; ++i) {
    ops::RmsNorm(&x[rows[i] * hidden], final_norm_.data(), hidden, c.rms_norm_eps,
                 &normed[i * hidden]);
  }
  cpu::Linear(normed, r, hidden, lm_head_, out, c.vocab_size, pool);
  // The caller's vectors keep their memory (assign reuses the capacity; see Engine::Step).
  logits->resize(r);
  for (int64_t i = 0; i < r; ++i) {
    (*logits)[i].assign(out + i * c.vocab_size, out + (i + 1) * c.vocab_size);
  }
  return absl::OkStatus();
}

}  // namespace moeserve::engine
