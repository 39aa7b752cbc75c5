#include "gateway/stream_registry.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace moeserve::gateway {

ResumableStream::ResumableStream(std::string id, std::string owner, std::string route,
                                 size_t max_bytes, std::function<void()> cancel)
    : id_(std::move(id)),
      owner_(std::move(owner)),
      route_(std::move(route)),
      max_bytes_(max_bytes),
      cancel_(std::move(cancel)) {}

std::string ResumableStream::Publish(absl::string_view event, bool* to_producer) {
  MutexLock lock(&mu_);
  const uint64_t id = ++last_id_;
  std::string frame = absl::StrCat("id: ", id, "\n", event);
  *to_producer = attached_ && reader_ == kProducerToken;
  if (attached_ && reader_ != kProducerToken) sink_.on_frame(frame);
  bytes_ += frame.size();
  events_.push_back({id, frame});
  // The newest event always stays, so a reader can resume from the last id it saw.
  while (bytes_ > max_bytes_ && events_.size() > 1) {
    bytes_ -= events_.front().frame.size();
    events_.pop_front();
  }
  return frame;
}

void ResumableStream::Finish() {
  MutexLock lock(&mu_);
  if (finished_) return;
  finished_ = true;
  if (attached_ && reader_ != kProducerToken) sink_.on_end();
}

bool ResumableStream::ProducerIsReader() const {
  MutexLock lock(&mu_);
  return reader_ == kProducerToken;
}

uint64_t ResumableStream::last_event_id() const {
  MutexLock lock(&mu_);
  return last_id_;
}

StreamRegistry::StreamRegistry(StreamResumeOptions options, const Clock* clock)
    : options_(options), clock_(clock) {}

ResumableStreamPtr StreamRegistry::Open(std::string id, std::string owner, std::string route,
                                        std::function<void()> cancel, StreamSink producer) {
  auto stream = std::make_shared<ResumableStream>(std::move(id), std::move(owner), std::move(route),
                                                  options_.max_stream_bytes, std::move(cancel));
  {
    MutexLock lock(&stream->mu_);
    stream->sink_ = std::move(producer);
  }
  MutexLock lock(&mu_);
  streams_[stream->id()] = stream;
  return stream;
}

void StreamRegistry::EraseLocked(const ResumableStream& s, bool detached) {
  auto it = streams_.find(s.id());
  if (it == streams_.end() || it->second.get() != &s) return;
  if (detached) --detached_;
  streams_.erase(it);
}

bool StreamRegistry::Detach(const ResumableStreamPtr& stream, uint64_t token) {
  std::function<void()> cancel;
  {
    MutexLock lock(&mu_);
    auto it = streams_.find(stream->id());
    if (it == streams_.end() || it->second != stream) return false;
    MutexLock stream_lock(&stream->mu_);
    // A reader that was superseded leaves the stream to the one that took over.
    if (!stream->attached_ || stream->reader_ != token) return true;
    if (enabled() && detached_ < options_.max_detached) {
      stream->attached_ = false;
      stream->detached_at_ = clock_->Now();
      stream->sink_ = StreamSink{};
      ++detached_;
      return true;
    }
    EraseLocked(*stream, false);
    if (!stream->finished_) cancel = stream->cancel_;
  }
  if (cancel) cancel();
  return false;
}

void StreamRegistry::Release(const ResumableStreamPtr& stream, uint64_t token) {
  MutexLock lock(&mu_);
  MutexLock stream_lock(&stream->mu_);
  if (stream->attached_ && stream->reader_ == token) EraseLocked(*stream, false);
}

void StreamRegistry::Remove(const ResumableStreamPtr& stream) {
  MutexLock lock(&mu_);
  MutexLock stream_lock(&stream->mu_);
  EraseLocked(*stream, !stream->attached_);
}

absl::StatusOr<ResumableStreamPtr> StreamRegistry::FindLocked(
    absl::string_view id, absl::string_view owner, absl::string_view route,
    std::function<void()>* cancel_expired) {
  auto it = streams_.find(id);
  // Another key's stream reads as unknown: its existence is not disclosed.
  if (it == streams_.end() || it->second->owner_ != owner || it->second->route_ != route) {
    return absl::NotFoundError(absl::StrCat(
        "no resumable stream '", id,
        "' here: unknown, expired, already delivered to the end, or held by another replica"));
  }
  ResumableStreamPtr stream = it->second;
  MutexLock stream_lock(&stream->mu_);
  if (!stream->attached_ && clock_->Now() - stream->detached_at_ >= options_.grace) {
    if (!stream->finished_) *cancel_expired = stream->cancel_;
    EraseLocked(*stream, true);
    return absl::NotFoundError(absl::StrCat("stream '", id, "' expired: no reader for ",
                                            absl::FormatDuration(options_.grace)));
  }
  return stream;
}

absl::StatusOr<StreamAttachment> StreamRegistry::Attach(absl::string_view id,
                                                        absl::string_view owner,
                                                        absl::string_view route,
                                                        uint64_t last_event_id, StreamSink sink) {
  std::function<void()> cancel_expired;
  absl::StatusOr<StreamAttachment> result =
      DoAttach(id, owner, route, last_event_id, std::move(sink), &cancel_expired);
  if (cancel_expired) cancel_expired();
  return result;
}

absl::StatusOr<StreamAttachment> StreamRegistry::DoAttach(absl::string_view id,
                                                          absl::string_view owner,
                                                          absl::string_view route,
                                                          uint64_t last_event_id, StreamSink sink,
                                                          std::function<void()>* cancel_expired) {
  MutexLock lock(&mu_);
  MOESERVE_ASSIGN_OR_RETURN(ResumableStreamPtr stream,
                            FindLocked(id, owner, route, cancel_expired));
  ResumableStream& s = *stream;
  MutexLock stream_lock(&s.mu_);
  if (last_event_id > s.last_id_) {
    return absl::InvalidArgumentError(absl::StrCat("Last-Event-ID ", last_event_id,
                                                   " is beyond the last event (", s.last_id_,
                                                   ") of stream '", id, "'"));
  }
  // A reader that has the end already: the stream was delivered to its end, even if the write's
  // completion (which removes it) has not run yet when the client, having read it, resumes.
  // Attaching would supersede that writer for nothing (and close its connection). With no reader
  // attached, nobody is writing its end: the client's word that it has it all removes it now.
  if (s.finished_ && last_event_id == s.last_id_) {
    if (!s.attached_) EraseLocked(s, /*detached=*/true);
    return absl::NotFoundError(absl::StrCat("no resumable stream '", id,
                                            "' here: already delivered to the end (Last-Event-ID ",
                                            last_event_id, " is its last event)"));
  }
  if (!s.events_.empty() && last_event_id + 1 < s.events_.front().id) {
    return absl::NotFoundError(absl::StrCat("the events of stream '", id, "' after ", last_event_id,
                                            " are no longer buffered (the oldest kept is ",
                                            s.events_.front().id, ")"));
  }
  StreamAttachment a;
  a.stream = stream;
  for (const ResumableStream::Event& e : s.events_) {
    if (e.id > last_event_id) a.frames.push_back(e.frame);
  }
  a.finished = s.finished_;
  if (!s.attached_) {
    --detached_;
  } else if (s.sink_.on_superseded) {
    s.sink_.on_superseded();
  }
  s.attached_ = true;
  s.reader_ = ++s.next_token_;
  s.sink_ = std::move(sink);
  a.token = s.reader_;
  return a;
}

absl::Status StreamRegistry::Cancel(absl::string_view id, absl::string_view owner,
                                    absl::string_view route) {
  std::function<void()> cancel;
  absl::Status status;
  {
    MutexLock lock(&mu_);
    absl::StatusOr<ResumableStreamPtr> found = FindLocked(id, owner, route, &cancel);
    if (found.ok()) {
      MutexLock stream_lock(&(*found)->mu_);
      if (!(*found)->finished_) cancel = (*found)->cancel_;
    }
    status = found.status();
  }
  if (cancel) cancel();
  return status;
}

size_t StreamRegistry::Sweep() {
  std::vector<std::function<void()>> cancels;
  size_t removed = 0;
  {
    MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    for (auto it = streams_.begin(); it != streams_.end();) {
      ResumableStream& s = *it->second;
      MutexLock stream_lock(&s.mu_);
      if (s.attached_ || now - s.detached_at_ < options_.grace) {
        ++it;
        continue;
      }
      if (!s.finished_) cancels.push_back(s.cancel_);
      --detached_;
      ++removed;
      streams_.erase(it++);
    }
  }
  for (const std::function<void()>& cancel : cancels) cancel();
  return removed;
}

size_t StreamRegistry::size() const {
  MutexLock lock(&mu_);
  return streams_.size();
}

size_t StreamRegistry::detached() const {
  MutexLock lock(&mu_);
  return detached_;
}

}  // namespace moeserve::gateway
