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

// Describes socket `fd` of the process behind `pidfd`. Returns 0, or -errno (-ENOTSOCK when the
// descriptor is not a socket). A peer that is not connected yet (connect in progress) is left empty.
int describe_socket(int pidfd, int fd, SocketInfo& out);

// Decodes a sockaddr copied out of a tracee (connect's argument).
bool decode_sockaddr(const void* addr, size_t len, int& domain, Endpoint& out);

// Reads the sockaddr a tracee passed to connect.
bool read_tracee_sockaddr(pid_t pid, TraceeAddr addr, size_t len, int& domain, Endpoint& out);

}  // namespace rbinder
