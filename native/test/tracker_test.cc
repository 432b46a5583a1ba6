// The per-syscall logic without a kernel: connections, spans, correlation and header injection,
// driven the way an event source drives it. The injection tests simulate the kernel accepting
// only part of each write, at every possible split point, and check the bytes that reach the wire.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "engine/propagation.h"
#include "engine/tracker.h"

namespace rbinder {
namespace {

class Collect final : public SpanSink {
 public:
  void emit_span(SpanRecord&& span) override { spans.push_back(std::move(span)); }
  std::vector<SpanRecord> spans;
};

class Bytes final : public DataView {
 public:
  explicit Bytes(std::string b) : bytes(std::move(b)) {}
  uint64_t size() const override { return bytes.size(); }
  long copy(uint64_t offset, void* local_buf, size_t len) override {
    if (offset >= bytes.size()) return 0;
    size_t n = std::min(len, bytes.size() - static_cast<size_t>(offset));
    std::memcpy(local_buf, bytes.data() + offset, n);
    return static_cast<long>(n);
  }
  std::string bytes;
};

constexpr int kClientFd = 5;
constexpr int kServerFd = 6;
constexpr pid_t kTid = 100;

SocketInfo socket_to(const std::string& peer, uint16_t port) {
  SocketInfo info;
  info.domain = 2;
  info.type = 1;
  info.peer = {peer, port};
  info.local = {"10.0.0.1", 40000};
  return info;
}

struct Fixture {
  explicit Fixture(TrackerConfig config = default_config()) : tracker(sink, stats, std::move(config)) {
    fds = tracker.new_fd_table();
  }
  static TrackerConfig default_config() {
    TrackerConfig c;
    std::string error;
    c.inject_to.add("10.0.0.0/8", error);
    c.inject_to.add(".svc", error);
    return c;
  }
  Tracker::Io io(int fd, Direction d, long result) {
    Tracker::Io io;
    io.tid = kTid;
    io.pid = 1;
    io.fd = fd;
    io.direction = d;
    io.result = result;
    io.entry = ++clock;
    io.exit = ++clock;
    return io;
  }
  void read(int fd, const std::string& bytes) {
    Bytes view(bytes);
    tracker.on_io(*fds, io(fd, Direction::kRead, static_cast<long>(bytes.size())), view);
  }
  void write_plain(int fd, const std::string& bytes) {
    Bytes view(bytes);
    tracker.on_io(*fds, io(fd, Direction::kWrite, static_cast<long>(bytes.size())), view);
  }
  // The program writes `request` on the client fd; the kernel takes at most budgets[i] bytes of
  // the i-th write (the last budget repeats). Returns the bytes that reached the wire.
  std::string write_request(const std::string& request, const std::vector<size_t>& budgets) {
    std::string wire;
    size_t sent = 0;
    for (size_t i = 0; sent < request.size(); i++) {
      Bytes view(request.substr(sent));
      Tracker::Io w = io(kClientFd, Direction::kWrite, 0);
      Injection inj = tracker.plan_injection(*fds, w, view);
      std::string bytes = view.bytes;
      if (inj.active) bytes.insert(static_cast<size_t>(inj.offset), inj.header);
      size_t budget = budgets[std::min(i, budgets.size() - 1)];
      size_t r = std::min(budget, bytes.size());
      wire += bytes.substr(0, r);
      SentSplit split = inj.active ? split_sent(r, inj.offset, inj.header.size()) : SentSplit{r, 0};
      if (inj.active) tracker.injection_done(*fds, kClientFd, inj, split.header);
      w.result = static_cast<long>(split.app);
      tracker.on_io(*fds, w, view);
      sent += split.app;
      if (i > 100000) ADD_FAILURE() << "no progress";
    }
    return wire;
  }

  Collect sink;
  TrackerStats stats;
  Tracker tracker;
  std::shared_ptr<FdTable> fds;
  TimeNs clock = 1000;
};

const std::string kRequest =
    "POST /orders?id=7 HTTP/1.1\r\nHost: orders.default.svc\r\nUser-Agent: t/1\r\nContent-Length: 5\r\n\r\nhello";
const std::string kResponse = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";

std::string inserted(const std::string& request, const std::string& header) {
  std::string out = request;
  out.insert(out.find("\r\n\r\n") + 2, header);
  return out;
}

std::string traceparent_of(const SpanRecord& s) {
  return "traceparent: 00-" + to_hex(s.context.trace_id) + "-" + to_hex(s.context.span_id) + "-01\r\n";
}

TEST(SplitSent, AccountsProgramAndHeaderBytes) {
  EXPECT_EQ(split_sent(3, 10, 5).app, 3u);
  EXPECT_EQ(split_sent(3, 10, 5).header, 0u);
  EXPECT_EQ(split_sent(10, 10, 5).app, 10u);
  EXPECT_EQ(split_sent(12, 10, 5).app, 10u);
  EXPECT_EQ(split_sent(12, 10, 5).header, 2u);
  EXPECT_EQ(split_sent(15, 10, 5).header, 5u);
  EXPECT_EQ(split_sent(20, 10, 5).app, 15u);
}

TEST(Injection, WholeWriteGetsTraceparentBeforeTheBlankLine) {
  Fixture f;
  f.tracker.on_connection(*f.fds, kClientFd, Side::kClient, 1, socket_to("10.1.2.3", 8080), 0);
  std::string wire = f.write_request(kRequest, {1 << 20});
  f.read(kClientFd, kResponse);
  ASSERT_EQ(f.sink.spans.size(), 1u);
  const SpanRecord& span = f.sink.spans[0];
  EXPECT_EQ(span.kind, 2);
  EXPECT_EQ(span.status_code, 201);
  EXPECT_EQ(wire, inserted(kRequest, traceparent_of(span)));
  EXPECT_EQ(span.request_body_size, 5u);
  EXPECT_EQ(f.stats.headers_injected.load(), 1u);
}

TEST(Injection, EveryPartialWriteSplitGivesTheSameWireBytes) {
  // Work out the header once, then cut the first write at every position, header included.
  Fixture probe;
  probe.tracker.on_connection(*probe.fds, kClientFd, Side::kClient, 1, socket_to("10.1.2.3", 8080), 0);
  const size_t total = probe.write_request(kRequest, {1 << 20}).size();
  uint64_t split_through_header = 0;
  for (size_t cut = 1; cut < total; cut++) {
    for (size_t second : {size_t{1}, size_t{7}, size_t{1} << 20}) {
      Fixture f;
      f.tracker.on_connection(*f.fds, kClientFd, Side::kClient, 1, socket_to("10.1.2.3", 8080), 0);
      std::string wire = f.write_request(kRequest, {cut, second});
      f.read(kClientFd, kResponse);
      ASSERT_EQ(f.sink.spans.size(), 1u) << "cut " << cut;
      EXPECT_EQ(wire, inserted(kRequest, traceparent_of(f.sink.spans[0]))) << "cut " << cut << " then " << second;
      split_through_header += f.stats.injections_split.load();
    }
  }
  EXPECT_GT(split_through_header, 0u);
}

TEST(Injection, HeadWrittenInPiecesIsInjectedOnce) {
  Fixture f;
  f.tracker.on_connection(*f.fds, kClientFd, Side::kClient, 1, socket_to("10.1.2.3", 80), 0);
  std::string wire;
  // The program itself writes the request in 4-byte pieces, each accepted whole.
  for (size_t i = 0; i < kRequest.size(); i += 4) wire += f.write_request(kRequest.substr(i, 4), {1 << 20});
  f.read(kClientFd, kResponse);
  ASSERT_EQ(f.sink.spans.size(), 1u);
  EXPECT_EQ(wire, inserted(kRequest, traceparent_of(f.sink.spans[0])));
}

TEST(Injection, ByteByByteWritesAreNeverCorrupted) {
  // The blank line's CR and LF come in separate writes: inserting between them would break the
  // request, so rbinder leaves it alone (and counts it).
  Fixture f;
  f.tracker.on_connection(*f.fds, kClientFd, Side::kClient, 1, socket_to("10.1.2.3", 80), 0);
  std::string wire;
  for (char c : kRequest) wire += f.write_request(std::string(1, c), {1 << 20});
  f.read(kClientFd, kResponse);
  EXPECT_EQ(wire, kRequest);
  EXPECT_EQ(f.sink.spans.size(), 1u);
  EXPECT_EQ(f.stats.injections_skipped.load(), 1u);
}

// The body the request still owes after a write (Injection::quiet, Tracker::body_owed_after): the
// stub writes that much without asking the engine, so it must never cover the start of a head.
TEST(Injection, BodyOwedAfterAWrite) {
  Fixture f;
  f.tracker.on_connection(*f.fds, kClientFd, Side::kClient, 1, socket_to("10.1.2.3", 80), 0);
  // Plans a whole write of `bytes`, lets it go out whole, and returns what is owed after it.
  auto write = [&](const std::string& bytes) {
    Bytes view(bytes);
    Tracker::Io w = f.io(kClientFd, Direction::kWrite, static_cast<long>(bytes.size()));
    Injection inj = f.tracker.plan_injection(*f.fds, w, view);
    const uint64_t owed = inj.quiet_known ? inj.quiet : f.tracker.body_owed_after(*f.fds, kClientFd, view).first;
    if (inj.active) f.tracker.injection_done(*f.fds, kClientFd, inj, inj.header.size());
    f.tracker.on_io(*f.fds, w, view);
    return owed;
  };
  const std::string head = "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n";
  EXPECT_EQ(write(head), 10u);                    // the head alone: all of the body
  EXPECT_EQ(write("0123"), 6u);                   // part of the body (no head in it: asked separately)
  EXPECT_EQ(write("456789"), 0u);                 // its end: the next byte may start a head
  f.read(kClientFd, kResponse);
  EXPECT_EQ(write(head + "0123"), 6u);            // head and part of the body in one write
  EXPECT_EQ(write("456789GET / HTTP/1.1\r\n"), 0u);  // the body's end and the start of another head
  EXPECT_EQ(write("Host: a\r\n\r\n"), 0u);     // that head's end: a GET owes nothing
  f.read(kClientFd, kResponse);
  f.read(kClientFd, kResponse);
  const std::string chunked = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  EXPECT_EQ(write(chunked), http::Parser::kUnbounded);  // where a chunked body ends is not known
  EXPECT_EQ(write("5\r\nhello\r\n"), http::Parser::kUnbounded);
  EXPECT_EQ(write("0\r\n\r\n"), 0u);
  f.read(kClientFd, kResponse);
  // A known-length body is skipped, however large. Past the head a chunked one is parsed for at
  // most 64 KB more than planning read (the program waits meanwhile): beyond that, unknown (0),
  // and the next write asks again.
  const std::string big(100 * 1024, 'x');
  const std::string length_head = "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\n\r\n";
  EXPECT_EQ(write(length_head + big), 300000u - big.size());
  EXPECT_EQ(write(std::string(300000 - big.size(), 'y')), 0u);
  f.read(kClientFd, kResponse);
  std::string chunks;
  for (int i = 0; i < 4; i++) chunks += "6400\r\n" + std::string(0x6400, 'z') + "\r\n";  // 4 x 25 KB
  EXPECT_EQ(write(chunked + chunks), http::Parser::kUnbounded);  // 100 KB after the head
  EXPECT_EQ(write("0\r\n\r\n"), 0u);
  f.read(kClientFd, kResponse);
  EXPECT_EQ(write(chunked + chunks + chunks), 0u);  // 200 KB after the head: not worked out
  EXPECT_EQ(write(chunks), http::Parser::kUnbounded);   // asked again (planning parses a body write)
  EXPECT_EQ(write("0\r\n\r\n"), 0u);
  f.read(kClientFd, kResponse);
  EXPECT_EQ(f.sink.spans.size(), 7u);
  EXPECT_EQ(f.stats.headers_injected.load(), 7u);
}

TEST(Injection, KeepAliveRequestsEachGetTheirOwnContext) {
  Fixture f;
  f.tracker.on_connection(*f.fds, kClientFd, Side::kClient, 1, socket_to("10.1.2.3", 80), 0);
  std::vector<std::string> wires;
  for (int i = 0; i < 3; i++) {
    wires.push_back(f.write_request(kRequest, {1 << 20}));
    f.read(kClientFd, kResponse);
  }
  ASSERT_EQ(f.sink.spans.size(), 3u);
  for (int i = 0; i < 3; i++) EXPECT_EQ(wires[i], inserted(kRequest, traceparent_of(f.sink.spans[i])));
  EXPECT_NE(f.sink.spans[0].context.trace_id, f.sink.spans[1].context.trace_id);
}

TEST(Injection, ResponseReadBeforeTheRequestWriteIsAccountedWaitsForIt) {
  // Another thread reads the response, and its read is reported before the request's write is
  // (ptrace: the write's exit stop comes second): the span still gets the response.
  Fixture f;
  f.tracker.on_connection(*f.fds, kClientFd, Side::kClient, 1, socket_to("10.1.2.3", 80), 0);
  Bytes request(kRequest);
  Tracker::Io w = f.io(kClientFd, Direction::kWrite, 0);
  Injection inj = f.tracker.plan_injection(*f.fds, w, request);
  ASSERT_TRUE(inj.active);
  f.read(kClientFd, kResponse.substr(0, 10));
  f.read(kClientFd, kResponse.substr(10));
  EXPECT_TRUE(f.sink.spans.empty());
  f.tracker.injection_done(*f.fds, kClientFd, inj, inj.header.size());
  w.result = static_cast<long>(kRequest.size());
  f.tracker.on_io(*f.fds, w, request);
  ASSERT_EQ(f.sink.spans.size(), 1u);
  EXPECT_EQ(f.sink.spans[0].status_code, 201);
  EXPECT_TRUE(f.sink.spans[0].error.empty());
}

TEST(Injection, ClientSpanIsChildOfTheServerSpanOnTheSameThread) {
  Fixture f;
  f.tracker.on_connection(*f.fds, kServerFd, Side::kServer, 1, socket_to("10.9.9.9", 5555), 0);
  f.tracker.on_connection(*f.fds, kClientFd, Side::kClient, 1, socket_to("10.1.2.3", 80), 0);
  f.read(kServerFd,
         "GET /in HTTP/1.1\r\nHost: a\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
         "baggage: user=42\r\n\r\n");
  std::string wire = f.write_request(kRequest, {1 << 20});
  f.read(kClientFd, kResponse);
  f.write_plain(kServerFd, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  ASSERT_EQ(f.sink.spans.size(), 2u);
  const SpanRecord& client = f.sink.spans[0];
  const SpanRecord& server = f.sink.spans[1];
  EXPECT_EQ(to_hex(server.context.trace_id), "0af7651916cd43dd8448eb211c80319c");
  EXPECT_EQ(to_hex(server.parent_span_id), "b7ad6b7169203331");
  EXPECT_TRUE(server.parent_remote);
  EXPECT_EQ(client.context.trace_id, server.context.trace_id);
  EXPECT_EQ(client.parent_span_id, server.context.span_id);
  // Baggage travels with the context.
  EXPECT_EQ(wire, inserted(kRequest, traceparent_of(client) + "baggage: user=42\r\n"));
}

TEST(Shedding, NewTracesAreNotSampledWhileExportIsBehindTracesFromUpstreamStillAre) {
  Fixture f;
  f.tracker.on_connection(*f.fds, kServerFd, Side::kServer, 1, socket_to("10.9.9.9", 5555), 0);
  f.tracker.on_connection(*f.fds, kClientFd, Side::kClient, 1, socket_to("10.1.2.3", 80), 0);
  const std::string ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  const std::string upstream = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  f.tracker.set_shedding(Tracker::kExportQueue, true);
  // A request without context: its trace is shed, and so is the call it makes, downstream too.
  // Both exchanges are still handed over, unsampled (the request metrics count them).
  f.read(kServerFd, "GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
  std::string wire = f.write_request(kRequest, {1 << 20});
  f.read(kClientFd, kResponse);
  f.write_plain(kServerFd, ok);
  ASSERT_EQ(f.sink.spans.size(), 2u);
  EXPECT_FALSE(f.sink.spans[0].context.sampled());
  EXPECT_FALSE(f.sink.spans[1].context.sampled());
  EXPECT_NE(wire.find("-00\r\n"), std::string::npos) << wire;
  EXPECT_EQ(f.stats.traces_shed.load(), 1u);
  // While JS takes no batches at all, unsampled exchanges are not even handed over (counted).
  f.tracker.set_shedding(Tracker::kBatchBacklog, true);
  f.read(kServerFd, "GET /a2 HTTP/1.1\r\nHost: a\r\n\r\n");
  f.write_plain(kServerFd, ok);
  EXPECT_EQ(f.sink.spans.size(), 2u);
  EXPECT_EQ(f.stats.traces_shed.load(), 2u);
  EXPECT_EQ(f.stats.unsampled_dropped.load(), 1u);
  // A request that comes with a sampled context is still recorded, its call sampled.
  f.read(kServerFd, "GET /b HTTP/1.1\r\nHost: a\r\ntraceparent: " + upstream + "\r\n\r\n");
  wire = f.write_request(kRequest, {1 << 20});
  f.read(kClientFd, kResponse);
  f.write_plain(kServerFd, ok);
  ASSERT_EQ(f.sink.spans.size(), 4u);
  EXPECT_TRUE(f.sink.spans[2].context.sampled());
  EXPECT_TRUE(f.sink.spans[3].context.sampled());
  EXPECT_EQ(wire, inserted(kRequest, traceparent_of(f.sink.spans[2])));
  EXPECT_EQ(f.stats.traces_shed.load(), 2u);
  // Both reasons must clear before new traces are sampled again.
  f.tracker.set_shedding(Tracker::kExportQueue, false);
  EXPECT_TRUE(f.tracker.shedding());
  f.tracker.set_shedding(Tracker::kBatchBacklog, false);
  EXPECT_FALSE(f.tracker.shedding());
  f.read(kServerFd, "GET /c HTTP/1.1\r\nHost: a\r\n\r\n");
  f.write_plain(kServerFd, ok);
  ASSERT_EQ(f.sink.spans.size(), 5u);
  EXPECT_TRUE(f.sink.spans[4].context.sampled());
  EXPECT_EQ(f.stats.traces_shed.load(), 2u);
  EXPECT_EQ(f.stats.unsampled_dropped.load(), 1u);
}

TEST(Injection, ExistingTraceparentIsHonouredNotDuplicated) {
  Fixture f;
  f.tracker.on_connection(*f.fds, kClientFd, Side::kClient, 1, socket_to("10.1.2.3", 80), 0);
  std::string request =
      "GET / HTTP/1.1\r\nHost: x.svc\r\ntraceparent: 00-11111111111111111111111111111111-2222222222222222-01\r\n\r\n";
  EXPECT_EQ(f.write_request(request, {1 << 20}), request);
  f.read(kClientFd, kResponse);
  ASSERT_EQ(f.sink.spans.size(), 1u);
  EXPECT_EQ(to_hex(f.sink.spans[0].context.trace_id), "11111111111111111111111111111111");
  EXPECT_EQ(to_hex(f.sink.spans[0].parent_span_id), "2222222222222222");
  EXPECT_EQ(f.stats.contexts_present.load(), 1u);
}

TEST(Injection, DestinationOutsideTheAllowListGetsNothing) {
  Fixture f;
  f.tracker.on_connection(*f.fds, kClientFd, Side::kClient, 1, socket_to("93.184.216.34", 443), 0);
  std::string request = "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n";
  EXPECT_EQ(f.write_request(request, {1 << 20}), request);
  f.read(kClientFd, kResponse);
  EXPECT_EQ(f.sink.spans.size(), 1u);  // still traced
  EXPECT_EQ(f.stats.injections_skipped.load(), 1u);
}

TEST(Injection, PropagatorsChooseTheHeaders) {
  TrackerConfig config = Fixture::default_config();
  config.propagation.propagators = kB3Single | kB3Multi;
  Fixture f(std::move(config));
  f.tracker.on_connection(*f.fds, kClientFd, Side::kClient, 1, socket_to("10.1.2.3", 80), 0);
  std::string wire = f.write_request(kRequest, {1 << 20});
  f.read(kClientFd, kResponse);
  const SpanRecord& s = f.sink.spans.at(0);
  const std::string t = to_hex(s.context.trace_id), id = to_hex(s.context.span_id);
  EXPECT_EQ(wire, inserted(kRequest, "b3: " + t + "-" + id + "-1\r\nX-B3-TraceId: " + t + "\r\nX-B3-SpanId: " + id +
                                         "\r\nX-B3-Sampled: 1\r\n"));
}

TEST(Extraction, B3FormatsContinueTheTrace) {
  TrackerConfig config = Fixture::default_config();
  config.propagation.propagators = kTraceContext | kB3Single | kB3Multi;
  for (const std::string& headers :
       {std::string("b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1\r\n"),
        std::string("X-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7\r\nX-B3-SpanId: e457b5a2e4d86bd1\r\nX-B3-Sampled: 1\r\n")}) {
    Fixture f(config);
    f.tracker.on_connection(*f.fds, kServerFd, Side::kServer, 1, socket_to("10.9.9.9", 5555), 0);
    f.read(kServerFd, "GET / HTTP/1.1\r\nHost: a\r\n" + headers + "\r\n");
    f.write_plain(kServerFd, "HTTP/1.1 204 No Content\r\n\r\n");
    ASSERT_EQ(f.sink.spans.size(), 1u) << headers;
    EXPECT_EQ(to_hex(f.sink.spans[0].context.trace_id), "80f198ee56343ba864fe8b2a57d3eff7");
    EXPECT_EQ(to_hex(f.sink.spans[0].parent_span_id), "e457b5a2e4d86bd1");
  }
}

TEST(AllowList, NetworksAndHostSuffixes) {
  DestinationAllowList list;
  std::string error;
  ASSERT_TRUE(list.add("10.0.0.0/8", error));
  ASSERT_TRUE(list.add("fd00::/8", error));
  ASSERT_TRUE(list.add(".svc.cluster.local", error));
  ASSERT_TRUE(list.add("example.com", error));
  EXPECT_FALSE(list.add("10.0.0.0/33", error));
  EXPECT_FALSE(list.add("10.0.0.0/x", error));
  EXPECT_TRUE(list.allows("10.200.3.4", ""));
  EXPECT_FALSE(list.allows("11.0.0.1", ""));
  EXPECT_TRUE(list.allows("fd12::1", ""));
  EXPECT_TRUE(list.allows("1.2.3.4", "orders.shop.svc.cluster.local:8080"));
  EXPECT_TRUE(list.allows("1.2.3.4", "EXAMPLE.com"));
  EXPECT_TRUE(list.allows("1.2.3.4", "api.example.com."));
  EXPECT_FALSE(list.allows("1.2.3.4", "notexample.com"));
  ASSERT_TRUE(list.add("*.internal", error));
  ASSERT_TRUE(list.add("svc-a:8080", error));
  EXPECT_FALSE(list.add("svc-a:http", error));
  EXPECT_TRUE(list.allows("1.2.3.4", "db.corp.internal"));
  EXPECT_TRUE(list.allows("1.2.3.4", "svc-a:8080"));
  EXPECT_FALSE(list.allows("1.2.3.4", "svc-a:9090"));
  DestinationAllowList all;
  ASSERT_TRUE(all.add("*", error));
  EXPECT_TRUE(all.allows("8.8.8.8", "anything"));
}

}  // namespace
}  // namespace rbinder
