// The stub's reading of request and response heads (native/src/stub/head.h) held against the
// engine's parser. Requests:
// wherever the stub takes a head as one it decides on (a whole head, `plain`), the engine's parser
// must find the same head end, the same body framing and the same trace context, because the
// stub draws the span ids and frames the connection's next request on that reading alone
// (docs/fast-path.md, "Trace context in the stub"). Generated heads cover the fields the stub
// reads, in upper and lower case, with odd values; random bytes check it never reads past its
// input (ASan). Responses: wherever the stub frames a response's body (response_body: a length),
// the engine must end that response at the same byte, so that the body the stub sends as a count
// is body to the engine too (docs/fast-path.md, "Bodies as counts").
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/ids.h"
#include "engine/propagation.h"
#include "http/parser.h"

extern "C" {
#include "stub/head.h"
}

namespace rbinder {
namespace {

struct EngineHead {
  bool complete = false;
  uint64_t end = 0;
  http::MessageHead head;
  http::Status status = http::Status::kOk;
};

class FirstHead final : public http::Observer {
 public:
  void on_message_begin(size_t) override {}
  void on_head_complete(const http::MessageHead& h, size_t offset) override {
    if (found) return;
    found = true;
    head = h;
    end = offset;
  }
  void on_message_complete(size_t) override {}
  bool found = false;
  http::MessageHead head;
  size_t end = 0;
};

EngineHead engine_reading(const std::string& bytes) {
  http::Parser parser(http::Role::kRequests);
  FirstHead observer;
  EngineHead out;
  out.status = parser.feed(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), observer);
  out.complete = observer.found;
  out.end = observer.end;
  out.head = observer.head;
  return out;
}

rb_head stub_reading(const std::string& bytes) {
  // A copy of exactly the bytes, so that ASan sees any read past them.
  std::vector<uint8_t> copy(bytes.begin(), bytes.end());
  rb_head h;
  parse_head(copy.data(), copy.size(), &h);
  return h;
}

// Where both readings must agree.
void expect_same(const std::string& bytes) {
  const rb_head s = stub_reading(bytes);
  if (s.end == 0 || !s.plain) return;  // left to the engine: nothing to agree on
  const EngineHead e = engine_reading(bytes);
  SCOPED_TRACE(bytes);
  ASSERT_TRUE(e.complete);
  EXPECT_EQ(s.end, e.end);
  EXPECT_EQ(s.chunked != 0, e.head.chunked);
  EXPECT_EQ(s.length == RB_NO_LENGTH ? -1 : static_cast<int64_t>(s.length), e.head.content_length);
  // The program's own context (the stub leaves such a request to the engine) in any format.
  const PropagationConfig every{kTraceContext | kB3Single | kB3Multi};
  EXPECT_EQ(s.context != 0, carries_context(e.head, every));
  EXPECT_EQ(s.carried != 0, !e.head.tracestate.empty() || !e.head.baggage.empty());
  if (s.tp_ok) {
    SpanContext parent;
    ASSERT_TRUE(parse_traceparent(e.head.traceparent, parent));
    EXPECT_EQ(0, std::memcmp(parent.trace_id.data(), s.trace, 16));
    EXPECT_EQ(0, std::memcmp(parent.span_id.data(), s.span, 8));
    EXPECT_EQ(parent.flags, s.flags);
  } else if (s.tp) {
    // A traceparent the stub does not take: it must not decide (server_read forgets instead).
    SUCCEED();
  }
}

std::string head_of(const std::string& request_line, const std::vector<std::string>& fields, const std::string& eol = "\r\n") {
  std::string s = request_line + eol;
  for (const std::string& f : fields) s += f + eol;
  return s + eol;
}

TEST(StubHead, PlainRequestsAreReadAsTheEngineReadsThem) {
  const std::string tp = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"Host: a"},
      {"Host: a", "Content-Length: 12"},
      {"content-length:0"},
      {"Content-Length:   7   "},
      {"Transfer-Encoding: chunked"},
      {"TRANSFER-ENCODING: Chunked"},
      {tp},
      {"TraceParent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-00"},
      {tp, "tracestate: a=1"},
      {"baggage: k=v"},
      {"b3: 4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"},
      {"X-B3-TraceId: 4bf92f3577b34da6a3ce929d0e0e4736"},
      {"X-Filler: " + std::string(3000, 'x'), "Content-Length: 5"},
  };
  for (const std::string& line : {std::string("GET / HTTP/1.1"), std::string("POST /p?q=1 HTTP/1.0"), std::string("DELETE * HTTP/1.1")}) {
    for (const auto& fields : cases) {
      const std::string head = head_of(line, fields);
      const rb_head s = stub_reading(head);
      EXPECT_EQ(s.end, head.size()) << head;
      expect_same(head);
      expect_same(head + "body that follows");
      expect_same(head + "GET /next HTTP/1.1\r\n\r\n");  // a pipelined request after it
    }
  }
  // The plain case is decided: a whole head with a CRLF blank line.
  const rb_head get = stub_reading("GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
  EXPECT_EQ(get.plain, 1);
  EXPECT_EQ(get.crlf, 1);
  EXPECT_EQ(get.tp, 0);
  const rb_head traced = stub_reading(head_of("GET / HTTP/1.1", {tp}));
  EXPECT_EQ(traced.tp_ok, 1);
  EXPECT_EQ(traced.context, 1);
}

TEST(StubHead, LeavesToTheEngineWhatItDoesNotFollow) {
  auto not_decided = [](const std::string& bytes) {
    const rb_head s = stub_reading(bytes);
    return s.end == 0 || !s.plain;
  };
  EXPECT_TRUE(not_decided("GET / HTTP/1.1\r\nHost: a\r\n"));                                   // not whole
  EXPECT_TRUE(not_decided("GET / HTTP/1.1\r\nX-A: 1\r\n continued\r\n\r\n"));                  // obs-fold
  EXPECT_TRUE(not_decided("CONNECT h:443 HTTP/1.1\r\n\r\n"));                                  // a tunnel
  EXPECT_TRUE(not_decided("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"));
  EXPECT_TRUE(not_decided("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"));
  EXPECT_TRUE(not_decided("GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n"));
  EXPECT_TRUE(not_decided("GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"));
  EXPECT_TRUE(not_decided("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"));
  EXPECT_TRUE(not_decided("\x16\x03\x01\x02\x00\x01"));  // a TLS ClientHello
  EXPECT_TRUE(not_decided("get / HTTP/1.1\r\n\r\n"));     // not a method the stub knows the shape of
  EXPECT_TRUE(not_decided("GET / HTTP/2.0\r\n\r\n"));
  // Two traceparent fields; one of another version: parsed by the engine, not taken by the stub.
  const std::string tp = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  EXPECT_TRUE(not_decided(head_of("GET / HTTP/1.1", {tp, tp})));
  EXPECT_EQ(stub_reading(head_of("GET / HTTP/1.1", {"traceparent: 01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})).tp_ok,
            0);
  EXPECT_EQ(stub_reading(head_of("GET / HTTP/1.1", {"traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01"})).tp_ok,
            0);
}

// Heads put together from random pieces, cut at random lengths: wherever the stub decides, the
// engine agrees.
TEST(StubHead, GeneratedHeadsAgreeWithTheEngine) {
  std::mt19937_64 rng(20261206);
  const std::vector<std::string> methods = {"GET", "POST", "PUT", "HEAD", "OPTIONS", "PATCH", "CONNECT", "G", "GeT", ""};
  const std::vector<std::string> targets = {"/", "/a?b=c", "*", "http://h/x", "/sp ace", "", "/\x7f"};
  const std::vector<std::string> versions = {"HTTP/1.1", "HTTP/1.0", "HTTP/1.", "http/1.1", "HTTP/2.0", "HTTP/1.1 "};
  const std::vector<std::string> fields = {
      "Host: example.com", "Content-Length: 0", "Content-Length: 42", "content-length:  9 ", "Content-Length: -1",
      "Content-Length: 99999999999999999999", "Transfer-Encoding: chunked", "transfer-encoding: identity",
      "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
      "TRACEPARENT: 00-ABCDEF0123456789ABCDEF0123456789-0123456789ABCDEF-03", "tracestate: x=1", "baggage: a=b",
      "b3: 1-2-1", "X-B3-TraceId: 4bf92f3577b34da6a3ce929d0e0e4736", "X-B3-SpanId: 00f067aa0ba902b7", "Upgrade: h2c",
      "Connection: keep-alive", "Expect: 100-continue", "X-Empty:", "Bad Name: x", " folded", "X:\tv\t", "X-Long: " + std::string(500, 'v'),
  };
  const std::vector<std::string> eols = {"\r\n", "\n", "\r"};
  auto pick = [&](const auto& v) { return v[rng() % v.size()]; };
  int decided = 0;
  for (int i = 0; i < 20000; i++) {
    const std::string eol = rng() % 8 ? "\r\n" : pick(eols);
    std::string s = pick(methods) + " " + pick(targets) + " " + pick(versions) + eol;
    const int n = static_cast<int>(rng() % 6);
    for (int k = 0; k < n; k++) s += pick(fields) + (rng() % 10 ? eol : pick(eols));
    s += rng() % 10 ? eol : pick(eols);
    if (rng() % 3 == 0) s += "tail bytes";
    const std::string cut = rng() % 4 == 0 ? s.substr(0, rng() % (s.size() + 1)) : s;
    const rb_head h = stub_reading(cut);
    if (h.end && h.plain) decided++;
    expect_same(cut);
    if (HasFailure()) return;
  }
  EXPECT_GT(decided, 500);  // the generator does reach the decided cases
}

TEST(StubHead, RandomBytesAreReadWithinBounds) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 50000; i++) {
    std::string s(rng() % 200, '\0');
    static const char kAlphabet[] = "GET /HTP1.\r\n: -0123456789abcdef";
    for (char& c : s) c = static_cast<char>(rng() % 4 == 0 ? kAlphabet[rng() % (sizeof(kAlphabet) - 1)] : rng());
    if (rng() % 2) s = "GET / HTTP/1.1\r\n" + s;
    expect_same(s);
    if (HasFailure()) return;
  }
}

// ---- Responses ----

class FirstResponse final : public http::Observer {
 public:
  void on_message_begin(size_t) override {}
  void on_head_complete(const http::MessageHead& h, size_t offset) override {
    if (heads++ == 0) {
      status = h.status;
      head_end = offset;
    }
  }
  void on_message_complete(size_t offset) override {
    if (completes++ == 0) end = offset;
  }
  int heads = 0, completes = 0, status = 0;
  size_t head_end = 0, end = 0;
};

rb_head stub_response(const std::string& bytes) {
  std::vector<uint8_t> copy(bytes.begin(), bytes.end());
  rb_head h;
  parse_response_head(copy.data(), copy.size(), &h);
  return h;
}

// The stub frames `bytes` (a response to a GET, say, with more bytes after it): the engine ends
// the response where the stub's framing does. A framing the stub leaves to the engine agrees
// trivially.
void expect_same_response(const std::string& bytes) {
  const rb_head s = stub_response(bytes);
  const uint64_t body = response_body(&s);
  if (body == RB_NO_LENGTH) return;
  SCOPED_TRACE(bytes);
  http::Parser parser(http::Role::kResponses);
  parser.expect_response_to("GET");
  FirstResponse observer;
  // The body itself, as many bytes as the stub says, then the start of a next response.
  std::string stream = bytes.substr(0, s.end) + std::string(body, 'b') + "HTTP/1.1 200 OK\r\n";
  parser.feed(reinterpret_cast<const uint8_t*>(stream.data()), stream.size(), observer);
  ASSERT_GE(observer.heads, 1);
  EXPECT_EQ(observer.status, s.status);
  EXPECT_EQ(observer.head_end, s.end);
  ASSERT_GE(observer.completes, 1);
  EXPECT_EQ(observer.end, s.end + body);
}

TEST(StubResponseHead, FramedResponsesEndWhereTheEngineEndsThem) {
  const std::vector<std::vector<std::string>> cases = {
      {"Content-Length: 12"},
      {"content-length:0"},
      {"Content-Length:   7   ", "Connection: keep-alive"},
      {"Server: x", "Content-Length: 3", "Content-Length: 3"},
      {"X-Filler: " + std::string(3000, 'x'), "Content-Length: 5"},
  };
  for (const std::string& line : {std::string("HTTP/1.1 200 OK"), std::string("HTTP/1.0 404 Not Found"), std::string("HTTP/1.1 500"),
                                  std::string("HTTP/1.1 200 "), std::string("HTTP/1.1 302 Found \xe9t\xe9")}) {
    for (const auto& fields : cases) {
      const std::string head = head_of(line, fields);
      const rb_head s = stub_response(head);
      EXPECT_EQ(s.end, head.size()) << head;
      EXPECT_NE(response_body(&s), RB_NO_LENGTH) << head;
      expect_same_response(head);
    }
  }
  // 204 and 304 have no body whatever their Content-Length says.
  for (const std::string& line : {std::string("HTTP/1.1 204 No Content"), std::string("HTTP/1.1 304 Not Modified")}) {
    const rb_head s = stub_response(head_of(line, {"Content-Length: 4096"}));
    EXPECT_EQ(response_body(&s), 0u) << line;
    expect_same_response(head_of(line, {"Content-Length: 4096"}));
    expect_same_response(head_of(line, {}));
  }
}

TEST(StubResponseHead, LeavesToTheEngineWhatItDoesNotFrame) {
  auto unframed = [](const std::string& bytes) {
    const rb_head s = stub_response(bytes);
    return response_body(&s) == RB_NO_LENGTH;
  };
  EXPECT_TRUE(unframed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"));                             // not whole
  EXPECT_TRUE(unframed("HTTP/1.1 200 OK\r\n\r\n"));                                              // until the end
  EXPECT_TRUE(unframed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"));
  EXPECT_TRUE(unframed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"));
  EXPECT_TRUE(unframed("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n"));
  EXPECT_TRUE(unframed("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"));
  EXPECT_TRUE(unframed("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n"));
  EXPECT_TRUE(unframed("HTTP/1.1 100 Continue\r\n\r\n"));                                       // interim
  EXPECT_TRUE(unframed("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"));
  EXPECT_TRUE(unframed("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"));
  EXPECT_TRUE(unframed("HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n"));
  EXPECT_TRUE(unframed("HTTP/2 200\r\nContent-Length: 0\r\n\r\n"));
  EXPECT_TRUE(unframed("HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"));
  EXPECT_TRUE(unframed("HTTP/1.1 099 OK\r\nContent-Length: 0\r\n\r\n"));
  EXPECT_TRUE(unframed("HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\nContent-Length: 0\r\n\r\n"));
  EXPECT_TRUE(unframed("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"));                      // a request
}

TEST(StubResponseHead, GeneratedResponsesAgreeWithTheEngine) {
  std::mt19937_64 rng(20261208);
  const std::vector<std::string> lines = {"HTTP/1.1 200 OK", "HTTP/1.0 200 OK", "HTTP/1.1 204 No Content", "HTTP/1.1 304 Not Modified",
                                          "HTTP/1.1 100 Continue", "HTTP/1.1 404", "HTTP/1.1 500 Internal Server Error",
                                          "HTTP/1.1 301 Moved", "HTTP/1.1 200", "HTTP/1.x 200 OK", "HTTP/1.1 2000 OK", "HTTP/1.1  200 OK"};
  const std::vector<std::string> fields = {
      "Content-Length: 0", "Content-Length: 42", "content-length:  9 ", "Content-Length: -1", "Content-Length: 99999999999999999999",
      "Transfer-Encoding: chunked", "transfer-encoding: identity", "Connection: close", "Connection: keep-alive", "Upgrade: x",
      "X-Empty:", "Bad Name: x", " folded", "X:\tv\t", "Date: Tue, 08 Dec 2026 04:00:00 GMT",
  };
  const std::vector<std::string> eols = {"\r\n", "\n", "\r"};
  auto pick = [&](const auto& v) { return v[rng() % v.size()]; };
  int framed = 0;
  for (int i = 0; i < 20000; i++) {
    const std::string eol = rng() % 8 ? "\r\n" : pick(eols);
    std::string s = pick(lines) + eol;
    const int n = static_cast<int>(rng() % 5);
    for (int k = 0; k < n; k++) s += pick(fields) + (rng() % 10 ? eol : pick(eols));
    s += rng() % 10 ? eol : pick(eols);
    const std::string cut = rng() % 4 == 0 ? s.substr(0, rng() % (s.size() + 1)) : s;
    const rb_head h = stub_response(cut);
    if (response_body(&h) != RB_NO_LENGTH) framed++;
    expect_same_response(cut);
    if (HasFailure()) return;
  }
  EXPECT_GT(framed, 500);
}

TEST(StubResponseHead, RandomBytesAreReadWithinBounds) {
  std::mt19937_64 rng(8);
  for (int i = 0; i < 50000; i++) {
    std::string s(rng() % 200, '\0');
    static const char kAlphabet[] = "HTP/1. 20\r\n: -0123456789Content-Length";
    for (char& c : s) c = static_cast<char>(rng() % 4 == 0 ? kAlphabet[rng() % (sizeof(kAlphabet) - 1)] : rng());
    if (rng() % 2) s = "HTTP/1.1 200 OK\r\n" + s;
    expect_same_response(s);
    if (HasFailure()) return;
  }
}

}  // namespace
}  // namespace rbinder
