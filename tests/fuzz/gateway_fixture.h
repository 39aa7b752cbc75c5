#ifndef MOESERVE_TESTS_FUZZ_GATEWAY_FIXTURE_H_
#define MOESERVE_TESTS_FUZZ_GATEWAY_FIXTURE_H_

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer.h"
#include "gateway/call_registry.h"
#include "gateway/gateway_metrics.h"
#include "gateway/model_context.h"
#include "gateway/price_table.h"
#include "tests/integration/gateway/fake_generation_backend.h"
#include "tests/unit/gateway/test_model.h"

namespace moeserve::fuzz {

// What the gateway's front ends (HTTP sessions, the gRPC Inference service) share, over the
// test model and a fake backend that answers every generation with a short script (reasoning,
// </think>, an answer). Made once per process and never destroyed (server threads may still
// use it at exit).
struct GatewayFixture {
  std::unique_ptr<gateway::ModelContext> model;
  std::unique_ptr<gateway::PriceTable> prices;
  std::unique_ptr<gateway::GatewayMetrics> metrics;
  std::unique_ptr<gateway::testing::FakeGenerationBackend> backend;
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
      return g;
    }();
    return *f;
  }
};

}  // namespace moeserve::fuzz

#endif  // MOESERVE_TESTS_FUZZ_GATEWAY_FIXTURE_H_
