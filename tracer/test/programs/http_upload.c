/* One HTTP/1.1 upload over loopback TCP, client and server in two threads of one process: the
 * client sends a POST head, then (50 ms later, so that the server reads the head alone) a body of
 * BYTES (argv[1], default 4 MiB), with a Content-Length or, when argv[2] is "chunked", as one
 * chunk; the server takes the whole body (its chunk framing too) in one recv(MSG_WAITALL), checks
 * it and answers 200. tracer/test/rings.test.ts: body bytes of a known length reach the engine's
 * ring as a count, not copied, and bytes a ring event could not carry still count as read.
 * Prints "OK <bytes>" and exits 0, or "BAD ..." and exits 1. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loopback.h"

static const char kResponse[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
static int listener;
static size_t body_len;
static int chunked;
static char chunk_head[32];
static const char kChunkTail[] = "\r\n0\r\n\r\n";

static uint8_t byte_at(size_t i) { return (uint8_t)(i * 7 + 3); }

static void* serve(void* arg) {
  (void)arg;
  int c = accept(listener, NULL, NULL);
  if (c < 0) return (void*)1;
  char head[4096];
  ssize_t n = read(c, head, sizeof head); /* the head alone: the body comes 50 ms later */
  if (n < 4 || memcmp(head + n - 4, "\r\n\r\n", 4) != 0) return (void*)1;
  const size_t head_len = chunked ? strlen(chunk_head) : 0, tail_len = chunked ? sizeof kChunkTail - 1 : 0;
  const size_t framed = head_len + body_len + tail_len;
  uint8_t* body = malloc(framed);
  if (!body || recv(c, body, framed, MSG_WAITALL) != (ssize_t)framed) return (void*)1;
  if (memcmp(body, chunk_head, head_len) != 0 || memcmp(body + head_len + body_len, kChunkTail, tail_len) != 0) return (void*)1;
  for (size_t i = 0; i < body_len; i++)
    if (body[head_len + i] != byte_at(i)) return (void*)1;
  free(body);
  if (write(c, kResponse, sizeof kResponse - 1) != (ssize_t)(sizeof kResponse - 1)) return (void*)1;
  close(c);
  return NULL;
}

int main(int argc, char** argv) {
  body_len = argc > 1 ? (size_t)atol(argv[1]) : (size_t)4 << 20;
  chunked = argc > 2 && strcmp(argv[2], "chunked") == 0;
  if (chunked) snprintf(chunk_head, sizeof chunk_head, "%zx\r\n", body_len);
  struct sockaddr_in a;
  listener = listen_on_loopback(&a);
  if (listener < 0) return 1;
  pthread_t t;
  pthread_create(&t, NULL, serve, NULL);
  int c = socket(AF_INET, SOCK_STREAM, 0);
  if (c < 0 || connect(c, (struct sockaddr*)&a, sizeof a) != 0) return 1;
  char head[128];
  int hn = chunked ? snprintf(head, sizeof head, "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                   : snprintf(head, sizeof head, "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n\r\n", body_len);
  const size_t head_len = strlen(chunk_head), tail_len = chunked ? sizeof kChunkTail - 1 : 0;
  const size_t framed = head_len + body_len + tail_len;
  uint8_t* body = malloc(framed);
  if (!body) return 1;
  memcpy(body, chunk_head, head_len);
  for (size_t i = 0; i < body_len; i++) body[head_len + i] = byte_at(i);
  memcpy(body + head_len + body_len, kChunkTail, tail_len);
  if (write(c, head, (size_t)hn) != hn) return 1;
  usleep(50000);
  for (size_t sent = 0; sent < framed;) {
    ssize_t w = write(c, body + sent, framed - sent);
    if (w <= 0) return 1;
    sent += (size_t)w;
  }
  char b[sizeof kResponse];
  size_t got = 0;
  while (got < sizeof kResponse - 1) {
    ssize_t r = read(c, b + got, sizeof kResponse - 1 - got);
    if (r <= 0) break;
    got += (size_t)r;
  }
  void* r;
  pthread_join(t, &r);
  if (r || got != sizeof kResponse - 1 || memcmp(b, kResponse, got) != 0) {
    puts("BAD upload");
    return 1;
  }
  printf("OK %zu\n", body_len);
  return 0;
}
