#include "tracee/sockets.h"

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <sys/ioctl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

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

OwnedFd copy_fd(int pidfd, int fd) {
  if (pidfd < 0) return OwnedFd();  // errno still says why the pidfd could not be had
  return OwnedFd(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, 0)));
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

int borrow_socket(int pidfd, int fd, SocketInfo& out, OwnedFd& result) {
  OwnedFd borrowed = copy_fd(pidfd, fd);
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
  result = std::move(borrowed);
  return 0;
}

// TCP states (include/net/tcp_states.h; not exported to user space by linux/tcp.h).
enum : uint8_t { kTcpTimeWait = 6, kTcpClose = 7, kTcpCloseWait = 8, kTcpLastAck = 9, kTcpClosing = 11 };

namespace {

// "0100007F:1F90" (IPv4) or 32 hex digits + port (IPv6), as /proc/net/tcp{,6} print them: the
// address words in host byte order.
bool parse_proc_endpoint(const std::string& text, int family, Endpoint& out) {
  size_t colon = text.find(':');
  if (colon == std::string::npos) return false;
  const std::string hex = text.substr(0, colon);
  out.port = static_cast<uint16_t>(std::strtoul(text.c_str() + colon + 1, nullptr, 16));
  uint32_t words[4] = {0, 0, 0, 0};
  const size_t n = family == AF_INET ? 1 : 4;
  if (hex.size() != n * 8) return false;
  for (size_t i = 0; i < n; i++) words[i] = static_cast<uint32_t>(std::strtoul(hex.substr(i * 8, 8).c_str(), nullptr, 16));
  if (family == AF_INET) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    std::memcpy(&in.sin_addr, &words[0], 4);
    in.sin_port = htons(out.port);
    int domain;
    uint16_t port = out.port;
    bool ok = decode_sockaddr(&in, sizeof(in), domain, out);
    out.port = port;
    return ok;
  }
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  std::memcpy(&in6.sin6_addr, words, 16);
  in6.sin6_port = htons(out.port);
  int domain;
  return decode_sockaddr(&in6, sizeof(in6), domain, out);
}

}  // namespace

int describe_socket_from_proc(pid_t pid, int fd, SocketInfo& out) {
  char path[64], target[64];
  snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, fd);
  ssize_t len = readlink(path, target, sizeof(target) - 1);
  if (len < 0) return -errno;
  target[len] = '\0';
  unsigned long inode = 0;
  if (std::sscanf(target, "socket:[%lu]", &inode) != 1) return -ENOTSOCK;
  const std::string wanted = std::to_string(inode);
  for (const auto& [file, family] : {std::pair<const char*, int>{"tcp", AF_INET}, {"tcp6", AF_INET6}}) {
    std::ifstream table("/proc/" + std::to_string(pid) + "/net/" + file);
    std::string line;
    std::getline(table, line);  // header
    while (std::getline(table, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retr, uid, timeout, ino;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >> ino;
      if (ino != wanted) continue;
      out.domain = family;
      out.type = SOCK_STREAM;
      if (!parse_proc_endpoint(local, family, out.local) || !parse_proc_endpoint(remote, family, out.peer)) return -EINVAL;
      if (out.peer.port == 0) out.peer = Endpoint{};  // not connected (yet)
      return 0;
    }
  }
  std::ifstream unix_table("/proc/" + std::to_string(pid) + "/net/unix");
  std::string line;
  std::getline(unix_table, line);
  while (std::getline(unix_table, line)) {
    std::istringstream fields(line);
    std::string num, refcount, protocol, flags, type, st, ino, sock_path;
    fields >> num >> refcount >> protocol >> flags >> type >> st >> ino;
    std::getline(fields, sock_path);
    if (ino != wanted) continue;
    if (std::strtoul(type.c_str(), nullptr, 16) != SOCK_STREAM) return -EPROTOTYPE;
    out.domain = AF_UNIX;
    out.type = SOCK_STREAM;
    size_t start = sock_path.find_first_not_of(' ');
    out.local.address = start == std::string::npos ? "" : sock_path.substr(start);
    return 0;
  }
  return -ENOENT;
}

int tcp_progress(int fd, TcpProgress& out) {
  // TCP_INFO and the queue sizes come from separate calls: an ACK or a segment arriving in
  // between would skew the sums, so read until the counters did not move around the queues.
  tcp_info info{}, again{};
  int inq = 0, outq = 0;
  for (int attempt = 0;; attempt++) {
    socklen_t len = sizeof(info);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -errno;
    if (len < offsetof(tcp_info, tcpi_bytes_received) + sizeof(info.tcpi_bytes_received)) return -ENOTSUP;
    if (ioctl(fd, SIOCINQ, &inq) != 0 || ioctl(fd, SIOCOUTQ, &outq) != 0) return -errno;
    len = sizeof(again);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &again, &len) != 0) return -errno;
    if (again.tcpi_bytes_received == info.tcpi_bytes_received && again.tcpi_bytes_acked == info.tcpi_bytes_acked &&
        again.tcpi_state == info.tcpi_state)
      break;
    if (attempt == 16) return -EAGAIN;  // a stream too busy to pin down: the caller takes exit stops
  }
  // The peer's FIN takes one sequence number, which tcpi_bytes_received counts.
  out.peer_closed = info.tcpi_state == kTcpCloseWait || info.tcpi_state == kTcpLastAck ||
                    info.tcpi_state == kTcpClosing || info.tcpi_state == kTcpTimeWait ||
                    info.tcpi_state == kTcpClose;
  uint64_t received = info.tcpi_bytes_received;
  // In TCP_CLOSE a reset may have ended the stream instead (no FIN counted): counting one byte too
  // few there is harmless (a read that returns nothing), one too many is not.
  if (out.peer_closed && received > 0) received -= 1;
  out.queued_in = static_cast<uint32_t>(inq);
  out.consumed = received - static_cast<uint64_t>(inq);
  out.accepted = info.tcpi_bytes_acked + static_cast<uint64_t>(outq);
  return 0;
}

long peek_socket(int fd, void* buf, size_t len) {
  ssize_t n = recv(fd, buf, len, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 ? -errno : n;
}

}  // namespace rbinder
