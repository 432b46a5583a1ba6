// Incremental HTTP/1.x parser for one direction of one connection.
//
// The engine feeds it the bytes a traced program reads or writes on a socket, in whatever pieces
// the syscalls deliver them. It never buffers bodies: it keeps only the head fields spans need,
// each capped, and reports message boundaries as offsets into the chunk being fed so that the
// engine can timestamp them and (for requests it writes) find where to inject a header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rbinder::http {

// What the byte stream carries.
enum class Role : uint8_t { kRequests, kResponses };

// Outcome of feeding bytes.
enum class Status : uint8_t {
  kOk,        // all bytes consumed; more may follow
  kNotHttp,   // the stream does not carry HTTP/1.x; it never will again (sticky)
  kError,     // malformed after having looked like HTTP; parser is dead (sticky)
  kUpgraded,  // protocol switched (101, CONNECT 2xx) or stream is otherwise opaque now (sticky)
};

// Header values longer than this are truncated (the flag says so); the head itself may be any size.
constexpr size_t kMaxFieldValue = 4096;
constexpr size_t kMaxTarget = 8192;

struct MessageHead {
  // Request line (kRequests).
  std::string method;  // as sent, e.g. "GET"
  std::string target;  // request-target as sent (origin-form "/p?q", absolute-form, "*"), capped
  // Status line (kResponses).
  int status = 0;
  int version_major = 1;
  int version_minor = 1;
  // Headers spans and propagation need (values trimmed of surrounding whitespace, capped).
  std::string host;
  std::string user_agent;
  std::string traceparent;
  std::string tracestate;
  std::string baggage;
  std::string b3;            // "b3" single header
  std::string x_b3_traceid;  // b3multi
  std::string x_b3_spanid;
  std::string x_b3_parentspanid;
  std::string x_b3_sampled;
  std::string x_b3_flags;
  int64_t content_length = -1;  // -1: none
  bool chunked = false;
  bool connection_close = false;
  bool connection_keep_alive = false;
  bool connection_upgrade = false;  // "Connection: upgrade" and an Upgrade header present
  bool expect_continue = false;
  bool truncated = false;  // some field was longer than its cap
  size_t head_bytes = 0;   // bytes of the whole head including the blank line
};

// Callbacks; offsets are into the chunk passed to the current feed() call. A message begun when
// feed() turns non-kOk (even kNotHttp: a request's first bytes may look like a method) is
// abandoned: no on_message_complete follows.
class Observer {
 public:
  virtual ~Observer() = default;
  // First byte of a new message is at `offset`.
  virtual void on_message_begin(size_t offset) = 0;
  // For requests: the byte just after the request line's LF is at `offset` (where an injected
  // header line may go). Called once per request, possibly in a later feed than on_message_begin.
  virtual void on_request_line_end(size_t offset) { (void)offset; }
  // Whole head parsed; `offset` is just after its final LF.
  virtual void on_head_complete(const MessageHead& head, size_t offset) = 0;
  // Last byte of the message (body included) ends just before `offset`. Interim 1xx responses
  // (other than 101) are complete messages too; the observer sees their status in the head.
  virtual void on_message_complete(size_t offset) = 0;
};

class Parser {
 public:
  explicit Parser(Role role);

  // Feeds the next bytes of the stream. Returns kOk when all were consumed; any other status is
  // sticky and later feeds return it again without looking at the bytes.
  Status feed(const uint8_t* data, size_t len, Observer& observer);

  // The peer closed (read returned 0). A response delimited by the connection's end completes
  // here (calls on_message_complete(0)). Returns true when a message was completed.
  bool finish(Observer& observer);

  // Response parsers must know what each response answers, in order (pipelining): HEAD requests
  // and CONNECT get responses without body. The engine pushes one entry per request it saw.
  void expect_response(bool head_or_connect_request);
  // Same, from the request's method: tells HEAD (no body) from CONNECT (a 2xx answer turns the
  // stream into a tunnel: kUpgraded). With expect_response(true) the parser cannot tell them apart,
  // so after a 2xx answer it treats non-HTTP bytes that follow as a tunnel rather than an error.
  void expect_response_to(std::string_view request_method);

  // Bytes that may be consumed without being looked at (the rest of a body of known length),
  // so the engine can skip copying them out of the tracee. skip(n) with n <= skippable() (more
  // means the engine lost the stream's framing: the parser turns kError).
  uint64_t skippable() const;
  void skip(uint64_t n, Observer& observer);

  // Bytes of the current message's body still to come, as far as its framing says: the rest of
  // a Content-Length body, kUnbounded inside a chunked body (where it ends is not known yet), 0
  // between messages, in a head, or once the stream is not HTTP.
  static constexpr uint64_t kUnbounded = UINT64_MAX;
  uint64_t body_ahead() const;

  // True between on_message_begin and on_message_complete.
  bool in_message() const;
  // True while inside a head (request/status line or headers): the bytes must be fed.
  bool in_head() const;
  Status status() const { return status_; }
  Role role() const { return role_; }

 private:
  // One state per syntactic position; heads are parsed byte by byte so that nothing but the
  // capped fields is kept, bodies are consumed in bulk. in_head() relies on the head states being
  // contiguous, from kMethod to kSectionEndLF.
  enum class State : uint8_t {
    kIdle,               // between messages
    kMethod,             // request line: method token
    kTarget,             // request line: request-target
    kRequestVersion,     // request line: "HTTP/1.x"
    kRequestLineEnd,     // request line: CR or LF after the version
    kRequestLineLF,      // request line: LF after CR
    kResponseVersion,    // status line: "HTTP/1.x"
    kStatusCode,         // status line: SP then three digits
    kStatusCodeEnd,      // status line: SP before the reason, or the line end
    kReasonPhrase,       // status line: reason phrase up to the line end
    kStatusLineLF,       // status line: LF after CR
    kFieldLineStart,     // header/trailer section: a field name, or the empty line ending it
    kFieldName,          // field name up to ':'
    kFieldValueLeadingWs,
    kFieldValue,
    kFieldLineLF,        // LF after a field line's CR
    kSectionEndLF,       // LF after the CR of the section's empty line
    kBodyFixed,          // Content-Length body
    kChunkSize,          // chunk-size hex digits
    kChunkExtension,     // rest of the chunk-size line (extensions)
    kChunkSizeLF,        // LF after the chunk-size line's CR
    kChunkData,          // chunk data
    kChunkDataEnd,       // CR or LF after chunk data
    kChunkDataLF,        // LF after chunk data's CR
    kBodyToEof,          // response delimited by the connection's end
  };

  // Header fields the parser keeps or acts on; everything else is only validated.
  enum class Field : uint8_t {
    kOther, kHost, kUserAgent, kTraceparent, kTracestate, kBaggage, kB3, kXB3TraceId,
    kXB3SpanId, kXB3ParentSpanId, kXB3Sampled, kXB3Flags, kContentLength, kTransferEncoding,
    kConnection, kUpgrade, kExpect,
  };

  // What the request a response answers implies for that response's body.
  enum class Answering : uint8_t { kOther, kHead, kConnect, kHeadOrConnect };

  // Per-state steps: consume from data[i..len), return the index of the first unconsumed byte.
  size_t step_idle(const uint8_t* data, size_t i, Observer& observer);
  size_t step_request_line(const uint8_t* data, size_t i, size_t len, Observer& observer);
  size_t step_status_line(const uint8_t* data, size_t i, size_t len);
  size_t step_field_line(const uint8_t* data, size_t i, size_t len, Observer& observer);
  size_t step_chunk_framing(const uint8_t* data, size_t i);

  void begin_message(size_t offset, Observer& observer);
  void reset_head();
  void start_field();      // the field name is complete: choose where its value goes
  bool end_field_line();   // false on a malformed value that decides framing
  bool end_head(size_t offset, Observer& observer);  // false on protocol error
  void end_chunk_size_line();
  void complete_message(size_t offset, Observer& observer);
  // The stream broke the protocol: kNotHttp while it never completed a start line, else kError.
  void fail();

  Role role_;
  Status status_ = Status::kOk;
  State state_ = State::kIdle;
  MessageHead head_;
  uint64_t stream_pos_ = 0;     // stream offset of the current feed's first byte
  uint64_t message_start_ = 0;  // stream offset of the current message's first byte
  uint64_t remaining_ = 0;      // body / chunk bytes left
  uint64_t chunk_size_ = 0;
  uint8_t match_pos_ = 0;       // bytes of "HTTP/1.x" or of the status code matched so far
  bool chunk_size_seen_digit_ = false;
  bool proven_http_ = false;    // a start line was complete: later faults are kError
  bool in_trailers_ = false;    // kField* states are reading the trailer section
  bool upgrade_after_message_ = false;  // the stream turns opaque when this message completes
  bool tunnel_possible_ = false;  // last response may have opened a CONNECT tunnel
  // Current field line.
  char field_name_[24] = {};    // lowercased, only while it fits (longer names are uninteresting)
  uint8_t field_name_len_ = 0;
  bool field_name_too_long_ = false;
  Field field_ = Field::kOther;
  std::string* field_sink_ = nullptr;  // where the value goes, or nullptr to drop it
  size_t field_sink_start_ = 0;        // sink size before this line (for trimming, joining)
  bool field_joins_ = false;           // append to an earlier value with ','
  std::string field_value_;            // value of a field the parser acts on (capped)
  bool field_value_truncated_ = false;
  // Framing facts gathered from the head.
  bool transfer_encoding_seen_ = false;
  bool upgrade_header_seen_ = false;
  bool connection_upgrade_token_ = false;
  // Responses: one entry per request seen, in order; entries before pending_front_ are answered.
  // (A vector rather than a deque: an empty deque already allocates, for every connection.)
  std::vector<Answering> pending_answers_;
  size_t pending_front_ = 0;
  void push_pending_answer(Answering answering);
  Answering pop_pending_answer();
};

}  // namespace rbinder::http
