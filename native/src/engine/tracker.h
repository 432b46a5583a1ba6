// The per-syscall logic: fd tables, connections, HTTP parsing, thread contexts and span records.
// It knows nothing about where syscall events come from (ptrace stops today, an in-process ring
// later): a source calls these methods with what it saw and a DataView over the bytes.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/ids.h"
#include "engine/propagation.h"
#include "http/parser.h"
#include "tracee/memory.h"
#include "tracee/sockets.h"

namespace rbinder {

// Nanoseconds since the Unix epoch (CLOCK_REALTIME).
using TimeNs = uint64_t;
TimeNs now_ns();

struct SpanRecord {
  uint8_t kind = 0;  // 1 SERVER, 2 CLIENT (@opentelemetry/api SpanKind)
  SpanContext context;
  SpanId parent_span_id{};
  bool has_parent = false;
  bool parent_remote = false;
  TimeNs start = 0;
  TimeNs end = 0;
  pid_t pid = 0;
  pid_t tid = 0;
  std::string method, target, host, user_agent, protocol_version;
  int status_code = 0;
  Endpoint peer, local;
  uint64_t request_body_size = 0;
  uint64_t response_body_size = 0;
  std::string error;
};

class SpanSink {
 public:
  virtual ~SpanSink() = default;
  virtual void emit_span(SpanRecord&& span) = 0;
};

// Counters read by JS from another thread.
struct TrackerStats {
  std::atomic<uint64_t> bytes_read{0};
  std::atomic<uint64_t> bytes_written{0};
  std::atomic<uint64_t> connections_tracked{0};
  std::atomic<uint64_t> connections_abandoned{0};
  std::atomic<uint64_t> connections_not_http{0};
  std::atomic<uint64_t> parse_errors{0};
  std::atomic<uint64_t> headers_injected{0};
  std::atomic<uint64_t> injections_skipped{0};  // destination not allowed, or no room
  std::atomic<uint64_t> contexts_present{0};    // the program sent trace context itself
  std::atomic<uint64_t> injections_split{0};    // a partial write cut through the injected header
  std::atomic<uint64_t> traces_shed{0};         // new traces left unsampled while export was behind
  std::atomic<uint64_t> unsampled_dropped{0};   // unsampled exchanges not handed over: JS was not taking batches
  // The fast path's stub deciding trace context itself (docs/fast-path.md):
  std::atomic<uint64_t> stub_contexts{0};       // SERVER spans whose ids it drew
  std::atomic<uint64_t> stub_injections{0};     // request heads it put the header in, without an upcall
  std::atomic<uint64_t> stub_mismatches{0};     // a parent it chose that the engine's rule would not have
};

// Ids an in-process decision already chose for a span (the fast path's stub): the engine takes
// them instead of drawing its own.
struct Decided {
  TraceId trace_id{};
  SpanId span_id{};
  SpanId parent{};
  bool has_parent = false;
  uint8_t flags = 0;
  bool shed = false;  // a trace that starts here, left unsampled because export was behind
};

// The bytes one syscall moved, wherever they live (tracee memory, a shared ring).
class DataView {
 public:
  virtual ~DataView() = default;
  virtual uint64_t size() const = 0;
  // Copies [offset, offset + len) into local_buf. Returns bytes copied (short at a fault) or -errno.
  virtual long copy(uint64_t offset, void* local_buf, size_t len) = 0;
};

// Bytes in the engine's own memory: the first `copied` of the `total` a syscall moved (the rest
// were not copied, e.g. body bytes a ring event only counts; copying them gives nothing).
class LocalBytes final : public DataView {
 public:
  LocalBytes(const uint8_t* data, size_t copied, uint64_t total) : data_(data), copied_(copied), total_(total) {}
  LocalBytes(const uint8_t* data, size_t n) : LocalBytes(data, n, n) {}
  uint64_t size() const override { return total_; }
  long copy(uint64_t offset, void* local_buf, size_t len) override;

 private:
  const uint8_t* data_;
  size_t copied_;
  uint64_t total_;
};

enum class Side : uint8_t {
  kServer,  // accepted: the program reads requests and writes responses
  kClient,  // connected: the program writes requests and reads responses
};

enum class Direction : uint8_t { kRead, kWrite };

// One request/response pair on a connection, which becomes one span.
struct Exchange {
  SpanContext context;
  SpanId parent_span_id{};
  bool has_parent = false;
  bool parent_remote = false;
  // Client side: the thread's context when the request was written, restored when the response
  // is read (DESIGN.md section 3).
  SpanContext caller;
  TimeNs start = 0;
  pid_t pid = 0;
  pid_t tid = 0;
  bool head_complete = false;
  bool request_complete = false;
  bool response_head = false;
  std::string method, target, host, user_agent, protocol_version;
  int status = 0;
  uint64_t request_body = 0;
  uint64_t response_body = 0;
};

// One direction of a connection: its parser and the body bytes counted for the current message.
struct Stream {
  explicit Stream(http::Role role) : parser(role) {}
  http::Parser parser;
  bool in_body = false;
  uint64_t body_bytes = 0;
};

// The context a client span gets, chosen when its request head is written (or injected).
struct ClientSpanPlan {
  SpanContext context;
  SpanId parent_span_id{};
  bool has_parent = false;
  SpanContext caller;  // the writing thread's context, restored when the response is read
};

struct Connection {
  Connection(uint64_t id, Side side, pid_t tgid, const SocketInfo& info);
  const uint64_t id;
  const Side side;
  const pid_t tgid;  // process that created it
  SocketInfo socket;
  Stream requests;   // bytes read (server) or written (client)
  Stream responses;  // bytes written (server) or read (client)
  std::deque<Exchange> exchanges;  // in flight, oldest first (pipelining)
  bool opaque = false;             // not HTTP, upgraded or abandoned: never looked at again
  bool seen_bytes = false;
  int fd_refs = 0;                 // descriptors (in any fd table) naming it
  // Client side: injection into the request head being written.
  std::optional<ClientSpanPlan> planned;  // chosen for the head being written
  bool head_injected = false;             // that head got its header lines (maybe partly sent)
  std::string pending_header;             // header bytes a partial write left unsent
  std::optional<uint64_t> inject_at;      // where in the written stream the header goes
  uint64_t written = 0;                   // bytes of the program written on it so far
  // Response bytes read while the request they answer was still being written by another thread
  // (planned at its write's entry, not yet accounted): fed once that write is.
  struct HeldRead {
    TimeNs entry = 0, exit = 0;
    pid_t tid = 0, pid = 0;
    long result = 0;
    std::vector<uint8_t> bytes;
  };
  std::vector<HeldRead> held_reads;
  uint64_t held_bytes = 0;
  // The event source's own handle on the socket and its bookkeeping (the ptrace source keeps a
  // pidfd_getfd copy to read TCP progress and peek at queued bytes instead of taking exit stops).
  // Closed when the last descriptor of the program naming the connection goes.
  OwnedFd source_fd;  // valid: reads and writes are predicted at their entry stop
  bool have_in_base = false, have_out_base = false;
  uint64_t in_base = 0, out_base = 0;      // TCP progress counters when tracking started
  uint64_t in_parsed = 0, out_parsed = 0;  // bytes handed to the parsers per direction
  // The last predicted read: where its bytes went, so bytes it took beyond the prediction can be
  // read from the program's buffer afterwards.
  std::vector<TraceeIovec> last_read;
  pid_t last_read_tid = 0;
  uint64_t last_read_predicted = 0;
  Stream& stream_for(Direction d) {
    bool reads_requests = side == Side::kServer;
    return (d == Direction::kRead) == reads_requests ? requests : responses;
  }
};

// A process's descriptor table as far as connections go (shared by CLONE_FILES).
class FdTable {
 public:
  const std::shared_ptr<Connection>& get(int fd) const;
  // Replaces the entry; returns the connection that was there (to be released by the caller).
  std::shared_ptr<Connection> set(int fd, std::shared_ptr<Connection> conn);
  std::shared_ptr<Connection> take(int fd);
  template <typename F>
  void for_each(F f) const {
    for (size_t fd = 0; fd < by_fd_.size(); fd++)
      if (by_fd_[fd]) f(static_cast<int>(fd), by_fd_[fd]);
  }

 private:
  std::vector<std::shared_ptr<Connection>> by_fd_;
};

struct TrackerConfig {
  Sampler sampler;
  PropagationConfig propagation;
  bool inject = true;                 // inject trace context into outbound requests
  DestinationAllowList inject_to;     // where to
};

// How a rewritten write's result splits into the program's bytes and injected header bytes, for
// a header inserted at `offset` of the program's bytes.
struct SentSplit {
  uint64_t app = 0;
  uint64_t header = 0;
};
SentSplit split_sent(uint64_t result, uint64_t offset, uint64_t header_len);

// Header bytes to insert into the bytes a write-family syscall is about to send.
struct Injection {
  bool active = false;
  uint64_t offset = 0;        // position in the syscall's bytes
  std::string header;         // complete "Name: value\r\n" lines (or the unsent rest of them)
  bool continuation = false;  // the rest of a header an earlier partial write left unsent
  // Request body the program still owes once all of these bytes are sent (http::Parser::body_ahead:
  // kUnbounded in a chunked body): writes of it cannot start a head, so need no planning. Set
  // where the plan parsed the bytes (quiet_known); otherwise Tracker::body_owed_after tells.
  uint64_t quiet = 0;
  bool quiet_known = false;
  bool boundary = false;  // with quiet_known: the byte after that body starts a request
  bool head_found = false;  // a request head ends in the bytes (its CLIENT span is planned now)
};

// What bytes about to be written on a client connection mean for the stub's reading of the
// responses (rb_call.resp): no request starts in them; exactly one does, every earlier one is
// answered, and its response is framed by its own head from the next byte read on (kOne; kHead
// for a HEAD request, whose response has no body); or anything else (CONNECT among them).
enum class ResponseFraming : uint8_t { kNoRequest, kOne, kHead, kUnknown };

class Tracker {
 public:
  Tracker(SpanSink& sink, TrackerStats& stats, TrackerConfig config);

  std::shared_ptr<FdTable> new_fd_table() { return std::make_shared<FdTable>(); }
  // fork without CLONE_FILES: the child's table names the same connections.
  std::shared_ptr<FdTable> copy_fd_table(const FdTable& table);
  // The last user of a table is gone (exit, exec unshare): its descriptors close.
  void release_fd_table(FdTable& table, TimeNs now);

  // True when syscalls on fd need their exit stop (a connection being parsed).
  bool is_tracked(const FdTable& table, int fd) const;
  bool is_known(const FdTable& table, int fd) const { return table.get(fd) != nullptr; }
  // True when writes on fd may need header injection (a tracked outbound connection).
  bool may_inject(const FdTable& table, int fd) const {
    const auto& conn = table.get(fd);
    return config_.inject && conn && !conn->opaque && conn->side == Side::kClient;
  }

  void on_connection(FdTable& table, int fd, Side side, pid_t tgid, const SocketInfo& info, TimeNs now);

  struct Io {
    pid_t tid = 0;
    pid_t pid = 0;  // thread group of tid
    int fd = -1;
    Direction direction = Direction::kRead;
    long result = 0;  // bytes moved, or -errno
    TimeNs entry = 0;
    TimeNs exit = 0;
    const Decided* server = nullptr;  // a read: the SERVER span of the request head it starts
  };
  // A read- or write-family syscall finished on fd. `data` covers the bytes moved (result > 0).
  void on_io(FdTable& table, const Io& io, DataView& data);
  // At the entry of a write-family syscall: what to insert into the bytes it is about to send.
  Injection plan_injection(FdTable& table, const Io& io, DataView& data);
  // The request body still owed on the connection once `data` is written on it (Injection::quiet),
  // and whether the next byte after that body starts a request (Injection::boundary).
  std::pair<uint64_t, bool> body_owed_after(FdTable& table, int fd, DataView& data);
  // Whether the stub can frame the responses to the bytes about to be written on fd (rb_call.resp);
  // with kOne or kHead, chunked_at is where the request's chunked body starts in them, if it is
  // chunked (rb_call.chunk_at: the stub follows its chunks from there).
  ResponseFraming response_framing(FdTable& table, int fd, DataView& data, std::optional<uint64_t>& chunked_at);
  // A request head about to be written on fd whose CLIENT span the stub decided (and injected).
  void client_decided(FdTable& table, int fd, pid_t tid, const Decided& decided);
  // True when fd's peer address may get trace context whatever the request's Host says.
  bool peer_allowed(const FdTable& table, int fd) const;
  // The thread's current context (nullptr: none).
  const SpanContext* thread_context(pid_t tid) const;
  // At its exit, before on_io: how many of the injection's header bytes went out.
  void injection_done(FdTable& table, int fd, const Injection& injection, uint64_t header_bytes_sent);

  // sendfile: `count` body bytes went out on fd without passing through a user buffer.
  void on_sendfile(FdTable& table, const Io& io);

  // The program moved `n` bytes on fd that the parser never saw (learned after the fact). Body
  // bytes of known length are skipped; anything else ends the tracking of the connection. Either
  // way they count as bytes read or written.
  void on_unseen(FdTable& table, const Io& io, uint64_t n);

  void on_close(FdTable& table, int fd, TimeNs now);
  // newfd now names what oldfd names (dup family); whatever newfd named before is closed.
  void on_dup(FdTable& table, int oldfd, int newfd, TimeNs now);
  void on_thread_exit(pid_t tid) { thread_contexts_.erase(tid); }

  // Load shedding: while export is behind (for any reason set), traces that would start here are
  // not sampled, whole: the unsampled flag goes downstream with the injected context, so the
  // services after this one record nothing of them either. Spans of traces already sampled
  // upstream are still recorded. Any thread may call this.
  enum ShedReason : unsigned { kExportQueue = 1, kBatchBacklog = 2 };
  void set_shedding(ShedReason reason, bool on) {
    if (on) {
      shedding_.fetch_or(reason, std::memory_order_relaxed);
    } else {
      shedding_.fetch_and(~static_cast<unsigned>(reason), std::memory_order_relaxed);
    }
  }
  bool shedding() const { return shedding_.load(std::memory_order_relaxed) != 0; }

 private:
  // The sampling decision for a trace that starts here.
  bool sample_root(const TraceId& trace_id);
  friend class StreamObserver;
  // on_io without holding back early responses.
  void on_io_now(Connection& conn, const Io& io, DataView& data);
  void release(std::shared_ptr<Connection> conn, TimeNs now);
  void feed(Connection& conn, Direction dir, const Io& io, DataView& data);
  void give_up(Connection& conn, bool parse_error);
  void fail_pending(Connection& conn, const std::string& error, TimeNs now);
  void finish(Connection& conn, Exchange& ex, TimeNs end, const std::string& error);
  void start_server_span(Exchange& ex, const http::MessageHead& head, const Decided* decided);
  void start_client_span(Connection& conn, Exchange& ex, const http::MessageHead& head);
  ClientSpanPlan plan_client_span(pid_t tid);

  SpanSink& sink_;
  TrackerStats& stats_;
  TrackerConfig config_;
  IdGenerator ids_;
  uint64_t next_connection_id_ = 1;
  std::unordered_map<pid_t, SpanContext> thread_contexts_;
  std::atomic<unsigned> shedding_{0};  // ShedReason bits
};

}  // namespace rbinder
