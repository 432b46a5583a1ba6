// Tests for the incremental HTTP/1.x parser: a table of exchanges with the events they must
// produce, a property test that feeds each of them in every split (and with body bytes skipped)
// and compares with the one-shot result, and focused tests for head fields and the engine helpers.
#include "../src/http/parser.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace rbinder::http {
namespace {

std::string describe(const MessageHead& h) {
  std::string s = "method=" + h.method + " target=" + h.target + " status=" + std::to_string(h.status) +
                  " version=" + std::to_string(h.version_major) + "." + std::to_string(h.version_minor) +
                  " host=" + h.host + " ua=" + h.user_agent + " tp=" + h.traceparent + " ts=" + h.tracestate +
                  " bag=" + h.baggage + " b3=" + h.b3 + " xb3=" + h.x_b3_traceid + "/" + h.x_b3_spanid + "/" +
                  h.x_b3_parentspanid + "/" + h.x_b3_sampled + "/" + h.x_b3_flags +
                  " cl=" + std::to_string(h.content_length) + " chunked=" + std::to_string(h.chunked) +
                  " close=" + std::to_string(h.connection_close) + " ka=" + std::to_string(h.connection_keep_alive) +
                  " upgrade=" + std::to_string(h.connection_upgrade) + " expect=" + std::to_string(h.expect_continue) +
                  " truncated=" + std::to_string(h.truncated) + " head_bytes=" + std::to_string(h.head_bytes);
  return s;
}

const char* name(Status s) {
  switch (s) {
    case Status::kOk: return "kOk";
    case Status::kNotHttp: return "kNotHttp";
    case Status::kError: return "kError";
    case Status::kUpgraded: return "kUpgraded";
  }
  return "?";
}

// Records events with stream offsets (chunk offset + bytes fed before the chunk), so that runs
// with different splits are comparable.
class Recorder : public Observer {
 public:
  void on_message_begin(size_t offset) override { add("begin", offset); }
  void on_request_line_end(size_t offset) override { add("line", offset); }
  void on_head_complete(const MessageHead& head, size_t offset) override {
    add("head", offset);
    heads.push_back(head);
  }
  void on_message_complete(size_t offset) override { add("done", offset); }

  // Where the next chunk starts in the stream, and its length.
  void set_chunk(uint64_t base, size_t len) {
    base_ = base;
    len_ = len;
  }

  std::vector<std::string> events;
  std::vector<MessageHead> heads;

 private:
  void add(const char* what, size_t offset) {
    EXPECT_LE(offset, len_) << what << " offset beyond the chunk";
    events.push_back(std::string(what) + "@" + std::to_string(base_ + offset));
  }
  uint64_t base_ = 0;
  size_t len_ = 0;
};

struct Case {
  std::string name;
  Role role;
  std::string input;
  std::vector<std::string> expected_events;
  Status expected_status;
  std::vector<std::string> answering = {};  // responses: methods of the requests answered ("?": HEAD or CONNECT)
  bool finish = false;                      // call finish() after the input (peer closed)
  bool expected_finish = false;
};

struct Result {
  std::vector<std::string> events;  // events, then head dumps, then final status and finish
  Status status = Status::kOk;
  bool operator==(const Result& o) const { return events == o.events && status == o.status; }
};

// Feeds `c.input` cut at `cuts` (increasing offsets). With `skip_bodies`, bytes the parser says
// are skippable are skipped instead of fed.
Result run(const Case& c, const std::vector<size_t>& cuts, bool skip_bodies = false) {
  Parser parser(c.role);
  for (const std::string& method : c.answering) {
    if (method == "?") {
      parser.expect_response(true);  // HEAD or CONNECT, the engine does not say which
    } else {
      parser.expect_response_to(method);
    }
  }
  Recorder rec;
  const auto* bytes = reinterpret_cast<const uint8_t*>(c.input.data());
  uint64_t pos = 0;
  Status status = Status::kOk;
  std::vector<size_t> bounds = cuts;
  bounds.push_back(c.input.size());
  size_t start = 0;
  for (size_t end : bounds) {
    while (start < end) {
      if (skip_bodies && parser.skippable() > 0) {
        const uint64_t n = std::min<uint64_t>(parser.skippable(), end - start);
        pos += n;
        rec.set_chunk(pos, 0);  // a completion in skip() is at offset 0 after the skipped bytes
        parser.skip(n, rec);
        status = parser.status();  // completing an Upgrade request's body ends HTTP
        start += n;
        continue;
      }
      rec.set_chunk(pos, end - start);
      const size_t before = rec.events.size();
      const Status s = parser.feed(bytes + start, end - start, rec);
      if (status != Status::kOk) {
        EXPECT_EQ(s, status) << "status not sticky";
        EXPECT_EQ(rec.events.size(), before) << "events after a sticky status";
      }
      status = s;
      pos += end - start;
      start = end;
    }
  }
  // An empty feed changes nothing.
  rec.set_chunk(pos, 0);
  EXPECT_EQ(parser.feed(nullptr, 0, rec), status);
  EXPECT_EQ(parser.status(), status);
  Result r;
  r.status = status;
  r.events = rec.events;
  if (c.finish) {
    rec.set_chunk(pos, 0);
    const bool finished = parser.finish(rec);
    r.events = rec.events;
    r.events.push_back(std::string("finish=") + (finished ? "true" : "false"));
  }
  for (const MessageHead& h : rec.heads) r.events.push_back(describe(h));
  return r;
}

void PrintTo(const Result& r, std::ostream* os) {
  *os << name(r.status);
  for (const std::string& e : r.events) *os << "\n  " << e.substr(0, 300);
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

Result run_whole(const Case& c) { return run(c, {}); }

// Events of a well-formed message `m` that starts at stream offset `at`: its head ends at the first
// empty line, the message at its end.
std::vector<std::string> message_events(Role role, size_t at, const std::string& m) {
  std::vector<std::string> ev;
  ev.push_back("begin@" + std::to_string(at));
  if (role == Role::kRequests) ev.push_back("line@" + std::to_string(at + m.find('\n') + 1));
  const size_t crlf = m.find("\r\n\r\n");
  const size_t lf = m.find("\n\n");
  const size_t head_end = std::min(crlf == std::string::npos ? m.size() : crlf + 4,
                                   lf == std::string::npos ? m.size() : lf + 2);
  ev.push_back("head@" + std::to_string(at + head_end));
  ev.push_back("done@" + std::to_string(at + m.size()));
  return ev;
}

// Events of consecutive well-formed messages starting at offset 0.
std::vector<std::string> messages_events(Role role, const std::vector<std::string>& ms) {
  std::vector<std::string> ev;
  size_t at = 0;
  for (const std::string& m : ms) {
    for (std::string& e : message_events(role, at, m)) ev.push_back(std::move(e));
    at += m.size();
  }
  return ev;
}

// --- fixtures ------------------------------------------------------------------------------

const std::string kGet = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n\r\n";
const std::string kPost = "POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";
const std::string kGet2 = "GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
const std::string kChunkedPost =
    "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5;name=value;q=\"x y\"\r\nhello\r\n"
    "6\r\n world\r\n"
    "0\r\nChecksum: abc\r\nX-Trailer: 1\r\n\r\n";
const std::string kResp200 = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
const std::string kRespChunked =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    "a\r\n0123456789\r\n"
    "10 ; ext\r\n0123456789abcdef\r\n"
    "0\r\nExpires: never\r\n\r\n";
const std::string kTlsClientHello("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);

std::string big_header_request() {
  return "GET /big HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(70 * 1024, 'x') +
         "\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
}

std::string big_target_request() {
  return "GET /" + std::string(70 * 1024, 't') + " HTTP/1.1\r\nHost: a\r\n\r\n";
}

std::vector<Case> cases() {
  std::vector<Case> cs;
  const Role req = Role::kRequests;
  const Role resp = Role::kResponses;

  cs.push_back({"simple_get", req, kGet, messages_events(req, {kGet}), Status::kOk});
  cs.push_back({"post_content_length", req, kPost, messages_events(req, {kPost}), Status::kOk});
  cs.push_back({"pipelined", req, kGet + kPost + kGet2 + kGet, messages_events(req, {kGet, kPost, kGet2, kGet}),
                Status::kOk});
  cs.push_back({"chunked_request_extensions_trailers", req, kChunkedPost, messages_events(req, {kChunkedPost}),
                Status::kOk});
  {
    const std::string m = "PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc";
    cs.push_back({"expect_continue_request", req, m, messages_events(req, {m}), Status::kOk});
  }
  {
    const std::string m = "GET /lf HTTP/1.1\nHost: a\nContent-Length: 2\n\nok";
    cs.push_back({"lf_only_line_ends", req, m + m, messages_events(req, {m, m}), Status::kOk});
  }
  {
    // Stray empty lines between messages are skipped, not part of either message.
    std::vector<std::string> ev = messages_events(req, {kGet});
    for (std::string& e : message_events(req, kGet.size() + 4, kGet2)) ev.push_back(std::move(e));
    cs.push_back({"empty_lines_between_requests", req, kGet + "\r\n\r\n" + kGet2, ev, Status::kOk});
  }
  {
    const std::string m = big_header_request();
    cs.push_back({"header_70kb", req, m + kGet, messages_events(req, {m, kGet}), Status::kOk});
  }
  {
    const std::string m = big_target_request();
    cs.push_back({"target_70kb", req, m, messages_events(req, {m}), Status::kOk});
  }
  {
    const std::string m =
        "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
    cs.push_back({"upgrade_request", req, m + "\x81\x85junk", messages_events(req, {m}), Status::kUpgraded});
  }
  {
    // The body of an Upgrade request is still HTTP/1.1; the switch happens after it.
    const std::string m =
        "POST /rpc HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        "HTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 4\r\n\r\nbody";
    cs.push_back({"upgrade_request_with_body", req, m + "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                  messages_events(req, {m}), Status::kUpgraded});
  }
  {
    const std::string m = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    cs.push_back({"connect_request", req, m + kTlsClientHello, messages_events(req, {m}), Status::kUpgraded});
  }
  {
    const std::string m = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    cs.push_back({"http10_keep_alive_request", req, m + m, messages_events(req, {m, m}), Status::kOk});
  }
  {
    const std::string m =
        "GET / HTTP/1.1\r\nhOsT: Mixed\r\nTRACEPARENT: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
        "tracestate: a=1\r\nTraceState: b=2\r\ncontent-LENGTH: 1\r\n\r\nZ";
    cs.push_back({"case_insensitive_names", req, m, messages_events(req, {m}), Status::kOk});
  }

  // Not HTTP, or broken HTTP.
  cs.push_back({"empty", req, "", {}, Status::kOk});
  cs.push_back({"tls_client_hello", req, kTlsClientHello, {}, Status::kNotHttp});
  cs.push_back({"ssh_request_side", req, "SSH-2.0-OpenSSH_9.6\r\n", {"begin@0"}, Status::kNotHttp});
  cs.push_back({"garbage_request_line", req, "GET foo bar baz\r\n", {"begin@0"}, Status::kNotHttp});
  cs.push_back({"redis", req, "*1\r\n$4\r\nPING\r\n", {}, Status::kNotHttp});
  cs.push_back({"lowercase_method", req, "get / HTTP/1.1\r\n\r\n", {}, Status::kNotHttp});
  cs.push_back({"http2_preface", req, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {"begin@0"}, Status::kNotHttp});
  cs.push_back({"http09", req, "GET /\r\n", {"begin@0"}, Status::kNotHttp});
  cs.push_back({"method_too_long", req, "ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1\r\n\r\n", {"begin@0"},
                Status::kNotHttp});
  cs.push_back({"leading_crlf_first_message", req, "\r\nGET / HTTP/1.1\r\n\r\n", {}, Status::kNotHttp});
  cs.push_back({"invalid_content_length", req, "POST / HTTP/1.1\r\nContent-Length: 12a\r\n\r\n",
                {"begin@0", "line@17"}, Status::kError});
  cs.push_back({"conflicting_content_lengths", req,
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", {"begin@0", "line@17"},
                Status::kError});
  {
    const std::string m = "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc";
    cs.push_back({"repeated_identical_content_length", req, m, messages_events(req, {m}), Status::kOk});
  }
  cs.push_back({"chunk_size_overflow", req,
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\n",
                {"begin@0", "line@17", "head@47"}, Status::kError});
  cs.push_back({"chunk_data_not_followed_by_crlf", req,
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n",
                {"begin@0", "line@17", "head@47"}, Status::kError});
  cs.push_back({"request_unknown_transfer_coding", req, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                {"begin@0", "line@17"}, Status::kError});
  cs.push_back({"space_before_colon", req, "GET / HTTP/1.1\r\nHost : a\r\n\r\n", {"begin@0", "line@16"},
                Status::kError});
  cs.push_back({"obs_fold", req, "GET / HTTP/1.1\r\nX-A: 1\r\n  2\r\n\r\n", {"begin@0", "line@16"},
                Status::kError});
  cs.push_back({"bare_cr", req, "GET / HTTP/1.1\r\nX-A: 1\rX-B: 2\r\n\r\n", {"begin@0", "line@16"},
                Status::kError});
  cs.push_back({"garbage_after_valid_request", req, kGet + "\x16\x03\x01",
                messages_events(req, {kGet}), Status::kError});

  // Responses.
  cs.push_back({"response_content_length", resp, kResp200, messages_events(resp, {kResp200}), Status::kOk,
                {"GET"}});
  cs.push_back({"response_chunked_trailers", resp, kRespChunked + kResp200,
                messages_events(resp, {kRespChunked, kResp200}), Status::kOk, {"GET", "GET"}});
  {
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
    cs.push_back({"head_response_has_no_body", resp, head + kResp200, messages_events(resp, {head, kResp200}),
                  Status::kOk, {"HEAD", "GET"}});
  }
  {
    // Pipelined answers are matched to their requests in order.
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
    const std::string get = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    cs.push_back({"pipelined_head_and_get_responses", resp, head + get + get + head + head + get,
                  messages_events(resp, {head, get, get, head, head, get}), Status::kOk,
                  {"HEAD", "GET", "POST", "HEAD", "HEAD", "GET"}});
  }
  {
    const std::string r304 = "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: \"x\"\r\n\r\n";
    const std::string r204 = "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n";
    cs.push_back({"304_and_204_have_no_body", resp, r304 + r204 + kResp200,
                  messages_events(resp, {r304, r204, kResp200}), Status::kOk, {"GET", "DELETE", "GET"}});
  }
  {
    // The interim 100 does not answer the request: the HEAD's response is still the third message.
    const std::string r100 = "HTTP/1.1 100 Continue\r\n\r\n";
    const std::string r103 = "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n";
    const std::string r200 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    cs.push_back({"continue_then_final", resp, r100 + r103 + r200 + head,
                  messages_events(resp, {r100, r103, r200, head}), Status::kOk, {"PUT", "HEAD"}});
  }
  {
    const std::string r101 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    cs.push_back({"switching_protocols", resp, r101 + "\x81\x05hello", messages_events(resp, {r101}),
                  Status::kUpgraded, {"GET"}});
  }
  {
    const std::string r = "HTTP/1.1 200 Connection established\r\n\r\n";
    cs.push_back({"connect_established", resp, r + "\x16\x03\x03\x00\x10", messages_events(resp, {r}),
                  Status::kUpgraded, {"CONNECT"}});
    const std::string denied = "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 4\r\n\r\nnope";
    cs.push_back({"connect_denied_has_body", resp, denied + kResp200, messages_events(resp, {denied, kResp200}),
                  Status::kOk, {"CONNECT", "GET"}});
  }
  {
    const std::string m = "HTTP/1.0 200 OK\r\nServer: old\r\n\r\n<html>until the end</html>";
    std::vector<std::string> ev = {"begin@0", "head@" + std::to_string(m.find("<html>")),
                                   "done@" + std::to_string(m.size()), "finish=true"};
    cs.push_back({"http10_response_to_eof", resp, m, ev, Status::kOk, {"GET"}, true, true});
    const std::string m11 = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody";
    std::vector<std::string> ev11 = {"begin@0", "head@" + std::to_string(m11.find("body")),
                                     "done@" + std::to_string(m11.size()), "finish=true"};
    cs.push_back({"http11_response_without_length", resp, m11, ev11, Status::kOk, {"GET"}, true, true});
  }
  {
    const std::string m = "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n";
    cs.push_back({"no_reason_phrase", resp, m + m, messages_events(resp, {m, m}), Status::kOk});
  }
  {
    const std::string m = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    cs.push_back({"chunked_overrides_content_length", resp, m, messages_events(resp, {m}), Status::kOk});
  }
  {
    const std::string partial = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    cs.push_back({"eof_inside_body", resp, partial, {"begin@0", "head@" + std::to_string(partial.size() - 3),
                  "finish=false"}, Status::kOk, {}, true, false});
  }
  cs.push_back({"ssh_response_side", resp, "SSH-2.0-OpenSSH_9.6\r\n", {}, Status::kNotHttp});
  cs.push_back({"tls_server_hello", resp, "\x16\x03\x03\x00\x5a\x02", {}, Status::kNotHttp});
  cs.push_back({"http2_response_version", resp, "HTTP/2.0 200 OK\r\n\r\n", {"begin@0"}, Status::kNotHttp});
  cs.push_back({"short_status_code", resp, "HTTP/1.1 20 OK\r\n\r\n", {"begin@0"}, Status::kNotHttp});
  cs.push_back({"response_invalid_content_length", resp, "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                {"begin@0"}, Status::kError});
  cs.push_back({"response_empty", resp, "", {}, Status::kOk, {}, true, false});
  {
    // expect_response(true) cannot tell HEAD from CONNECT: non-HTTP after a 2xx is a tunnel...
    const std::string r = "HTTP/1.1 200 OK\r\n\r\n";
    cs.push_back({"head_or_connect_tunnel", resp, r + "\x16\x03\x03", messages_events(resp, {r}), Status::kUpgraded,
                  {"?"}});
    // ...and another response after it means it was a HEAD.
    cs.push_back({"head_or_connect_then_response", resp, r + kResp200, messages_events(resp, {r, kResp200}),
                  Status::kOk, {"?", "GET"}});
  }
  return cs;
}

// --- table tests ---------------------------------------------------------------------------

class ParserCase : public testing::TestWithParam<Case> {};

TEST_P(ParserCase, OneShotGivesExpectedEvents) {
  const Case& c = GetParam();
  const Result r = run_whole(c);
  std::vector<std::string> events;
  for (const std::string& e : r.events) {
    if (e.rfind("method=", 0) != 0) events.push_back(e);  // head dumps are checked elsewhere
  }
  std::vector<std::string> expected = c.expected_events;
  if (c.finish && (expected.empty() || expected.back().rfind("finish=", 0) != 0)) {
    expected.push_back(c.expected_finish ? "finish=true" : "finish=false");
  }
  EXPECT_EQ(events, expected);
  EXPECT_EQ(name(r.status), name(c.expected_status));
}

// Property: any split of the input (and skipping what the parser allows) gives the same events
// and heads as feeding it whole.
TEST_P(ParserCase, EverySplitMatchesOneShot) {
  const Case& c = GetParam();
  const Result whole = run_whole(c);
  const size_t n = c.input.size();
  // Large inputs: every boundary near the start and end, a stride through the middle.
  std::vector<size_t> points;
  for (size_t k = 1; k < n; ++k) {
    if (n <= 4096 || k < 256 || n - k < 256 || k % 509 == 0) points.push_back(k);
  }
  for (size_t k : points) {
    ASSERT_EQ(run(c, {k}), whole) << "split at " << k;
  }
  std::vector<size_t> every(n > 0 ? n - 1 : 0);
  for (size_t k = 1; k < n; ++k) every[k - 1] = k;
  EXPECT_EQ(run(c, every), whole) << "byte by byte";
  EXPECT_EQ(run(c, every, /*skip_bodies=*/true), whole) << "byte by byte, skipping bodies";
  EXPECT_EQ(run(c, {}, /*skip_bodies=*/true), whole) << "whole, skipping bodies";
  // Pairs of cut points on small inputs.
  if (n <= 200) {
    for (size_t a = 1; a < n; ++a) {
      for (size_t b = a + 1; b < n; b += 3) {
        ASSERT_EQ(run(c, {a, b}, (a + b) % 2 == 0), whole) << "split at " << a << "," << b;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Http, ParserCase, testing::ValuesIn(cases()),
                         [](const testing::TestParamInfo<Case>& info) { return info.param.name; });

// --- head fields ---------------------------------------------------------------------------

std::vector<MessageHead> heads_of(Role role, const std::string& input, Status expected = Status::kOk) {
  Parser parser(role);
  Recorder rec;
  rec.set_chunk(0, input.size());
  EXPECT_EQ(name(parser.feed(reinterpret_cast<const uint8_t*>(input.data()), input.size(), rec)),
            name(expected));
  return rec.heads;
}

TEST(HttpHead, RequestFields) {
  const std::string m =
      "POST /v1/items?x=1 HTTP/1.1\r\n"
      "Host:   api.example.com  \r\n"
      "User-Agent: test-agent/1.0\r\n"
      "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
      "traceparent: 00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01\r\n"
      "tracestate: congo=t61rcWkgMzE\r\n"
      "tracestate: rojo=00f067aa0ba902b7\r\n"
      "baggage: userId=alice\r\n"
      "b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1\r\n"
      "X-B3-TraceId: 463ac35c9f6413ad\r\nX-B3-SpanId: a2fb4a1d1a96d312\r\n"
      "X-B3-ParentSpanId: 0020000000000001\r\nX-B3-Sampled: 1\r\nX-B3-Flags: 0\r\n"
      "Expect: 100-Continue\r\n"
      "Connection: Keep-Alive\r\n"
      "Content-Length: 2\r\n\r\nhi";
  const auto heads = heads_of(Role::kRequests, m);
  ASSERT_EQ(heads.size(), 1u);
  const MessageHead& h = heads[0];
  EXPECT_EQ(h.method, "POST");
  EXPECT_EQ(h.target, "/v1/items?x=1");
  EXPECT_EQ(h.version_major, 1);
  EXPECT_EQ(h.version_minor, 1);
  EXPECT_EQ(h.host, "api.example.com");
  EXPECT_EQ(h.user_agent, "test-agent/1.0");
  EXPECT_EQ(h.traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");  // first wins
  EXPECT_EQ(h.tracestate, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
  EXPECT_EQ(h.baggage, "userId=alice");
  EXPECT_EQ(h.b3, "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1");
  EXPECT_EQ(h.x_b3_traceid, "463ac35c9f6413ad");
  EXPECT_EQ(h.x_b3_spanid, "a2fb4a1d1a96d312");
  EXPECT_EQ(h.x_b3_parentspanid, "0020000000000001");
  EXPECT_EQ(h.x_b3_sampled, "1");
  EXPECT_EQ(h.x_b3_flags, "0");
  EXPECT_TRUE(h.expect_continue);
  EXPECT_TRUE(h.connection_keep_alive);
  EXPECT_FALSE(h.connection_close);
  EXPECT_FALSE(h.connection_upgrade);
  EXPECT_EQ(h.content_length, 2);
  EXPECT_FALSE(h.chunked);
  EXPECT_FALSE(h.truncated);
  EXPECT_EQ(h.head_bytes, m.size() - 2);
}

TEST(HttpHead, ResponseFieldsAndVersion) {
  const auto heads = heads_of(Role::kResponses,
                              "HTTP/1.0 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_EQ(heads[0].status, 404);
  EXPECT_EQ(heads[0].version_minor, 0);
  EXPECT_TRUE(heads[0].connection_close);
  EXPECT_EQ(heads[0].content_length, 0);
  EXPECT_TRUE(heads[0].method.empty());
}

TEST(HttpHead, UpgradeNeedsBothConnectionTokenAndUpgradeField) {
  auto heads = heads_of(Role::kRequests, "GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\nGET / HTTP/1.1\r\n\r\n");
  ASSERT_EQ(heads.size(), 2u);
  EXPECT_FALSE(heads[0].connection_upgrade);
  heads = heads_of(Role::kRequests, "GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
                   Status::kUpgraded);
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_TRUE(heads[0].connection_upgrade);
}

TEST(HttpHead, LongValuesAreCappedAndFlagged) {
  const std::string host(kMaxFieldValue + 100, 'h');
  const auto heads = heads_of(Role::kRequests, "GET / HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: ua\r\n\r\n");
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_EQ(heads[0].host, host.substr(0, kMaxFieldValue));
  EXPECT_EQ(heads[0].user_agent, "ua");
  EXPECT_TRUE(heads[0].truncated);
}

TEST(HttpHead, LongTargetIsCappedAndFlagged) {
  const std::string m = big_target_request();
  const auto heads = heads_of(Role::kRequests, m);
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_EQ(heads[0].target.size(), kMaxTarget);
  EXPECT_EQ(heads[0].target.substr(0, 2), "/t");
  EXPECT_TRUE(heads[0].truncated);
  EXPECT_EQ(heads[0].host, "a");
  EXPECT_EQ(heads[0].head_bytes, m.size());
}

TEST(HttpHead, FieldAfterHugeHeaderIsKept) {
  const std::string m = big_header_request();
  const auto heads = heads_of(Role::kRequests, m);
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_EQ(heads[0].traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  EXPECT_EQ(heads[0].head_bytes, m.size());
  EXPECT_FALSE(heads[0].truncated);  // X-Big is not a kept field
}

TEST(HttpHead, ChunkedIsTheLastCoding) {
  auto heads = heads_of(Role::kResponses, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_FALSE(heads[0].chunked);  // body runs to EOF
  heads = heads_of(Role::kResponses, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: CHUNKED\r\n\r\n");
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_TRUE(heads[0].chunked);
}

// --- engine helpers: skip, offsets, state queries ------------------------------------------

struct Feeder {
  explicit Feeder(Role role) : parser(role) {}
  Status feed(const std::string& s) {
    rec.set_chunk(pos, s.size());
    pos += s.size();
    return parser.feed(reinterpret_cast<const uint8_t*>(s.data()), s.size(), rec);
  }
  Parser parser;
  Recorder rec;
  uint64_t pos = 0;
};

TEST(HttpEngineHelpers, RequestLineEndIsReportedInTheFeedHoldingTheLF) {
  Parser parser(Role::kRequests);
  struct LineEnd : Recorder {
    void on_request_line_end(size_t offset) override { offsets.push_back(offset); }
    std::vector<size_t> offsets;
  } rec;
  const std::string a = "GET /a HTTP/1.1\r";
  const std::string b = "\nHost: x\r\n\r\n";
  rec.set_chunk(0, a.size());
  EXPECT_EQ(parser.feed(reinterpret_cast<const uint8_t*>(a.data()), a.size(), rec), Status::kOk);
  EXPECT_TRUE(rec.offsets.empty());
  rec.set_chunk(a.size(), b.size());
  EXPECT_EQ(parser.feed(reinterpret_cast<const uint8_t*>(b.data()), b.size(), rec), Status::kOk);
  EXPECT_EQ(rec.offsets, std::vector<size_t>{1});
}

TEST(HttpEngineHelpers, SkipContentLengthBody) {
  Feeder f(Role::kRequests);
  EXPECT_EQ(f.feed("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab"), Status::kOk);
  EXPECT_TRUE(f.parser.in_message());
  EXPECT_FALSE(f.parser.in_head());
  EXPECT_EQ(f.parser.skippable(), 8u);
  f.pos += 5;
  f.rec.set_chunk(f.pos, 0);
  f.parser.skip(5, f.rec);
  EXPECT_EQ(f.parser.skippable(), 3u);
  EXPECT_EQ(f.rec.events.back(), "head@39");
  f.pos += 3;
  f.rec.set_chunk(f.pos, 0);
  f.parser.skip(3, f.rec);
  EXPECT_EQ(f.rec.events.back(), "done@49");  // complete exactly where the body ends
  EXPECT_FALSE(f.parser.in_message());
  EXPECT_EQ(f.parser.skippable(), 0u);
  EXPECT_EQ(f.feed("GET / HTTP/1.1\r\n\r\n"), Status::kOk);
  EXPECT_EQ(f.rec.events.back(), "done@67");
}

TEST(HttpEngineHelpers, SkipChunkData) {
  Feeder f(Role::kResponses);
  EXPECT_EQ(f.feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n"), Status::kOk);
  EXPECT_EQ(f.parser.skippable(), 16u);
  f.pos += 16;
  f.rec.set_chunk(f.pos, 0);
  f.parser.skip(16, f.rec);
  EXPECT_EQ(f.parser.skippable(), 0u);
  EXPECT_EQ(f.feed("\r\n0\r\n\r\n"), Status::kOk);
  EXPECT_EQ(f.rec.events.back(), "done@" + std::to_string(f.pos));
}

TEST(HttpEngineHelpers, SkippingMoreThanAllowedIsAnError) {
  Feeder f(Role::kRequests);
  EXPECT_EQ(f.feed("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n"), Status::kOk);
  f.parser.skip(3, f.rec);
  EXPECT_EQ(f.parser.status(), Status::kError);
}

TEST(HttpEngineHelpers, NothingIsSkippableInHeadsOrToEofBodies) {
  Feeder f(Role::kResponses);
  EXPECT_EQ(f.feed("HTTP/1.1 200 OK\r\nContent-Le"), Status::kOk);
  EXPECT_TRUE(f.parser.in_head());
  EXPECT_EQ(f.parser.skippable(), 0u);
  EXPECT_EQ(f.feed("ngth: 3\r\n\r\nabc"), Status::kOk);
  EXPECT_EQ(f.feed("HTTP/1.0 200 OK\r\n\r\nxyz"), Status::kOk);
  EXPECT_EQ(f.parser.skippable(), 0u);
  EXPECT_TRUE(f.parser.in_message());
  f.rec.set_chunk(f.pos, 0);
  EXPECT_TRUE(f.parser.finish(f.rec));
  EXPECT_FALSE(f.parser.in_message());
  EXPECT_FALSE(f.parser.finish(f.rec));  // nothing left to complete
}

TEST(HttpEngineHelpers, HeadOrConnectAnsweredThenHttpContinues) {
  // expect_response(true) and a 2xx followed by another response: it was a HEAD.
  Feeder f(Role::kResponses);
  f.parser.expect_response(true);
  f.parser.expect_response(false);
  EXPECT_EQ(f.feed("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n" + kResp200), Status::kOk);
  EXPECT_EQ(f.rec.events.back(), "done@" + std::to_string(f.pos));
  EXPECT_EQ(f.rec.heads.size(), 2u);
}

TEST(HttpEngineHelpers, StickyStatusIgnoresLaterBytes) {
  for (const char* junk : {"\x16\x03\x01", "*1\r\n"}) {
    Feeder f(Role::kRequests);
    EXPECT_EQ(f.feed(junk), Status::kNotHttp);
    EXPECT_EQ(f.feed(kGet), Status::kNotHttp);
    EXPECT_TRUE(f.rec.events.empty());
  }
}

// Non-HTTP must be recognised early, not at a line end that may never come.
TEST(HttpEngineHelpers, NonHttpDetectedWithinFirstBytes) {
  const std::vector<std::pair<Role, std::string>> inputs = {
      {Role::kRequests, kTlsClientHello},
      {Role::kRequests, "SSH-2.0-OpenSSH_9.6 with a very long banner and no line end at all"},
      {Role::kRequests, "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZ"},
      {Role::kRequests, std::string("\0\0\0\x08\x04\xd2\x16\x2f", 8)},  // Postgres SSLRequest
      {Role::kRequests, "*1\r\n$4\r\nPING\r\n"},
      {Role::kResponses, "SSH-2.0-OpenSSH_9.6 with a very long banner and no line end at all"},
      {Role::kResponses, "HTTP/2 200 and then more and more bytes without line end"},
      {Role::kResponses, "+PONG\r\n"},
  };
  for (const auto& [role, input] : inputs) {
    Parser parser(role);
    Recorder rec;
    size_t fed = 0;
    Status s = Status::kOk;
    while (s == Status::kOk && fed < input.size()) {
      rec.set_chunk(fed, 1);
      s = parser.feed(reinterpret_cast<const uint8_t*>(input.data()) + fed, 1, rec);
      ++fed;
    }
    EXPECT_EQ(name(s), name(Status::kNotHttp)) << input;
    EXPECT_LE(fed, 24u) << input;
  }
}

TEST(HttpEngineHelpers, InterimResponseIsItsOwnMessage) {
  Feeder f(Role::kResponses);
  f.parser.expect_response_to("POST");
  EXPECT_EQ(f.feed("HTTP/1.1 100 Continue\r\n\r\n"), Status::kOk);
  ASSERT_EQ(f.rec.heads.size(), 1u);
  EXPECT_EQ(f.rec.heads[0].status, 100);
  EXPECT_FALSE(f.parser.in_message());
  EXPECT_EQ(f.feed("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"), Status::kOk);
  ASSERT_EQ(f.rec.heads.size(), 2u);
  EXPECT_EQ(f.rec.heads[1].status, 201);
}

TEST(HttpEngineHelpers, FieldCapsAreRespectedOnSplitFeeds) {
  // A capped value split across feeds must not grow past its cap.
  Feeder f(Role::kRequests);
  f.feed("GET / HTTP/1.1\r\nUser-Agent: ");
  for (int i = 0; i < 100; ++i) f.feed(std::string(100, 'u'));
  f.feed("\r\n\r\n");
  ASSERT_EQ(f.rec.heads.size(), 1u);
  EXPECT_EQ(f.rec.heads[0].user_agent.size(), kMaxFieldValue);
  EXPECT_TRUE(f.rec.heads[0].truncated);
}

}  // namespace
}  // namespace rbinder::http
