// Trace context in HTTP headers: what the configured propagators extract from an inbound request
// and the header lines injected into an outbound one, and where injection is allowed.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/ids.h"
#include "http/parser.h"

namespace rbinder {

// OTEL_PROPAGATORS, as bits.
enum Propagator : uint32_t {
  kTraceContext = 1,
  kBaggage = 2,
  kB3Single = 4,
  kB3Multi = 8,
};

struct PropagationConfig {
  uint32_t propagators = kTraceContext | kBaggage;
};

// Extracts the context an inbound request carries, in the order tracecontext, b3, b3multi.
// Returns false when the request carries none the configuration accepts.
bool extract_context(const http::MessageHead& head, const PropagationConfig& config, SpanContext& out);

// True when the request already carries trace context of a configured format (the program or
// its library propagates): rbinder then injects nothing and honours it.
bool carries_context(const http::MessageHead& head, const PropagationConfig& config);

// The header lines ("Name: value\r\n"...) that carry `context` in the configured formats.
std::string context_headers(const SpanContext& context, const PropagationConfig& config);

// RBINDER_INJECT_TO: where trace context may be sent. A destination matches when its peer
// address is in one of the networks or the request's Host ends with one of the suffixes.
class DestinationAllowList {
 public:
  // Entries: "*" (everywhere), CIDRs ("10.0.0.0/8", "fd00::/8", a bare address), host suffixes
  // (".svc.cluster.local", "*.internal", "example.com" matches itself and its subdomains), or a
  // host with a port ("svc-a:8080", matched against the Host header exactly).
  // Returns false and sets `error` for a malformed CIDR.
  bool add(const std::string& entry, std::string& error);
  bool allows(const std::string& peer_address, const std::string& host) const;
  // Allowed by the peer's address alone (any Host).
  bool allows_peer(const std::string& peer_address) const { return allows(peer_address, ""); }
  bool empty() const { return !all_ && networks_.empty() && suffixes_.empty(); }
  struct Network {
    int family = 0;
    uint8_t bytes[16] = {};
    int prefix = 0;
  };
  // What an address alone decides (the fast path's stub matches peers at connect).
  bool all() const { return all_; }
  const std::vector<Network>& networks() const { return networks_; }

 private:
  bool all_ = false;
  std::vector<Network> networks_;
  std::vector<std::string> suffixes_;
  std::vector<std::string> host_ports_;
};

}  // namespace rbinder
