// Bounded copies out of a tracee's memory with process_vm_readv.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tracee/address.h"

namespace rbinder {

// Copies up to `len` bytes from `tracee_buf` in process `pid` into `local_buf`. Returns the
// number of bytes copied (short when part of the range is unmapped) or -errno.
long read_tracee(pid_t pid, TraceeAddr tracee_buf, void* local_buf, size_t len);

// Copies `len` bytes from `local_buf` to `tracee_buf` (memory rbinder mapped in the tracee: never
// the program's own). Returns bytes copied or -errno.
long write_tracee(pid_t pid, TraceeAddr tracee_buf, const void* local_buf, size_t len);

// Writes to several places of one tracee, made with one process_vm_writev (an injection's header,
// its iovecs, a msghdr and the stub's answer: one syscall instead of up to four). The bytes are
// copied on add; the places live in a fixed array (this runs once per injected request).
class TraceeWrites {
 public:
  static constexpr size_t kMaxPlaces = 4;
  // More than kMaxPlaces makes flush fail.
  void add(TraceeAddr at, const void* data, size_t len);
  // Writes everything added; true if every byte arrived.
  bool flush(pid_t pid);
  // Writes everything added into memory shared with the tracee, which has its [at, at + len) at
  // `local` here: a memcpy each, no syscall. False, with nothing written, if a place is outside it.
  bool flush_shared(TraceeAddr at, uint8_t* local, size_t len);

 private:
  struct Place {
    TraceeAddr at;
    size_t offset = 0, len = 0;
  };
  std::array<Place, kMaxPlaces> places_{};
  size_t count_ = 0;
  bool overflow_ = false;
  std::string bytes_;
};

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
