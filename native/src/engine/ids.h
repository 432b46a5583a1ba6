// Trace and span ids, and the sampling decision for new traces.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace rbinder {

using TraceId = std::array<uint8_t, 16>;
using SpanId = std::array<uint8_t, 8>;

// A span context as propagated: ids, W3C flags, tracestate.
struct SpanContext {
  TraceId trace_id{};
  SpanId span_id{};
  uint8_t flags = 0;  // bit 0: sampled
  std::string trace_state;
  std::string baggage;  // W3C baggage carried along with the context (propagated, never parsed)
  bool valid() const;
  bool sampled() const { return (flags & 1) != 0; }
};

// Fast non-cryptographic generator (xoshiro256**) seeded from getrandom; ids need uniqueness,
// not secrecy.
class IdGenerator {
 public:
  IdGenerator();
  TraceId trace_id();
  SpanId span_id();

 private:
  uint64_t next();
  uint64_t s_[4];
};

enum class SamplerType : uint8_t {
  kAlwaysOn,
  kAlwaysOff,
  kTraceIdRatio,
  kParentBasedAlwaysOn,
  kParentBasedAlwaysOff,
  kParentBasedTraceIdRatio
};

struct Sampler {
  SamplerType type = SamplerType::kParentBasedAlwaysOn;
  double ratio = 1.0;
  // Sampled flag for a span with this parent (nullptr: root) and trace id.
  bool sample(const SpanContext* parent, const TraceId& trace_id) const;
};

std::string to_hex(const uint8_t* bytes, size_t n);
template <size_t N>
std::string to_hex(const std::array<uint8_t, N>& a) { return to_hex(a.data(), N); }

// Parses a W3C traceparent value ("00-<32 hex>-<16 hex>-<2 hex>"). Returns false when invalid.
bool parse_traceparent(std::string_view value, SpanContext& out);

}  // namespace rbinder
