#ifndef MOESERVE_EXPERT_SHARD_TRANSPORT_COLLECTIVE_PROTOCOL_H_
#define MOESERVE_EXPERT_SHARD_TRANSPORT_COLLECTIVE_PROTOCOL_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "expert-shard/transport/activation_transport.h"

// The messages of the collective expert exchange (CollectiveTransport on the worker, rank 0;
// ServeCollective on shard s, rank 1 + s), shared by both sides and by every PeerGroup. One
// exchange of one MoE layer is three PeerGroup calls on each side, posted in the same order:
//   1. header: the worker sends each shard of the exchange a fixed-size header (the experts and
//      their row counts, "counts first"), so that the shard can size what follows;
//   2. rows: the worker sends each shard its sum(counts) * hidden float32 rows;
//   3. reply: each shard sends a fixed-size status block, then one output row per input row
//      (zeros when the status is not OK, so the sizes never depend on success).
// Zero-row batches send no rows (both sides skip the zero-byte messages). A header with op kStop
// ends the shard's serving loop. Every machine we run on is little-endian; the bytes are raw.
namespace moeserve::expert_shard::collective {

inline constexpr int64_t kMagic = 0x6d6f65436f6c6c31;  // "moeColl1"
// Largest rows payload a shard accepts from one header (a sanity bound against a corrupt header,
// far above any real batch: 2^20 rows of a 7168-wide model is 28 GiB).
inline constexpr int64_t kMaxRowBytes = int64_t{1} << 36;

enum class Op : int64_t { kExchange = 1, kStop = 2 };

struct Header {
  Op op = Op::kExchange;
  uint64_t step = 0;
  int64_t layer = 0;
  int64_t hidden = 0;
  std::vector<int32_t> experts;  // ascending, at most n_routed of them
  std::vector<int64_t> counts;
};

// The header's size in int64 words for a model of `n_routed` routed experts (both sides know it).
inline int64_t HeaderWords(int64_t n_routed) { return 6 + 2 * n_routed; }

// Writes `header` into HeaderWords(n_routed) words. The caller has checked the batch
// (CheckBatch); experts.size() <= n_routed.
void EncodeHeader(const Header& header, int64_t n_routed, std::vector<int64_t>* words);
// Internal for a corrupt header (bad magic, unknown op, entry count beyond n_routed, negative
// counts or width, or a rows payload beyond kMaxRowBytes): the two sides are out of step.
absl::Status DecodeHeader(absl::Span<const int64_t> words, int64_t n_routed, Header* header);

// Bytes of the rows (and of the outputs) a header announces.
int64_t RowBytes(const Header& header);

// Checks what the worker is about to send: experts ascending in [0, n_routed), counts >= 0 and of
// the same length, sum(counts) * hidden floats of rows. InvalidArgument naming the problem.
absl::Status CheckBatch(const ShardBatch& batch, int64_t hidden, int64_t n_routed);

// The status block of a reply: code and the first kMessageBytes bytes of the message.
inline constexpr int64_t kMessageBytes = 488;
struct Reply {
  int64_t magic = kMagic;
  int64_t code = 0;
  int64_t message_bytes = 0;
  char message[kMessageBytes] = {};
};
static_assert(sizeof(Reply) == 512);

void EncodeReply(const absl::Status& status, Reply* reply);
// The status the shard sent; Internal for a corrupt block.
absl::Status DecodeReply(const Reply& reply);

}  // namespace moeserve::expert_shard::collective

#endif  // MOESERVE_EXPERT_SHARD_TRANSPORT_COLLECTIVE_PROTOCOL_H_
