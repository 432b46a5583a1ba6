/* The stub's reading of a chunked body (RFC 9112 7.1) as it streams through a connection's reads
 * or writes: where the chunk data is, so that the stub sends its count to the engine instead of
 * its bytes (docs/fast-path.md, "Bodies as counts"), and where the body ends. Only the framing
 * bytes are read; a chunk's data is stepped over. Anything it does not follow (a trailer field, a
 * malformed line) stops it: the rest is copied and the engine's parser has the last word. In a
 * header of its own so that native/test/stub_chunks_test.cc can hold it against the engine's
 * parser. Freestanding C: no libc, no writable data. */
#ifndef RBINDER_STUB_CHUNKS_H
#define RBINDER_STUB_CHUNKS_H

#include <stdint.h>

enum rb_chunk_state {
  RB_CH_OFF = 0,     /* not followed */
  RB_CH_SIZE = 1,    /* a chunk-size line starts: a hex digit first */
  RB_CH_DIGITS = 2,  /* in the chunk size */
  RB_CH_EXT = 3,     /* in a chunk extension, up to the line's end */
  RB_CH_SIZE_LF = 4, /* the LF after the size line's CR */
  RB_CH_DATA = 5,    /* `left` bytes of chunk data */
  RB_CH_DATA_END = 6, /* the CRLF (or LF) after the data */
  RB_CH_DATA_LF = 7,
  RB_CH_LAST = 8,    /* after the last chunk: the blank line (trailer fields: not followed) */
  RB_CH_LAST_LF = 9,
  RB_CH_DONE = 10,   /* the body ended */
};

/* Per connection and direction, in the stub's private region (abi.h, rb_conn). */
struct rb_chunk {
  uint64_t left; /* RB_CH_DIGITS: the size so far; RB_CH_DATA: the data left */
  uint8_t state;
  uint8_t pad[7];
};

/* The largest chunk size the engine's parser takes (http/parser.cc, kMaxChunkSize). */
#define RB_CHUNK_MAX (1ull << 60)

/* Byte ranges of one call, from its first byte, that go to the engine as counts. */
#define RB_SEGS 8
struct rb_segs {
  uint32_t n;
  uint64_t from[RB_SEGS];
  uint64_t to[RB_SEGS];
};

static inline void segs_add(struct rb_segs* s, uint64_t from, uint64_t to) {
  if (from == to) return;
  if (s->n && s->to[s->n - 1] == from) {
    s->to[s->n - 1] = to;
  } else if (s->n < RB_SEGS) {
    s->from[s->n] = from;
    s->to[s->n] = to;
    s->n++;
  } /* else: copied */
}

/* Drops the ranges with fewer than `min` of a call's `len` bytes: a count event costs a slot of its
 * own, as many bytes copied inline would. A range at the call's start stays (the call's event may
 * have been claimed for a count). */
static inline void segs_keep_long(struct rb_segs* s, uint64_t min, uint64_t len) {
  uint32_t k = 0;
  for (uint32_t i = 0; i < s->n; i++) {
    uint64_t to = s->to[i] < len ? s->to[i] : len;
    if (s->from[i] != 0 && (to <= s->from[i] || to - s->from[i] < min)) continue;
    s->from[k] = s->from[i];
    s->to[k] = s->to[i];
    k++;
  }
  s->n = k;
}

static inline int chunk_hex(uint8_t c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static inline int chunk_following(const struct rb_chunk* c) { return c->state != RB_CH_OFF && c->state != RB_CH_DONE; }

/* Walks the n bytes at p, which sit at offset `base` of the call, through the framing in *c, and
 * adds the chunk data among them to *out (when out is not null). Returns the bytes walked: n, or
 * fewer when the body ended (RB_CH_DONE: the rest is not its) or the stub stopped following it. */
static inline uint64_t chunk_walk(struct rb_chunk* c, const uint8_t* p, uint64_t n, uint64_t base, struct rb_segs* out) {
  uint64_t i = 0;
  while (i < n && chunk_following(c)) {
    uint8_t b = p[i];
    int v;
    switch (c->state) {
      case RB_CH_DATA: {
        uint64_t k = c->left < n - i ? c->left : n - i;
        if (out) segs_add(out, base + i, base + i + k);
        c->left -= k;
        i += k;
        if (c->left == 0) c->state = RB_CH_DATA_END;
        continue;
      }
      case RB_CH_SIZE:
      case RB_CH_DIGITS:
        v = chunk_hex(b);
        if (v >= 0) {
          if (c->state == RB_CH_SIZE) c->left = 0;
          if (c->left > (RB_CHUNK_MAX >> 4)) break;
          c->left = c->left * 16 + (uint64_t)v;
          if (c->left > RB_CHUNK_MAX) break;
          c->state = RB_CH_DIGITS;
          i++;
          continue;
        }
        if (c->state == RB_CH_SIZE) break;
        if (b == ';' || b == ' ' || b == '\t') {
          c->state = RB_CH_EXT;
          i++;
          continue;
        }
        /* the line ends: */
        /* fallthrough */
      case RB_CH_EXT:
        if (c->state == RB_CH_EXT && ((b > ' ' && b != 0x7f) || b == ' ' || b == '\t')) {
          i++;
          continue;
        }
        if (b == '\r') {
          c->state = RB_CH_SIZE_LF;
          i++;
          continue;
        }
        /* fallthrough */
      case RB_CH_SIZE_LF:
        if (b != '\n') break;
        i++;
        c->state = c->left ? RB_CH_DATA : RB_CH_LAST;
        continue;
      case RB_CH_DATA_END:
      case RB_CH_LAST:
        if (b == '\r') {
          c->state = c->state == RB_CH_DATA_END ? RB_CH_DATA_LF : RB_CH_LAST_LF;
          i++;
          continue;
        }
        /* fallthrough */
      case RB_CH_DATA_LF:
      case RB_CH_LAST_LF:
        if (b != '\n') break;
        i++;
        c->state = c->state == RB_CH_DATA_END || c->state == RB_CH_DATA_LF ? RB_CH_SIZE : RB_CH_DONE;
        continue;
      default:
        break;
    }
    c->state = RB_CH_OFF;
  }
  return i;
}

#endif
