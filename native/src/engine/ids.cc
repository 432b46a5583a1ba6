#include "engine/ids.h"

#include <sys/random.h>

#include <chrono>
#include <cstring>

namespace rbinder {
namespace {

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // W3C requires lowercase
}

bool parse_hex(std::string_view s, uint8_t* out, size_t n) {
  if (s.size() != n * 2) return false;
  for (size_t i = 0; i < n; i++) {
    int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

template <size_t N>
bool all_zero(const std::array<uint8_t, N>& a) {
  for (uint8_t b : a)
    if (b) return false;
  return true;
}

}  // namespace

bool SpanContext::valid() const { return !all_zero(trace_id) && !all_zero(span_id); }

IdGenerator::IdGenerator() {
  if (getrandom(s_, sizeof(s_), 0) != static_cast<ssize_t>(sizeof(s_))) {
    uint64_t t = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    for (int i = 0; i < 4; i++) s_[i] = t * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(i) + 1;
  }
}

uint64_t IdGenerator::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

TraceId IdGenerator::trace_id() {
  TraceId id;
  do {
    uint64_t a = next(), b = next();
    std::memcpy(id.data(), &a, 8);
    std::memcpy(id.data() + 8, &b, 8);
  } while (all_zero(id));
  return id;
}

SpanId IdGenerator::span_id() {
  SpanId id;
  do {
    uint64_t a = next();
    std::memcpy(id.data(), &a, 8);
  } while (all_zero(id));
  return id;
}

bool Sampler::sample(const SpanContext* parent, const TraceId& trace_id) const {
  auto ratio_decision = [&] {
    if (ratio >= 1.0) return true;
    if (ratio <= 0.0) return false;
    // Deterministic on the trace id's last 8 bytes so every service decides alike.
    uint64_t v = 0;
    for (int i = 8; i < 16; i++) v = v << 8 | trace_id[static_cast<size_t>(i)];
    return static_cast<double>(v >> 11) < ratio * static_cast<double>(1ull << 53);
  };
  switch (type) {
    case SamplerType::kAlwaysOn: return true;
    case SamplerType::kAlwaysOff: return false;
    case SamplerType::kTraceIdRatio: return ratio_decision();
    case SamplerType::kParentBasedAlwaysOn: return parent ? parent->sampled() : true;
    case SamplerType::kParentBasedAlwaysOff: return parent ? parent->sampled() : false;
    case SamplerType::kParentBasedTraceIdRatio: return parent ? parent->sampled() : ratio_decision();
  }
  return true;
}

std::string to_hex(const uint8_t* bytes, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s(n * 2, '0');
  for (size_t i = 0; i < n; i++) {
    s[2 * i] = kDigits[bytes[i] >> 4];
    s[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return s;
}

bool parse_traceparent(std::string_view v, SpanContext& out) {
  // version "-" trace-id "-" parent-id "-" flags; future versions may append "-..." fields.
  if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
  uint8_t version;
  if (!parse_hex(v.substr(0, 2), &version, 1) || version == 0xff) return false;
  if (version == 0 && v.size() != 55) return false;
  if (version != 0 && v.size() > 55 && v[55] != '-') return false;
  SpanContext c;
  if (!parse_hex(v.substr(3, 32), c.trace_id.data(), 16)) return false;
  if (!parse_hex(v.substr(36, 16), c.span_id.data(), 8)) return false;
  if (!parse_hex(v.substr(53, 2), &c.flags, 1)) return false;
  if (!c.valid()) return false;
  c.trace_state = std::move(out.trace_state);
  out = std::move(c);
  return true;
}

}  // namespace rbinder
