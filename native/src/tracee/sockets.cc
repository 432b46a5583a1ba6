#include "tracee/sockets.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "tracee/memory.h"

namespace rbinder {

OwnedFd& OwnedFd::operator=(OwnedFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

OwnedFd::~OwnedFd() {
  if (fd_ >= 0) ::close(fd_);
}

OwnedFd open_pidfd(pid_t tgid) {
  return OwnedFd(static_cast<int>(::syscall(SYS_pidfd_open, tgid, 0)));
}

bool decode_sockaddr(const void* addr, size_t len, int& domain, Endpoint& out) {
  if (len < sizeof(sa_family_t)) return false;
  sa_family_t family;
  std::memcpy(&family, addr, sizeof(family));
  domain = family;
  char text[INET6_ADDRSTRLEN] = {0};
  if (family == AF_INET && len >= sizeof(sockaddr_in)) {
    sockaddr_in in;
    std::memcpy(&in, addr, sizeof(in));
    inet_ntop(AF_INET, &in.sin_addr, text, sizeof(text));
    out.address = text;
    out.port = ntohs(in.sin_port);
    return true;
  }
  if (family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    sockaddr_in6 in6;
    std::memcpy(&in6, addr, sizeof(in6));
    if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
      inet_ntop(AF_INET, &in6.sin6_addr.s6_addr[12], text, sizeof(text));
    } else {
      inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof(text));
    }
    out.address = text;
    out.port = ntohs(in6.sin6_port);
    return true;
  }
  if (family == AF_UNIX) {
    sockaddr_un un;
    std::memset(&un, 0, sizeof(un));
    std::memcpy(&un, addr, len < sizeof(un) ? len : sizeof(un));
    size_t path_len = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
    if (path_len > sizeof(un.sun_path)) path_len = sizeof(un.sun_path);
    if (path_len > 0 && un.sun_path[0] == '\0') {
      out.address = "@" + std::string(un.sun_path + 1, strnlen(un.sun_path + 1, path_len - 1));  // abstract
    } else {
      out.address = std::string(un.sun_path, strnlen(un.sun_path, path_len));
    }
    out.port = 0;
    return true;
  }
  return false;
}

bool read_tracee_sockaddr(pid_t pid, TraceeAddr addr, size_t len, int& domain, Endpoint& out) {
  sockaddr_storage ss;
  if (!addr || len == 0) return false;
  if (len > sizeof(ss)) len = sizeof(ss);
  long n = read_tracee(pid, addr, &ss, len);
  if (n <= 0) return false;
  return decode_sockaddr(&ss, static_cast<size_t>(n), domain, out);
}

int describe_socket(int pidfd, int fd, SocketInfo& out) {
  OwnedFd borrowed(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, 0)));
  if (!borrowed.valid()) return -errno;
  socklen_t optlen = sizeof(int);
  if (getsockopt(borrowed.get(), SOL_SOCKET, SO_DOMAIN, &out.domain, &optlen) != 0) return -errno;
  optlen = sizeof(int);
  if (getsockopt(borrowed.get(), SOL_SOCKET, SO_TYPE, &out.type, &optlen) != 0) return -errno;
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  int domain;
  if (getsockname(borrowed.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0)
    decode_sockaddr(&ss, len, domain, out.local);
  len = sizeof(ss);
  if (getpeername(borrowed.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0)
    decode_sockaddr(&ss, len, domain, out.peer);
  return 0;
}

}  // namespace rbinder
