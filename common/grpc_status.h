#ifndef MOESERVE_COMMON_GRPC_STATUS_H_
#define MOESERVE_COMMON_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace moeserve {

// The one place that converts between absl::Status and grpc::Status (STYLE.md). Both use the
// canonical code numbering, so the code is carried over by number and the message unchanged.
// Header-only so that it adds no link dependency to moeserve::common; users link gRPC already.

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(status.code())),
                      std::string(status.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(static_cast<int>(status.error_code())),
                      status.error_message());
}

}  // namespace moeserve

#endif  // MOESERVE_COMMON_GRPC_STATUS_H_
