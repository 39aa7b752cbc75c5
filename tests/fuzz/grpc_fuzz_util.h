#ifndef MOESERVE_TESTS_FUZZ_GRPC_FUZZ_UTIL_H_
#define MOESERVE_TESTS_FUZZ_GRPC_FUZZ_UTIL_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/grpcpp.h"
#include "tests/fuzz/fuzz_util.h"

namespace moeserve::fuzz {

// A gRPC server with no listening port; calls reach the service over gRPC's in-process transport
// (InProcessChannel), so each fuzz input runs the service's real handler, reactor and
// (de)serialization code without sockets. Made once per process and never destroyed.
struct InProcessServer {
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;

  static InProcessServer* Start(grpc::Service* service) {
    // Proto3 strings with invalid UTF-8 fail to parse (as they should) and protobuf logs each
    // one; the fuzzer makes thousands.
    google::protobuf::SetLogHandler(nullptr);
    auto* s = new InProcessServer();
    grpc::ServerBuilder builder;
    builder.RegisterService(service);
    builder.SetMaxReceiveMessageSize(-1);
    builder.SetMaxSendMessageSize(-1);
    s->server = builder.BuildAndStart();
    if (s->server == nullptr) {
      std::fprintf(stderr, "fuzz: cannot start the in-process gRPC server\n");
      std::abort();
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    s->channel = s->server->InProcessChannel(args);
    // Kept reachable so that LeakSanitizer's check at exit does not report the harness.
    static std::vector<InProcessServer*>* servers = new std::vector<InProcessServer*>();
    servers->push_back(s);
    return s;
  }
};

// A call's context with a deadline: a call still running after it counts as a hang.
inline std::unique_ptr<grpc::ClientContext> FuzzContext() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return context;
}

// Bad input must come back as a clear status: never UNKNOWN (an unmapped failure), INTERNAL or
// DATA_LOSS (a bug), nor DEADLINE_EXCEEDED (a hang: no answer within FuzzContext's deadline).
inline void CheckStatus(const grpc::Status& status, absl::string_view method) {
  const grpc::StatusCode c = status.error_code();
  MOESERVE_FUZZ_ASSERT(c != grpc::StatusCode::UNKNOWN && c != grpc::StatusCode::INTERNAL &&
                           c != grpc::StatusCode::DATA_LOSS &&
                           c != grpc::StatusCode::DEADLINE_EXCEEDED,
                       absl::StrCat(method, ": ", static_cast<int>(c), " ", status.error_message()));
}

// Parses the rest of the input as `message`; false when the bytes are not a valid encoding.
template <class Message>
bool ParseInput(const uint8_t* data, size_t size, Message* message) {
  return message->ParseFromArray(data, static_cast<int>(size));
}

template <class Response, class Reader>
int ReadAll(Reader* reader) {
  Response response;
  int n = 0;
  while (reader->Read(&response)) ++n;
  return n;
}

}  // namespace moeserve::fuzz

#endif  // MOESERVE_TESTS_FUZZ_GRPC_FUZZ_UTIL_H_
