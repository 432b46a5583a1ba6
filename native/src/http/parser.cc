// Incremental HTTP/1.x parser (see parser.h for the contract).
//
// Heads are parsed byte by byte by a state machine so that a line split across feeds needs no
// buffer: only the capped fields of MessageHead (and one capped scratch value for the fields that
// decide framing) are kept. Bodies are consumed in bulk. Syntax follows RFC 9112, leniently where
// real peers are (LF-only line ends, empty lines between messages, raw UTF-8 in targets/values).
#include "parser.h"

#include <algorithm>
#include <array>
#include <limits>

namespace rbinder::http {
namespace {

// A method of "known shape": uppercase letters (and '-'/'_' after the first, as in
// VERSION-CONTROL), short. Anything else on a fresh stream is not HTTP.
constexpr size_t kMaxMethod = 20;
// Bound on responses awaited on one connection; more means the engine is out of step, and the
// oldest entries are the ones that matter.
constexpr size_t kMaxPendingAnswers = 1024;
// Chunk sizes above this are treated as malformed (also keeps the arithmetic far from overflow).
constexpr uint64_t kMaxChunkSize = uint64_t{1} << 60;

constexpr char kVersionPrefix[] = "HTTP/1.";
constexpr uint8_t kVersionPrefixLen = sizeof(kVersionPrefix) - 1;

enum CharClass : uint8_t {
  kTokenChar = 1,       // tchar (RFC 9110 5.6.2): field names
  kTargetChar = 2,      // visible ASCII and obs-text: request-target
  kFieldValueChar = 4,  // field-vchar, SP, HTAB: field values, reason phrase, chunk extensions
};

constexpr bool contains(const char* set, int c) {
  for (; *set != '\0'; ++set) {
    if (*set == c) return true;
  }
  return false;
}

constexpr std::array<uint8_t, 256> make_char_classes() {
  std::array<uint8_t, 256> table{};
  for (int c = 0; c < 256; ++c) {
    uint8_t k = 0;
    const bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (alnum || contains("!#$%&'*+-.^_`|~", c)) k |= kTokenChar;
    if ((c > 0x20 && c < 0x7f) || c >= 0x80) k |= kTargetChar | kFieldValueChar;
    if (c == ' ' || c == '\t') k |= kFieldValueChar;
    table[static_cast<size_t>(c)] = k;
  }
  return table;
}
constexpr std::array<uint8_t, 256> kCharClasses = make_char_classes();

inline bool is(uint8_t c, CharClass k) { return (kCharClasses[c] & k) != 0; }
inline bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
inline bool is_ows(char c) { return c == ' ' || c == '\t'; }
inline char to_lower(uint8_t c) {
  return static_cast<char>(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
}

inline int hex_value(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view lower_b) {
  if (a.size() != lower_b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (to_lower(static_cast<uint8_t>(a[i])) != lower_b[i]) return false;
  }
  return true;
}

// Calls fn(element) for each non-empty element of a comma-separated list (RFC 9110 5.6.1).
template <typename Fn>
void for_each_list_element(std::string_view list, Fn fn) {
  while (true) {
    const size_t comma = list.find(',');
    const std::string_view element = trim_ows(list.substr(0, comma));
    if (!element.empty()) fn(element);
    if (comma == std::string_view::npos) return;
    list.remove_prefix(comma + 1);
  }
}

// Content-Length is 1*DIGIT; a list of identical values ("5, 5", from merged duplicate fields)
// is accepted as RFC 9112 6.3 allows. False on anything else, including overflow.
bool parse_content_length(std::string_view value, int64_t& out) {
  int64_t result = -1;
  while (true) {
    const size_t comma = value.find(',');
    const std::string_view element = trim_ows(value.substr(0, comma));
    if (element.empty()) return false;
    int64_t n = 0;
    for (char ch : element) {
      const auto c = static_cast<uint8_t>(ch);
      if (!is_digit(c)) return false;
      const int digit = c - '0';
      if (n > (std::numeric_limits<int64_t>::max() - digit) / 10) return false;
      n = n * 10 + digit;
    }
    if (result >= 0 && n != result) return false;
    result = n;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  out = result;
  return true;
}

// Appends up to `cap - s.size()` bytes; true when some were dropped.
bool append_capped(std::string& s, const uint8_t* p, size_t n, size_t cap) {
  const size_t room = s.size() < cap ? cap - s.size() : 0;
  s.append(reinterpret_cast<const char*>(p), std::min(room, n));
  return n > room;
}

}  // namespace

Parser::Parser(Role role) : role_(role) {}

void Parser::push_pending_answer(Answering answering) {
  if (pending_answers_.size() - pending_front_ >= kMaxPendingAnswers) return;
  pending_answers_.push_back(answering);
}

Parser::Answering Parser::pop_pending_answer() {
  if (pending_front_ == pending_answers_.size()) return Answering::kOther;
  const Answering answering = pending_answers_[pending_front_++];
  // Reclaim answered entries once they are the larger part (at once when none are left).
  if (pending_front_ * 2 >= pending_answers_.size()) {
    pending_answers_.erase(pending_answers_.begin(),
                           pending_answers_.begin() + static_cast<std::ptrdiff_t>(pending_front_));
    pending_front_ = 0;
  }
  return answering;
}

void Parser::expect_response(bool head_or_connect_request) {
  push_pending_answer(head_or_connect_request ? Answering::kHeadOrConnect : Answering::kOther);
}

void Parser::expect_response_to(std::string_view request_method) {
  Answering answering = Answering::kOther;
  if (request_method == "HEAD") answering = Answering::kHead;
  if (request_method == "CONNECT") answering = Answering::kConnect;
  push_pending_answer(answering);
}

uint64_t Parser::skippable() const {
  if (status_ != Status::kOk) return 0;
  if (state_ == State::kBodyFixed || state_ == State::kChunkData) return remaining_;
  return 0;
}

void Parser::skip(uint64_t n, Observer& observer) {
  if (n == 0 || status_ != Status::kOk) return;
  if (n > skippable()) {
    // The engine lost track of the stream; nothing after this can be parsed reliably.
    status_ = Status::kError;
    return;
  }
  remaining_ -= n;
  stream_pos_ += n;
  if (remaining_ != 0) return;
  if (state_ == State::kBodyFixed) {
    complete_message(0, observer);
  } else {
    state_ = State::kChunkDataEnd;
  }
}

uint64_t Parser::body_ahead() const {
  if (status_ != Status::kOk) return 0;
  if (state_ == State::kBodyFixed) return remaining_;
  if ((state_ >= State::kChunkSize && state_ <= State::kChunkDataLF) || in_trailers_) return kUnbounded;
  return 0;
}

bool Parser::in_message() const { return state_ != State::kIdle; }

bool Parser::in_head() const {
  return state_ >= State::kMethod && state_ <= State::kSectionEndLF && !in_trailers_;
}

bool Parser::finish(Observer& observer) {
  if (status_ != Status::kOk || state_ != State::kBodyToEof) return false;
  complete_message(0, observer);
  return true;
}

void Parser::fail() {
  if (tunnel_possible_) {
    // Bytes after a 2xx answer to HEAD-or-CONNECT that do not start a response: a tunnel.
    status_ = Status::kUpgraded;
  } else {
    status_ = proven_http_ ? Status::kError : Status::kNotHttp;
  }
}

Status Parser::feed(const uint8_t* data, size_t len, Observer& observer) {
  if (status_ != Status::kOk) return status_;
  size_t i = 0;
  while (i < len && status_ == Status::kOk) {
    switch (state_) {
      case State::kIdle:
        i = step_idle(data, i, observer);
        break;
      case State::kMethod:
      case State::kTarget:
      case State::kRequestVersion:
      case State::kRequestLineEnd:
      case State::kRequestLineLF:
        i = step_request_line(data, i, len, observer);
        break;
      case State::kResponseVersion:
      case State::kStatusCode:
      case State::kStatusCodeEnd:
      case State::kReasonPhrase:
      case State::kStatusLineLF:
        i = step_status_line(data, i, len);
        break;
      case State::kFieldLineStart:
      case State::kFieldName:
      case State::kFieldValueLeadingWs:
      case State::kFieldValue:
      case State::kFieldLineLF:
      case State::kSectionEndLF:
        i = step_field_line(data, i, len, observer);
        break;
      case State::kBodyFixed: {
        const uint64_t n = std::min<uint64_t>(remaining_, len - i);
        remaining_ -= n;
        i += static_cast<size_t>(n);
        if (remaining_ == 0) complete_message(i, observer);
        break;
      }
      case State::kChunkData: {
        const uint64_t n = std::min<uint64_t>(remaining_, len - i);
        remaining_ -= n;
        i += static_cast<size_t>(n);
        if (remaining_ == 0) state_ = State::kChunkDataEnd;
        break;
      }
      case State::kChunkSize:
      case State::kChunkExtension:
      case State::kChunkSizeLF:
      case State::kChunkDataEnd:
      case State::kChunkDataLF:
        i = step_chunk_framing(data, i);
        break;
      case State::kBodyToEof:
        i = len;
        break;
    }
  }
  stream_pos_ += len;
  return status_;
}

size_t Parser::step_idle(const uint8_t* data, size_t i, Observer& observer) {
  const uint8_t c = data[i];
  if (role_ == Role::kResponses && tunnel_possible_ && c != 'H') {
    status_ = Status::kUpgraded;
    return i;
  }
  // Peers may send stray empty lines between messages (RFC 9112 2.2); not before the first one,
  // where they would delay telling HTTP from other protocols.
  if (proven_http_ && (c == '\r' || c == '\n')) return i + 1;
  if (role_ == Role::kRequests) {
    if (c < 'A' || c > 'Z') {
      fail();
      return i;
    }
    begin_message(i, observer);
    head_.method.push_back(static_cast<char>(c));
    state_ = State::kMethod;
  } else {
    if (c != kVersionPrefix[0]) {
      fail();
      return i;
    }
    begin_message(i, observer);
    match_pos_ = 1;
    state_ = State::kResponseVersion;
  }
  return i + 1;
}

size_t Parser::step_request_line(const uint8_t* data, size_t i, size_t len, Observer& observer) {
  const uint8_t c = data[i];
  switch (state_) {
    case State::kMethod:
      if (c == ' ') {
        state_ = State::kTarget;
        return i + 1;
      }
      if (((c >= 'A' && c <= 'Z') || c == '-' || c == '_') && head_.method.size() < kMaxMethod) {
        head_.method.push_back(static_cast<char>(c));
        return i + 1;
      }
      break;
    case State::kTarget: {
      size_t end = i;
      while (end < len && is(data[end], kTargetChar)) ++end;
      if (append_capped(head_.target, data + i, end - i, kMaxTarget)) head_.truncated = true;
      if (end == len) return end;
      if (data[end] == ' ' && !head_.target.empty()) {
        state_ = State::kRequestVersion;
        match_pos_ = 0;
        return end + 1;
      }
      i = end;
      break;
    }
    case State::kRequestVersion:
      if (match_pos_ < kVersionPrefixLen) {
        if (c != static_cast<uint8_t>(kVersionPrefix[match_pos_])) break;
        ++match_pos_;
        return i + 1;
      }
      if (!is_digit(c)) break;
      head_.version_major = 1;
      head_.version_minor = c - '0';
      state_ = State::kRequestLineEnd;
      return i + 1;
    case State::kRequestLineEnd:
      if (c == '\r') {
        state_ = State::kRequestLineLF;
        return i + 1;
      }
      if (c != '\n') break;
      [[fallthrough]];
    case State::kRequestLineLF:
      if (c != '\n') break;
      proven_http_ = true;
      state_ = State::kFieldLineStart;
      observer.on_request_line_end(i + 1);
      return i + 1;
    default:
      break;
  }
  fail();
  return i;
}

size_t Parser::step_status_line(const uint8_t* data, size_t i, size_t len) {
  const uint8_t c = data[i];
  switch (state_) {
    case State::kResponseVersion:
      if (match_pos_ < kVersionPrefixLen) {
        if (c != static_cast<uint8_t>(kVersionPrefix[match_pos_])) break;
        ++match_pos_;
        return i + 1;
      }
      if (!is_digit(c)) break;
      head_.version_major = 1;
      head_.version_minor = c - '0';
      state_ = State::kStatusCode;
      match_pos_ = 0;  // now counts the SP and the three digits
      return i + 1;
    case State::kStatusCode:
      if (match_pos_ == 0) {
        if (c != ' ') break;
      } else {
        if (!is_digit(c)) break;
        head_.status = head_.status * 10 + (c - '0');
      }
      if (++match_pos_ == 4) {
        if (head_.status < 100) break;
        state_ = State::kStatusCodeEnd;
      }
      return i + 1;
    case State::kStatusCodeEnd:
      // The reason phrase may be absent altogether ("HTTP/1.1 200\r\n"), as peers send it.
      if (c == ' ') {
        state_ = State::kReasonPhrase;
        return i + 1;
      }
      if (c == '\r') {
        state_ = State::kStatusLineLF;
        return i + 1;
      }
      if (c != '\n') break;
      state_ = State::kStatusLineLF;
      return step_status_line(data, i, len);
    case State::kReasonPhrase: {
      size_t end = i;
      while (end < len && is(data[end], kFieldValueChar)) ++end;
      if (end == len) return end;
      i = end;
      if (data[i] == '\r') {
        state_ = State::kStatusLineLF;
        return i + 1;
      }
      if (data[i] != '\n') break;
      state_ = State::kStatusLineLF;
      return step_status_line(data, i, len);
    }
    case State::kStatusLineLF:
      if (c != '\n') break;
      proven_http_ = true;
      tunnel_possible_ = false;
      state_ = State::kFieldLineStart;
      return i + 1;
    default:
      break;
  }
  fail();
  return i;
}

size_t Parser::step_field_line(const uint8_t* data, size_t i, size_t len, Observer& observer) {
  const uint8_t c = data[i];
  switch (state_) {
    case State::kFieldLineStart:
      if (c == '\r') {
        state_ = State::kSectionEndLF;
        return i + 1;
      }
      if (c == '\n') break;  // the section's end, handled below
      // A leading SP/HTAB would be obs-fold (RFC 9112 5.2): rejected, as the RFC allows.
      if (!is(c, kTokenChar)) {
        fail();
        return i;
      }
      field_name_len_ = 0;
      field_name_too_long_ = false;
      state_ = State::kFieldName;
      return i;
    case State::kFieldName: {
      size_t end = i;
      for (; end < len && is(data[end], kTokenChar); ++end) {
        if (field_name_len_ < sizeof(field_name_)) {
          field_name_[field_name_len_++] = to_lower(data[end]);
        } else {
          field_name_too_long_ = true;
        }
      }
      if (end == len) return end;
      // No whitespace is allowed between name and colon (RFC 9112 5.1).
      if (data[end] != ':') {
        fail();
        return end;
      }
      start_field();
      state_ = State::kFieldValueLeadingWs;
      return end + 1;
    }
    case State::kFieldValueLeadingWs:
      if (c == ' ' || c == '\t') return i + 1;
      state_ = State::kFieldValue;
      return i;
    case State::kFieldValue: {
      size_t end = i;
      while (end < len && is(data[end], kFieldValueChar)) ++end;
      if (field_sink_ != nullptr && end > i) {
        if (field_joins_ && field_sink_->size() == field_sink_start_ && field_sink_start_ != 0 &&
            field_sink_->size() < kMaxFieldValue) {
          field_sink_->push_back(',');
        }
        if (append_capped(*field_sink_, data + i, end - i, kMaxFieldValue)) {
          field_value_truncated_ = true;
          head_.truncated = true;
        }
      }
      if (end == len) return end;
      if (data[end] == '\r') {
        state_ = State::kFieldLineLF;
        return end + 1;
      }
      if (data[end] != '\n') {
        fail();
        return end;
      }
      i = end;
      [[fallthrough]];
    }
    case State::kFieldLineLF:
      if (data[i] != '\n' || !end_field_line()) {
        fail();
        return i;
      }
      state_ = State::kFieldLineStart;
      return i + 1;
    case State::kSectionEndLF:
      break;
    default:
      fail();
      return i;
  }
  // kFieldLineStart on LF, or kSectionEndLF: the empty line that ends the head or trailers.
  if (c != '\n') {
    fail();
    return i;
  }
  if (in_trailers_) {
    complete_message(i + 1, observer);
  } else if (!end_head(i + 1, observer)) {
    fail();
  }
  return i + 1;
}

size_t Parser::step_chunk_framing(const uint8_t* data, size_t i) {
  const uint8_t c = data[i];
  switch (state_) {
    case State::kChunkSize: {
      const int digit = hex_value(c);
      if (digit >= 0) {
        chunk_size_ = chunk_size_ * 16 + static_cast<uint64_t>(digit);
        if (chunk_size_ > kMaxChunkSize) break;
        chunk_size_seen_digit_ = true;
        return i + 1;
      }
      if (!chunk_size_seen_digit_) break;
      // Whitespace before ';' is tolerated (RFC 9112 7.1.1 BWS), so it starts the extension part.
      if (c == ';' || c == ' ' || c == '\t') {
        state_ = State::kChunkExtension;
        return i + 1;
      }
      if (c == '\r') {
        state_ = State::kChunkSizeLF;
        return i + 1;
      }
      if (c != '\n') break;
      end_chunk_size_line();
      return i + 1;
    }
    case State::kChunkExtension:
      if (is(c, kFieldValueChar)) return i + 1;
      if (c == '\r') {
        state_ = State::kChunkSizeLF;
        return i + 1;
      }
      if (c != '\n') break;
      end_chunk_size_line();
      return i + 1;
    case State::kChunkSizeLF:
      if (c != '\n') break;
      end_chunk_size_line();
      return i + 1;
    case State::kChunkDataEnd:
      if (c == '\r') {
        state_ = State::kChunkDataLF;
        return i + 1;
      }
      [[fallthrough]];
    case State::kChunkDataLF:
      if (c != '\n') break;
      state_ = State::kChunkSize;
      chunk_size_ = 0;
      chunk_size_seen_digit_ = false;
      return i + 1;
    default:
      break;
  }
  fail();
  return i;
}

void Parser::end_chunk_size_line() {
  if (chunk_size_ == 0) {
    in_trailers_ = true;
    state_ = State::kFieldLineStart;
  } else {
    remaining_ = chunk_size_;
    state_ = State::kChunkData;
  }
}

void Parser::reset_head() {
  // clear() rather than assigning a new MessageHead keeps the strings' capacity across messages.
  head_.method.clear();
  head_.target.clear();
  head_.status = 0;
  head_.version_major = 1;
  head_.version_minor = 1;
  for (std::string* s : {&head_.host, &head_.user_agent, &head_.traceparent, &head_.tracestate,
                         &head_.baggage, &head_.b3, &head_.x_b3_traceid, &head_.x_b3_spanid,
                         &head_.x_b3_parentspanid, &head_.x_b3_sampled, &head_.x_b3_flags}) {
    s->clear();
  }
  head_.content_length = -1;
  head_.chunked = false;
  head_.connection_close = false;
  head_.connection_keep_alive = false;
  head_.connection_upgrade = false;
  head_.expect_continue = false;
  head_.truncated = false;
  head_.head_bytes = 0;
  transfer_encoding_seen_ = false;
  upgrade_header_seen_ = false;
  connection_upgrade_token_ = false;
  upgrade_after_message_ = false;
  in_trailers_ = false;
  field_ = Field::kOther;
  field_sink_ = nullptr;
}

void Parser::begin_message(size_t offset, Observer& observer) {
  reset_head();
  message_start_ = stream_pos_ + offset;
  observer.on_message_begin(offset);
}

void Parser::start_field() {
  struct KnownField {
    std::string_view name;
    Field field;
  };
  static constexpr KnownField kKnownFields[] = {
      {"host", Field::kHost},
      {"user-agent", Field::kUserAgent},
      {"traceparent", Field::kTraceparent},
      {"tracestate", Field::kTracestate},
      {"baggage", Field::kBaggage},
      {"b3", Field::kB3},
      {"x-b3-traceid", Field::kXB3TraceId},
      {"x-b3-spanid", Field::kXB3SpanId},
      {"x-b3-parentspanid", Field::kXB3ParentSpanId},
      {"x-b3-sampled", Field::kXB3Sampled},
      {"x-b3-flags", Field::kXB3Flags},
      {"content-length", Field::kContentLength},
      {"transfer-encoding", Field::kTransferEncoding},
      {"connection", Field::kConnection},
      {"upgrade", Field::kUpgrade},
      {"expect", Field::kExpect},
  };
  field_ = Field::kOther;
  // Trailer fields cannot change a head that was already reported, nor the framing.
  if (!in_trailers_ && !field_name_too_long_) {
    const std::string_view name(field_name_, field_name_len_);
    for (const KnownField& known : kKnownFields) {
      if (known.name == name) {
        field_ = known.field;
        break;
      }
    }
  }
  std::string* head_string = nullptr;
  field_joins_ = false;
  switch (field_) {
    case Field::kOther: break;
    case Field::kHost: head_string = &head_.host; break;
    case Field::kUserAgent: head_string = &head_.user_agent; break;
    case Field::kTraceparent: head_string = &head_.traceparent; break;
    case Field::kB3: head_string = &head_.b3; break;
    case Field::kXB3TraceId: head_string = &head_.x_b3_traceid; break;
    case Field::kXB3SpanId: head_string = &head_.x_b3_spanid; break;
    case Field::kXB3ParentSpanId: head_string = &head_.x_b3_parentspanid; break;
    case Field::kXB3Sampled: head_string = &head_.x_b3_sampled; break;
    case Field::kXB3Flags: head_string = &head_.x_b3_flags; break;
    // List-valued fields: repeated lines combine as one comma-separated list (RFC 9110 5.3).
    case Field::kTracestate:
      head_string = &head_.tracestate;
      field_joins_ = true;
      break;
    case Field::kBaggage:
      head_string = &head_.baggage;
      field_joins_ = true;
      break;
    case Field::kContentLength:
    case Field::kTransferEncoding:
    case Field::kConnection:
    case Field::kUpgrade:
    case Field::kExpect:
      field_value_.clear();
      head_string = &field_value_;
      break;
  }
  // Single-valued fields keep their first occurrence (a second traceparent is the sender's bug).
  if (head_string != nullptr && !field_joins_ && head_string != &field_value_ &&
      !head_string->empty()) {
    head_string = nullptr;
  }
  field_sink_ = head_string;
  field_sink_start_ = head_string != nullptr ? head_string->size() : 0;
  field_value_truncated_ = false;
}

bool Parser::end_field_line() {
  if (field_sink_ != nullptr) {
    while (field_sink_->size() > field_sink_start_ && is_ows(field_sink_->back())) {
      field_sink_->pop_back();
    }
  }
  const std::string_view value = field_value_;
  bool ok = true;
  switch (field_) {
    case Field::kContentLength: {
      int64_t length = -1;
      ok = !field_value_truncated_ && parse_content_length(value, length) &&
           (head_.content_length < 0 || head_.content_length == length);
      head_.content_length = length;
      break;
    }
    case Field::kTransferEncoding: {
      // Only the last coding matters for framing, so a cut-off list cannot be trusted.
      if (field_value_truncated_) {
        ok = false;
        break;
      }
      std::string_view last;
      for_each_list_element(value, [&](std::string_view coding) { last = coding; });
      if (!last.empty()) {
        transfer_encoding_seen_ = true;
        head_.chunked = iequals(last, "chunked");
      }
      break;
    }
    case Field::kConnection:
      for_each_list_element(value, [&](std::string_view option) {
        if (iequals(option, "close")) head_.connection_close = true;
        if (iequals(option, "keep-alive")) head_.connection_keep_alive = true;
        if (iequals(option, "upgrade")) connection_upgrade_token_ = true;
      });
      break;
    case Field::kUpgrade:
      if (!value.empty()) upgrade_header_seen_ = true;
      break;
    case Field::kExpect:
      if (iequals(value, "100-continue")) head_.expect_continue = true;
      break;
    default:
      break;
  }
  field_ = Field::kOther;
  field_sink_ = nullptr;
  return ok;
}

bool Parser::end_head(size_t offset, Observer& observer) {
  enum class Body { kNone, kFixed, kChunked, kToEof };
  Body body = Body::kNone;
  head_.connection_upgrade = connection_upgrade_token_ && upgrade_header_seen_;
  head_.head_bytes = static_cast<size_t>(stream_pos_ + offset - message_start_);

  if (role_ == Role::kRequests) {
    if (head_.method == "CONNECT") {
      // What follows a CONNECT head is tunnel data, whatever the head says (RFC 9110 9.3.6).
      upgrade_after_message_ = true;
    } else if (transfer_encoding_seen_) {
      // A request body must have a determinable length (RFC 9112 6.3).
      if (!head_.chunked) return false;
      body = Body::kChunked;
    } else if (head_.content_length > 0) {
      body = Body::kFixed;
    }
    if (head_.connection_upgrade) upgrade_after_message_ = true;
  } else {
    const int status = head_.status;
    const bool interim = status >= 100 && status < 200 && status != 101;
    // An interim response leaves the request unanswered: its expectation stays queued.
    const Answering answering = interim ? Answering::kOther : pop_pending_answer();
    const bool success = status >= 200 && status < 300;
    if (interim) {
      body = Body::kNone;
    } else if (status == 101 || (answering == Answering::kConnect && success)) {
      upgrade_after_message_ = true;
    } else if (answering == Answering::kHead || answering == Answering::kHeadOrConnect) {
      // Unsure whether it answered HEAD or CONNECT: bodyless, and a tunnel if non-HTTP follows.
      tunnel_possible_ = answering == Answering::kHeadOrConnect && success;
    } else if (status == 204 || status == 304) {
      body = Body::kNone;
    } else if (transfer_encoding_seen_) {
      body = head_.chunked ? Body::kChunked : Body::kToEof;
    } else if (head_.content_length >= 0) {
      body = head_.content_length > 0 ? Body::kFixed : Body::kNone;
    } else {
      body = Body::kToEof;
    }
  }

  observer.on_head_complete(head_, offset);
  switch (body) {
    case Body::kNone:
      complete_message(offset, observer);
      break;
    case Body::kFixed:
      remaining_ = static_cast<uint64_t>(head_.content_length);
      state_ = State::kBodyFixed;
      break;
    case Body::kChunked:
      chunk_size_ = 0;
      chunk_size_seen_digit_ = false;
      state_ = State::kChunkSize;
      break;
    case Body::kToEof:
      state_ = State::kBodyToEof;
      break;
  }
  return true;
}

void Parser::complete_message(size_t offset, Observer& observer) {
  state_ = State::kIdle;
  in_trailers_ = false;
  observer.on_message_complete(offset);
  if (upgrade_after_message_) status_ = Status::kUpgraded;
}

}  // namespace rbinder::http
