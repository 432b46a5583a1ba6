// libFuzzer target for the incremental HTTP/1.x parser.
//
// Input: one control byte, then the stream. The control byte picks the role, whether body bytes are
// skipped rather than fed, what the awaited responses answer, and a seed for the split points.
// The stream is parsed whole and in pieces; the invariants below are checked with
// __builtin_trap() so any violation is a crash libFuzzer reports.
//   - every offset lies within the chunk it refers to, and stream offsets never go backwards;
//   - events come in order: begin, [request line end], head, complete; never a complete without a
//     begin, never a begin inside a message;
//   - kept fields respect their caps and head_bytes matches the offsets;
//   - a non-kOk status is sticky: later feeds return it and report nothing;
//   - kNotHttp only before any start line completed;
//   - the whole feed and the split feed give the same events, heads, status and finish result.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../src/http/parser.h"

namespace {

using rbinder::http::kMaxFieldValue;
using rbinder::http::kMaxTarget;
using rbinder::http::MessageHead;
using rbinder::http::Observer;
using rbinder::http::Parser;
using rbinder::http::Role;
using rbinder::http::Status;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool same_head(const MessageHead& a, const MessageHead& b) {
  return a.method == b.method && a.target == b.target && a.status == b.status &&
         a.version_major == b.version_major && a.version_minor == b.version_minor &&
         a.host == b.host && a.user_agent == b.user_agent && a.traceparent == b.traceparent &&
         a.tracestate == b.tracestate && a.baggage == b.baggage && a.b3 == b.b3 &&
         a.x_b3_traceid == b.x_b3_traceid && a.x_b3_spanid == b.x_b3_spanid &&
         a.x_b3_parentspanid == b.x_b3_parentspanid && a.x_b3_sampled == b.x_b3_sampled &&
         a.x_b3_flags == b.x_b3_flags && a.content_length == b.content_length &&
         a.chunked == b.chunked && a.connection_close == b.connection_close &&
         a.connection_keep_alive == b.connection_keep_alive &&
         a.connection_upgrade == b.connection_upgrade && a.expect_continue == b.expect_continue &&
         a.truncated == b.truncated && a.head_bytes == b.head_bytes;
}

enum class Kind : uint8_t { kBegin, kLineEnd, kHead, kComplete };

struct Event {
  Kind kind;
  uint64_t at;  // stream offset
  bool operator==(const Event& o) const { return kind == o.kind && at == o.at; }
};

// Checks the per-event invariants and records events with stream offsets.
class CheckingObserver : public Observer {
 public:
  explicit CheckingObserver(Role role) : role_(role) {}

  void set_chunk(uint64_t base, size_t len) {
    base_ = base;
    len_ = len;
  }

  void on_message_begin(size_t offset) override {
    check(offset < len_);  // the message's first byte is in this chunk
    check(!in_message_);
    in_message_ = true;
    line_ended_ = false;
    head_done_ = false;
    begin_at_ = add(Kind::kBegin, offset);
  }
  void on_request_line_end(size_t offset) override {
    check(role_ == Role::kRequests);
    check(offset >= 1 && offset <= len_);  // just after a LF of this chunk
    check(in_message_ && !line_ended_ && !head_done_);
    line_ended_ = true;
    add(Kind::kLineEnd, offset);
  }
  void on_head_complete(const MessageHead& head, size_t offset) override {
    check(offset >= 1 && offset <= len_);
    check(in_message_ && !head_done_);
    check(role_ == Role::kResponses || line_ended_);
    head_done_ = true;
    const uint64_t at = add(Kind::kHead, offset);
    check(head.head_bytes == at - begin_at_);
    if (role_ == Role::kRequests) {
      check(!head.method.empty() && head.method.size() <= 20 && !head.target.empty());
    } else {
      check(head.status >= 100 && head.status <= 999 && head.method.empty());
    }
    check(head.target.size() <= kMaxTarget);
    for (const std::string* s : {&head.host, &head.user_agent, &head.traceparent, &head.tracestate,
                                 &head.baggage, &head.b3, &head.x_b3_traceid, &head.x_b3_spanid,
                                 &head.x_b3_parentspanid, &head.x_b3_sampled, &head.x_b3_flags}) {
      check(s->size() <= kMaxFieldValue);
    }
    check(head.content_length >= -1);
    heads.push_back(head);
  }
  void on_message_complete(size_t offset) override {
    check(offset <= len_);
    check(in_message_ && head_done_);
    in_message_ = false;
    add(Kind::kComplete, offset);
  }

  bool in_message() const { return in_message_; }
  bool saw_head() const { return !heads.empty(); }

  std::vector<Event> events;
  std::vector<MessageHead> heads;

 private:
  uint64_t add(Kind kind, size_t offset) {
    const uint64_t at = base_ + offset;
    check(events.empty() || events.back().at <= at);
    events.push_back({kind, at});
    return at;
  }

  Role role_;
  uint64_t base_ = 0;
  size_t len_ = 0;
  bool in_message_ = false;
  bool line_ended_ = false;
  bool head_done_ = false;
  uint64_t begin_at_ = 0;
};

// Small deterministic generator for split points and awaited responses.
struct Rng {
  uint32_t state;
  uint32_t next() {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
  }
};

struct Outcome {
  std::vector<Event> events;
  std::vector<MessageHead> heads;
  Status status = Status::kOk;
  bool finished = false;
};

// How a run feeds the stream.
struct Plan {
  Role role;
  bool skip_bodies;
  uint8_t answers;  // 0: none awaited, 1: expect_response(true) each, 2: mixed methods
  uint32_t seed;    // 0: one feed
  size_t max_piece;
};

Outcome run(const Plan& plan, const uint8_t* data, size_t size) {
  Parser parser(plan.role);
  CheckingObserver observer(plan.role);
  Rng answers{0x9e3779b9u};
  for (int i = 0; i < 8; ++i) {
    if (plan.answers == 1) parser.expect_response(true);
    if (plan.answers == 2) {
      static const char* const kMethods[] = {"GET", "HEAD", "CONNECT", "POST"};
      parser.expect_response_to(kMethods[answers.next() % 4]);
    }
  }
  Rng split{plan.seed};
  uint64_t pos = 0;
  Status status = Status::kOk;
  size_t i = 0;
  while (i < size) {
    size_t piece = size - i;
    if (plan.seed != 0) piece = std::min<size_t>(piece, 1 + split.next() % plan.max_piece);
    const uint64_t skippable = parser.skippable();
    check(status == Status::kOk || skippable == 0);
    if (plan.skip_bodies && skippable > 0) {
      const uint64_t n = std::min<uint64_t>(skippable, piece);
      pos += n;
      observer.set_chunk(pos, 0);
      const size_t events_before = observer.events.size();
      parser.skip(n, observer);
      status = parser.status();
      // Only completing a message can change the status (an Upgrade request's body ended).
      check(status == Status::kOk ||
            (status == Status::kUpgraded && observer.events.size() == events_before + 1 &&
             observer.events.back().kind == Kind::kComplete));
      check(parser.skippable() == (status == Status::kOk ? skippable - n : 0));
      i += n;
      continue;
    }
    observer.set_chunk(pos, piece);
    const size_t events_before = observer.events.size();
    const Status s = parser.feed(data + i, piece, observer);
    check(s == parser.status());
    if (status != Status::kOk) {
      check(s == status);  // sticky
      check(observer.events.size() == events_before);
    }
    status = s;
    if (status == Status::kOk) check(parser.in_message() == observer.in_message());
    check(!parser.in_head() || parser.in_message());
    pos += piece;
    i += piece;
  }
  // kNotHttp means the stream never carried a complete start line.
  if (status == Status::kNotHttp) check(!observer.saw_head());
  observer.set_chunk(pos, 0);
  check(parser.feed(nullptr, 0, observer) == status);
  Outcome out;
  out.finished = parser.finish(observer);
  check(!out.finished || status == Status::kOk);
  out.status = status;
  out.events = std::move(observer.events);
  out.heads = std::move(observer.heads);
  return out;
}

void check_same(const Outcome& a, const Outcome& b) {
  check(a.status == b.status);
  check(a.finished == b.finished);
  check(a.events == b.events);
  check(a.heads.size() == b.heads.size());
  for (size_t i = 0; i < a.heads.size(); ++i) check(same_head(a.heads[i], b.heads[i]));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t control = data[0];
  ++data;
  --size;
  Plan plan;
  plan.role = (control & 1) != 0 ? Role::kResponses : Role::kRequests;
  plan.skip_bodies = false;
  plan.answers = static_cast<uint8_t>((control >> 1) % 3);
  plan.seed = 0;
  plan.max_piece = 1;
  const Outcome whole = run(plan, data, size);

  plan.skip_bodies = (control & 0x08) != 0;
  plan.seed = 0x2545f491u * (control | 0x100u);
  plan.max_piece = size_t{1} << ((control >> 4) & 7);  // 1 .. 128 bytes per feed
  check_same(whole, run(plan, data, size));
  return 0;
}
