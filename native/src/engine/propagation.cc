#include "engine/propagation.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace rbinder {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool parse_hex_id(const std::string& s, uint8_t* out, size_t n) {
  // b3 trace ids may be 64-bit (16 hex chars): left-pad to 128 bits.
  if (s.size() > n * 2 || s.empty() || s.size() % 2) return false;
  size_t pad = n - s.size() / 2;
  std::memset(out, 0, pad);
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size() / 2; i++) {
    int hi = nibble(s[2 * i]), lo = nibble(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[pad + i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

// b3 single: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]], or just "0"/"1"/"d".
bool parse_b3_single(const std::string& value, SpanContext& out) {
  std::string v = lower(value);
  size_t d1 = v.find('-');
  if (d1 == std::string::npos) return false;  // sampling-only forms carry no ids
  size_t d2 = v.find('-', d1 + 1);
  SpanContext c;
  if (!parse_hex_id(v.substr(0, d1), c.trace_id.data(), 16)) return false;
  if (!parse_hex_id(v.substr(d1 + 1, d2 == std::string::npos ? std::string::npos : d2 - d1 - 1), c.span_id.data(), 8))
    return false;
  c.flags = 1;
  if (d2 != std::string::npos) {
    std::string sampling = v.substr(d2 + 1, 1);
    c.flags = (sampling == "1" || sampling == "d") ? 1 : 0;
  }
  if (!c.valid()) return false;
  out = std::move(c);
  return true;
}

bool parse_b3_multi(const http::MessageHead& head, SpanContext& out) {
  if (head.x_b3_traceid.empty() || head.x_b3_spanid.empty()) return false;
  SpanContext c;
  if (!parse_hex_id(lower(head.x_b3_traceid), c.trace_id.data(), 16)) return false;
  if (!parse_hex_id(lower(head.x_b3_spanid), c.span_id.data(), 8)) return false;
  c.flags = (head.x_b3_sampled == "0" || lower(head.x_b3_sampled) == "false") ? 0 : 1;
  if (head.x_b3_flags == "1") c.flags = 1;  // debug implies sampled
  if (!c.valid()) return false;
  out = std::move(c);
  return true;
}

}  // namespace

bool extract_context(const http::MessageHead& head, const PropagationConfig& config, SpanContext& out) {
  bool found = false;
  if ((config.propagators & kTraceContext) && !head.traceparent.empty()) {
    SpanContext c;
    if (parse_traceparent(head.traceparent, c)) {
      c.trace_state = head.tracestate;
      out = std::move(c);
      found = true;
    }
  }
  if (!found && (config.propagators & kB3Single) && !head.b3.empty()) found = parse_b3_single(head.b3, out);
  if (!found && (config.propagators & kB3Multi)) found = parse_b3_multi(head, out);
  if (found && (config.propagators & kBaggage)) out.baggage = head.baggage;
  return found;
}

bool carries_context(const http::MessageHead& head, const PropagationConfig& config) {
  // Any trace header the program wrote means it propagates itself; adding ours would give the
  // receiver two contexts to choose from.
  (void)config;
  return !head.traceparent.empty() || !head.b3.empty() || !head.x_b3_traceid.empty();
}

std::string context_headers(const SpanContext& c, const PropagationConfig& config) {
  std::string out;
  const std::string trace = to_hex(c.trace_id);
  const std::string span = to_hex(c.span_id);
  if (config.propagators & kTraceContext) {
    out += "traceparent: 00-" + trace + "-" + span + (c.sampled() ? "-01" : "-00") + "\r\n";
    if (!c.trace_state.empty()) out += "tracestate: " + c.trace_state + "\r\n";
  }
  if ((config.propagators & kBaggage) && !c.baggage.empty()) out += "baggage: " + c.baggage + "\r\n";
  if (config.propagators & kB3Single) out += "b3: " + trace + "-" + span + (c.sampled() ? "-1" : "-0") + "\r\n";
  if (config.propagators & kB3Multi) {
    out += "X-B3-TraceId: " + trace + "\r\nX-B3-SpanId: " + span + "\r\nX-B3-Sampled: " + (c.sampled() ? "1" : "0") +
           "\r\n";
  }
  return out;
}

bool DestinationAllowList::add(const std::string& raw, std::string& error) {
  std::string entry = raw;
  entry.erase(0, entry.find_first_not_of(" \t"));
  entry.erase(entry.find_last_not_of(" \t") + 1);
  if (entry.empty()) return true;
  if (entry == "*") {
    all_ = true;
    return true;
  }
  std::string addr = entry;
  int prefix = -1;
  size_t slash = entry.find('/');
  if (slash != std::string::npos) {
    addr = entry.substr(0, slash);
    char* end = nullptr;
    long p = std::strtol(entry.c_str() + slash + 1, &end, 10);
    if (*end != '\0' || slash + 1 == entry.size()) {
      error = "bad prefix length in '" + entry + "'";
      return false;
    }
    prefix = static_cast<int>(p);
  }
  Network n;
  if (inet_pton(AF_INET, addr.c_str(), n.bytes) == 1) {
    n.family = AF_INET;
    if (prefix < 0) prefix = 32;
    if (prefix > 32) {
      error = "prefix longer than 32 in '" + entry + "'";
      return false;
    }
  } else if (inet_pton(AF_INET6, addr.c_str(), n.bytes) == 1) {
    n.family = AF_INET6;
    if (prefix < 0) prefix = 128;
    if (prefix > 128) {
      error = "prefix longer than 128 in '" + entry + "'";
      return false;
    }
  } else if (slash != std::string::npos) {
    error = "bad network address in '" + entry + "'";
    return false;
  } else if (size_t colon = entry.rfind(':'); colon != std::string::npos) {
    const std::string port = entry.substr(colon + 1);
    if (port.empty() || port.find_first_not_of("0123456789") != std::string::npos || colon == 0) {
      error = "bad host:port in '" + entry + "'";
      return false;
    }
    host_ports_.push_back(lower(entry));
    return true;
  } else {
    std::string suffix = entry.rfind("*.", 0) == 0 ? entry.substr(2) : entry[0] == '.' ? entry.substr(1) : entry;
    suffixes_.push_back(lower(suffix));
    return true;
  }
  n.prefix = prefix;
  networks_.push_back(n);
  return true;
}

bool DestinationAllowList::allows(const std::string& peer_address, const std::string& host_header) const {
  if (all_) return true;
  uint8_t bytes[16];
  int family = 0;
  if (inet_pton(AF_INET, peer_address.c_str(), bytes) == 1) {
    family = AF_INET;
  } else if (inet_pton(AF_INET6, peer_address.c_str(), bytes) == 1) {
    family = AF_INET6;
  }
  for (const Network& n : networks_) {
    if (n.family != family) continue;
    int full = n.prefix / 8, rest = n.prefix % 8;
    if (std::memcmp(n.bytes, bytes, static_cast<size_t>(full)) != 0) continue;
    if (rest && ((n.bytes[full] ^ bytes[full]) & (0xff << (8 - rest)) & 0xff)) continue;
    return true;
  }
  // An AF_UNIX peer (a path) is on this host: allowed wherever loopback is.
  if (family == 0 && !peer_address.empty() && allows("127.0.0.1", "")) return true;
  // Host header without port, lowercased.
  std::string host = lower(host_header);
  for (const std::string& exact : host_ports_)
    if (host == exact) return true;
  if (!host.empty() && host[0] == '[') {
    host = host.substr(1, host.find(']') == std::string::npos ? std::string::npos : host.find(']') - 1);
  } else if (size_t colon = host.find(':'); colon != std::string::npos && host.find(':', colon + 1) == std::string::npos) {
    host = host.substr(0, colon);
  }
  while (!host.empty() && host.back() == '.') host.pop_back();
  for (const std::string& suffix : suffixes_) {
    if (host == suffix) return true;
    if (host.size() > suffix.size() && host.compare(host.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        host[host.size() - suffix.size() - 1] == '.')
      return true;
  }
  return false;
}

}  // namespace rbinder
