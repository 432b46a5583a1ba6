/* An HTTP/1.1 client and server in two threads of one process, over loopback TCP with keep-alive:
 * after IDLE seconds of sleep (argv[2], default 0) the client sends GET requests one after the
 * other for SECONDS (argv[1], default 2), each response checked. Every request is four socket
 * calls the tracer records in its ring (tracer/test/rings.test.ts: a burst that starts while the
 * engine's timer sleeps). Prints "OK <requests>" and exits 0, or "BAD ..." and exits 1. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loopback.h"

static const char kRequest[] = "GET /burst HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
static const char kResponse[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
static int listener;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Reads exactly n bytes; 0 on end of stream or error. */
static int read_all(int fd, char* b, size_t n) {
  for (size_t got = 0; got < n;) {
    ssize_t r = read(fd, b + got, n - got);
    if (r <= 0) return 0;
    got += (size_t)r;
  }
  return 1;
}

/* Reads one request head (up to its blank line) into b; its length, or 0 at end of stream. The
 * client sends one request at a time, so a read that ends on the blank line ends the head. The
 * tracer may have added a traceparent header to it: only the request line is checked. */
static size_t read_head(int fd, char* b, size_t cap) {
  size_t got = 0;
  while (got < 4 || memcmp(b + got - 4, "\r\n\r\n", 4) != 0) {
    if (got == cap) return 0;
    ssize_t r = read(fd, b + got, cap - got);
    if (r <= 0) return 0;
    got += (size_t)r;
  }
  return got;
}

static void* serve(void* arg) {
  (void)arg;
  int c = accept(listener, NULL, NULL);
  if (c < 0) return (void*)1;
  char b[4096];
  const char line[] = "GET /burst HTTP/1.1\r\n";
  for (size_t n; (n = read_head(c, b, sizeof b)) > 0;) {
    if (n < sizeof line - 1 || memcmp(b, line, sizeof line - 1) != 0) return (void*)1;
    if (write(c, kResponse, sizeof kResponse - 1) != (ssize_t)(sizeof kResponse - 1)) return (void*)1;
  }
  close(c);
  return NULL;
}

int main(int argc, char** argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 2.0;
  if (argc > 2) usleep((useconds_t)(atof(argv[2]) * 1e6));
  pthread_t t;
  int c = serve_and_connect(&listener, &t, serve);
  if (c < 0) return 1;
  char b[sizeof kResponse];
  long requests = 0;
  for (double end = now() + seconds; now() < end; requests++) {
    if (write(c, kRequest, sizeof kRequest - 1) != (ssize_t)(sizeof kRequest - 1) || !read_all(c, b, sizeof kResponse - 1) ||
        memcmp(b, kResponse, sizeof kResponse - 1) != 0) {
      printf("BAD response %ld\n", requests);
      return 1;
    }
    if (requests % 50 == 0) usleep(2000); /* bursts: not every CPU of the test machine */
  }
  close(c);
  void* r;
  pthread_join(t, &r);
  if (r) {
    puts("BAD server thread");
    return 1;
  }
  printf("OK %ld\n", requests);
  return 0;
}
