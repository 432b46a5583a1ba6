// What a tracee's socket is and where it points, learned by borrowing the descriptor with
// pidfd_getfd (the tracer may: it is ptrace-attached) and asking the kernel.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "tracee/address.h"

namespace rbinder {

struct Endpoint {
  std::string address;  // numeric IP (IPv4-mapped IPv6 shown as IPv4), or AF_UNIX path
  uint16_t port = 0;
};

struct SocketInfo {
  int domain = 0;  // AF_INET, AF_INET6, AF_UNIX
  int type = 0;    // SOCK_STREAM, ...
  Endpoint local;
  Endpoint peer;
};

// RAII descriptor owned by the tracer.
class OwnedFd {
 public:
  OwnedFd() = default;
  explicit OwnedFd(int fd) : fd_(fd) {}
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  OwnedFd(OwnedFd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  OwnedFd& operator=(OwnedFd&& o) noexcept;
  ~OwnedFd();
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// pidfd_open(tgid). Returns an invalid OwnedFd on failure.
OwnedFd open_pidfd(pid_t tgid);

// A copy of descriptor `fd` of the process behind `pidfd` (pidfd_getfd). Invalid, with errno set,
// on failure, also when `pidfd` is (errno is then left as its open set it).
OwnedFd copy_fd(int pidfd, int fd);


// Describes socket `fd` of process `pid` from /proc alone (its inode in /proc/PID/fd, then
// /proc/PID/net/tcp, tcp6, unix): for where pidfd_getfd is refused (container seccomp profiles
// without CAP_SYS_PTRACE). TCP and AF_UNIX stream sockets only. Returns 0 or -errno.
int describe_socket_from_proc(pid_t pid, int fd, SocketInfo& out);

// Describes socket `fd` of the process behind `pidfd`, borrowing the descriptor with pidfd_getfd,
// and keeps the copy in `borrowed` (it names the same open file description as the tracee's: same
// queues). Returns 0, or -errno (-ENOTSOCK when it is not a socket). A peer that is not connected
// yet (connect in progress) is left empty.
int borrow_socket(int pidfd, int fd, SocketInfo& out, OwnedFd& borrowed);

// Where a TCP stream stands, read from a borrowed descriptor without touching its data. Counts
// are of payload bytes since the connection was established; SYN and FIN are not counted.
struct TcpProgress {
  uint64_t consumed = 0;   // bytes the program has read out of the receive queue
  uint64_t accepted = 0;   // bytes the program has written into the send queue
  uint32_t queued_in = 0;  // bytes waiting in the receive queue
  bool peer_closed = false;  // FIN received: once the queue is empty, reads return 0
};
// Returns 0 or -errno.
int tcp_progress(int borrowed_fd, TcpProgress& out);

// Copies up to `len` bytes from the head of the receive queue without consuming them.
// Returns bytes copied or -errno.
long peek_socket(int borrowed_fd, void* local_buf, size_t len);

// Decodes a sockaddr copied out of a tracee (connect's argument).
bool decode_sockaddr(const void* addr, size_t len, int& domain, Endpoint& out);

// Reads the sockaddr a tracee passed to connect.
bool read_tracee_sockaddr(pid_t pid, TraceeAddr addr, size_t len, int& domain, Endpoint& out);

}  // namespace rbinder
