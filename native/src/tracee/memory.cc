#include "tracee/memory.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace rbinder {
namespace {

// containerd's default seccomp profile (and Docker's before 20.10) refuses process_vm_readv and
// process_vm_writev without CAP_SYS_PTRACE, while ptrace itself is allowed: then the tracer uses
// /proc/PID/mem, which a ptrace-attached tracer may read and write. RBINDER_FORCE_PROC_MEM=1
// takes that path from the start (tests).
std::atomic<bool> use_proc_mem{getenv("RBINDER_FORCE_PROC_MEM") != nullptr &&
                               std::strcmp(getenv("RBINDER_FORCE_PROC_MEM"), "0") != 0};

bool refused(int err) { return err == EPERM || err == ENOSYS || err == EACCES; }

long proc_mem(pid_t pid, TraceeAddr addr, void* buf, size_t len, bool write) {
  char path[48];
  snprintf(path, sizeof(path), "/proc/%d/mem", pid);
  int fd = open(path, (write ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = write ? pwrite(fd, buf, len, static_cast<off_t>(addr.value)) : pread(fd, buf, len, static_cast<off_t>(addr.value));
  const int err = errno;
  close(fd);
  return n < 0 ? -err : n;
}

}  // namespace

long read_tracee(pid_t pid, TraceeAddr tracee_buf, void* local_buf, size_t len) {
  if (len == 0) return 0;
  if (!use_proc_mem.load(std::memory_order_relaxed)) {
    iovec local{local_buf, len};
    iovec remote{reinterpret_cast<void*>(tracee_buf.value), len};
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n >= 0 || !refused(errno)) return n < 0 ? -errno : n;
    use_proc_mem.store(true, std::memory_order_relaxed);
  }
  return proc_mem(pid, tracee_buf, local_buf, len, false);
}

long write_tracee(pid_t pid, TraceeAddr tracee_buf, const void* local_buf, size_t len) {
  if (len == 0) return 0;
  if (!use_proc_mem.load(std::memory_order_relaxed)) {
    iovec local{const_cast<void*>(local_buf), len};
    iovec remote{reinterpret_cast<void*>(tracee_buf.value), len};
    ssize_t n = process_vm_writev(pid, &local, 1, &remote, 1, 0);
    if (n >= 0 || !refused(errno)) return n < 0 ? -errno : n;
    use_proc_mem.store(true, std::memory_order_relaxed);
  }
  return proc_mem(pid, tracee_buf, const_cast<void*>(local_buf), len, true);
}

void TraceeWrites::add(TraceeAddr at, const void* data, size_t len) {
  if (len == 0) return;
  if (count_ == kMaxPlaces) {
    overflow_ = true;
    return;
  }
  places_[count_++] = Place{at, bytes_.size(), len};
  bytes_.append(static_cast<const char*>(data), len);
}

bool TraceeWrites::flush(pid_t pid) {
  if (overflow_) return false;
  if (!use_proc_mem.load(std::memory_order_relaxed)) {
    std::array<iovec, kMaxPlaces> local{}, remote{};
    for (size_t i = 0; i < count_; i++) {
      local[i] = iovec{bytes_.data() + places_[i].offset, places_[i].len};
      remote[i] = iovec{reinterpret_cast<void*>(places_[i].at.value), places_[i].len};
    }
    const ssize_t n = process_vm_writev(pid, local.data(), count_, remote.data(), count_, 0);
    if (n >= 0) return static_cast<size_t>(n) == bytes_.size();
    if (!refused(errno)) return false;
  }
  for (size_t i = 0; i < count_; i++)
    if (write_tracee(pid, places_[i].at, bytes_.data() + places_[i].offset, places_[i].len) != static_cast<long>(places_[i].len))
      return false;
  return true;
}

bool TraceeWrites::flush_shared(TraceeAddr at, uint8_t* local, size_t len) {
  if (overflow_) return false;
  for (size_t i = 0; i < count_; i++) {
    const Place& p = places_[i];
    if (p.at.value < at.value || p.at.value - at.value > len || p.len > len - (p.at.value - at.value)) return false;
  }
  for (size_t i = 0; i < count_; i++)
    std::memcpy(local + (places_[i].at.value - at.value), bytes_.data() + places_[i].offset, places_[i].len);
  return true;
}

int read_tracee_iovecs(pid_t pid, TraceeAddr tracee_iov, size_t count, std::vector<TraceeIovec>& out) {
  out.clear();
  if (count > kMaxIovecs) return -EINVAL;
  std::vector<iovec> raw(count);
  long n = read_tracee(pid, tracee_iov, raw.data(), count * sizeof(iovec));
  if (n < 0) return static_cast<int>(n);
  if (static_cast<size_t>(n) != count * sizeof(iovec)) return -EFAULT;
  out.reserve(count);
  for (const iovec& v : raw) out.push_back({TraceeAddr{reinterpret_cast<uint64_t>(v.iov_base)}, v.iov_len});
  return 0;
}

}  // namespace rbinder
