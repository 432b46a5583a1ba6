// Bounded copies out of a tracee's memory with process_vm_readv.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tracee/address.h"

namespace rbinder {

// Copies up to `len` bytes from `tracee_buf` in process `pid` into `local_buf`. Returns the
// number of bytes copied (short when part of the range is unmapped) or -errno.
long read_tracee(pid_t pid, TraceeAddr tracee_buf, void* local_buf, size_t len);

// Copies `len` bytes from `local_buf` to `tracee_buf` (memory rbinder mapped in the tracee: never
// the program's own). Returns bytes copied or -errno.
long write_tracee(pid_t pid, TraceeAddr tracee_buf, const void* local_buf, size_t len);

// One segment of a tracee's scatter/gather list.
struct TraceeIovec {
  TraceeAddr base;
  uint64_t len = 0;
};

// Reads an iovec array of `count` entries (at most kMaxIovecs) at `tracee_iov`.
// Returns 0 or -errno.
constexpr size_t kMaxIovecs = 1024;  // IOV_MAX
int read_tracee_iovecs(pid_t pid, TraceeAddr tracee_iov, size_t count, std::vector<TraceeIovec>& out);

}  // namespace rbinder
