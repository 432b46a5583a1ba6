#include "engine/otlp.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string_view>

namespace rbinder::otlp {
namespace {

constexpr int kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5;
constexpr uint8_t kServer = 1;  // SpanRecord::kind
constexpr int kDefaultHttpPort = 80;

// Protobuf wire format, written in the SDK's order. A length-delimited field gets one byte for its
// length up front, moved along when the length needs more (as the SDK's ProtobufWriter does).
class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  void varint(uint64_t v) {
    while (v > 0x7f) {
      out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  void tag(int field, int wire) { varint(static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire)); }
  void bytes(std::string_view b) {
    varint(b.size());
    out_.append(b);
  }
  void fixed64(uint64_t v) {
    for (int i = 0; i < 8; i++) out_.push_back(static_cast<char>(v >> (8 * i)));
  }
  void fixed32(uint32_t v) {
    for (int i = 0; i < 4; i++) out_.push_back(static_cast<char>(v >> (8 * i)));
  }
  size_t begin() {
    out_.push_back(0);
    return out_.size();
  }
  void end(size_t start) {
    const uint64_t len = out_.size() - start;
    if (len < 0x80) {
      out_[start - 1] = static_cast<char>(len);
      return;
    }
    std::string prefix;
    Writer(prefix).varint(len);
    out_.replace(start - 1, 1, prefix);
  }

 private:
  std::string& out_;
};

// KeyValue attributes of the Span (field 9), each as writeAttributes/writeAnyValue write them.
class Attributes {
 public:
  explicit Attributes(Writer& w) : w_(w) {}
  void str(std::string_view key, std::string_view value) {
    const size_t kv = open(key);
    w_.tag(1, kLen);  // AnyValue.string_value
    w_.bytes(value);
    close(kv);
  }
  // A JS number: int_value when it is an integer inside int64's range, else double_value.
  void number(std::string_view key, double value) {
    const size_t kv = open(key);
    if (std::trunc(value) == value && value >= -0x1p63 && value < 0x1p63) {
      w_.tag(3, kVarint);  // AnyValue.int_value
      w_.varint(static_cast<uint64_t>(static_cast<int64_t>(value)));
    } else {
      w_.tag(4, kFixed64);  // AnyValue.double_value
      uint64_t bits;
      static_assert(sizeof(bits) == sizeof(value));
      __builtin_memcpy(&bits, &value, sizeof(bits));
      w_.fixed64(bits);
    }
    close(kv);
  }

 private:
  size_t open(std::string_view key) {
    w_.tag(9, kLen);  // Span.attributes
    const size_t kv = w_.begin();
    w_.tag(1, kLen);  // KeyValue.key
    w_.bytes(key);
    w_.tag(2, kLen);  // KeyValue.value
    value_ = w_.begin();
    return kv;
  }
  void close(size_t kv) {
    w_.end(value_);
    w_.end(kv);
  }
  Writer& w_;
  size_t value_ = 0;
};

// What spans.ts calls a ServerEndpoint: an address and maybe a port.
struct HostPort {
  std::string_view address;
  std::optional<int> port;
};

// spans.ts parseHostPort: "host", "host:port", "[v6]", "[v6]:port"; nullopt when malformed.
std::optional<HostPort> parse_host_port(std::string_view value) {
  std::string_view address;
  std::optional<std::string_view> port_text;
  if (!value.empty() && value[0] == '[') {
    const size_t close = value.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    address = value.substr(1, close - 1);
    const std::string_view rest = value.substr(close + 1);
    if (!rest.empty() && rest[0] != ':') return std::nullopt;
    if (!rest.empty()) port_text = rest.substr(1);
  } else {
    const size_t colon = value.find(':');
    if (colon != value.rfind(':')) return std::nullopt;
    address = colon == std::string_view::npos ? value : value.substr(0, colon);
    if (colon != std::string_view::npos) port_text = value.substr(colon + 1);
  }
  if (address.empty()) return std::nullopt;
  if (!port_text || port_text->empty()) return HostPort{address, std::nullopt};
  if (port_text->size() > 5) return std::nullopt;
  int port = 0;
  for (char c : *port_text) {
    if (c < '0' || c > '9') return std::nullopt;
    port = port * 10 + (c - '0');
  }
  if (port > 65535) return std::nullopt;
  return HostPort{address, port};
}

// Node's net.isIPv4 (dotted decimal, no leading zeros).
bool is_ipv4(std::string_view s) {
  int parts = 0;
  size_t i = 0;
  while (true) {
    const size_t start = i;
    int value = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - start < 3) value = value * 10 + (s[i++] - '0');
    const size_t n = i - start;
    if (n == 0 || value > 255 || (n > 1 && s[start] == '0')) return false;
    if (++parts == 4) return i == s.size();
    if (i >= s.size() || s[i] != '.') return false;
    i++;
  }
}

enum class Unix { kNo, kYes, kUnknown };

// spans.ts isUnixSocket (port 0 and not an IP). Text with a colon and port 0 would need Node's
// isIPv6 rules (zone ids and all): unknown, and the caller falls back to JS.
Unix unix_socket(std::string_view address, uint16_t port) {
  if (port != 0) return Unix::kNo;
  if (address.empty() || address[0] == '/' || address[0] == '@') return Unix::kYes;
  if (address.find(':') != std::string_view::npos) return Unix::kUnknown;
  return is_ipv4(address) ? Unix::kNo : Unix::kYes;
}

bool known_method(std::string_view m) {
  for (std::string_view k : {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
    if (m == k) return true;
  return false;
}

bool is_error_status(const SpanRecord& s) {
  const int limit = s.kind == kServer ? 500 : 400;
  return s.status_code >= limit && s.status_code < 600;
}

std::string authority_text(const HostPort& e) {
  std::string host = e.address.find(':') != std::string_view::npos ? "[" + std::string(e.address) + "]"
                                                                   : std::string(e.address);
  if (!e.port || *e.port == kDefaultHttpPort) return host;
  return host + ":" + std::to_string(*e.port);
}

struct Target {
  std::optional<std::string_view> path, query;
  std::optional<HostPort> authority;
};

}  // namespace

bool valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    int len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int k = 1; k < len; k++) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = cp << 6 | (p[i + k] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

bool encode_span(const SpanRecord& s, std::string& out) {
  for (const std::string* v : {&s.context.trace_state, &s.method, &s.target, &s.protocol_version, &s.host,
                               &s.user_agent, &s.peer.address, &s.local.address, &s.error})
    if (!valid_utf8(*v)) return false;

  // spans.ts parseTarget, for the forms it does not hand to the URL parser.
  Target target;
  const std::string_view raw_target = s.target;
  if (!raw_target.empty() && (raw_target[0] == '/' || raw_target == "*")) {
    const size_t q = raw_target.find('?');
    target.path = raw_target.substr(0, q);
    if (q != std::string_view::npos) target.query = raw_target.substr(q + 1);
  } else if (s.method == "CONNECT") {
    target.authority = parse_host_port(raw_target);
  } else {
    return false;  // absolute form (or nonsense): JS's WHATWG URL parse decides
  }

  // spans.ts serverEndpoint.
  std::optional<HostPort> server = target.authority;
  if (!server && !s.host.empty()) {
    if (auto h = parse_host_port(s.host)) server = HostPort{h->address, h->port.value_or(kDefaultHttpPort)};
  }
  if (!server) {
    const Endpoint& e = s.kind == kServer ? s.local : s.peer;
    const Unix unix = unix_socket(e.address, e.port);
    if (unix == Unix::kUnknown) return false;
    if (!e.address.empty() && unix == Unix::kNo)
      server = HostPort{e.address, e.port > 0 ? std::optional<int>(e.port) : std::nullopt};
  }
  const Unix peer_unix = s.peer.address.empty() ? Unix::kNo : unix_socket(s.peer.address, s.peer.port);
  if (peer_unix == Unix::kUnknown) return false;

  const bool known = known_method(s.method);
  const std::string_view method = known ? std::string_view(s.method) : std::string_view("_OTHER");
  Writer w(out);
  w.tag(1, kLen);
  w.bytes({reinterpret_cast<const char*>(s.context.trace_id.data()), s.context.trace_id.size()});
  w.tag(2, kLen);
  w.bytes({reinterpret_cast<const char*>(s.context.span_id.data()), s.context.span_id.size()});
  if (!s.context.trace_state.empty()) {
    w.tag(3, kLen);
    w.bytes(s.context.trace_state);
  }
  if (s.has_parent) {
    w.tag(4, kLen);
    w.bytes({reinterpret_cast<const char*>(s.parent_span_id.data()), s.parent_span_id.size()});
  }
  w.tag(5, kLen);
  w.bytes(known ? method : std::string_view("HTTP"));
  w.tag(6, kVarint);
  w.varint(s.kind == kServer ? 2 : 3);  // SPAN_KIND_SERVER, SPAN_KIND_CLIENT
  // JS carries times as [u32 seconds, nanoseconds].
  const auto hr = [](TimeNs t) { return uint64_t{static_cast<uint32_t>(t / 1000000000ull)} * 1000000000ull + t % 1000000000ull; };
  const uint64_t start = hr(s.start);
  w.tag(7, kFixed64);
  w.fixed64(start);
  w.tag(8, kFixed64);
  w.fixed64(std::max<uint64_t>(start, hr(s.end)));

  // spans.ts spanAttributes, in its order.
  Attributes a(w);
  a.str("http.request.method", method);
  a.str("url.scheme", "http");
  if (!known) a.str("http.request.method_original", s.method);
  if (target.path) a.str("url.path", *target.path);
  if (target.query) a.str("url.query", *target.query);
  if (s.kind != kServer && server && target.path) a.str("url.full", "http://" + authority_text(*server) + s.target);
  if (s.status_code > 0) a.number("http.response.status_code", s.status_code);
  if (server) {
    a.str("server.address", server->address);
    if (server->port) a.number("server.port", *server->port);
  }
  if (!s.peer.address.empty()) {
    if (s.kind == kServer) a.str("client.address", s.peer.address);
    a.str("network.peer.address", s.peer.address);
    if (s.peer.port > 0) a.number("network.peer.port", s.peer.port);
    if (peer_unix == Unix::kYes) a.str("network.transport", "unix");
  }
  if (!s.protocol_version.empty()) a.str("network.protocol.version", s.protocol_version);
  if (!s.user_agent.empty()) a.str("user_agent.original", s.user_agent);
  if (s.request_body_size > 0) a.number("http.request.body.size", static_cast<double>(s.request_body_size));
  if (s.response_body_size > 0) a.number("http.response.body.size", static_cast<double>(s.response_body_size));
  a.number("thread.id", s.tid);
  const bool error_status = is_error_status(s);
  if (!s.error.empty()) {
    a.str("error.type", s.error);
  } else if (error_status) {
    a.str("error.type", std::to_string(s.status_code));
  }

  w.tag(10, kVarint);  // dropped_attributes_count
  w.varint(0);
  w.tag(12, kVarint);  // dropped_events_count
  w.varint(0);
  w.tag(14, kVarint);  // dropped_links_count
  w.varint(0);
  w.tag(15, kLen);  // status
  const size_t status = w.begin();
  if (!s.error.empty()) {
    w.tag(2, kLen);
    w.bytes(s.error);
  }
  w.tag(3, kVarint);
  w.varint(!s.error.empty() || error_status ? 2 : 0);  // STATUS_CODE_ERROR, STATUS_CODE_UNSET
  w.end(status);
  // flags: the trace flags, and whether the parent is remote (known: bit 8).
  w.tag(16, kFixed32);
  w.fixed32(s.context.flags | 0x100u | (s.has_parent && s.parent_remote ? 0x200u : 0u));
  return true;
}

}  // namespace rbinder::otlp
