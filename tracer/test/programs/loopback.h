/* For the test programs with a client and a server thread: a listening TCP socket on a free
 * loopback port (its address in *a), or -1. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int listen_on_loopback(struct sockaddr_in* a) {
  *a = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof *a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || bind(fd, (struct sockaddr*)a, sizeof *a) != 0 || listen(fd, 1) != 0 || getsockname(fd, (struct sockaddr*)a, &len) != 0)
    return -1;
  return fd;
}
