#ifndef MOESERVE_TESTS_TESTING_KERNEL_SCOPE_H_
#define MOESERVE_TESTS_TESTING_KERNEL_SCOPE_H_

#include <string>

#include "engine/cpu/linear.h"
#include "engine/cpu/linear_internal.h"
#include "gtest/gtest.h"

namespace moeserve::testing {

// Switches the CPU kernel family (Linear, and attention with it) for one test and restores the
// previous one afterwards.
class KernelScope {
 public:
  explicit KernelScope(const std::string& name) : saved_(engine::cpu::LinearKernelName()) {
    EXPECT_TRUE(engine::cpu::SetLinearKernel(name).ok()) << name;
  }
  ~KernelScope() { EXPECT_TRUE(engine::cpu::SetLinearKernel(saved_).ok()); }

 private:
  std::string saved_;
};

}  // namespace moeserve::testing

#endif  // MOESERVE_TESTS_TESTING_KERNEL_SCOPE_H_
