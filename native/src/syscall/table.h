// The one list of syscalls rbinder traces. It generates both the seccomp filter (seccomp.cc) and
// the dispatch in the engine (engine.cc), so the two cannot disagree.
#pragma once

#include <sys/syscall.h>

#include <cstddef>
#include <cstdint>

namespace rbinder::syscall {

// What the engine does with a traced syscall.
enum class Kind : uint8_t {
  kRead,        // read, recvfrom: (fd, buf, len)
  kReadv,       // readv: (fd, iov, iovcnt)
  kRecvmsg,     // recvmsg: (fd, msghdr, flags)
  kWrite,       // write, sendto: (fd, buf, len)
  kWritev,      // writev: (fd, iov, iovcnt)
  kSendmsg,     // sendmsg: (fd, msghdr, flags)
  kSendfile,    // sendfile: (out_fd, in_fd, offset, count)
  kConnect,     // connect: (fd, addr, addrlen)
  kAccept,      // accept, accept4: (fd, addr, addrlen[, flags])
  kClose,       // close: (fd)
  kCloseRange,  // close_range: (first, last, flags)
  kDup,         // dup (oldfd)
  kDup2,        // dup2, dup3: (oldfd, newfd[, flags])
  kFcntlDup,    // fcntl(fd, F_DUPFD | F_DUPFD_CLOEXEC, min)
};

// When the engine needs the syscall-exit stop as well as the entry stop.
enum class Exit : uint8_t {
  kNever,     // everything is known at entry
  kAlways,    // the result is always needed (new fds)
  kIfTracked  // needed only when the fd is a tracked connection (decided at entry)
};

struct TracedSyscall {
  long nr;
  const char* name;
  Kind kind;
  Exit exit;
};

// fcntl is traced only for the commands that create a descriptor; the filter checks its argument.
#define RBINDER_TRACED_SYSCALLS(X)                   \
  X(SYS_read, "read", kRead, kIfTracked)             \
  X(SYS_recvfrom, "recvfrom", kRead, kIfTracked)     \
  X(SYS_readv, "readv", kReadv, kIfTracked)          \
  X(SYS_recvmsg, "recvmsg", kRecvmsg, kIfTracked)    \
  X(SYS_write, "write", kWrite, kIfTracked)          \
  X(SYS_sendto, "sendto", kWrite, kIfTracked)        \
  X(SYS_writev, "writev", kWritev, kIfTracked)       \
  X(SYS_sendmsg, "sendmsg", kSendmsg, kIfTracked)    \
  X(SYS_sendfile, "sendfile", kSendfile, kIfTracked) \
  X(SYS_connect, "connect", kConnect, kAlways)       \
  X(SYS_accept, "accept", kAccept, kAlways)          \
  X(SYS_accept4, "accept4", kAccept, kAlways)        \
  X(SYS_close, "close", kClose, kNever)              \
  X(SYS_close_range, "close_range", kCloseRange, kNever) \
  X(SYS_dup, "dup", kDup, kIfTracked)                \
  X(SYS_dup2, "dup2", kDup2, kIfTracked)             \
  X(SYS_dup3, "dup3", kDup2, kIfTracked)             \
  X(SYS_fcntl, "fcntl", kFcntlDup, kIfTracked)

#define RBINDER_TABLE_ENTRY(nr, name, kind, exit) TracedSyscall{nr, name, Kind::kind, Exit::exit},
inline constexpr TracedSyscall kTracedSyscalls[] = {RBINDER_TRACED_SYSCALLS(RBINDER_TABLE_ENTRY)};
#undef RBINDER_TABLE_ENTRY
inline constexpr size_t kTracedSyscallCount = sizeof(kTracedSyscalls) / sizeof(kTracedSyscalls[0]);

// Index into kTracedSyscalls for a syscall number, or -1 when it is not traced.
inline int traced_index(long nr) {
  for (size_t i = 0; i < kTracedSyscallCount; i++)
    if (kTracedSyscalls[i].nr == nr) return static_cast<int>(i);
  return -1;
}

}  // namespace rbinder::syscall
