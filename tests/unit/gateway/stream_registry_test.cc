#include "gateway/stream_registry.h"

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "common/mutex.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"

namespace moeserve::gateway {
namespace {

constexpr char kChat[] = "/v1/chat/completions";

// A reader's sink that records what it was given (called under the stream's lock: it only
// appends, as a real sink only posts).
struct RecordingSink {
  std::vector<std::string> frames;
  int ends = 0;
  int superseded = 0;
  StreamSink Sink() {
    StreamSink s;
    s.on_frame = [this](std::string f) { frames.push_back(std::move(f)); };
    s.on_end = [this] { ++ends; };
    s.on_superseded = [this] { ++superseded; };
    return s;
  }
};

class StreamRegistryTest : public ::testing::Test {
 protected:
  StreamRegistry MakeRegistry(StreamResumeOptions options = {}) {
    return StreamRegistry(options, &clock_);
  }
  ResumableStreamPtr Open(StreamRegistry& r, const std::string& id, const std::string& owner = "") {
    return r.Open(
        id, owner, kChat, [this] { ++cancels_; }, producer_.Sink());
  }
  // Publishes `n` events "data: e<i>" and returns their frames.
  static std::vector<std::string> PublishN(ResumableStream& s, int from, int n) {
    std::vector<std::string> frames;
    for (int i = from; i < from + n; ++i) {
      bool to_producer = false;
      frames.push_back(s.Publish("data: e" + std::to_string(i) + "\n\n", &to_producer));
    }
    return frames;
  }

  testing::FakeClock clock_;
  int cancels_ = 0;
  RecordingSink producer_;
};

TEST_F(StreamRegistryTest, NumbersEventsFromOneAndTheProducerWritesThem) {
  StreamRegistry r = MakeRegistry();
  ResumableStreamPtr s = Open(r, "chatcmpl-a");
  bool to_producer = false;
  EXPECT_EQ(s->Publish("data: {}\n\n", &to_producer), "id: 1\ndata: {}\n\n");
  EXPECT_TRUE(to_producer);
  EXPECT_EQ(s->Publish("data: [DONE]\n\n", &to_producer), "id: 2\ndata: [DONE]\n\n");
  EXPECT_EQ(s->last_event_id(), 2u);
  EXPECT_TRUE(producer_.frames.empty());  // the producer writes its own frames
}

TEST_F(StreamRegistryTest, ResumeReplaysExactlyTheEventsAfterLastEventIdThenStreamsTheRest) {
  StreamRegistry r = MakeRegistry();
  ResumableStreamPtr s = Open(r, "chatcmpl-a");
  const std::vector<std::string> before = PublishN(*s, 1, 5);
  ASSERT_TRUE(r.Detach(s, ResumableStream::kProducerToken));
  EXPECT_EQ(r.detached(), 1u);
  const std::vector<std::string> while_away = PublishN(*s, 6, 2);  // generation goes on
  RecordingSink reader;
  absl::StatusOr<StreamAttachment> a = r.Attach("chatcmpl-a", "", kChat, 3, reader.Sink());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(r.detached(), 0u);
  EXPECT_EQ(a->frames,
            (std::vector<std::string>{before[3], before[4], while_away[0], while_away[1]}));
  EXPECT_FALSE(a->finished);
  bool to_producer = true;
  const std::string next = s->Publish("data: e8\n\n", &to_producer);
  EXPECT_FALSE(to_producer);  // the reader has it now
  EXPECT_EQ(reader.frames, std::vector<std::string>{next});
  s->Finish();
  EXPECT_EQ(reader.ends, 1);
  r.Release(s, a->token);
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(cancels_, 0);
}

TEST_F(StreamRegistryTest, LastEventIdZeroReplaysAllAndTheLastIdOfAFinishedStreamIsNotFound) {
  StreamRegistry r = MakeRegistry();
  ResumableStreamPtr s = Open(r, "chatcmpl-a");
  PublishN(*s, 1, 3);
  s->Finish();
  ASSERT_TRUE(r.Detach(s, ResumableStream::kProducerToken));
  RecordingSink reader;
  absl::StatusOr<StreamAttachment> a = r.Attach("chatcmpl-a", "", kChat, 0, reader.Sink());
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->frames.size(), 3u);
  EXPECT_TRUE(a->finished);
  ASSERT_TRUE(r.Detach(s, a->token));  // that reader left too
  // A client holding the last event of a finished stream has nothing left to resume: NOT_FOUND.
  // While a reader is attached (writing the end) it is not superseded and the stream stays
  // for it to release; with none attached the stream is removed at once.
  a = r.Attach("chatcmpl-a", "", kChat, 2, reader.Sink());
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->frames.size(), 1u);
  RecordingSink late;
  EXPECT_TRUE(absl::IsNotFound(r.Attach("chatcmpl-a", "", kChat, 3, late.Sink()).status()));
  EXPECT_EQ(reader.superseded, 0);
  EXPECT_EQ(r.size(), 1u);
  ASSERT_TRUE(r.Detach(s, a->token));
  EXPECT_TRUE(absl::IsNotFound(r.Attach("chatcmpl-a", "", kChat, 3, late.Sink()).status()));
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(r.detached(), 0u);
}

TEST_F(StreamRegistryTest, LastEventIdBeyondTheLastEventIsInvalidArgument) {
  StreamRegistry r = MakeRegistry();
  ResumableStreamPtr s = Open(r, "chatcmpl-a");
  PublishN(*s, 1, 2);
  ASSERT_TRUE(r.Detach(s, ResumableStream::kProducerToken));
  RecordingSink reader;
  EXPECT_TRUE(
      absl::IsInvalidArgument(r.Attach("chatcmpl-a", "", kChat, 3, reader.Sink()).status()));
  // Still detached and resumable afterwards.
  EXPECT_EQ(r.detached(), 1u);
  EXPECT_TRUE(r.Attach("chatcmpl-a", "", kChat, 2, reader.Sink()).ok());
}

TEST_F(StreamRegistryTest, UnknownIdAnotherOwnerOrAnotherRouteIsNotFound) {
  StreamRegistry r = MakeRegistry();
  ResumableStreamPtr s = Open(r, "chatcmpl-a", "key 0");
  PublishN(*s, 1, 1);
  ASSERT_TRUE(r.Detach(s, ResumableStream::kProducerToken));
  RecordingSink reader;
  EXPECT_TRUE(absl::IsNotFound(r.Attach("chatcmpl-b", "key 0", kChat, 0, reader.Sink()).status()));
  EXPECT_TRUE(absl::IsNotFound(r.Attach("chatcmpl-a", "key 1", kChat, 0, reader.Sink()).status()));
  EXPECT_TRUE(absl::IsNotFound(r.Attach("chatcmpl-a", "", kChat, 0, reader.Sink()).status()));
  EXPECT_TRUE(absl::IsNotFound(
      r.Attach("chatcmpl-a", "key 0", "/v1/completions", 0, reader.Sink()).status()));
  EXPECT_TRUE(absl::IsNotFound(r.Cancel("chatcmpl-a", "key 1", kChat)));
  EXPECT_EQ(cancels_, 0);
  EXPECT_TRUE(r.Attach("chatcmpl-a", "key 0", kChat, 0, reader.Sink()).ok());
}

TEST_F(StreamRegistryTest, AfterTheGracePeriodTheStreamIsCancelledAndGone) {
  StreamResumeOptions options;
  options.grace = absl::Seconds(30);
  StreamRegistry r = MakeRegistry(options);
  ResumableStreamPtr s = Open(r, "chatcmpl-a");
  PublishN(*s, 1, 2);
  ASSERT_TRUE(r.Detach(s, ResumableStream::kProducerToken));
  clock_.Advance(absl::Seconds(29));
  EXPECT_EQ(r.Sweep(), 0u);
  EXPECT_EQ(cancels_, 0);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(r.Sweep(), 1u);
  EXPECT_EQ(cancels_, 1);
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(r.detached(), 0u);
  RecordingSink reader;
  EXPECT_TRUE(absl::IsNotFound(r.Attach("chatcmpl-a", "", kChat, 0, reader.Sink()).status()));
}

TEST_F(StreamRegistryTest, AReconnectPastTheGraceBeforeASweepIsNotFoundAndCancels) {
  StreamRegistry r = MakeRegistry();
  ResumableStreamPtr s = Open(r, "chatcmpl-a");
  PublishN(*s, 1, 2);
  ASSERT_TRUE(r.Detach(s, ResumableStream::kProducerToken));
  clock_.Advance(absl::Seconds(31));
  RecordingSink reader;
  EXPECT_TRUE(absl::IsNotFound(r.Attach("chatcmpl-a", "", kChat, 2, reader.Sink()).status()));
  EXPECT_EQ(cancels_, 1);
  EXPECT_EQ(r.size(), 0u);
}

TEST_F(StreamRegistryTest, AFinishedStreamIsNotCancelledWhenItExpires) {
  StreamRegistry r = MakeRegistry();
  ResumableStreamPtr s = Open(r, "chatcmpl-a");
  PublishN(*s, 1, 2);
  s->Finish();
  ASSERT_TRUE(r.Detach(s, ResumableStream::kProducerToken));
  clock_.Advance(absl::Minutes(1));
  EXPECT_EQ(r.Sweep(), 1u);
  EXPECT_EQ(cancels_, 0);
}

TEST_F(StreamRegistryTest, ResumingRestartsTheGracePeriodOnlyWhenTheReaderLeavesAgain) {
  StreamRegistry r = MakeRegistry();
  ResumableStreamPtr s = Open(r, "chatcmpl-a");
  PublishN(*s, 1, 1);
  ASSERT_TRUE(r.Detach(s, ResumableStream::kProducerToken));
  clock_.Advance(absl::Seconds(20));
  RecordingSink reader;
  absl::StatusOr<StreamAttachment> a = r.Attach("chatcmpl-a", "", kChat, 1, reader.Sink());
  ASSERT_TRUE(a.ok());
  clock_.Advance(absl::Minutes(5));  // an attached stream never expires
  EXPECT_EQ(r.Sweep(), 0u);
  ASSERT_TRUE(r.Detach(s, a->token));
  clock_.Advance(absl::Seconds(29));
  EXPECT_EQ(r.Sweep(), 0u);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(r.Sweep(), 1u);
  EXPECT_EQ(cancels_, 1);
}

TEST_F(StreamRegistryTest, ANewReaderSupersedesTheOldOneWhichCannotDetachIt) {
  StreamRegistry r = MakeRegistry();
  ResumableStreamPtr s = Open(r, "chatcmpl-a");
  PublishN(*s, 1, 2);
  // The producer's connection still looks open (a half-open socket) when the client resumes.
  RecordingSink first;
  absl::StatusOr<StreamAttachment> a = r.Attach("chatcmpl-a", "", kChat, 2, first.Sink());
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(producer_.superseded, 1);
  EXPECT_FALSE(s->ProducerIsReader());
  EXPECT_TRUE(r.Detach(s, ResumableStream::kProducerToken));  // ignored: not the reader
  EXPECT_EQ(r.detached(), 0u);
  RecordingSink second;
  absl::StatusOr<StreamAttachment> b = r.Attach("chatcmpl-a", "", kChat, 1, second.Sink());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(first.superseded, 1);
  EXPECT_EQ(b->frames.size(), 1u);
  EXPECT_TRUE(r.Detach(s, a->token));  // the first reader's socket closing: ignored
  EXPECT_EQ(r.detached(), 0u);
  PublishN(*s, 3, 1);
  EXPECT_TRUE(first.frames.empty());
  EXPECT_EQ(second.frames.size(), 1u);
  r.Release(s, a->token);  // not the reader: stays
  EXPECT_EQ(r.size(), 1u);
  EXPECT_EQ(cancels_, 0);
}

TEST_F(StreamRegistryTest, TheBufferKeepsTheNewestEventsWithinItsByteBound) {
  StreamResumeOptions options;
  options.max_stream_bytes = 3 * std::string("id: 1\ndata: e1\n\n").size();
  StreamRegistry r = MakeRegistry(options);
  ResumableStreamPtr s = Open(r, "chatcmpl-a");
  const std::vector<std::string> frames = PublishN(*s, 1, 6);  // ids 1..6, equal sizes
  ASSERT_TRUE(r.Detach(s, ResumableStream::kProducerToken));
  RecordingSink reader;
  // Events 4..6 are kept: resuming after 3 works, after 2 needs the dropped event 3.
  absl::Status old = r.Attach("chatcmpl-a", "", kChat, 2, reader.Sink()).status();
  EXPECT_TRUE(absl::IsNotFound(old)) << old;
  absl::StatusOr<StreamAttachment> a = r.Attach("chatcmpl-a", "", kChat, 3, reader.Sink());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->frames, (std::vector<std::string>{frames[3], frames[4], frames[5]}));
}

TEST_F(StreamRegistryTest, OneEventLargerThanTheBoundIsStillKept) {
  StreamResumeOptions options;
  options.max_stream_bytes = 4;
  StreamRegistry r = MakeRegistry(options);
  ResumableStreamPtr s = Open(r, "chatcmpl-a");
  PublishN(*s, 1, 2);
  ASSERT_TRUE(r.Detach(s, ResumableStream::kProducerToken));
  RecordingSink reader;
  absl::StatusOr<StreamAttachment> a = r.Attach("chatcmpl-a", "", kChat, 1, reader.Sink());
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->frames.size(), 1u);
}

TEST_F(StreamRegistryTest, PastTheDetachedBoundADisconnectCancelsAtOnce) {
  StreamResumeOptions options;
  options.max_detached = 2;
  StreamRegistry r = MakeRegistry(options);
  std::vector<ResumableStreamPtr> streams;
  for (int i = 0; i < 3; ++i) streams.push_back(Open(r, "chatcmpl-" + std::to_string(i)));
  EXPECT_TRUE(r.Detach(streams[0], ResumableStream::kProducerToken));
  EXPECT_TRUE(r.Detach(streams[1], ResumableStream::kProducerToken));
  EXPECT_FALSE(r.Detach(streams[2], ResumableStream::kProducerToken));
  EXPECT_EQ(cancels_, 1);
  EXPECT_EQ(r.size(), 2u);
  EXPECT_EQ(r.detached(), 2u);
  // A resume frees a slot.
  RecordingSink reader;
  ASSERT_TRUE(r.Attach("chatcmpl-0", "", kChat, 0, reader.Sink()).ok());
  EXPECT_EQ(r.detached(), 1u);
}

TEST_F(StreamRegistryTest, WithAZeroGraceADisconnectIsNotKept) {
  StreamResumeOptions options;
  options.grace = absl::ZeroDuration();
  StreamRegistry r = MakeRegistry(options);
  EXPECT_FALSE(r.enabled());
  ResumableStreamPtr s = Open(r, "chatcmpl-a");
  EXPECT_FALSE(r.Detach(s, ResumableStream::kProducerToken));
  EXPECT_EQ(cancels_, 1);
  EXPECT_EQ(r.size(), 0u);
}

TEST_F(StreamRegistryTest, AnExplicitCancelCancelsAtOnceAndLeavesTheEndReadable) {
  StreamRegistry r = MakeRegistry();
  ResumableStreamPtr s = Open(r, "chatcmpl-a", "key 3");
  PublishN(*s, 1, 2);
  ASSERT_TRUE(r.Detach(s, ResumableStream::kProducerToken));
  ASSERT_TRUE(r.Cancel("chatcmpl-a", "key 3", kChat).ok());
  EXPECT_EQ(cancels_, 1);
  // The cancelled generation ends with its error event; a reader still gets it.
  PublishN(*s, 3, 1);
  s->Finish();
  RecordingSink reader;
  absl::StatusOr<StreamAttachment> a = r.Attach("chatcmpl-a", "key 3", kChat, 2, reader.Sink());
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->frames.size(), 1u);
  EXPECT_TRUE(a->finished);
  // Cancelling a finished stream cancels nothing more.
  EXPECT_TRUE(r.Cancel("chatcmpl-a", "key 3", kChat).ok());
  EXPECT_EQ(cancels_, 1);
}

TEST_F(StreamRegistryTest, TheProducerWritingTheEndRemovesTheStream) {
  StreamRegistry r = MakeRegistry();
  ResumableStreamPtr s = Open(r, "chatcmpl-a");
  PublishN(*s, 1, 2);
  s->Finish();
  r.Release(s, ResumableStream::kProducerToken);
  EXPECT_EQ(r.size(), 0u);
  RecordingSink reader;
  EXPECT_TRUE(absl::IsNotFound(r.Attach("chatcmpl-a", "", kChat, 0, reader.Sink()).status()));
  EXPECT_FALSE(r.Detach(s, ResumableStream::kProducerToken));  // gone: nothing kept
}

// The id of a frame "id: N\n...".
uint64_t FrameId(const std::string& frame) { return std::stoull(frame.substr(4)); }

// One reader's side of the threaded test below: what its sink got while it was attached.
// Sinks are called under the stream's lock, from the producer's thread.
class ThreadedReader {
 public:
  StreamSink Sink() {
    StreamSink s;
    s.on_frame = [this](std::string f) {
      MutexLock lock(&mu_);
      frames_.push_back(std::move(f));
    };
    s.on_end = [this] {
      MutexLock lock(&mu_);
      ended_ = true;
    };
    s.on_superseded = [] {};
    return s;
  }
  // Takes what arrived since the last call.
  std::vector<std::string> TakeFrames(bool* ended) {
    MutexLock lock(&mu_);
    *ended = ended_;
    return std::exchange(frames_, {});
  }

 private:
  Mutex mu_;
  std::vector<std::string> frames_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

// The registry and a stream used from several threads at once, as the gateway does (the tsan
// job runs this): a producer publishes 400 events while three readers keep resuming from the
// last id they saw (superseding each other) and detaching, and a fourth thread sweeps. Every
// reader sees ids 1, 2, 3, ... with none lost or repeated across its resumes, and one of them
// reads to the end.
TEST_F(StreamRegistryTest, ReadersResumingFromSeveralThreadsLoseAndRepeatNothing) {
  constexpr uint64_t kEvents = 400;
  StreamRegistry r = MakeRegistry();
  ResumableStreamPtr s = Open(r, "chatcmpl-t");
  ASSERT_TRUE(r.Detach(s, ResumableStream::kProducerToken));  // the client went away at once
  std::thread producer([&] {
    for (uint64_t i = 1; i <= kEvents; ++i) {
      bool to_producer = true;
      s->Publish(absl::StrCat("data: e", i, "\n\n"), &to_producer);
      EXPECT_FALSE(to_producer);
    }
    s->Finish();
  });
  std::atomic<bool> readers_done{false};
  std::thread sweeper([&] {
    while (!readers_done.load()) {
      EXPECT_EQ(r.Sweep(), 0u);  // the clock stands still: nothing expires
      EXPECT_LE(r.detached(), r.size());
      std::this_thread::yield();
    }
  });
  constexpr int kReaders = 3;
  std::vector<uint64_t> last_seen(kReaders, 0);
  std::vector<int> saw_end(kReaders, 0);
  std::vector<std::thread> readers;
  for (int k = 0; k < kReaders; ++k) {
    readers.emplace_back([&, k] {
      ThreadedReader reader;
      for (int round = 0; round < 100000; ++round) {
        absl::StatusOr<StreamAttachment> a =
            r.Attach("chatcmpl-t", "", kChat, last_seen[k], reader.Sink());
        if (!a.ok()) {
          EXPECT_TRUE(absl::IsNotFound(a.status())) << a.status();
          return;  // another reader read it to the end
        }
        for (int y = 0; y < 3; ++y) std::this_thread::yield();
        // After Detach (or once superseded) this attachment's sink gets nothing more.
        const bool kept = r.Detach(a->stream, a->token);
        bool ended = false;
        std::vector<std::string> frames = a->frames;
        for (std::string& f : reader.TakeFrames(&ended)) frames.push_back(std::move(f));
        for (const std::string& f : frames) {
          ASSERT_EQ(FrameId(f), last_seen[k] + 1) << "reader " << k << " round " << round;
          ++last_seen[k];
        }
        if (a->finished || ended) {
          EXPECT_EQ(last_seen[k], kEvents);
          ++saw_end[k];
          if (kept) {
            // Read to the end: take it back and release it, as the reader's connection would.
            absl::StatusOr<StreamAttachment> again =
                r.Attach("chatcmpl-t", "", kChat, last_seen[k], reader.Sink());
            if (again.ok()) r.Release(again->stream, again->token);
          }
          return;
        }
      }
    });
  }
  for (std::thread& t : readers) t.join();
  producer.join();
  readers_done.store(true);
  sweeper.join();
  int ends = 0;
  for (int k = 0; k < kReaders; ++k) ends += saw_end[k];
  EXPECT_GE(ends, 1);
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(cancels_, 0);
}

}  // namespace
}  // namespace moeserve::gateway
