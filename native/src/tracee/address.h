// A distinct type for addresses in a tracee's address space, so they are never dereferenced
// locally by mistake.
#pragma once

#include <cstdint>

namespace rbinder {

struct TraceeAddr {
  uint64_t value = 0;
  explicit operator bool() const { return value != 0; }
  TraceeAddr operator+(uint64_t off) const { return TraceeAddr{value + off}; }
};

}  // namespace rbinder
