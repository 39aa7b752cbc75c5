#ifndef MOESERVE_GATEWAY_STREAM_REGISTRY_H_
#define MOESERVE_GATEWAY_STREAM_REGISTRY_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/mutex.h"

namespace moeserve::gateway {

struct StreamResumeOptions {
  // How long a stream whose reader went away is kept (generating) for a reconnect. Zero turns
  // resuming off: a disconnect cancels the generation at once, as without this feature.
  absl::Duration grace = absl::Seconds(30);
  // Per stream: the SSE bytes kept for replay; the oldest events go first past it.
  size_t max_stream_bytes = size_t{4} << 20;
  // Streams kept with no reader at a time; a disconnect past it cancels at once.
  size_t max_detached = 256;
};

// Where a reader (an HTTP connection) gets a stream's frames once it has attached. Every call
// is made with the stream's lock held, in event order, so it must only post the work onto the
// reader's own executor (never block, never call back into the stream).
struct StreamSink {
  std::function<void(std::string frame)> on_frame;  // "id: N\ndata: ...\n\n"
  std::function<void()> on_end;                     // after the last frame: the generation is over
  std::function<void()> on_superseded;              // another reader attached: stop, do not detach
};

// One streamed generation's SSE events, numbered 1, 2, 3, ... (the `id:` of each event), with
// the reader that currently receives them. The producer (the connection that started the
// generation, on its own strand) publishes; readers attach through StreamRegistry. The reader
// with token kProducerToken is the producer's own connection, which writes its frames itself.
// Thread-safe.
class ResumableStream {
 public:
  static constexpr uint64_t kProducerToken = 1;

  ResumableStream(std::string id, std::string owner, std::string route, size_t max_bytes,
                  std::function<void()> cancel);

  const std::string& id() const { return id_; }

  // Numbers `event` (an SSE event, "data: ...\n\n"), keeps it for replay and returns its frame
  // ("id: N\n" + event). Sets *to_producer when the producer's connection is the reader (it
  // writes the frame); another reader gets it through its sink.
  std::string Publish(absl::string_view event, bool* to_producer);
  // No more events: the reader's sink gets on_end.
  void Finish();
  // Whether the producer's connection still holds the stream (no resume took it over).
  bool ProducerIsReader() const;
  uint64_t last_event_id() const;

 private:
  friend class StreamRegistry;

  struct Event {
    uint64_t id;
    std::string frame;
  };

  const std::string id_, owner_, route_;
  const size_t max_bytes_;
  const std::function<void()> cancel_;  // stops the generation (called without locks)
  // common/mutex.h rather than absl::Mutex, so the registry's tests run under TSan.
  mutable Mutex mu_;
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t reader_ ABSL_GUARDED_BY(mu_) = kProducerToken;  // the token of the current reader
  uint64_t next_token_ ABSL_GUARDED_BY(mu_) = kProducerToken;
  bool attached_ ABSL_GUARDED_BY(mu_) = true;  // false: no reader (detached)
  absl::Time detached_at_ ABSL_GUARDED_BY(mu_);
  // The current reader's; the producer's has only on_superseded (it writes its own frames).
  StreamSink sink_ ABSL_GUARDED_BY(mu_);
};

using ResumableStreamPtr = std::shared_ptr<ResumableStream>;

// What a reader gets when it attaches: the frames after its Last-Event-ID, and whether the
// stream has already ended (then nothing more comes through the sink).
struct StreamAttachment {
  ResumableStreamPtr stream;
  uint64_t token = 0;  // the reader's token, for Detach / Release
  std::vector<std::string> frames;
  bool finished = false;
};

// The resumable streams of one gateway process (resuming works only on the replica that holds
// the stream). A stream is Open'ed by its producer, detached when its reader's connection goes
// away, attached again by a reconnecting reader, and removed when its end was written to a
// reader, when it has had no reader for `grace` (then its generation is cancelled if still
// running: Sweep), or when the detached bound is reached. `owner` is who may resume (the API
// key; "" without keys) and `route` the endpoint the stream came from. Thread-safe; time comes
// from the injected clock.
class StreamRegistry {
 public:
  // `clock` is not owned and outlives the registry.
  StreamRegistry(StreamResumeOptions options, const Clock* clock);

  bool enabled() const { return options_.grace > absl::ZeroDuration(); }
  const StreamResumeOptions& options() const { return options_; }

  // A new stream, its producer's connection as the reader (`producer` needs only
  // on_superseded: it writes its own frames). `cancel` stops the generation.
  ResumableStreamPtr Open(std::string id, std::string owner, std::string route,
                          std::function<void()> cancel, StreamSink producer);
  // A reader (token) went away without reading the end. False when the stream is not kept
  // (resuming off, or the detached bound reached): it is removed and, if still generating,
  // cancelled (its cancel is called; the caller may also cancel at once).
  bool Detach(const ResumableStreamPtr& stream, uint64_t token);
  // A reader (token) wrote the stream's end: nothing is left to resume, so it is removed.
  void Release(const ResumableStreamPtr& stream, uint64_t token);
  // The producer failed before it sent anything (an HTTP error status instead of a stream).
  void Remove(const ResumableStreamPtr& stream);

  // A reconnect: the events after `last_event_id` (0: all), then the rest through `sink`; the
  // previous reader, if any, gets on_superseded. NOT_FOUND for an unknown id, another owner or
  // route, an expired stream, or events no longer buffered; INVALID_ARGUMENT when
  // `last_event_id` is beyond the last event.
  absl::StatusOr<StreamAttachment> Attach(absl::string_view id, absl::string_view owner,
                                          absl::string_view route, uint64_t last_event_id,
                                          StreamSink sink);
  // An explicit cancel: the generation stops at once (its error event still reaches a reader).
  // NOT_FOUND as for Attach.
  absl::Status Cancel(absl::string_view id, absl::string_view owner, absl::string_view route);

  // Removes the streams without a reader for `grace` and cancels those still generating.
  // Returns how many were removed.
  size_t Sweep();

  size_t size() const;
  size_t detached() const;

 private:
  // The stream `id` if `owner` may read it from `route` and it has not expired (an expired
  // one is removed, and *cancel_expired set to its cancel when it was still generating).
  absl::StatusOr<ResumableStreamPtr> FindLocked(absl::string_view id, absl::string_view owner,
                                                absl::string_view route,
                                                std::function<void()>* cancel_expired)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<StreamAttachment> DoAttach(absl::string_view id, absl::string_view owner,
                                            absl::string_view route, uint64_t last_event_id,
                                            StreamSink sink, std::function<void()>* cancel_expired)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Removes `s` if it is still registered; `detached` is its state (read under its lock).
  void EraseLocked(const ResumableStream& s, bool detached) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const StreamResumeOptions options_;
  const Clock* const clock_;
  mutable Mutex mu_;  // taken before any stream's mu_ (common/mutex.h, as above)
  absl::flat_hash_map<std::string, ResumableStreamPtr> streams_ ABSL_GUARDED_BY(mu_);
  size_t detached_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace moeserve::gateway

#endif  // MOESERVE_GATEWAY_STREAM_REGISTRY_H_
