#ifndef MOESERVE_COMMON_STATUS_MACROS_H_
#define MOESERVE_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Debian's abseil ships neither of these, so we define our own.

#define MOESERVE_STATUS_CONCAT_INNER_(a, b) a##b
#define MOESERVE_STATUS_CONCAT_(a, b) MOESERVE_STATUS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define MOESERVE_RETURN_IF_ERROR(expr)                          \
  do {                                                          \
    ::absl::Status moeserve_status_ = (expr);                   \
    if (!moeserve_status_.ok()) return moeserve_status_;        \
  } while (0)

// `lhs = *expr` when `expr` (a StatusOr) is OK; otherwise returns its status.
#define MOESERVE_ASSIGN_OR_RETURN(lhs, expr) \
  MOESERVE_ASSIGN_OR_RETURN_IMPL_(MOESERVE_STATUS_CONCAT_(moeserve_statusor_, __LINE__), lhs, expr)

#define MOESERVE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return tmp.status();                   \
  lhs = std::move(*tmp)

#endif  // MOESERVE_COMMON_STATUS_MACROS_H_
