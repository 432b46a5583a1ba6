/* One HTTP/1.1 exchange with a big body over loopback TCP, client and server in two threads of
 * one process. argv[1]: the body's size (default 4 MiB); argv[2], how it goes:
 *   upload            POST with a Content-Length body (the default)
 *   chunked-upload    POST with the body as one chunk
 *   chunked-download  GET, answered with the body as one chunk
 *   eof-download      GET, answered with the body up to the connection's end (no length)
 * The head goes first and the body 50 ms later, so that the receiver reads the head alone; the
 * receiver then takes the whole body, chunk framing included, in one recv(MSG_WAITALL) and
 * checks it. tracer/test/rings.test.ts: what reaches the engine's ring as a count, and what a ring
 * event could not carry still counted as moved. Prints "OK <bytes>" and exits 0, or "BAD ..."
 * and exits 1. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loopback.h"

static const char kOk[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
static const char kChunkTail[] = "\r\n0\r\n\r\n";
static int listener, chunked, download;
static size_t body_len;
static char chunk_head[32];

static uint8_t byte_at(size_t i) { return (uint8_t)(i * 7 + 3); }

/* The body as sent: its bytes, in one chunk when chunked. */
static uint8_t* framed_body(size_t* len) {
  const size_t head = chunked ? strlen(chunk_head) : 0, tail = chunked ? sizeof kChunkTail - 1 : 0;
  *len = head + body_len + tail;
  uint8_t* b = malloc(*len);
  if (!b) return NULL;
  memcpy(b, chunk_head, head);
  for (size_t i = 0; i < body_len; i++) b[head + i] = byte_at(i);
  memcpy(b + head + body_len, kChunkTail, tail);
  return b;
}

/* A head, then 50 ms later the body. */
static int send_message(int fd, const char* head) {
  size_t len;
  uint8_t* body = framed_body(&len);
  if (!body || write_all(fd, head, strlen(head))) return -1;
  usleep(50000);
  int bad = write_all(fd, body, len);
  free(body);
  return bad;
}

/* A head read alone, then the body in one recv. */
static int receive_message(int fd, const char* start) {
  char head[4096];
  ssize_t n = read(fd, head, sizeof head);
  if (n < 4 || memcmp(head + n - 4, "\r\n\r\n", 4) != 0 || strncmp(head, start, strlen(start)) != 0) return -1;
  size_t len;
  uint8_t* want = framed_body(&len);
  uint8_t* got = malloc(len);
  int bad = !want || !got || recv(fd, got, len, MSG_WAITALL) != (ssize_t)len || memcmp(want, got, len) != 0;
  free(want);
  free(got);
  return bad ? -1 : 0;
}

static void* serve(void* arg) {
  (void)arg;
  int c = accept(listener, NULL, NULL);
  if (c < 0) return (void*)1;
  if (download) {
    char head[4096];
    ssize_t n = read(c, head, sizeof head);
    if (n < 4 || strncmp(head, "GET /download ", 14) != 0) return (void*)1;
    if (send_message(c, chunked ? "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" : "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"))
      return (void*)1;
  } else {
    if (receive_message(c, "POST /upload ") || write_all(c, kOk, sizeof kOk - 1)) return (void*)1;
  }
  close(c);
  return NULL;
}

int main(int argc, char** argv) {
  body_len = argc > 1 ? (size_t)atol(argv[1]) : (size_t)4 << 20;
  const char* mode = argc > 2 ? argv[2] : "upload";
  chunked = strncmp(mode, "chunked-", 8) == 0;
  download = strcmp(mode, "chunked-download") == 0 || strcmp(mode, "eof-download") == 0;
  if (chunked) snprintf(chunk_head, sizeof chunk_head, "%zx\r\n", body_len);
  pthread_t t;
  int c = serve_and_connect(&listener, &t, serve);
  if (c < 0) return 1;
  int bad;
  if (download) {
    const char* get = "GET /download HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    char end;
    bad = write_all(c, get, strlen(get)) || receive_message(c, "HTTP/1.1 200 ") || read(c, &end, 1) != 0;
  } else {
    char head[128];
    if (chunked)
      snprintf(head, sizeof head, "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    else
      snprintf(head, sizeof head, "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n\r\n", body_len);
    char ok[sizeof kOk];
    bad = send_message(c, head) || recv(c, ok, sizeof kOk - 1, MSG_WAITALL) != (ssize_t)(sizeof kOk - 1) ||
          memcmp(ok, kOk, sizeof kOk - 1) != 0;
  }
  void* r;
  pthread_join(t, &r);
  if (bad || r) {
    puts("BAD exchange");
    return 1;
  }
  printf("OK %zu\n", body_len);
  return 0;
}
