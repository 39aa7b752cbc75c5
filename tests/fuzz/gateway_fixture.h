#ifndef MOESERVE_TESTS_FUZZ_GATEWAY_FIXTURE_H_
#define MOESERVE_TESTS_FUZZ_GATEWAY_FIXTURE_H_

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tokenizer.h"
#include "gateway/call_registry.h"
#include "gateway/gateway_metrics.h"
#include "gateway/model_context.h"
#include "gateway/price_table.h"
#include "tests/integration/gateway/fake_generation_backend.h"
#include "tests/unit/gateway/test_model.h"

namespace moeserve::fuzz {

// The fake backend holds a request whose max_new_tokens is kHoldMaxTokens open until Cancel()
// (to test a client leaving). The HTTP target keeps that (its client always leaves, so the hold
// ends by cancellation); a gRPC client waits for the end of the stream, so the Inference target
// maps that one value to its neighbour.
class NoHoldBackend final : public gateway::GenerationBackend {
 public:
  explicit NoHoldBackend(gateway::GenerationBackend* inner) : inner_(inner) {}
  gateway::GenerationCallPtr Start(gateway::GenerationRequest request,
                                   gateway::GenerationCallbacks callbacks) override {
    if (request.max_new_tokens == gateway::testing::FakeGenerationBackend::kHoldMaxTokens) {
      --request.max_new_tokens;
    }
    return inner_->Start(std::move(request), std::move(callbacks));
  }

 private:
  gateway::GenerationBackend* const inner_;
};

// What the gateway's front ends (HTTP sessions, the gRPC Inference service) share, over the
// test model and a fake backend that answers every generation with a short script (reasoning,
// </think>, an answer). Made once per process and never destroyed (server threads may still
// use it at exit).
struct GatewayFixture {
  std::unique_ptr<gateway::ModelContext> model;
  std::unique_ptr<gateway::PriceTable> prices;
  std::unique_ptr<gateway::GatewayMetrics> metrics;
  std::unique_ptr<gateway::testing::FakeGenerationBackend> backend;
  std::unique_ptr<NoHoldBackend> no_hold_backend;  // over `backend`
  gateway::CallRegistry calls;

  static GatewayFixture& Get() {
    static GatewayFixture* f = [] {
      auto* g = new GatewayFixture();
      g->model = gateway::testing::LoadTestModel();
      if (g->model == nullptr) {
        std::fprintf(stderr, "fuzz: cannot load the gateway's test model\n");
        std::abort();
      }
      g->prices = std::make_unique<gateway::PriceTable>(gateway::PriceTable::Default());
      g->metrics = std::make_unique<gateway::GatewayMetrics>(g->prices.get());
      g->metrics->Preinitialize(g->model->name);
      engine::EncodeOptions opts;
      opts.add_special_tokens = false;
      std::vector<int32_t> script =
          g->model->tokenizer->Encode("Let me think.</think>\n\nHello, fuzz!", opts).value();
      g->backend = std::make_unique<gateway::testing::FakeGenerationBackend>(script, 1);
      g->no_hold_backend = std::make_unique<NoHoldBackend>(g->backend.get());
      return g;
    }();
    return *f;
  }
};

}  // namespace moeserve::fuzz

#endif  // MOESERVE_TESTS_FUZZ_GATEWAY_FIXTURE_H_
