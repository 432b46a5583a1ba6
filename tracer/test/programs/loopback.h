/* For the test programs with a client and a server thread, on loopback TCP. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

/* A listening TCP socket on a free loopback port (its address in *a), or -1. */

static inline int listen_on_loopback(struct sockaddr_in* a) {
  *a = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof *a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || bind(fd, (struct sockaddr*)a, sizeof *a) != 0 || listen(fd, 1) != 0 || getsockname(fd, (struct sockaddr*)a, &len) != 0)
    return -1;
  return fd;
}

/* Listens on loopback (the socket in *listener), starts `serve` in thread *t, then connects to the
 * listener: the client's socket, or -1. */
static inline int serve_and_connect(int* listener, pthread_t* t, void* (*serve)(void*)) {
  struct sockaddr_in a;
  *listener = listen_on_loopback(&a);
  if (*listener < 0) return -1;
  pthread_create(t, NULL, serve, NULL);
  int c = socket(AF_INET, SOCK_STREAM, 0);
  if (c < 0 || connect(c, (const struct sockaddr*)&a, sizeof a) != 0) return -1;
  return c;
}

/* Writes all n bytes: 0, or -1 when a write fails. */
static inline int write_all(int fd, const void* p, size_t n) {
  for (size_t done = 0; done < n;) {
    ssize_t w = write(fd, (const uint8_t*)p + done, n - done);
    if (w <= 0) return -1;
    done += (size_t)w;
  }
  return 0;
}
