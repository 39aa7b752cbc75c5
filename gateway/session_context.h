#ifndef MOESERVE_GATEWAY_SESSION_CONTEXT_H_
#define MOESERVE_GATEWAY_SESSION_CONTEXT_H_

#include "absl/time/time.h"
#include "gateway/api_keys.h"
#include "gateway/batch_manager.h"
#include "gateway/call_registry.h"
#include "gateway/gateway_metrics.h"
#include "gateway/generation_backend.h"
#include "gateway/model_context.h"
#include "gateway/price_table.h"
#include "gateway/stream_registry.h"

namespace moeserve::gateway {

// What every HTTP connection shares. Nothing here is owned; all of it outlives the server.
struct SessionContext {
  const ModelContext* model = nullptr;
  GenerationBackend* backend = nullptr;
  CallRegistry* calls = nullptr;
  const PriceTable* prices = nullptr;
  GatewayMetrics* metrics = nullptr;
  ApiKeyStore* keys = nullptr;  // null: no API keys (every request is served, unauthenticated)
  // A streaming response with no token yet gets an SSE comment this often (zero: never).
  absl::Duration sse_keepalive = absl::ZeroDuration();
  StreamRegistry* streams = nullptr;  // null: streams are not resumable
  BatchManager* batches = nullptr;    // null: no Batch API (/v1/files, /v1/batches 404)
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_SESSION_CONTEXT_H_
