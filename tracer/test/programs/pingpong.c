/* Two threads ping-pong 64-byte messages over a socketpair with read() and write() for SECONDS
 * (argv[1], default 3), each message checked. Built with musl-gcc by tracer/test/call-sites.test.ts:
 * musl's cancellable syscall wrappers are not libc's shapes the call-site check vouches for.
 * Prints "OK <messages>" and exits 0, or "BAD ..." and exits 1. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int sv[2];
static volatile int done;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Echoes what it reads until the other side closes. */
static void* echo(void* arg) {
  (void)arg;
  char b[64];
  for (;;) {
    ssize_t n = read(sv[1], b, sizeof b);
    if (n == 0) return NULL;
    if (n != 64 || write(sv[1], b, 64) != 64) return (void*)1;
  }
}

int main(int argc, char** argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 3.0;
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 1;
  pthread_t t;
  pthread_create(&t, NULL, echo, NULL);
  char m[64], b[64];
  long messages = 0;
  for (double end = now() + seconds; now() < end; messages++) {
    snprintf(m, sizeof m, "%ld", messages);
    memset(m + strlen(m), 'x', sizeof m - strlen(m));
    if (write(sv[0], m, 64) != 64 || read(sv[0], b, 64) != 64 || memcmp(m, b, 64) != 0) {
      printf("BAD message %ld\n", messages);
      return 1;
    }
    if (messages % 50 == 0) usleep(2000); /* bursts: not every CPU of the test machine */
  }
  close(sv[0]);
  void* r;
  pthread_join(t, &r);
  if (r) {
    puts("BAD echo thread");
    return 1;
  }
  printf("OK %ld\n", messages);
  return 0;
}
