#include "engine/model/local_experts.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/cpu/linear.h"
#include "engine/model.h"
#include "engine/model/ops.h"
#include "engine/model/scratch.h"

namespace moeserve::engine {
namespace {

// One used expert: its rows of the gathered activations.
struct UsedExpert {
  int64_t expert;
  int64_t first_row;
  int64_t rows;
};

}  // namespace

absl::Status GroupSlotsByExpert(const int32_t* ids, int64_t slots, int64_t n_experts,
                                std::vector<int64_t>* start, std::vector<int64_t>* row_of_slot) {
  start->assign(n_experts + 1, 0);
  for (int64_t i = 0; i < slots; ++i) {
    const int32_t e = ids[i];
    if (e < 0 || e >= n_experts) {
      return absl::InvalidArgumentError(absl::StrCat("expert id ", e, " out of range"));
    }
    ++(*start)[e + 1];
  }
  for (int64_t e = 0; e < n_experts; ++e) (*start)[e + 1] += (*start)[e];
  row_of_slot->resize(slots);
  std::vector<int64_t> fill(start->begin(), start->end() - 1);
  for (int64_t i = 0; i < slots; ++i) (*row_of_slot)[i] = fill[ids[i]]++;
  return absl::OkStatus();
}

void CombineSlots(const float* ys, const int64_t* row_of_slot, const float* weights, int64_t k,
                  int64_t hidden, int64_t t0, int64_t t1, float* out) {
  for (int64_t t = t0; t < t1; ++t) {
    float* o = out + t * hidden;
    std::memset(o, 0, sizeof(float) * hidden);
    for (int64_t j = 0; j < k; ++j) {
      ops::AddScaled(weights[t * k + j], &ys[row_of_slot[t * k + j] * hidden], hidden, o);
    }
  }
}

absl::Status LocalExpertExecutor::Run(int64_t layer, const float* x, int64_t n, int64_t k,
                                      const int32_t* ids, const float* weights, float* out) {
  const ModelConfig& c = model_->config();
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.moe_intermediate_size;
  // Sort the (token, slot) pairs by expert: rows [start[e], start[e + 1]) of the gathered
  // activations are expert e's tokens.
  std::vector<int64_t> start, row_of_slot;
  absl::Status grouped = GroupSlotsByExpert(ids, n * k, c.n_routed_experts, &start, &row_of_slot);
  if (!grouped.ok()) return grouped;
  const int64_t rows = n * k;
  // Forward's arena is this thread's too, but its pieces are live: this executor has its own.
  thread_local ScratchArena arena;
  arena.Reset();
  float* xs = arena.Alloc<float>(rows * hidden);
  float* g = arena.Alloc<float>(rows * inter);
  float* u = arena.Alloc<float>(rows * inter);
  float* ys = arena.Alloc<float>(rows * hidden);
  // Tokens are independent: a prefill's gather and combine run on the pool.
  ThreadPool* pool = n >= 64 ? model_->pool() : nullptr;
  std::vector<UsedExpert> used;
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    const int64_t m = start[e + 1] - start[e];
    if (m == 0) continue;
    if (!model_->expert(layer, e).loaded) {
      return absl::FailedPreconditionError(
          absl::StrCat("expert ", e, " of layer ", layer, " is not loaded in this process"));
    }
    used.push_back({e, start[e], m});
  }
  const int threads = pool == nullptr ? 1 : pool->num_threads();
  int64_t largest = 0;
  for (const UsedExpert& p : used) largest = std::max(largest, p.rows);
  if (threads > 1 && rows >= cpu::kMinRowsPerThread * threads * k && largest * threads <= rows) {
    // A prefill where no expert has more than a thread's share of the rows: each thread takes
    // whole experts (the largest first, each to the least loaded thread) and runs gather, gate
    // and up, SiluMul and down for them alone, so an expert's rows stay in the cache of the core
    // that gathered them. Each product runs single-threaded, with the bits the split over columns
    // gives.
    std::vector<int64_t> token_of_row(rows);
    for (int64_t i = 0; i < rows; ++i) token_of_row[row_of_slot[i]] = i / k;
    std::vector<size_t> order(used.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return used[a].rows > used[b].rows; });
    std::vector<std::vector<size_t>> mine(threads);
    std::vector<int64_t> load(threads, 0);
    for (size_t i : order) {
      const size_t t =
          static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
      mine[t].push_back(i);
      load[t] += used[i].rows;
    }
    pool->RunOnAll([&](int t) {
      for (size_t i : mine[t]) {
        const UsedExpert& p = used[i];
        const ExpertWeights& w = model_->expert(layer, p.expert);
        for (int64_t r = p.first_row; r < p.first_row + p.rows; ++r) {
          std::memcpy(&xs[r * hidden], x + token_of_row[r] * hidden, sizeof(float) * hidden);
        }
        float* gp = &g[p.first_row * inter];
        float* up = &u[p.first_row * inter];
        const float* xp = &xs[p.first_row * hidden];
        cpu::Linear(xp, p.rows, hidden, w.gate, gp, inter, nullptr);
        cpu::Linear(xp, p.rows, hidden, w.up, up, inter, nullptr);
        ops::SiluMul(gp, up, p.rows * inter, gp);
        cpu::Linear(gp, p.rows, inter, w.down, &ys[p.first_row * hidden], hidden, nullptr);
      }
    });
  } else {
    auto gather = [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        std::memcpy(&xs[row_of_slot[i] * hidden], x + (i / k) * hidden, sizeof(float) * hidden);
      }
    };
    if (pool != nullptr) {
      pool->ParallelFor(rows, 64, gather);
    } else {
      gather(0, rows);
    }
    // Every used expert's gate and up products in one parallel region, then every down product
    // in another.
    std::vector<cpu::LinearJob> jobs;
    for (const UsedExpert& p : used) {
      const ExpertWeights& w = model_->expert(layer, p.expert);
      const int64_t r0 = p.first_row;
      jobs.push_back({&xs[r0 * hidden], p.rows, hidden, &w.gate, &g[r0 * inter], inter});
      jobs.push_back({&xs[r0 * hidden], p.rows, hidden, &w.up, &u[r0 * inter], inter});
    }
    cpu::LinearMany(jobs, model_->pool());
    ops::SiluMul(g, u, rows * inter, g, model_->pool());
    jobs.clear();
    for (const UsedExpert& p : used) {
      const ExpertWeights& w = model_->expert(layer, p.expert);
      jobs.push_back({&g[p.first_row * inter], p.rows, inter, &w.down, &ys[p.first_row * hidden],
                      hidden});
    }
    cpu::LinearMany(jobs, model_->pool());
  }
  auto combine = [&](int64_t t0, int64_t t1) {
    CombineSlots(ys, row_of_slot.data(), weights, k, hidden, t0, t1, out);
  };
  if (pool != nullptr && n >= cpu::kMinRowsPerThread * threads) {
    // Tokens shared out as the model's prefill stages share them (cpu::RowsBefore), so the
    // thread that adds a token's output to its residual next reads it from its own cache.
    pool->RunOnAll([&](int i) {
      combine(cpu::RowsBefore(n, i, threads), cpu::RowsBefore(n, i + 1, threads));
    });
  } else if (pool != nullptr) {
    pool->ParallelFor(n, 32, combine);
  } else {
    combine(0, n);
  }
  return absl::OkStatus();
}

}  // namespace moeserve::engine
