#include "engine/tracker.h"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <tuple>

namespace rbinder {

TimeNs now_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<TimeNs>(ts.tv_sec) * 1000000000ull + static_cast<TimeNs>(ts.tv_nsec);
}

Connection::Connection(uint64_t id_, Side side_, pid_t tgid_, const SocketInfo& info)
    : id(id_),
      side(side_),
      tgid(tgid_),
      socket(info),
      requests(http::Role::kRequests),
      responses(http::Role::kResponses) {}

SentSplit split_sent(uint64_t r, uint64_t offset, uint64_t header_len) {
  if (r <= offset) return {r, 0};
  if (r <= offset + header_len) return {offset, r - offset};
  return {r - header_len, header_len};
}

// ---- FdTable ----

const std::shared_ptr<Connection>& FdTable::get(int fd) const {
  static const std::shared_ptr<Connection> kNone;
  if (fd < 0 || static_cast<size_t>(fd) >= by_fd_.size()) return kNone;
  return by_fd_[static_cast<size_t>(fd)];
}

std::shared_ptr<Connection> FdTable::set(int fd, std::shared_ptr<Connection> conn) {
  if (fd < 0) return nullptr;
  if (static_cast<size_t>(fd) >= by_fd_.size()) by_fd_.resize(static_cast<size_t>(fd) + 1);
  if (conn) conn->fd_refs++;
  std::shared_ptr<Connection> old = std::move(by_fd_[static_cast<size_t>(fd)]);
  by_fd_[static_cast<size_t>(fd)] = std::move(conn);
  return old;
}

std::shared_ptr<Connection> FdTable::take(int fd) {
  if (fd < 0 || static_cast<size_t>(fd) >= by_fd_.size()) return nullptr;
  return std::move(by_fd_[static_cast<size_t>(fd)]);
}

// ---- Parser observer: turns message boundaries into exchanges and spans ----

class StreamObserver final : public http::Observer {
 public:
  StreamObserver(Tracker& tracker, Connection& conn, Direction dir, const Tracker::Io& io)
      : tracker_(tracker), conn_(conn), dir_(dir), io_(io), stream_(conn.stream_for(dir)), decided_(io.server) {}

  // Start of a chunk of `len` bytes about to be fed.
  void begin_chunk(size_t len) {
    chunk_len_ = len;
    body_from_ = 0;
  }
  // End of the chunk: body bytes of a message still open count up to its end.
  void end_chunk() {
    if (stream_.in_body) stream_.body_bytes += chunk_len_ - body_from_;
  }
  // Body bytes skipped without being copied.
  void skipped(uint64_t n) {
    if (stream_.in_body) stream_.body_bytes += n;
    body_from_ = 0;
    chunk_len_ = 0;
  }

  void on_message_begin(size_t) override {
    if (carries_requests()) {
      Exchange ex;
      ex.tid = io_.tid;
      ex.pid = io_.pid;
      // A request starts with the first byte read (server) or written (client).
      ex.start = dir_ == Direction::kWrite ? io_.entry : io_.exit;
      conn_.exchanges.push_back(std::move(ex));
    }
    stream_.in_body = false;
    stream_.body_bytes = 0;
  }

  void on_head_complete(const http::MessageHead& head, size_t offset) override {
    stream_.in_body = true;
    stream_.body_bytes = 0;
    body_from_ = offset;
    if (carries_requests()) {
      Exchange* ex = newest();
      if (!ex) return;
      ex->head_complete = true;
      ex->method = head.method;
      ex->target = head.target;
      ex->host = head.host;
      ex->user_agent = head.user_agent;
      ex->protocol_version = head.version_minor == 0 ? "1.0" : "1.1";
      if (conn_.side == Side::kServer) {
        tracker_.start_server_span(*ex, head, decided_);
        decided_ = nullptr;  // the stub decides a read's first request head only
      } else {
        tracker_.start_client_span(conn_, *ex, head);
      }
      conn_.responses.parser.expect_response_to(head.method);
    } else {
      Exchange* ex = awaiting_response();
      if (!ex) return;
      if (head.status >= 100 && head.status < 200 && head.status != 101) return;  // interim
      ex->response_head = true;
      ex->status = head.status;
      if (head.status == 101) {
        // Switching protocols: the exchange ends here and the connection is opaque afterwards.
        tracker_.finish(conn_, *ex, now(), "");
        conn_.exchanges.pop_front();
      }
    }
  }

  void on_message_complete(size_t offset) override {
    if (stream_.in_body) stream_.body_bytes += offset - body_from_;
    stream_.in_body = false;
    body_from_ = offset;
    if (carries_requests()) {
      Exchange* ex = newest();
      if (!ex) return;
      ex->request_complete = true;
      ex->request_body = stream_.body_bytes;
    } else {
      Exchange* ex = awaiting_response();
      if (!ex || !ex->response_head) return;  // an interim 1xx response ended
      ex->response_body = stream_.body_bytes;
      tracker_.finish(conn_, *ex, now(), "");
      conn_.exchanges.pop_front();
    }
    stream_.body_bytes = 0;
  }

 private:
  bool carries_requests() const { return &stream_ == &conn_.requests; }
  TimeNs now() const { return io_.exit; }
  Exchange* newest() { return conn_.exchanges.empty() ? nullptr : &conn_.exchanges.back(); }
  // Responses answer requests in order: the oldest exchange is the one being answered.
  Exchange* awaiting_response() { return conn_.exchanges.empty() ? nullptr : &conn_.exchanges.front(); }

  Tracker& tracker_;
  Connection& conn_;
  Direction dir_;
  const Tracker::Io& io_;
  Stream& stream_;
  const Decided* decided_;
  size_t chunk_len_ = 0;
  size_t body_from_ = 0;
};

// ---- Tracker ----

Tracker::Tracker(SpanSink& sink, TrackerStats& stats, TrackerConfig config)
    : sink_(sink), stats_(stats), config_(config) {}

std::shared_ptr<FdTable> Tracker::copy_fd_table(const FdTable& table) {
  auto copy = std::make_shared<FdTable>();
  table.for_each([&](int fd, const std::shared_ptr<Connection>& conn) { copy->set(fd, conn); });
  return copy;
}

void Tracker::release_fd_table(FdTable& table, TimeNs now) {
  std::vector<int> fds;
  table.for_each([&](int fd, const std::shared_ptr<Connection>&) { fds.push_back(fd); });
  for (int fd : fds) release(table.take(fd), now);
}

bool Tracker::is_tracked(const FdTable& table, int fd) const {
  const auto& conn = table.get(fd);
  return conn && !conn->opaque;
}

void Tracker::on_connection(FdTable& table, int fd, Side side, pid_t tgid, const SocketInfo& info,
                            TimeNs now) {
  auto conn = std::make_shared<Connection>(next_connection_id_++, side, tgid, info);
  stats_.connections_tracked++;
  release(table.set(fd, std::move(conn)), now);
}

void Tracker::on_close(FdTable& table, int fd, TimeNs now) { release(table.take(fd), now); }

void Tracker::on_dup(FdTable& table, int oldfd, int newfd, TimeNs now) {
  if (oldfd == newfd) return;
  release(table.set(newfd, table.get(oldfd)), now);
}

void Tracker::release(std::shared_ptr<Connection> conn, TimeNs now) {
  if (!conn) return;
  if (--conn->fd_refs > 0) return;
  // Before the program's close goes through: the socket must not outlive its last descriptor.
  conn->source_fd = OwnedFd();
  // The last descriptor is gone, so the kernel closed the socket.
  if (!conn->opaque) fail_pending(*conn, "connection closed", now);
}

long LocalBytes::copy(uint64_t offset, void* local_buf, size_t len) {
  if (offset >= copied_) return 0;
  const size_t n = std::min<size_t>(len, copied_ - static_cast<size_t>(offset));
  std::memcpy(local_buf, data_ + offset, n);
  return static_cast<long>(n);
}

namespace {

constexpr uint64_t kMaxHeldBytes = 1 << 20;

}  // namespace

void Tracker::on_io(FdTable& table, const Io& io, DataView& data) {
  const std::shared_ptr<Connection> conn = table.get(io.fd);
  if (!conn || conn->opaque) return;
  const bool early_response = io.direction == Direction::kRead && io.result > 0 && conn->side == Side::kClient &&
                              conn->planned && conn->exchanges.empty();
  if (io.direction == Direction::kRead && (early_response || !conn->held_reads.empty())) {
    // The response to a request another thread is still writing (that write's exit came later
    // than this read's): held, with what follows it, until the request is accounted.
    const size_t n = io.result > 0 ? static_cast<size_t>(io.result) : 0;
    Connection::HeldRead held{io.entry, io.exit, io.tid, io.pid, io.result, std::vector<uint8_t>(n)};
    if (conn->held_bytes + n <= kMaxHeldBytes && (n == 0 || data.copy(0, held.bytes.data(), n) == static_cast<long>(n))) {
      conn->held_bytes += n;
      conn->held_reads.push_back(std::move(held));
      return;
    }
  }
  on_io_now(*conn, io, data);
  if (io.direction == Direction::kWrite && !conn->held_reads.empty() && !conn->exchanges.empty()) {
    std::vector<Connection::HeldRead> held = std::move(conn->held_reads);
    conn->held_reads.clear();
    conn->held_bytes = 0;
    for (const Connection::HeldRead& h : held) {
      const Io read{h.tid, h.pid, io.fd, Direction::kRead, h.result, h.entry, h.exit};
      LocalBytes view(h.bytes.data(), h.bytes.size());
      on_io_now(*conn, read, view);
    }
  }
}

void Tracker::on_io_now(Connection& connection, const Io& io, DataView& data) {
  Connection* conn = &connection;
  if (conn->opaque) return;
  if (io.result > 0) {
    (io.direction == Direction::kRead ? stats_.bytes_read : stats_.bytes_written) +=
        static_cast<uint64_t>(io.result);
    if (io.direction == Direction::kWrite) {
      conn->written += static_cast<uint64_t>(io.result);
      conn->out_parsed += static_cast<uint64_t>(io.result);
    } else {
      conn->in_parsed += static_cast<uint64_t>(io.result);
    }
    feed(*conn, io.direction, io, data);
    return;
  }
  if (io.result == 0 && io.direction == Direction::kRead) {
    // The peer closed its side. A response delimited by the connection's end completes now.
    Stream& stream = conn->stream_for(Direction::kRead);
    StreamObserver observer(*this, *conn, Direction::kRead, io);
    observer.begin_chunk(0);
    stream.parser.finish(observer);
    if (conn->side == Side::kClient) fail_pending(*conn, "connection closed before response", io.exit);
    return;
  }
  switch (-io.result) {
    case ECONNRESET:
    case EPIPE:
    case ECONNABORTED:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case ENETUNREACH:
      fail_pending(*conn, std::string("connection reset (") + strerrorname_np(static_cast<int>(-io.result)) + ")",
                   io.exit);
      break;
    default:
      break;  // EAGAIN, EINTR, restarts: nothing moved
  }
}

void Tracker::on_unseen(FdTable& table, const Io& io, uint64_t n) {
  const std::shared_ptr<Connection> conn = table.get(io.fd);
  if (!conn || conn->opaque || n == 0) return;
  // The program moved these bytes even though no event carried them: rbinder.bytes counts them.
  (io.direction == Direction::kRead ? stats_.bytes_read : stats_.bytes_written) += n;
  Stream& stream = conn->stream_for(io.direction);
  if (stream.parser.skippable() < n) {
    give_up(*conn, false);
    return;
  }
  (io.direction == Direction::kRead ? conn->in_parsed : conn->out_parsed) += n;
  StreamObserver observer(*this, *conn, io.direction, io);
  observer.skipped(n);
  stream.parser.skip(n, observer);
}

void Tracker::on_sendfile(FdTable& table, const Io& io) {
  const std::shared_ptr<Connection> conn = table.get(io.fd);
  if (!conn || conn->opaque || io.result <= 0) return;
  stats_.bytes_written += static_cast<uint64_t>(io.result);
  Stream& stream = conn->stream_for(Direction::kWrite);
  uint64_t n = static_cast<uint64_t>(io.result);
  conn->out_parsed += n;
  StreamObserver observer(*this, *conn, Direction::kWrite, io);
  // sendfile carries body bytes only; anything else means we lost the message framing.
  if (stream.parser.skippable() < n) {
    give_up(*conn, false);
    return;
  }
  observer.skipped(n);
  stream.parser.skip(n, observer);
}

void Tracker::feed(Connection& conn, Direction dir, const Io& io, DataView& data) {
  Stream& stream = conn.stream_for(dir);
  StreamObserver observer(*this, conn, dir, io);
  const uint64_t total = static_cast<uint64_t>(io.result) < data.size() ? static_cast<uint64_t>(io.result)
                                                                          : data.size();
  static thread_local std::vector<uint8_t> local_buf(64 * 1024);
  uint64_t off = 0;
  while (off < total && stream.parser.status() == http::Status::kOk) {
    uint64_t skippable = stream.parser.skippable();
    if (skippable > 0) {
      uint64_t n = skippable < total - off ? skippable : total - off;
      observer.skipped(n);
      stream.parser.skip(n, observer);
      off += n;
      continue;
    }
    size_t want = static_cast<size_t>(total - off < local_buf.size() ? total - off : local_buf.size());
    long got = data.copy(off, local_buf.data(), want);
    if (got <= 0) {
      give_up(conn, false);  // the buffer vanished under us: stop tracking, fail open
      return;
    }
    observer.begin_chunk(static_cast<size_t>(got));
    http::Status st = stream.parser.feed(local_buf.data(), static_cast<size_t>(got), observer);
    observer.end_chunk();
    conn.seen_bytes = true;
    off += static_cast<uint64_t>(got);
    if (st != http::Status::kOk) break;
  }
  switch (stream.parser.status()) {
    case http::Status::kOk:
      break;
    case http::Status::kNotHttp: {
      // Bytes that merely started like a method ("GET foo bar") may have opened an exchange.
      bool had_head = false;
      for (const Exchange& ex : conn.exchanges) had_head = had_head || ex.head_complete;
      if (had_head) {
        give_up(conn, true);
      } else {
        stats_.connections_not_http++;
        conn.opaque = true;
        conn.exchanges.clear();
      }
      break;
    }
    case http::Status::kError:
      give_up(conn, true);
      break;
    case http::Status::kUpgraded:
      // The request side goes opaque right after an Upgrade request; keep watching for the 101.
      if (&stream == &conn.responses || conn.exchanges.empty()) conn.opaque = true;
      break;
  }
}

void Tracker::give_up(Connection& conn, bool parse_error) {
  if (conn.opaque) return;
  conn.opaque = true;
  conn.exchanges.clear();
  stats_.connections_abandoned++;
  if (parse_error) stats_.parse_errors++;
}

void Tracker::fail_pending(Connection& conn, const std::string& error, TimeNs now) {
  while (!conn.exchanges.empty()) {
    Exchange& ex = conn.exchanges.front();
    if (ex.head_complete) finish(conn, ex, now, error);
    conn.exchanges.pop_front();
  }
}

bool Tracker::sample_root(const TraceId& trace_id) {
  if (!config_.sampler.sample(nullptr, trace_id)) return false;
  if (!shedding()) return true;
  stats_.traces_shed++;
  return false;
}

void Tracker::start_server_span(Exchange& ex, const http::MessageHead& head, const Decided* decided) {
  SpanContext parent;
  const bool has_parent = extract_context(head, config_.propagation, parent);
  if (decided) {
    // The stub drew the ids (and told the thread) already: the engine's span must be the same.
    if (decided->has_parent != has_parent || (has_parent && parent.span_id != decided->parent)) stats_.stub_mismatches++;
    stats_.stub_contexts++;
    if (decided->shed) stats_.traces_shed++;
    ex.context.trace_id = decided->trace_id;
    ex.context.span_id = decided->span_id;
    ex.context.flags = decided->flags;
    ex.has_parent = ex.parent_remote = decided->has_parent;
    ex.parent_span_id = decided->parent;
    thread_contexts_[ex.tid] = ex.context;
    return;
  }
  if (has_parent) {
    ex.context.trace_id = parent.trace_id;
    ex.parent_span_id = parent.span_id;
    ex.has_parent = true;
    ex.parent_remote = true;
    ex.context.trace_state = parent.trace_state;
    ex.context.baggage = parent.baggage;
    ex.context.flags = config_.sampler.sample(&parent, parent.trace_id) ? 1 : 0;
  } else {
    ex.context.trace_id = ids_.trace_id();
    ex.context.flags = sample_root(ex.context.trace_id) ? 1 : 0;
    if (config_.propagation.propagators & kBaggage) ex.context.baggage = head.baggage;
  }
  ex.context.span_id = ids_.span_id();
  // Context follows data: what this thread does next serves this request.
  thread_contexts_[ex.tid] = ex.context;
}

ClientSpanPlan Tracker::plan_client_span(pid_t tid) {
  ClientSpanPlan plan;
  auto it = thread_contexts_.find(tid);
  if (it != thread_contexts_.end() && it->second.valid()) {
    const SpanContext& parent = it->second;
    plan.caller = parent;
    plan.context.trace_id = parent.trace_id;
    plan.context.trace_state = parent.trace_state;
    plan.context.baggage = parent.baggage;
    plan.parent_span_id = parent.span_id;
    plan.has_parent = true;
    plan.context.flags = config_.sampler.sample(&parent, parent.trace_id) ? 1 : 0;
  } else {
    plan.context.trace_id = ids_.trace_id();
    plan.context.flags = sample_root(plan.context.trace_id) ? 1 : 0;
  }
  plan.context.span_id = ids_.span_id();
  return plan;
}

void Tracker::start_client_span(Connection& conn, Exchange& ex, const http::MessageHead& head) {
  ClientSpanPlan plan = conn.planned ? std::move(*conn.planned) : plan_client_span(ex.tid);
  conn.planned.reset();
  conn.head_injected = false;
  conn.inject_at.reset();
  SpanContext own;
  if (carries_context(head, config_.propagation) &&
      extract_context(head, PropagationConfig{kTraceContext | kB3Single | kB3Multi}, own)) {
    // The program propagates by itself: its context is this request's parent.
    plan.context.trace_id = own.trace_id;
    plan.context.trace_state = own.trace_state;
    plan.context.flags = own.flags;
    plan.parent_span_id = own.span_id;
    plan.has_parent = true;
  }
  ex.context = std::move(plan.context);
  ex.parent_span_id = plan.parent_span_id;
  ex.has_parent = plan.has_parent;
  ex.caller = std::move(plan.caller);
}

// Finds where the first request head in the bytes about to be written ends, on a copy of the
// connection's request parser (the real one only sees what was actually sent, at exit).
class LookaheadObserver final : public http::Observer {
 public:
  void on_message_begin(size_t) override {}
  void on_head_complete(const http::MessageHead& h, size_t offset) override {
    if (found) return;
    found = true;
    head = h;
    end = base + offset;
  }
  void on_message_complete(size_t) override {}
  uint64_t base = 0;
  bool found = false;
  http::MessageHead head;
  uint64_t end = 0;  // just after the blank line
};

namespace {

class IgnoringObserver final : public http::Observer {
 public:
  void on_message_begin(size_t) override {}
  void on_head_complete(const http::MessageHead&, size_t) override {}
  void on_message_complete(size_t) override {}
};

// Feeds `parser` (a copy: bytes about to be written) data[off, size) through `buf`, skipping bodies
// of known length; *feed_base (when given) gets where each fed piece starts. The program waits
// meanwhile: past 64 KB of bytes to parse (a large chunked write), or bytes that cannot be read,
// it stops and returns false.
bool look_ahead(http::Parser& parser, DataView& data, uint64_t off, std::vector<uint8_t>& buf, http::Observer& observer,
                uint64_t* feed_base) {
  constexpr uint64_t kMaxParsed = 64 * 1024;
  const uint64_t total = data.size();
  uint64_t parsed = 0;
  while (off < total && parser.status() == http::Status::kOk) {
    const uint64_t skippable = parser.skippable();
    if (skippable > 0) {
      const uint64_t n = std::min(skippable, total - off);
      parser.skip(n, observer);
      off += n;
      continue;
    }
    if (parsed >= kMaxParsed) return false;
    const long got = data.copy(off, buf.data(), static_cast<size_t>(std::min<uint64_t>(total - off, kMaxParsed - parsed)));
    if (got <= 0) return false;
    if (feed_base) *feed_base = off;
    parser.feed(buf.data(), static_cast<size_t>(got), observer);
    off += static_cast<uint64_t>(got);
    parsed += static_cast<uint64_t>(got);
  }
  return true;
}

// The body still owed once data[off, size) is written (later writes ask again when it cannot tell: 0).
std::pair<uint64_t, bool> owed_after(http::Parser& parser, DataView& data, uint64_t off, std::vector<uint8_t>& buf) {
  IgnoringObserver ignore;
  if (!look_ahead(parser, data, off, buf, ignore, nullptr)) return {0, false};
  // A request starts after the body owed: between messages, or in a body of known length.
  const uint64_t owed = parser.body_ahead();
  const bool boundary = parser.status() == http::Status::kOk &&
                        (!parser.in_message() || (!parser.in_head() && owed > 0 && owed != http::Parser::kUnbounded));
  return {owed, boundary};
}

std::vector<uint8_t>& lookahead_buffer() {
  static thread_local std::vector<uint8_t> buf(64 * 1024);
  return buf;
}

// A second one for owed_after inside plan_injection, which still reads the first after it.
std::vector<uint8_t>& owed_buffer() {
  static thread_local std::vector<uint8_t> buf(64 * 1024);
  return buf;
}

}  // namespace

std::pair<uint64_t, bool> Tracker::body_owed_after(FdTable& table, int fd, DataView& data) {
  const std::shared_ptr<Connection>& conn = table.get(fd);
  if (!conn || conn->opaque || conn->side != Side::kClient) return {0, false};
  http::Parser parser = conn->requests.parser;
  return owed_after(parser, data, 0, lookahead_buffer());
}

namespace {

// Counts the requests that start in bytes about to be written, and those among them that are
// HEAD or CONNECT (whose responses are not framed by their heads alone).
class RequestCounter final : public http::Observer {
 public:
  void on_message_begin(size_t) override { begun++; }
  void on_head_complete(const http::MessageHead& h, size_t offset) override {
    if (heads++ == 0 && h.chunked) chunked_at = base + offset;
    if (h.method == "HEAD") head_method++;
    if (h.method == "CONNECT") connect++;
  }
  void on_message_complete(size_t) override {}
  int begun = 0, heads = 0, head_method = 0, connect = 0;
  uint64_t base = 0;  // where the bytes of the current feed start
  std::optional<uint64_t> chunked_at;  // the first head's chunked body starts here
};

}  // namespace

ResponseFraming Tracker::response_framing(FdTable& table, int fd, DataView& data, std::optional<uint64_t>& chunked_at) {
  chunked_at.reset();
  const std::shared_ptr<Connection>& conn = table.get(fd);
  if (!conn || conn->opaque || conn->side != Side::kClient) return ResponseFraming::kUnknown;
  http::Parser parser = conn->requests.parser;
  RequestCounter counter;
  if (!look_ahead(parser, data, 0, lookahead_buffer(), counter, &counter.base)) return ResponseFraming::kUnknown;
  if (counter.begun == 0 && parser.status() == http::Status::kOk) return ResponseFraming::kNoRequest;
  // One whole head, after every earlier request was answered: its response is the next byte read.
  const bool one = counter.begun == 1 && counter.heads == 1 && counter.connect == 0 && conn->exchanges.empty();
  if (!one || parser.status() != http::Status::kOk) return ResponseFraming::kUnknown;
  chunked_at = counter.chunked_at;
  return counter.head_method ? ResponseFraming::kHead : ResponseFraming::kOne;
}

Injection Tracker::plan_injection(FdTable& table, const Io& io, DataView& data) {
  Injection none;
  const std::shared_ptr<Connection>& conn = table.get(io.fd);
  if (!config_.inject || !conn || conn->opaque || conn->side != Side::kClient) return none;
  if (!conn->pending_header.empty()) {
    Injection rest;
    rest.active = true;
    rest.offset = 0;
    rest.header = conn->pending_header;
    rest.continuation = true;
    return rest;
  }
  if (conn->head_injected) return none;
  if (conn->inject_at && conn->planned) {
    // Decided by an earlier write that the kernel took only part of.
    if (*conn->inject_at < conn->written || *conn->inject_at > conn->written + data.size()) return none;
    Injection inj;
    inj.active = true;
    inj.offset = *conn->inject_at - conn->written;
    inj.header = context_headers(conn->planned->context, config_.propagation);
    return inj;
  }

  http::Parser parser = conn->requests.parser;
  if (parser.status() != http::Status::kOk) return none;
  LookaheadObserver observer;
  std::vector<uint8_t>& buf = lookahead_buffer();
  const uint64_t total = data.size();
  uint64_t off = 0;
  uint64_t chunk_at = 0, chunk_len = 0;  // the bytes of data in buf
  while (off < total && !observer.found && parser.status() == http::Status::kOk) {
    uint64_t skippable = parser.skippable();
    if (skippable > 0) {
      uint64_t n = std::min(skippable, total - off);
      parser.skip(n, observer);
      off += n;
      continue;
    }
    long got = data.copy(off, buf.data(), static_cast<size_t>(std::min<uint64_t>(total - off, buf.size())));
    if (got <= 0) return none;
    observer.base = chunk_at = off;
    chunk_len = static_cast<uint64_t>(got);
    parser.feed(buf.data(), static_cast<size_t>(got), observer);
    off += static_cast<uint64_t>(got);
  }
  // Whatever is planned, the body owed after these bytes (for a GET written whole: none, at no cost).
  std::tie(none.quiet, none.boundary) = owed_after(parser, data, off, owed_buffer());
  none.quiet_known = true;
  none.head_found = observer.found;
  if (!observer.found) return none;
  if (carries_context(observer.head, config_.propagation)) {
    stats_.contexts_present++;
    return none;
  }
  if (!config_.inject_to.allows(conn->socket.peer.address, observer.head.host)) {
    stats_.injections_skipped++;
    return none;
  }
  // Insert just before the blank line that ends the head: every header the program wrote is
  // known by then, and its request line and headers stay byte for byte as they were.
  // (From buf when the head's end is there, as it mostly is: a copy out of a tracee is a syscall.)
  auto byte_at = [&](uint64_t at, uint8_t& out) {
    if (at >= chunk_at && at < chunk_at + chunk_len) {
      out = buf[at - chunk_at];
      return true;
    }
    return data.copy(at, &out, 1) == 1;
  };
  uint8_t cr = 0, lf = 0;
  uint64_t blank_len = 0;
  if (observer.end >= 2 && byte_at(observer.end - 2, cr) && byte_at(observer.end - 1, lf) && cr == '\r' && lf == '\n') {
    blank_len = 2;
  } else if (observer.end >= 1 && byte_at(observer.end - 1, lf) && lf == '\n') {
    blank_len = 1;
  }
  // A lone LF at the start of this write may end a CR the previous write sent: inserting there
  // would split the CRLF, so that (rare) case goes without injection.
  if (blank_len == 0 || (blank_len == 1 && observer.end == 1)) {
    stats_.injections_skipped++;  // the program wrote the blank line's CR and LF separately
    return none;
  }
  if (!conn->planned) conn->planned = plan_client_span(io.tid);
  Injection inj;
  inj.active = true;
  inj.offset = observer.end - blank_len;
  inj.header = context_headers(conn->planned->context, config_.propagation);
  inj.quiet = none.quiet;
  inj.quiet_known = true;
  inj.boundary = none.boundary;
  inj.head_found = true;
  if (inj.header.empty()) return none;
  conn->inject_at = conn->written + inj.offset;
  return inj;
}

void Tracker::client_decided(FdTable& table, int fd, pid_t tid, const Decided& decided) {
  const std::shared_ptr<Connection>& conn = table.get(fd);
  if (!conn || conn->opaque || conn->side != Side::kClient) return;
  const SpanContext* now = thread_context(tid);
  if ((now != nullptr) != decided.has_parent || (now && now->span_id != decided.parent)) stats_.stub_mismatches++;
  ClientSpanPlan plan;
  if (now) plan.caller = *now;  // given back once the response is read, as plan_client_span does
  plan.context.trace_id = decided.trace_id;
  plan.context.span_id = decided.span_id;
  plan.context.flags = decided.flags;
  plan.parent_span_id = decided.parent;
  plan.has_parent = decided.has_parent;
  conn->planned = std::move(plan);
  stats_.headers_injected++;
  stats_.stub_injections++;
  if (decided.shed) stats_.traces_shed++;
}

bool Tracker::peer_allowed(const FdTable& table, int fd) const {
  const std::shared_ptr<Connection>& conn = table.get(fd);
  return conn && config_.inject_to.allows_peer(conn->socket.peer.address);
}

const SpanContext* Tracker::thread_context(pid_t tid) const {
  auto it = thread_contexts_.find(tid);
  return it != thread_contexts_.end() && it->second.valid() ? &it->second : nullptr;
}

void Tracker::injection_done(FdTable& table, int fd, const Injection& injection, uint64_t sent) {
  const std::shared_ptr<Connection>& conn = table.get(fd);
  if (!conn || !injection.active) return;
  if (injection.continuation) {
    conn->pending_header.erase(0, std::min<uint64_t>(sent, conn->pending_header.size()));
    return;
  }
  if (sent == 0) return;  // nothing of it went out: planned again at the next write
  stats_.headers_injected++;
  if (sent < injection.header.size()) stats_.injections_split++;
  conn->head_injected = true;
  if (sent < injection.header.size()) conn->pending_header = injection.header.substr(sent);
}

void Tracker::finish(Connection& conn, Exchange& ex, TimeNs end, const std::string& error) {
  if (conn.side == Side::kClient) {
    // Reading the response puts the caller's context back on the reading thread.
    if (ex.caller.valid()) thread_contexts_[ex.tid] = ex.caller;
  } else {
    auto it = thread_contexts_.find(ex.tid);
    if (it != thread_contexts_.end() && it->second.span_id == ex.context.span_id) thread_contexts_.erase(it);
  }
  // Unsampled exchanges are handed over too: the request metrics count every request (JS exports
  // only the sampled ones as spans). Not while JS takes no batches at all, though: they would only
  // pile up in memory until the batch limit drops them anyway.
  if (!ex.head_complete) return;
  if (!ex.context.sampled() && (shedding_.load(std::memory_order_relaxed) & kBatchBacklog)) {
    stats_.unsampled_dropped++;
    return;
  }
  SpanRecord r;
  r.kind = conn.side == Side::kServer ? 1 : 2;
  r.context = ex.context;
  r.parent_span_id = ex.parent_span_id;
  r.has_parent = ex.has_parent;
  r.parent_remote = ex.parent_remote;
  r.start = ex.start;
  r.end = end > ex.start ? end : ex.start;
  r.pid = ex.pid;
  r.tid = ex.tid;
  r.method = std::move(ex.method);
  r.target = std::move(ex.target);
  r.host = std::move(ex.host);
  r.user_agent = std::move(ex.user_agent);
  r.protocol_version = std::move(ex.protocol_version);
  r.status_code = ex.status;
  r.peer = conn.socket.peer;
  r.local = conn.socket.local;
  r.request_body_size = ex.request_body;
  r.response_body_size = ex.response_body;
  r.error = error;
  sink_.emit_span(std::move(r));
}

}  // namespace rbinder
