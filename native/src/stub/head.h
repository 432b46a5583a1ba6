/* The stub's reading of an HTTP/1.x request or response head (stub.c), in a header of its own so
 * that the native tests can hold it against the engine's parser (native/test/stub_head_test.cc).
 * Freestanding C: no libc, no writable data. */
#ifndef RBINDER_STUB_HEAD_H
#define RBINDER_STUB_HEAD_H

#include <stdint.h>

#define RB_NO_LENGTH (~0ull)

/* A request or response head, as far as the stub needs it. */
struct rb_head {
  uint64_t end;    /* bytes of the head with its blank line; 0: no whole head in the bytes */
  uint64_t length; /* Content-Length, RB_NO_LENGTH: none */
  uint8_t crlf;    /* the blank line is CRLF */
  uint8_t plain;   /* nothing the stub leaves to the engine: no Upgrade, CONNECT, odd framing */
  uint8_t chunked;
  uint8_t context; /* carries traceparent, b3 or X-B3-TraceId (the program propagates) */
  uint8_t carried; /* carries tracestate or baggage (context the stub does not carry along) */
  uint8_t tp;      /* traceparent seen; tp_ok: it parsed as version 00 */
  uint8_t tp_ok;
  uint8_t flags;
  uint8_t head;    /* request: the method is HEAD (its response has no body) */
  uint16_t status; /* response: the status code */
  uint8_t trace[16];
  uint8_t span[8];
};

static uint8_t lower(uint8_t c) { return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c; }

static int name_is(const uint8_t* p, uint64_t n, const char* lit) {
  uint64_t i = 0;
  for (; i < n && lit[i]; i++)
    if (lower(p[i]) != (uint8_t)lit[i]) return 0;
  return i == n && !lit[i];
}

/* Lowercase only, as W3C Trace Context writes it and the engine's parse_traceparent takes it. */
static int hex_value(uint8_t c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

static int parse_hex(const uint8_t* p, uint8_t* out, int n) {
  int nonzero = 0;
  for (int i = 0; i < n; i++) {
    int hi = hex_value(p[2 * i]), lo = hex_value(p[2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    out[i] = (uint8_t)(hi << 4 | lo);
    nonzero |= out[i];
  }
  return nonzero != 0;
}

/* "00-<32 hex>-<16 hex>-<2 hex>" with non-zero ids (parse_traceparent in the engine takes other
 * versions too; those are left to it). */
static int parse_traceparent(const uint8_t* v, uint64_t n, struct rb_head* h) {
  if (n != 55 || v[0] != '0' || v[1] != '0' || v[2] != '-' || v[35] != '-' || v[52] != '-') return 0;
  return parse_hex(v + 3, h->trace, 16) == 1 && parse_hex(v + 36, h->span, 8) == 1 && parse_hex(v + 53, &h->flags, 1) >= 0;
}

static int is_token(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
         c == '!' || c == '#' || c == '$' || c == '%' || c == '&' || c == '\'' || c == '*' || c == '+' || c == '^' ||
         c == '`' || c == '|' || c == '~';
}

static void reset_head(struct rb_head* h) {
  h->end = 0;
  h->length = RB_NO_LENGTH;
  h->crlf = h->chunked = h->context = h->carried = h->tp = h->tp_ok = h->head = 0;
  h->status = 0;
  h->plain = 1;
}

/* The header section of a head from b[i] on, up to its blank line (sets end). */
static void parse_fields(const uint8_t* b, uint64_t n, uint64_t i, struct rb_head* h) {
  for (;;) {
    if (i >= n) return;
    if (b[i] == '\n' || (b[i] == '\r' && i + 1 < n && b[i + 1] == '\n')) {
      h->crlf = b[i] == '\r';
      h->end = i + 1 + h->crlf;
      if (h->chunked && h->length != RB_NO_LENGTH) h->plain = 0;
      return;
    }
    uint64_t name = i;
    while (i < n && is_token(b[i])) i++;
    if (i == name || i >= n || b[i] != ':') return; /* obs-fold, a bad name: the engine decides */
    uint64_t name_len = i - name;
    i++;
    while (i < n && (b[i] == ' ' || b[i] == '\t')) i++;
    uint64_t value = i;
    while (i < n && ((b[i] > ' ' && b[i] != 0x7f) || b[i] == ' ' || b[i] == '\t')) i++;
    if (i >= n || (b[i] != '\r' && b[i] != '\n')) return; /* a control byte in a value */
    uint64_t value_end = i;
    while (value_end > value && (b[value_end - 1] == ' ' || b[value_end - 1] == '\t')) value_end--;
    if (b[i] == '\r') {
      if (i + 1 >= n || b[i + 1] != '\n') return;
      i++;
    }
    i++;
    const uint8_t* v = b + value;
    uint64_t vn = value_end - value;
    const uint8_t* nm = b + name;
    if (name_is(nm, name_len, "content-length")) {
      uint64_t len = 0;
      if (vn == 0 || vn > 15) h->plain = 0;
      for (uint64_t k = 0; k < vn; k++) {
        if (v[k] < '0' || v[k] > '9') h->plain = 0;
        len = len * 10 + (uint64_t)(v[k] - '0');
      }
      if (h->length != RB_NO_LENGTH && h->length != len) h->plain = 0;
      h->length = len;
    } else if (name_is(nm, name_len, "transfer-encoding")) {
      if (name_is(v, vn, "chunked") && !h->chunked) {
        h->chunked = 1;
      } else {
        h->plain = 0;
      }
    } else if (name_is(nm, name_len, "traceparent")) {
      if (h->tp) h->plain = 0;
      h->tp = h->context = 1;
      h->tp_ok = (uint8_t)parse_traceparent(v, vn, h);
    } else if (name_is(nm, name_len, "tracestate") || name_is(nm, name_len, "baggage")) {
      h->carried = 1;
    } else if (name_is(nm, name_len, "b3") || name_is(nm, name_len, "x-b3-traceid")) {
      h->context = 1;
    } else if (name_is(nm, name_len, "upgrade")) {
      h->plain = 0;
    }
  }
}

/* Reads a request head from the start of b[0, n). Anything unexpected leaves end == 0 or plain == 0:
 * the engine's parser has the last word, the stub only decides the plain cases. */
static void parse_head(const uint8_t* b, uint64_t n, struct rb_head* h) {
  reset_head(h);
  uint64_t i = 0;
  while (i < n && i < 16 && b[i] >= 'A' && b[i] <= 'Z') i++;
  if (i == 0 || i >= n || b[i] != ' ') return;
  if (name_is(b, i, "connect")) h->plain = 0;
  h->head = i == 4 && b[0] == 'H' && b[1] == 'E' && b[2] == 'A' && b[3] == 'D';
  uint64_t t = ++i;
  while (i < n && b[i] > ' ' && b[i] < 0x7f) i++;
  if (i == t || i + 10 > n || b[i] != ' ') return;
  i++;
  if (b[i] != 'H' || b[i + 1] != 'T' || b[i + 2] != 'T' || b[i + 3] != 'P' || b[i + 4] != '/' || b[i + 5] != '1' ||
      b[i + 6] != '.' || b[i + 7] < '0' || b[i + 7] > '9')
    return;
  i += 8;
  if (b[i] == '\r') i++;
  if (i >= n || b[i] != '\n') return;
  i++;
  parse_fields(b, n, i, h);
}

/* Reads a response head from the start of b[0, n): "HTTP/1.x NNN reason", then its fields. An
 * interim (1xx) response is not plain: the stub leaves it, and what follows, to the engine. */
static void parse_response_head(const uint8_t* b, uint64_t n, struct rb_head* h) {
  reset_head(h);
  if (n < 13 || b[0] != 'H' || b[1] != 'T' || b[2] != 'T' || b[3] != 'P' || b[4] != '/' || b[5] != '1' || b[6] != '.' ||
      b[7] < '0' || b[7] > '9' || b[8] != ' ')
    return;
  uint16_t status = 0;
  for (int k = 9; k < 12; k++) {
    if (b[k] < '0' || b[k] > '9') return;
    status = (uint16_t)(status * 10 + (b[k] - '0'));
  }
  if (status < 100) return;
  h->status = status;
  if (status < 200) h->plain = 0;
  uint64_t i = 12;
  if (b[i] == ' ') {
    i++;
    while (i < n && ((b[i] > ' ' && b[i] != 0x7f) || b[i] == ' ' || b[i] == '\t')) i++; /* the reason phrase */
  }
  if (i < n && b[i] == '\r') i++;
  if (i >= n || b[i] != '\n') return;
  parse_fields(b, n, i + 1, h);
}

/* The body of a response to a request other than HEAD or CONNECT, as its head frames it: its
 * length, or RB_NO_LENGTH where the stub cannot tell (chunked, until the connection's end, not
 * plain). */
static uint64_t response_body(const struct rb_head* h) {
  if (h->end == 0 || !h->plain) return RB_NO_LENGTH;
  if (h->status == 204 || h->status == 304) return 0;
  return h->chunked ? RB_NO_LENGTH : h->length;
}

#endif
