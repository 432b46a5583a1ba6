/* Responses of every framing on one keep-alive loopback connection, client and server in two
 * threads of one process. The client sends each request and reads its whole response before the
 * next; the server reads a request head, answers it and checks what it got:
 *   HEAD /big         200, Content-Length 4 MiB, no body (it answers HEAD)
 *   GET /big          200, a 4 MiB body, head and body in one writev
 *   GET /not-modified 304, Content-Length 4 MiB, no body
 *   GET /empty        204, no body
 *   GET /chunked      200, 4 MiB in chunks: one of 4 KiB, the rest in one, each written on its own
 *   GET /file         200, 4 MiB from a file by sendfile (after the head, written)
 *   GET /big          200, 4 MiB again, head and body in separate writes
 *   POST /continue    "Expect: 100-continue": 100 Continue, then the 10-byte body, then 200, 2 bytes
 *   GET /small        200, 1000 bytes
 * tracer/test/rings.test.ts: the bodies of known length reach the engine as counts, the spans
 * still carry the right status and body size. Prints "OK" and exits 0, or "BAD <step>" and
 * exits 1. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "loopback.h"

#define BIG ((size_t)4 << 20)
static int listener, file;
static uint8_t* big;

static uint8_t byte_at(size_t i) { return (uint8_t)(i * 13 + 5); }

/* Reads until buf holds a whole head; returns the bytes read (the head and any that came after
 * it), *head_len the head's. */
static ssize_t read_head(int fd, char* buf, size_t cap, size_t* head_len) {
  size_t got = 0;
  for (;;) {
    const char* end = got >= 4 ? memmem(buf, got, "\r\n\r\n", 4) : NULL;
    if (end) {
      *head_len = (size_t)(end + 4 - buf);
      return (ssize_t)got;
    }
    if (got == cap) return -1;
    ssize_t r = read(fd, buf + got, cap - got);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
}

/* GET /chunked's body as sent: BIG bytes in a chunk of 4 KiB and one of the rest. */
static uint8_t* chunked_body(size_t* len) {
  char second[32];
  int k = snprintf(second, sizeof second, "%zx\r\n", BIG - 4096);
  *len = 6 + 4096 + 2 + (size_t)k + (BIG - 4096) + 2 + 5;
  uint8_t* b = malloc(*len);
  if (!b) return NULL;
  size_t at = 0;
  memcpy(b, "1000\r\n", 6), at += 6;
  memcpy(b + at, big, 4096), at += 4096;
  memcpy(b + at, "\r\n", 2), at += 2;
  memcpy(b + at, second, (size_t)k), at += (size_t)k;
  memcpy(b + at, big + 4096, BIG - 4096), at += BIG - 4096;
  memcpy(b + at, "\r\n0\r\n\r\n", 7);
  return b;
}

static void* serve(void* arg) {
  (void)arg;
  int c = accept(listener, NULL, NULL);
  if (c < 0) return (void*)1;
  char head[4096], line[160];
  for (int step = 0; step < 9; step++) {
    size_t head_len;
    ssize_t n = read_head(c, head, sizeof head, &head_len);
    if (n < 0 || (size_t)n != head_len) return (void*)1; /* the client sends nothing past a head here */
    if (strncmp(head, "HEAD /big ", 10) == 0) {
      int k = snprintf(line, sizeof line, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", BIG);
      if (write_all(c, line, (size_t)k)) return (void*)1;
    } else if (strncmp(head, "GET /big ", 9) == 0) {
      int k = snprintf(line, sizeof line, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", BIG);
      if (step == 1) { /* the first GET /big */
        struct iovec iov[2] = {{line, (size_t)k}, {big, BIG}};
        size_t left = (size_t)k + BIG;
        ssize_t w = writev(c, iov, 2); /* blocking: the kernel takes it all */
        if (w != (ssize_t)left) return (void*)1;
      } else if (write_all(c, line, (size_t)k) || write_all(c, big, BIG)) {
        return (void*)1;
      }
    } else if (strncmp(head, "GET /not-modified ", 18) == 0) {
      int k = snprintf(line, sizeof line, "HTTP/1.1 304 Not Modified\r\nContent-Length: %zu\r\n\r\n", BIG);
      if (write_all(c, line, (size_t)k)) return (void*)1;
    } else if (strncmp(head, "GET /empty ", 11) == 0) {
      if (write_all(c, "HTTP/1.1 204 No Content\r\n\r\n", 27)) return (void*)1;
    } else if (strncmp(head, "POST /continue ", 15) == 0) {
      char body[10];
      if (write_all(c, "HTTP/1.1 100 Continue\r\n\r\n", 25)) return (void*)1;
      if (recv(c, body, sizeof body, MSG_WAITALL) != (ssize_t)sizeof body || memcmp(body, "0123456789", 10) != 0) return (void*)1;
      if (write_all(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", 38) || write_all(c, big, 2)) return (void*)1;
    } else if (strncmp(head, "GET /chunked ", 13) == 0) {
      size_t len;
      uint8_t* body = chunked_body(&len);
      const char* h = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
      /* The head, then each chunk (line, data, CRLF) in a write of its own, then the last chunk. */
      size_t first = 6 + 4096 + 2, rest = len - first - 5;
      int bad = !body || write_all(c, h, strlen(h)) || write_all(c, body, first) || write_all(c, body + first, rest) ||
                write_all(c, body + first + rest, 5);
      free(body);
      if (bad) return (void*)1;
    } else if (strncmp(head, "GET /file ", 10) == 0) {
      int k = snprintf(line, sizeof line, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", BIG);
      if (write_all(c, line, (size_t)k)) return (void*)1;
      off_t at = 0;
      while ((size_t)at < BIG)
        if (sendfile(c, file, &at, BIG - (size_t)at) <= 0) return (void*)1;
    } else if (strncmp(head, "GET /small ", 11) == 0) {
      int k = snprintf(line, sizeof line, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
      if (write_all(c, line, (size_t)k) || write_all(c, big, 1000)) return (void*)1;
    } else {
      return (void*)1;
    }
  }
  close(c);
  return NULL;
}

/* Reads a response head, then the rest of its `body` bytes in reads of up to 64 KiB, checking them. */
static int read_response(int fd, const char* status, size_t body) {
  static uint8_t buf[65536];
  size_t head_len;
  ssize_t n = read_head(fd, (char*)buf, 4096, &head_len);
  if (n < 0 || strncmp((char*)buf, status, strlen(status)) != 0) return -1;
  size_t got = (size_t)n - head_len; /* body bytes that came with the head */
  if (got > body) return -1;
  for (size_t i = 0; i < got; i++)
    if (buf[head_len + i] != byte_at(i)) return -1;
  while (got < body) {
    size_t want = body - got < sizeof buf ? body - got : sizeof buf;
    ssize_t r = read(fd, buf, want);
    if (r <= 0) return -1;
    for (ssize_t i = 0; i < r; i++)
      if (buf[i] != byte_at(got + (size_t)i)) return -1;
    got += (size_t)r;
  }
  return 0;
}

static int request(int c, const char* req, const char* status, size_t body) {
  return write_all(c, req, strlen(req)) || read_response(c, status, body);
}

int main(void) {
  big = malloc(BIG);
  if (!big) return 1;
  for (size_t i = 0; i < BIG; i++) big[i] = byte_at(i);
  char path[] = "/tmp/rbinder-responses-XXXXXX";
  file = mkstemp(path);
  if (file < 0 || write_all(file, big, BIG)) return 1;
  unlink(path);
  pthread_t t;
  int c = serve_and_connect(&listener, &t, serve);
  if (c < 0) return 1;
  const char* host = "Host: 127.0.0.1\r\n\r\n";
  char req[128];
  int bad = 0;
#define STEP(text, status, body)                                   \
  snprintf(req, sizeof req, "%s HTTP/1.1\r\n%s", text, host);      \
  if (!bad && request(c, req, status, body)) bad = printf("BAD %s\n", text);
  STEP("HEAD /big", "HTTP/1.1 200 ", 0);
  STEP("GET /big", "HTTP/1.1 200 ", BIG);
  STEP("GET /not-modified", "HTTP/1.1 304 ", 0);
  STEP("GET /empty", "HTTP/1.1 204 ", 0);
  if (!bad) {
    /* Exactly the bytes sent: the chunks with their framing. */
    snprintf(req, sizeof req, "GET /chunked HTTP/1.1\r\n%s", host);
    size_t len, head_len;
    uint8_t* want = chunked_body(&len);
    uint8_t* got = malloc(len + 4096);
    ssize_t n = write_all(c, req, strlen(req)) || !want || !got ? -1 : read_head(c, (char*)got, 4096, &head_len);
    size_t have = n > 0 ? (size_t)n - head_len : 0;
    if (n > 0) memmove(got, got + head_len, have);
    if (n < 0 || have > len || (have < len && recv(c, got + have, len - have, MSG_WAITALL) != (ssize_t)(len - have)) ||
        memcmp(got, want, len) != 0)
      bad = printf("BAD GET /chunked\n");
    free(want);
    free(got);
  }
  STEP("GET /file", "HTTP/1.1 200 ", BIG);
  STEP("GET /big", "HTTP/1.1 200 ", BIG);
  if (!bad) {
    const char* post = "POST /continue HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n";
    char interim[4096];
    size_t head_len;
    if (write_all(c, post, strlen(post)) || read_head(c, interim, sizeof interim, &head_len) != (ssize_t)head_len ||
        strncmp(interim, "HTTP/1.1 100 ", 13) != 0 || write_all(c, "0123456789", 10) || read_response(c, "HTTP/1.1 200 ", 2))
      bad = printf("BAD POST /continue\n");
  }
  STEP("GET /small", "HTTP/1.1 200 ", 1000);
  close(c);
  void* r;
  pthread_join(t, &r);
  if (bad || r) {
    if (!bad) puts("BAD server");
    return 1;
  }
  puts("OK");
  return 0;
}
