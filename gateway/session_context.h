#ifndef MOESERVE_GATEWAY_SESSION_CONTEXT_H_
#define MOESERVE_GATEWAY_SESSION_CONTEXT_H_

#include "gateway/call_registry.h"
#include "gateway/gateway_metrics.h"
#include "gateway/generation_backend.h"
#include "gateway/model_context.h"
#include "gateway/price_table.h"

namespace moeserve::gateway {

// What every HTTP connection shares. Nothing here is owned; all of it outlives the server.
struct SessionContext {
  const ModelContext* model = nullptr;
  GenerationBackend* backend = nullptr;
  CallRegistry* calls = nullptr;
  const PriceTable* prices = nullptr;
  GatewayMetrics* metrics = nullptr;
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_SESSION_CONTEXT_H_
