// BackendModel: Model::Forward's step expressed in Backend ops (see backend_model.h). The order
// of operations follows engine/model/forward.cc exactly, so the CPU backend reproduces it.
#include "engine/model/backend_model.h"


#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "engine/model/backend_experts.h"
#include "engine/model/chunks.h"

namespace moeserve::engine {
namespace {

// A tensor copied into backend memory; `view` describes it when it is a matrix.
struct DeviceTensor {
  BufferPtr buffer;
  WeightView view;
  const float* f32() const { return buffer ? static_cast<const float*>(buffer->data()) : nullptr; }
};

absl::StatusOr<DeviceTensor> UploadBytes(Backend* b, const void* data, int64_t bytes,
                                         int64_t* total) {
  DeviceTensor t;
  MOESERVE_ASSIGN_OR_RETURN(t.buffer, b->Allocate(bytes, MemoryType::kDevice));
  if (bytes > 0) MOESERVE_RETURN_IF_ERROR(b->CopyToBackend(t.buffer->data(), data, bytes));
  *total += bytes;
  return t;
}

absl::StatusOr<DeviceTensor> UploadMatrix(Backend* b, const Matrix& m, int64_t* total) {
  if (m.data == nullptr || m.rows == 0) return DeviceTensor();
  MOESERVE_ASSIGN_OR_RETURN(DeviceTensor t, UploadBytes(b, m.data, m.bytes(), total));
  t.view.dtype = m.dtype;
  t.view.rows = m.rows;
  t.view.cols = m.cols;
  t.view.data = t.buffer->data();
  return t;
}

// Same-shaped matrices (one per head) one after another in one buffer; the view is the first's,
// and matrix i starts i * rows * cols elements after it.
absl::StatusOr<DeviceTensor> UploadHeads(Backend* b, const std::vector<Matrix>& heads,
                                         int64_t* total) {
  if (heads.empty()) return DeviceTensor();
  const Matrix& first = heads[0];
  std::vector<uint8_t> bytes;
  for (const Matrix& m : heads) {
    if (m.dtype != first.dtype || m.rows != first.rows || m.cols != first.cols) {
      return absl::InternalError("per-head matrices of different shapes");
    }
    const uint8_t* p = static_cast<const uint8_t*>(m.data);
    bytes.insert(bytes.end(), p, p + m.bytes());
  }
  MOESERVE_ASSIGN_OR_RETURN(DeviceTensor t,
                            UploadBytes(b, bytes.data(), static_cast<int64_t>(bytes.size()), total));
  t.view.dtype = first.dtype;
  t.view.rows = first.rows;
  t.view.cols = first.cols;
  t.view.data = t.buffer->data();
  return t;
}

absl::StatusOr<DeviceTensor> UploadVector(Backend* b, const std::vector<float>& v,
                                          int64_t* total) {
  if (v.empty()) return DeviceTensor();
  return UploadBytes(b, v.data(), static_cast<int64_t>(v.size() * sizeof(float)), total);
}

// Scratch slots of one step.
enum Slot : int {
  kIds,
  kPositions,
  kTableRows,
  kLens,
  kTables,
  kCacheRows,
  kChosen,
  kX,
  kXn,
  kQa,
  kQ,
  kKva,
  kQfull,
  kOlat,
  kAttn,
  kTmp,
  kMlp,
  kGateLogits,
  kWeights,
  kG,
  kU,
  kLast,
  kNormed,
  kLogits,
  kArgmaxIds,
  kNumSlots,
};

// The end of the run of rows [i, j) of `count` in which `same(r - 1, r)` holds for every r:
// one copy or launch each.
template <typename Same>
int64_t RunEnd(int64_t count, int64_t i, Same same) {
  int64_t j = i + 1;
  while (j < count && same(j - 1, j)) ++j;
  return j;
}

}  // namespace

struct BackendModel::Weights {
  struct Layer {
    DeviceTensor input_norm, post_norm, q_a_norm, kv_a_norm;
    DeviceTensor q_a, q_b, q, kv_a, o;
    DeviceTensor uk_t, uv;  // every head's, one after another (UploadHeads)
    DeviceTensor gate, up, down, router, router_bias;
  };
  DeviceTensor embed, lm_head, final_norm, inv_freq;
  std::vector<Layer> layers;
  int64_t bytes = 0;
};

BackendModel::BackendModel(const Model* model, Backend* backend,
                           const BackendModelOptions& options)
    : model_(model), backend_(backend), options_(options), scratch_(kNumSlots) {}

BackendModel::~BackendModel() = default;

absl::StatusOr<std::unique_ptr<BackendModel>> BackendModel::Create(
    const Model* model, Backend* backend, const BackendModelOptions& options) {
  if (!model->options().filter.attention_side) {
    return absl::FailedPreconditionError("the model has no attention-side weights loaded");
  }
  if (options.memory_fraction < 0 || options.memory_fraction > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory fraction ", options.memory_fraction, " outside (0, 1]"));
  }
  if (options.block_tokens < 1 || (options.num_blocks < 1 && options.memory_fraction == 0)) {
    return absl::InvalidArgumentError(absl::StrCat("backend cache of ", options.num_blocks,
                                                   " blocks of ", options.block_tokens,
                                                   " tokens"));
  }
  if (options.cache_dtype != DType::kF32 && options.cache_dtype != DType::kBf16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a KV cache of ", DTypeName(options.cache_dtype), ": it holds F32 or BF16"));
  }
  std::unique_ptr<BackendModel> m(new BackendModel(model, backend, options));
  MOESERVE_RETURN_IF_ERROR(m->Upload());
  return m;
}

absl::Status BackendModel::Upload() {
  const ModelConfig& c = model_->config();
  w_ = std::make_unique<Weights>();
  int64_t* total = &w_->bytes;
  Backend* b = backend_;
  MOESERVE_ASSIGN_OR_RETURN(w_->embed, UploadMatrix(b, model_->embed(), total));
  MOESERVE_ASSIGN_OR_RETURN(w_->lm_head, UploadMatrix(b, model_->lm_head(), total));
  MOESERVE_ASSIGN_OR_RETURN(w_->final_norm, UploadVector(b, model_->final_norm(), total));
  MOESERVE_ASSIGN_OR_RETURN(w_->inv_freq, UploadVector(b, model_->inv_freq(), total));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& src = model_->layer(l);
    Weights::Layer d;
    MOESERVE_ASSIGN_OR_RETURN(d.input_norm, UploadVector(b, src.input_norm, total));
    MOESERVE_ASSIGN_OR_RETURN(d.post_norm, UploadVector(b, src.post_norm, total));
    MOESERVE_ASSIGN_OR_RETURN(d.q_a_norm, UploadVector(b, src.q_a_norm, total));
    MOESERVE_ASSIGN_OR_RETURN(d.kv_a_norm, UploadVector(b, src.kv_a_norm, total));
    MOESERVE_ASSIGN_OR_RETURN(d.q_a, UploadMatrix(b, src.q_a, total));
    MOESERVE_ASSIGN_OR_RETURN(d.q_b, UploadMatrix(b, src.q_b, total));
    MOESERVE_ASSIGN_OR_RETURN(d.q, UploadMatrix(b, src.q, total));
    MOESERVE_ASSIGN_OR_RETURN(d.kv_a, UploadMatrix(b, src.kv_a, total));
    MOESERVE_ASSIGN_OR_RETURN(d.o, UploadMatrix(b, src.o, total));
    MOESERVE_ASSIGN_OR_RETURN(d.uk_t, UploadHeads(b, src.uk_t, total));
    MOESERVE_ASSIGN_OR_RETURN(d.uv, UploadHeads(b, src.uv, total));
    MOESERVE_ASSIGN_OR_RETURN(d.gate, UploadMatrix(b, src.gate, total));
    MOESERVE_ASSIGN_OR_RETURN(d.up, UploadMatrix(b, src.up, total));
    MOESERVE_ASSIGN_OR_RETURN(d.down, UploadMatrix(b, src.down, total));
    MOESERVE_ASSIGN_OR_RETURN(d.router, UploadMatrix(b, src.router, total));
    MOESERVE_ASSIGN_OR_RETURN(d.router_bias, UploadVector(b, src.router_bias, total));
    w_->layers.push_back(std::move(d));
  }
  if (options_.memory_fraction > 0) {
    MOESERVE_RETURN_IF_ERROR(b->Synchronize());
    MOESERVE_ASSIGN_OR_RETURN(const MemoryInfo memory, b->DeviceMemory());
    MOESERVE_ASSIGN_OR_RETURN(
        options_.num_blocks,
        CacheBlocksForMemory(memory, options_.memory_fraction, w_->bytes + options_.other_bytes,
                             StepScratchBytes(c, options_.max_step_tokens,
                                              options_.max_logit_rows),
                             BlockBytes()));
  }
  MOESERVE_ASSIGN_OR_RETURN(cache_,
                            b->Allocate(options_.num_blocks * BlockBytes(), MemoryType::kDevice));
  return b->Synchronize();
}

int64_t BackendModel::backend_bytes() const {
  int64_t total = w_->bytes + cache_->bytes();
  for (const BufferPtr& s : scratch_) total += s ? s->bytes() : 0;
  return total;
}

int64_t BackendModel::weight_bytes() const { return w_->bytes; }

template <typename T>
absl::StatusOr<T*> BackendModel::Scratch(int slot, int64_t count) {
  const int64_t bytes = std::max<int64_t>(count, 1) * static_cast<int64_t>(sizeof(T));
  BufferPtr& s = scratch_[slot];
  if (s == nullptr || s->bytes() < bytes) {
    s.reset();
    ++scratch_epoch_;
    MOESERVE_ASSIGN_OR_RETURN(s, backend_->Allocate(bytes, MemoryType::kDevice));
  }
  return static_cast<T*>(s->data());
}

int64_t BackendModel::StepScratchBytes(const ModelConfig& c, int64_t tokens,
                                       int64_t logit_rows) {
  const int64_t heads = c.num_attention_heads, lat = c.latent_dim(), hidden = c.hidden_size;
  const int64_t k = c.num_experts_per_tok;
  const int64_t dense_inter = std::max(
      c.intermediate_size, c.moe_intermediate_size * std::max<int64_t>(1, c.n_shared_experts));
  // Every float of the step's scratch slots per token (BackendModel::Forward), the routed
  // experts' sorted rows and products (k x (hidden + 3 x moe_intermediate)), and the bf16
  // copies of product inputs the CUDA backend makes (half a float per input element).
  const int64_t per_token = 5 * hidden + c.q_lora_rank.value_or(0) + heads * c.q_head_dim() + lat +
                            heads * (lat + c.kv_lora_rank + c.v_head_dim) + 2 * dense_inter +
                            c.n_routed_experts + 2 * k +
                            k * (hidden + 3 * c.moe_intermediate_size) + dense_inter / 2;
  const int64_t rows = std::min(tokens, logit_rows);
  const int64_t bytes = 4 * (tokens * per_token + rows * (c.vocab_size + 2 * hidden));
  // Twice the count, for what it does not see (attention splits, cuBLASLt's workspace,
  // allocator rounding), and 256 MiB besides.
  return 2 * bytes + (int64_t{256} << 20);
}

absl::StatusOr<int64_t> BackendModel::CacheBlocksForMemory(const MemoryInfo& m, double fraction,
                                                           int64_t own_bytes,
                                                           int64_t scratch_bytes,
                                                           int64_t block_bytes) {
  const int64_t allowed = static_cast<int64_t>(fraction * static_cast<double>(m.total_bytes));
  const int64_t budget =
      std::min(allowed - own_bytes - scratch_bytes, m.free_bytes - scratch_bytes);
  if (block_bytes <= 0 || budget < block_bytes) {
    constexpr double kGiB = 1 << 30;
    return absl::ResourceExhaustedError(absl::StrFormat(
        "no room for a KV cache: %.2f of the device's %.2f GiB allowed (memory fraction %.2f), "
        "%.2f GiB taken by this process's weights, %.2f GiB kept for a step's scratch, %.2f "
        "GiB free; a block needs %.3f GiB",
        allowed / kGiB, m.total_bytes / kGiB, fraction, own_bytes / kGiB, scratch_bytes / kGiB,
        m.free_bytes / kGiB, block_bytes / kGiB));
  }
  return budget / block_bytes;
}

int64_t BackendModel::BlockBytes() const {
  return options_.block_tokens * KvCache::BytesPerToken(model_->config(), options_.cache_dtype);
}

char* BackendModel::BlockData(int32_t block) const {
  return static_cast<char*>(cache_->data()) + block * BlockBytes();
}

absl::StatusOr<std::string> BackendModel::BlockBytesOf(int32_t block) const {
  if (block < 0 || block >= options_.num_blocks) {
    return absl::InvalidArgumentError(absl::StrCat("no cache block ", block));
  }
  std::string out(static_cast<size_t>(BlockBytes()), '\0');
  MOESERVE_RETURN_IF_ERROR(backend_->CopyToHost(out.data(), BlockData(block), BlockBytes()));
  return out;
}

absl::StatusOr<std::vector<float>> BackendModel::ReadBlock(int32_t block) const {
  MOESERVE_ASSIGN_OR_RETURN(const std::string bytes, BlockBytesOf(block));
  const int64_t elements = BlockBytes() / DTypeSize(options_.cache_dtype);
  std::vector<float> out(static_cast<size_t>(elements));
  if (options_.cache_dtype == DType::kF32) {
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
  for (int64_t i = 0; i < elements; ++i) {
    uint16_t bits;
    std::memcpy(&bits, bytes.data() + 2 * i, 2);
    out[i] = Bf16ToF32(bits);
  }
  return out;
}

absl::Status BackendModel::CheckGeometry(const KvCache& cache) const {
  if (cache.block_tokens() != options_.block_tokens || cache.num_blocks() > options_.num_blocks ||
      cache.dtype() != options_.cache_dtype) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the engine's pool (", cache.num_blocks(), " blocks of ", cache.block_tokens(), " ",
        DTypeName(cache.dtype()), " tokens) does not fit the backend cache (", options_.num_blocks,
        " blocks of ", options_.block_tokens, " ", DTypeName(options_.cache_dtype), ")"));
  }
  return absl::OkStatus();
}

absl::Status BackendModel::Forward(absl::Span<const SequenceChunk> chunks, KvCache* cache,
                                   ExpertExecutor* experts,
                                   std::vector<std::vector<float>>* logits,
                                   std::vector<int32_t>* argmax) {
  MOESERVE_RETURN_IF_ERROR(CheckGeometry(*cache));
  return Forward(chunks, experts, logits, argmax);
}

absl::Status BackendModel::CopyBlock(KvCache* cache, int32_t src, int32_t dst, int64_t tokens) {
  MOESERVE_RETURN_IF_ERROR(CheckGeometry(*cache));
  const ModelConfig& c = model_->config();
  const int64_t row_bytes = c.latent_dim() * DTypeSize(options_.cache_dtype);
  const int64_t layer_bytes = options_.block_tokens * row_bytes;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    MOESERVE_RETURN_IF_ERROR(backend_->CopyWithin(BlockData(dst) + l * layer_bytes,
                                                  BlockData(src) + l * layer_bytes,
                                                  tokens * row_bytes));
  }
  return absl::OkStatus();
}

absl::Status BackendModel::WriteBlock(KvCache* cache, int32_t block, absl::string_view bytes) {
  MOESERVE_RETURN_IF_ERROR(CheckGeometry(*cache));
  const int64_t want = BlockBytes();
  if (static_cast<int64_t>(bytes.size()) != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("block of ", bytes.size(), " bytes, expected ", want));
  }
  return backend_->CopyToBackend(BlockData(block), bytes.data(), want);
}

absl::StatusOr<std::string> BackendModel::ReadBlock(const KvCache& cache, int32_t block) const {
  MOESERVE_RETURN_IF_ERROR(CheckGeometry(cache));
  return BlockBytesOf(block);
}

absl::Status BackendModel::Forward(absl::Span<const SequenceChunk> chunks,
                                   ExpertExecutor* experts,
                                   std::vector<std::vector<float>>* logits,
                                   std::vector<int32_t>* argmax) {
  const ModelConfig& c = model_->config();
  if (experts == nullptr) experts = model_->local_experts();
  const int64_t bt = options_.block_tokens;
  std::vector<TokenRef> refs;
  std::vector<int32_t> ids;
  MOESERVE_RETURN_IF_ERROR(FlattenChunks(c, chunks, bt, &refs, &ids));
  const int64_t heads = c.num_attention_heads, hidden = c.hidden_size;
  const int64_t layers = c.num_hidden_layers;
  const int64_t n = static_cast<int64_t>(refs.size());
  if (n == 0) {
    logits->clear();
    if (argmax != nullptr) argmax->clear();
    return absl::OkStatus();
  }

  // Host-side indices: positions, each query item's sequence and length, the block tables.
  int64_t max_blocks = 1;
  for (const SequenceChunk& ch : chunks) {
    const int64_t end = ch.start_pos + static_cast<int64_t>(ch.tokens.size());
    max_blocks = std::max(max_blocks, (end + bt - 1) / bt);
    for (int64_t b = 0; b < (end + bt - 1) / bt; ++b) {
      if (ch.block_table[b] < 0 || ch.block_table[b] >= options_.num_blocks) {
        return absl::InvalidArgumentError(
            absl::StrCat("block id ", ch.block_table[b], " outside the backend cache"));
      }
    }
  }
  // A graph step runs a padded batch: padding tokens (id 0 at position 0) attend to the first
  // sequence's first row, which is always written, and write no cache row (row -1).
  const bool graph = GraphStep(chunks, experts);
  const int64_t padded = graph ? GraphBatch(n) : n, items = padded * heads;
  if (graph) {
    int64_t width = 1;
    while (width < max_blocks) width *= 2;
    max_blocks = width;
  }
  const int64_t table_count = graph ? padded : static_cast<int64_t>(chunks.size());
  ids.resize(static_cast<size_t>(padded), 0);
  std::vector<int32_t> positions(padded, 0), table_rows(items, 0), lens(items, 1);
  std::vector<int32_t> tables(table_count * max_blocks, 0);
  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    const SequenceChunk& ch = chunks[ci];
    const int64_t blocks = (ch.start_pos + static_cast<int64_t>(ch.tokens.size()) + bt - 1) / bt;
    std::copy(ch.block_table.begin(), ch.block_table.begin() + blocks,
              tables.begin() + ci * max_blocks);
  }
  // Each token's cache row in layer 0 (rows of `lat` floats); layer l's is l * bt further.
  std::vector<int64_t> cache_rows(padded, -1);
  for (int64_t t = 0; t < n; ++t) {
    const SequenceChunk& ch = chunks[refs[t].chunk];
    cache_rows[t] = static_cast<int64_t>(ch.block_table[refs[t].pos / bt]) * layers * bt +
                    refs[t].pos % bt;
    positions[t] = static_cast<int32_t>(refs[t].pos);
    for (int64_t h = 0; h < heads; ++h) {
      table_rows[t * heads + h] = static_cast<int32_t>(refs[t].chunk);
      lens[t * heads + h] = static_cast<int32_t>(refs[t].pos + 1);
    }
  }
  Backend* b = backend_;
  auto upload = [b](int32_t* dst, const std::vector<int32_t>& v) {
    return b->CopyToBackend(dst, v.data(), static_cast<int64_t>(v.size() * sizeof(int32_t)));
  };
  MOESERVE_ASSIGN_OR_RETURN(int32_t* d_ids, Scratch<int32_t>(kIds, padded));
  MOESERVE_ASSIGN_OR_RETURN(int32_t* d_pos, Scratch<int32_t>(kPositions, padded));
  MOESERVE_ASSIGN_OR_RETURN(int32_t* d_rows, Scratch<int32_t>(kTableRows, items));
  MOESERVE_ASSIGN_OR_RETURN(int32_t* d_lens, Scratch<int32_t>(kLens, items));
  MOESERVE_ASSIGN_OR_RETURN(int32_t* d_tables, Scratch<int32_t>(kTables, tables.size()));
  MOESERVE_ASSIGN_OR_RETURN(int64_t* d_cache_rows, Scratch<int64_t>(kCacheRows, padded));
  MOESERVE_RETURN_IF_ERROR(upload(d_ids, ids));
  MOESERVE_RETURN_IF_ERROR(upload(d_pos, positions));
  MOESERVE_RETURN_IF_ERROR(upload(d_rows, table_rows));
  MOESERVE_RETURN_IF_ERROR(upload(d_lens, lens));
  MOESERVE_RETURN_IF_ERROR(upload(d_tables, tables));
  MOESERVE_RETURN_IF_ERROR(b->CopyToBackend(d_cache_rows, cache_rows.data(), padded * 8));

  if (graph) {
    MOESERVE_RETURN_IF_ERROR(GraphBody(padded, max_blocks, experts));
    return Outputs(chunks, logits, argmax);
  }
  MOESERVE_RETURN_IF_ERROR(Layers(n, max_blocks, experts));
  // Final norm and LM head for the last logits_tokens tokens of every chunk (LogitRows order).
  const std::vector<int64_t> rows = LogitRows(chunks);
  if (rows.empty()) {
    logits->clear();
    if (argmax != nullptr) argmax->clear();
    return b->Synchronize();
  }
  const int64_t nr = static_cast<int64_t>(rows.size());
  MOESERVE_ASSIGN_OR_RETURN(float* x, Scratch<float>(kX, n * hidden));
  // A decode step's rows are the step's consecutive tokens: the head reads them where they are.
  const float* head_in = x + rows[0] * hidden;
  if (rows.back() - rows.front() != nr - 1) {
    MOESERVE_ASSIGN_OR_RETURN(float* last, Scratch<float>(kLast, nr * hidden));
    for (int64_t i = 0; i < nr;) {
      const int64_t j = RunEnd(nr, i, [&](int64_t u, int64_t v) { return rows[v] == rows[u] + 1; });
      MOESERVE_RETURN_IF_ERROR(
          b->CopyWithin(last + i * hidden, x + rows[i] * hidden, (j - i) * hidden * 4));
      i = j;
    }
    head_in = last;
  }
  MOESERVE_RETURN_IF_ERROR(LmHead(head_in, nr));
  return Outputs(chunks, logits, argmax);
}

bool BackendModel::GraphStep(absl::Span<const SequenceChunk> chunks,
                             ExpertExecutor* experts) const {
  if (!options_.graphs || !graph_status_.ok() ||
      static_cast<int64_t>(chunks.size()) > options_.max_graph_batch) {
    return false;
  }
  for (const SequenceChunk& ch : chunks) {
    if (ch.tokens.size() != 1 || ch.logits_tokens != 1) return false;
  }
  for (int64_t l = 0; l < model_->config().num_hidden_layers; ++l) {
    if (model_->layer(l).moe && !experts->RunsOnBackend(backend_, l)) return false;
  }
  return true;
}

void BackendModel::SetGraphs(bool on) {
  options_.graphs = on;
  if (!on) graphs_.clear();
}

int64_t BackendModel::GraphBatch(int64_t n) {
  if (n <= 8) {
    int64_t b = 1;
    while (b < n) b *= 2;
    return b;
  }
  return (n + 7) / 8 * 8;
}

absl::Status BackendModel::GraphBody(int64_t n, int64_t max_blocks, ExpertExecutor* experts) {
  const int64_t hidden = model_->config().hidden_size;
  auto body = [&]() -> absl::Status {
    MOESERVE_RETURN_IF_ERROR(Layers(n, max_blocks, experts));
    MOESERVE_ASSIGN_OR_RETURN(float* x, Scratch<float>(kX, n * hidden));
    return LmHead(x, n);
  };
  const std::pair<int64_t, int64_t> key(n, max_blocks);
  if (graphs_epoch_ == scratch_epoch_) {
    auto it = graphs_.find(key);
    if (it != graphs_.end()) {
      absl::Status s = backend_->Replay(*it->second);
      if (s.ok()) {
        ++graph_replays_;
        return s;
      }
      // The backend's workspaces moved: this step runs op by op and is captured again.
      if (s.code() != absl::StatusCode::kFailedPrecondition) return s;
      graphs_.erase(it);
    }
  }
  // Op by op, which also sizes every buffer this shape needs, so that the capture allocates
  // nothing; then captured (the capture runs nothing) for the next step of this shape.
  MOESERVE_RETURN_IF_ERROR(body());
  if (graphs_epoch_ != scratch_epoch_) {
    graphs_.clear();
    graphs_epoch_ = scratch_epoch_;
  }
  MOESERVE_RETURN_IF_ERROR(backend_->BeginCapture());
  const absl::Status captured = body();
  absl::StatusOr<GraphPtr> graph = backend_->EndCapture();
  absl::Status failed = captured.ok() ? graph.status() : captured;
  if (failed.ok() && scratch_epoch_ != graphs_epoch_) {
    failed = absl::InternalError("a scratch buffer moved while capturing");
  }
  if (!failed.ok()) {
    graph_status_ = absl::Status(failed.code(), absl::StrCat("decode graphs turned off: capturing a "
                                                             "step failed: ",
                                                             failed.message()));
    graphs_.clear();
    LogError(graph_status_);
    return absl::OkStatus();  // this step's results are already computed
  }
  graphs_[key] = *std::move(graph);
  ++graphs_captured_;
  return absl::OkStatus();
}

absl::Status BackendModel::Layers(int64_t n, int64_t max_blocks, ExpertExecutor* experts) {
  const ModelConfig& c = model_->config();
  const int64_t bt = options_.block_tokens;
  const int64_t hidden = c.hidden_size, heads = c.num_attention_heads;
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vdim = c.v_head_dim;
  const int64_t qhd = c.q_head_dim(), kvr = c.kv_lora_rank, lat = c.latent_dim();
  const int64_t layers = c.num_hidden_layers;
  const int64_t items = n * heads;
  Backend* b = backend_;
  MOESERVE_ASSIGN_OR_RETURN(int32_t* d_ids, Scratch<int32_t>(kIds, n));
  MOESERVE_ASSIGN_OR_RETURN(int32_t* d_pos, Scratch<int32_t>(kPositions, n));
  MOESERVE_ASSIGN_OR_RETURN(int32_t* d_rows, Scratch<int32_t>(kTableRows, items));
  MOESERVE_ASSIGN_OR_RETURN(int32_t* d_lens, Scratch<int32_t>(kLens, items));
  // The block tables' slot as Forward sized and filled it.
  MOESERVE_ASSIGN_OR_RETURN(int32_t* d_tables, Scratch<int32_t>(kTables, 1));
  MOESERVE_ASSIGN_OR_RETURN(int64_t* d_cache_rows, Scratch<int64_t>(kCacheRows, n));
  const int64_t qr = c.q_lora_rank ? *c.q_lora_rank : 0;
  MOESERVE_ASSIGN_OR_RETURN(float* x, Scratch<float>(kX, n * hidden));
  MOESERVE_ASSIGN_OR_RETURN(float* xn, Scratch<float>(kXn, n * hidden));
  MOESERVE_ASSIGN_OR_RETURN(float* qa, Scratch<float>(kQa, n * qr));
  MOESERVE_ASSIGN_OR_RETURN(float* q, Scratch<float>(kQ, n * heads * qhd));
  MOESERVE_ASSIGN_OR_RETURN(float* kva, Scratch<float>(kKva, n * lat));
  MOESERVE_ASSIGN_OR_RETURN(float* qfull, Scratch<float>(kQfull, items * lat));
  MOESERVE_ASSIGN_OR_RETURN(float* olat, Scratch<float>(kOlat, items * kvr));
  MOESERVE_ASSIGN_OR_RETURN(float* attn, Scratch<float>(kAttn, n * heads * vdim));
  MOESERVE_ASSIGN_OR_RETURN(float* tmp, Scratch<float>(kTmp, n * hidden));
  MOESERVE_ASSIGN_OR_RETURN(float* mlp, Scratch<float>(kMlp, n * hidden));
  char* cache = static_cast<char*>(cache_->data());
  const int64_t cache_row_bytes = lat * DTypeSize(options_.cache_dtype);
  auto gemm = [b](const float* in, int64_t m, int64_t ldx, const DeviceTensor& w, float* out,
                  int64_t ldy) { return b->Gemm({in, m, ldx, w.view, out, ldy}); };
  auto norm = [b, &c](const float* in, int64_t ld_in, const DeviceTensor& w, float* out,
                      int64_t ld_out, int64_t rows, int64_t dim) {
    return b->RmsNorm({in, ld_in, w.f32(), out, ld_out, rows, dim, c.rms_norm_eps});
  };
  // out[n, hidden] = down(silu(gate(xn)) * up(xn)): the dense MLP or the shared experts.
  auto dense = [&](const Weights::Layer& w, float* out) -> absl::Status {
    const int64_t inter = w.gate.view.rows;
    MOESERVE_ASSIGN_OR_RETURN(float* g, Scratch<float>(kG, n * inter));
    MOESERVE_ASSIGN_OR_RETURN(float* u, Scratch<float>(kU, n * inter));
    MOESERVE_RETURN_IF_ERROR(gemm(xn, n, hidden, w.gate, g, inter));
    MOESERVE_RETURN_IF_ERROR(gemm(xn, n, hidden, w.up, u, inter));
    MOESERVE_RETURN_IF_ERROR(b->SiluMul(g, u, n * inter, g));
    return gemm(g, n, inter, w.down, out, hidden);
  };

  EmbeddingArgs emb;
  emb.table = w_->embed.view.data;
  emb.dtype = w_->embed.view.dtype;
  emb.vocab = w_->embed.view.rows;
  emb.dim = hidden;
  emb.ids = d_ids;
  emb.rows = n;
  emb.out = x;
  MOESERVE_RETURN_IF_ERROR(b->Embedding(emb));
  const float scale = static_cast<float>(c.SoftmaxScale());
  std::vector<float> host_xn, host_weights, host_out;
  std::vector<int32_t> host_chosen;
  for (int64_t l = 0; l < layers; ++l) {
    const Weights::Layer& w = w_->layers[l];
    const LayerWeights& lw = model_->layer(l);
    MOESERVE_RETURN_IF_ERROR(norm(x, hidden, w.input_norm, xn, hidden, n, hidden));
    if (qr > 0) {
      MOESERVE_RETURN_IF_ERROR(gemm(xn, n, hidden, w.q_a, qa, qr));
      MOESERVE_RETURN_IF_ERROR(gemm(xn, n, hidden, w.kv_a, kva, lat));
      MOESERVE_RETURN_IF_ERROR(norm(qa, qr, w.q_a_norm, qa, qr, n, qr));
      MOESERVE_RETURN_IF_ERROR(gemm(qa, n, qr, w.q_b, q, heads * qhd));
    } else {
      MOESERVE_RETURN_IF_ERROR(gemm(xn, n, hidden, w.q, q, heads * qhd));
      MOESERVE_RETURN_IF_ERROR(gemm(xn, n, hidden, w.kv_a, kva, lat));
    }
    // The cache row: the normalised latent, then the rotated rope key.
    MOESERVE_RETURN_IF_ERROR(norm(kva, lat, w.kv_a_norm, kva, lat, n, kvr));
    RopeArgs r;
    r.x = kva;
    r.rows = n;
    r.ld = lat;
    r.offset = kvr;
    r.dim = rope;
    r.positions = d_pos;
    r.inv_freq = w_->inv_freq.f32();
    r.mscale = model_->rope_mscale();
    MOESERVE_RETURN_IF_ERROR(b->Rope(r));
    r.x = q;
    r.rows = items;
    r.ld = qhd;
    r.offset = nope;
    r.rows_per_position = heads;
    MOESERVE_RETURN_IF_ERROR(b->Rope(r));
    // The new latents into their cache rows, one scatter for every token of the step.
    ScatterRowsArgs sr;
    sr.src = kva;
    sr.ld_src = lat;
    sr.n = n;
    sr.width = lat;
    sr.rows = d_cache_rows;
    sr.dst = cache + l * bt * cache_row_bytes;
    sr.ld_dst = lat;
    sr.dst_dtype = options_.cache_dtype;
    MOESERVE_RETURN_IF_ERROR(b->ScatterRows(sr));
    // Queries in the latent space: q_nope absorbed through kv_b's key rows, then q_rope.
    // One batched product over the heads.
    const auto per_head = [&](const float* in, int64_t ld_in, const DeviceTensor& wt, float* out,
                              int64_t ld_out) {
      GemmArgs g{in, n, heads * ld_in, wt.view, out, heads * ld_out};
      g.batch = heads;
      g.stride_x = ld_in;
      g.stride_w = wt.view.rows * wt.view.cols;
      g.stride_y = ld_out;
      return b->Gemm(g);
    };
    MOESERVE_RETURN_IF_ERROR(per_head(q, qhd, w.uk_t, qfull, lat));
    MOESERVE_RETURN_IF_ERROR(
        b->CopyWithin2D(qfull + kvr, lat * 4, q + nope, qhd * 4, items, rope * 4));
    LatentAttentionArgs a;
    a.q = qfull;
    a.ldq = lat;
    a.items = items;
    a.group = heads;
    a.table_rows = d_rows;
    a.lens = d_lens;
    a.block_tables = d_tables;
    a.max_blocks = max_blocks;
    a.cache = cache;
    a.cache_dtype = options_.cache_dtype;
    a.num_layers = layers;
    a.layer = l;
    a.block_tokens = bt;
    a.lat = lat;
    a.kvr = kvr;
    a.scale = scale;
    a.out = olat;
    a.ld_out = kvr;
    MOESERVE_RETURN_IF_ERROR(b->LatentAttention(a));
    MOESERVE_RETURN_IF_ERROR(per_head(olat, kvr, w.uv, attn, vdim));
    MOESERVE_RETURN_IF_ERROR(gemm(attn, n, heads * vdim, w.o, tmp, hidden));
    MOESERVE_RETURN_IF_ERROR(b->Add(x, tmp, n * hidden));
    MOESERVE_RETURN_IF_ERROR(norm(x, hidden, w.post_norm, xn, hidden, n, hidden));
    if (!lw.moe) {
      MOESERVE_RETURN_IF_ERROR(dense(w, mlp));
    } else {
      const int64_t e = c.n_routed_experts, k = c.num_experts_per_tok;
      MOESERVE_ASSIGN_OR_RETURN(float* gate_logits, Scratch<float>(kGateLogits, n * e));
      MOESERVE_ASSIGN_OR_RETURN(float* weights, Scratch<float>(kWeights, n * k));
      MOESERVE_ASSIGN_OR_RETURN(int32_t* chosen, Scratch<int32_t>(kChosen, n * k));
      MOESERVE_RETURN_IF_ERROR(gemm(xn, n, hidden, w.router, gate_logits, e));
      GateArgs g;
      g.logits = gate_logits;
      g.bias = w.router_bias.f32();
      g.tokens = n;
      g.config = GateConfigFrom(c);
      g.ids = chosen;
      g.weights = weights;
      MOESERVE_RETURN_IF_ERROR(b->Gate(g));
      // The routed experts run where the executor puts them: on this backend with the routing
      // left in its memory, or through the host (in-process, or on expert shards).
      if (experts->RunsOnBackend(b, l)) {
        MOESERVE_RETURN_IF_ERROR(experts->RunOnBackend(l, xn, n, k, chosen, weights, mlp));
      } else {
        host_xn.resize(n * hidden);
        host_chosen.resize(n * k);
        host_weights.resize(n * k);
        host_out.resize(n * hidden);
        MOESERVE_RETURN_IF_ERROR(b->CopyToHost(host_xn.data(), xn, n * hidden * 4));
        MOESERVE_RETURN_IF_ERROR(b->CopyToHost(host_chosen.data(), chosen, n * k * 4));
        MOESERVE_RETURN_IF_ERROR(b->CopyToHost(host_weights.data(), weights, n * k * 4));
        MOESERVE_RETURN_IF_ERROR(experts->Run(l, host_xn.data(), n, k, host_chosen.data(),
                                              host_weights.data(), host_out.data()));
        MOESERVE_RETURN_IF_ERROR(b->CopyToBackend(mlp, host_out.data(), n * hidden * 4));
      }
      if (lw.has_shared) {
        // x += mlp + shared, summed as Model::Forward sums them.
        MOESERVE_RETURN_IF_ERROR(dense(w, tmp));
        MOESERVE_RETURN_IF_ERROR(b->Add(mlp, tmp, n * hidden));
      }
    }
    MOESERVE_RETURN_IF_ERROR(b->Add(x, mlp, n * hidden));
  }
  return absl::OkStatus();
}

absl::Status BackendModel::LmHead(const float* in, int64_t rows) {
  const ModelConfig& c = model_->config();
  const int64_t hidden = c.hidden_size;
  MOESERVE_ASSIGN_OR_RETURN(float* normed, Scratch<float>(kNormed, rows * hidden));
  MOESERVE_ASSIGN_OR_RETURN(float* out, Scratch<float>(kLogits, rows * c.vocab_size));
  MOESERVE_RETURN_IF_ERROR(
      backend_->RmsNorm({in, hidden, w_->final_norm.f32(), normed, hidden, rows, hidden,
                         c.rms_norm_eps}));
  return backend_->Gemm({normed, rows, hidden, w_->lm_head.view, out, c.vocab_size});
}

absl::Status BackendModel::Outputs(absl::Span<const SequenceChunk> chunks,
                                   std::vector<std::vector<float>>* logits,
                                   std::vector<int32_t>* argmax) {
  Backend* b = backend_;
  // Per row, the vocab its argmax is taken over (0: the row goes back whole).
  std::vector<int64_t> row_argmax;
  for (const SequenceChunk& ch : chunks) {
    row_argmax.insert(row_argmax.end(), static_cast<size_t>(ch.logits_tokens),
                      argmax != nullptr ? ch.argmax_vocab : 0);
  }
  if (argmax != nullptr) argmax->clear();
  const int64_t nr = static_cast<int64_t>(row_argmax.size()), vocab = model_->config().vocab_size;
  MOESERVE_ASSIGN_OR_RETURN(float* out, Scratch<float>(kLogits, nr * vocab));
  // Greedy rows: the argmax on the backend, one launch per run of rows with the same vocab.
  auto same_argmax = [&](int64_t u, int64_t v) { return row_argmax[v] == row_argmax[u]; };
  const int64_t plain = std::count(row_argmax.begin(), row_argmax.end(), 0);
  std::vector<int32_t> found;
  if (plain < nr) {
    MOESERVE_ASSIGN_OR_RETURN(int32_t* d_found, Scratch<int32_t>(kArgmaxIds, nr));
    for (int64_t i = 0; i < nr;) {
      const int64_t j = RunEnd(nr, i, same_argmax);
      if (row_argmax[i] > 0) {
        MOESERVE_RETURN_IF_ERROR(
            b->Argmax({out + i * vocab, vocab, j - i, row_argmax[i], d_found + i}));
      }
      i = j;
    }
    found.resize(static_cast<size_t>(nr));
    MOESERVE_RETURN_IF_ERROR(b->CopyToHost(found.data(), d_found, nr * 4));
    for (int64_t i = 0; i < nr; ++i) {
      if (row_argmax[i] > 0) argmax->push_back(found[i]);
    }
  }
  logits->resize(static_cast<size_t>(plain));
  if (plain == 0) return b->Synchronize();
  const int64_t bytes = plain * vocab * 4;
  if (logits_host_ == nullptr || logits_host_->bytes() < bytes) {
    logits_host_.reset();
    MOESERVE_ASSIGN_OR_RETURN(logits_host_, b->Allocate(bytes + bytes / 2, MemoryType::kPinned));
  }
  float* host = static_cast<float*>(logits_host_->data());
  int64_t copied = 0;
  for (int64_t i = 0; i < nr;) {
    const int64_t j = RunEnd(nr, i, same_argmax);
    if (row_argmax[i] == 0) {
      MOESERVE_RETURN_IF_ERROR(
          b->CopyToHost(host + copied * vocab, out + i * vocab, (j - i) * vocab * 4));
      copied += j - i;
    }
    i = j;
  }
  // The caller's vectors keep their memory from step to step (assign reuses the capacity), so a
  // large batch does not fault in fresh pages for every row of logits.
  for (int64_t i = 0; i < plain; ++i) {
    (*logits)[i].assign(host + i * vocab, host + (i + 1) * vocab);
  }
  return absl::OkStatus();
}

}  // namespace moeserve::engine
