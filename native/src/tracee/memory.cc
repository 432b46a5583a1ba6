#include "tracee/memory.h"

#include <cerrno>

namespace rbinder {

long read_tracee(pid_t pid, TraceeAddr tracee_buf, void* local_buf, size_t len) {
  if (len == 0) return 0;
  iovec local{local_buf, len};
  iovec remote{reinterpret_cast<void*>(tracee_buf.value), len};
  ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
  return n < 0 ? -errno : n;
}

long write_tracee(pid_t pid, TraceeAddr tracee_buf, const void* local_buf, size_t len) {
  if (len == 0) return 0;
  iovec local{const_cast<void*>(local_buf), len};
  iovec remote{reinterpret_cast<void*>(tracee_buf.value), len};
  ssize_t n = process_vm_writev(pid, &local, 1, &remote, 1, 0);
  return n < 0 ? -errno : n;
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
