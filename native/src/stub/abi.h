/* The contract between the in-process stub (stub.c, freestanding C mapped into every traced
 * process) and the engine: fixed addresses, the regions' layouts, the ring protocol and the
 * upcalls. C, so both sides compile it. See docs/fast-path.md. */
#ifndef RBINDER_STUB_ABI_H
#define RBINDER_STUB_ABI_H

#include <stdint.h>

#include "chunks.h"

/* Where the stub lives in every traced address space: far from where loaders, heaps and mmap
 * put things on x86-64 (42 TiB). Mapped with MAP_FIXED_NOREPLACE before the new image runs. */
#define RB_STUB_ADDR 0x2a0000000000ULL
#define RB_STUB_CODE_SIZE 0x10000ULL
/* The ring, shared with the engine (MAP_SHARED memfd): fork children keep writing to it. */
#define RB_SHARED_ADDR (RB_STUB_ADDR + RB_STUB_CODE_SIZE)
/* The process's own state (MAP_PRIVATE): a fork child gets a copy, as it gets a copy of the
 * descriptor table this mirrors. */
#define RB_PRIVATE_ADDR (RB_STUB_ADDR + 0x1000000ULL)

#define RB_MAGIC 0x72626e64u /* "rbnd" */
#define RB_VERSION 10u

#define RB_FD_MAX 65536
/* 4 MiB. An event takes whole slots: its 128-byte header and data. A head of up to 384 bytes
 * (most requests and responses between services) fits one 512-byte slot, so the ring holds as many
 * such events as with the 1 KiB slots it had, in half the memory (of the tracer and the program);
 * bigger heads take more slots. */
#define RB_RING_SLOTS 8192u
#define RB_SLOT_SIZE 512u
#define RB_BELL_SLOTS 1024u /* an eighth of the ring */
#define RB_EVENT_MAX_DATA (64u * 1024u - (uint32_t)sizeof(struct rb_event))
/* Bytes of one syscall copied into the ring at most; the rest is reported as a count (the engine
 * skips body bytes of known length without them). */
#define RB_IO_COPY_MAX (2u << 20)

/* Per-descriptor routing, kept by the stub (it sees every accept, connect, dup and close). */
enum rb_fd_state {
  RB_FD_PASS = 0,   /* not a tracked connection: issue the syscall, record nothing */
  RB_FD_RECORD = 1, /* tracked connection: issue it and append the bytes to the ring */
  RB_FD_CLIENT = 2, /* outbound connection: writes ask the engine first (header injection) */
};

/* Ring events. `nr` is the syscall; besides the read/write family:
 *   accept/accept4/connect: fd = the new connection, data = local then peer sockaddr
 *     (flags = the two lengths, local << 16 | peer)
 *   close: fd closed;  dup/dup2/dup3/fcntl: fd = old, result = new
 *   fork (RB_EV_FORK): result = child pid, flags = parent pid (sent by both sides) */
#define RB_EV_FORK 57
/* In a read/write event's flags: no data, `result` bytes moved that a full ring dropped. */
#define RB_EV_LOST (1ull << 63)
/* In a write event's flags: the engine rewrote it (RB_UP_WRITE); `result` counts the program's
 * bytes only, and the header bytes that went out are (flags >> RB_EV_HEADER_SHIFT) & 0xffff. */
#define RB_EV_REWRITTEN (1ull << 62)
#define RB_EV_HEADER_SHIFT 32

/* What the stub decided about trace context in a read or write (docs/fast-path.md, "Trace
 * context in the stub"); the engine takes these ids instead of drawing its own. */
enum rb_decision_kind {
  RB_DEC_NONE = 0,
  RB_DEC_SERVER = 1, /* a read: the request head that starts it is this SERVER span */
  RB_DEC_CLIENT = 2, /* a write: its request head got header_len bytes of trace context (the
                        CLIENT span below), header_sent of them with this write */
};
struct rb_decision {
  uint32_t kind;
  uint16_t header_len;
  uint16_t header_sent;
  uint8_t trace[16];
  uint8_t span[8];
  uint8_t parent[8]; /* when has_parent */
  uint8_t flags;     /* W3C trace flags (bit 0: sampled) */
  uint8_t has_parent;
  uint8_t shed;      /* a trace started here, left unsampled because export is behind */
  uint8_t pad[5];
};

struct rb_event {
  uint64_t seq;       /* written last: (index of first slot) + 1 once the event is complete */
  uint64_t claim;     /* written first: the same value once `slots` and `pid` are valid, so the
                         engine can skip an event whose writer died before completing it */
  uint32_t slots;     /* slots the event occupies (a padding event when nr == -1) */
  uint32_t tid;
  uint32_t pid;
  int32_t fd;
  int32_t nr;         /* syscall number, -1 for padding */
  uint32_t data_len;  /* bytes copied below (<= total) */
  int64_t result;     /* the syscall's result: bytes moved, or -errno */
  uint64_t flags;     /* recv/send flags where the syscall has them */
  uint64_t start_ns;  /* CLOCK_REALTIME at the trap */
  uint64_t end_ns;    /* and after the syscall */
  uint64_t total;     /* bytes the syscall moved (== result when > 0) */
  struct rb_decision dec;
};

/* Call sites (docs/fast-path.md, "Patched call sites"). A trap of a hot socket syscall asks the
 * engine (an RB_EV_SITE event) about its syscall instruction: the engine approves it when the
 * instruction just before it is a real one of its function (an ELF symbol, a linear decode, no
 * branch into it) that can run elsewhere unchanged (`mov $nr, %eax`, `xor %eax, %eax`, a move
 * from the stack: the libc wrappers' shapes). The stub of each address space then rewrites that
 * instruction into a jump to a trampoline that runs it and calls the stub directly: one of 5 bytes
 * or more becomes `jmp rel32`; a shorter one `jmp rel8` to a `jmp rel32` in dead padding the
 * engine found within reach (the cave). The verdicts are shared by the processes of one image
 * (same addresses); what is patched is per address space (rb_private). */
#define RB_SITES 1024
#define RB_EV_SITE 1000 /* event: result = the syscall instruction's address, fd = its slot in sites[],
                           flags = the syscall, data = the bytes before it in its page (up to 16) */
enum rb_site_state {
  RB_SITE_NEW = 0,      /* slot taken (addr set), not asked yet, or to be asked again */
  RB_SITE_ASKED = 1,    /* an event is on its way to the engine */
  RB_SITE_APPROVED = 2, /* the engine checked it: patch it (the fields below) */
  RB_SITE_REFUSED = 3,  /* leave it trapping */
};
struct rb_site {
  uint64_t addr;  /* the syscall instruction (0: free slot); claimed with compare-and-swap */
  uint32_t state; /* rb_site_state */
  uint32_t prot;  /* the code page's protection, restored after the write */
  uint64_t zone;  /* a free address within rel32 reach for a new trampoline zone */
  uint64_t cave;  /* an instruction shorter than 5 bytes: where its `jmp rel32` goes (rel8 reach) */
  uint32_t len;   /* the length of the instruction before the syscall (it starts at addr - len) */
  uint32_t tries; /* engine: times it answered "ask again" (the asking process was gone, or the page
                     was being written by a patch of another site) */
  uint32_t kind;  /* rb_site_kind: how its trampoline calls the stub */
  uint32_t pad;
};
enum rb_site_kind {
  /* C code: the stub runs on the thread's stack, below the red zone. */
  RB_SITE_C = 0,
  /* Go's Syscall6: goroutine stacks may have only a few hundred bytes left, so the stub runs on
   * the thread's signal stack (which Go sets up for every thread), found with sigaltstack; Go has
   * no red zone. A thread without one, or already on it, takes the original syscall (a trap). */
  RB_SITE_GO = 1,
};

struct rb_shared {
  uint32_t magic;
  uint32_t version;
  uint64_t reserve;   /* next free slot index, claimed by producers with compare-and-swap */
  uint64_t consumed;  /* first slot the engine has not consumed */
  uint64_t dropped;   /* events lost to a full ring */
  uint64_t traps;     /* SIGSYS handler runs */
  uint64_t shed;      /* set by the engine while export is behind: traces starting here go unsampled */
  uint64_t direct;    /* syscalls that reached the stub through a patched call site (no signal) */
  uint64_t patch;     /* set by the engine: call sites may be patched (RBINDER_PATCH_CALL_SITES) */
  /* The engine's doorbell, a futex word: a producer that leaves RB_BELL_SLOTS or more slots
   * unconsumed sets it to 1 and wakes the engine's timer, which waits on it (futex_waitv) rather
   * than polling, and sets it back to 0 before each drain. */
  uint32_t bell;
  uint32_t bell_pad;
  struct rb_site sites[RB_SITES];
  uint8_t ring[RB_RING_SLOTS * RB_SLOT_SIZE] __attribute__((aligned(64)));
};
#define RB_SHARED_SIZE (((sizeof(struct rb_shared) + 4095) / 4096) * 4096)

#define RB_ALLOW_MAX 32
struct rb_net {
  uint16_t family; /* AF_INET, AF_INET6 */
  uint16_t prefix; /* bits */
  uint32_t pad;
  uint8_t bytes[16];
};

/* The stub's view of each thread's trace context (the engine's rule, docs/propagation.md), kept
 * only while it is sure the engine's is the same: anything that may change it where the stub
 * cannot follow bumps `gen`, and the context is valid while valid_gen == gen. */
#define RB_THREADS 4096
struct rb_thread {
  uint32_t tid;       /* the thread whose slot (tid % RB_THREADS) this is now */
  uint32_t busy;      /* its owner is changing it (a nested trap on that thread decides nothing) */
  uint32_t gen;
  uint32_t valid_gen;
  uint32_t has;       /* 0: no context (a request written now starts a trace) */
  uint32_t req;       /* the server request that set it (its response's end clears it) */
  uint8_t flags;
  uint8_t pad[7];
  uint8_t trace[16];
  uint8_t span[8];
};

/* Per connection, where the stub is in its request stream. */
enum rb_side { RB_SIDE_UNKNOWN = 0, RB_SIDE_SERVER = 1, RB_SIDE_CLIENT = 2 };
enum rb_sync {
  RB_SYNC_NONE = 0, /* not known: the stub decides nothing here */
  RB_SYNC_HEAD = 1, /* the next request byte starts a head */
  RB_SYNC_BODY = 2, /* `owed` bytes of body first (server reads; client writes use quiet[]) */
};
/* Per connection, where the stub is in its responses (docs/fast-path.md, "Bodies as counts"): the
 * body of a response whose head gave its length is sent to the engine as a byte count, not
 * copied. Only followed while sure: one request at a time, answered in order. */
enum rb_resp {
  RB_RESP_OFF = 0,  /* not known (until the connection is closed): every byte is copied */
  RB_RESP_IDLE = 1, /* every request the stub knows of is answered */
  RB_RESP_WAIT = 2, /* one request, not CONNECT: the next response byte starts its head */
  RB_RESP_BODY = 3, /* `resp_owed` bytes of its body first */
  RB_RESP_WAIT_HEAD = 4, /* as WAIT, for a HEAD request: its response ends with its head */
  RB_RESP_CHUNKED = 5, /* in its chunked body (resp_chunk) */
};
#define RB_HEADER_MAX 72
struct rb_conn {
  uint8_t side;
  uint8_t sync;
  uint8_t peer_ok;     /* client: the engine said the peer's address may get trace context */
  uint8_t caller;      /* client: the writer's context when it wrote the last request head, which
                          the engine gives back at the response's end: 0 none (nothing given back),
                          1 caller_span's, 2 not known */
  uint16_t hdr_len;    /* client: header lines of this stub still owed at stream position hdr_at */
  uint16_t hdr_sent;   /* of them, sent */
  uint32_t tid;        /* server: the thread that read the current request; client: the last writer */
  uint32_t req;        /* server: the current request's tag (rb_thread.req) */
  uint64_t owed;       /* RB_SYNC_BODY */
  uint64_t pos;        /* client: the program's bytes written so far */
  uint64_t hdr_at;
  uint64_t msg_end;    /* client: where the request being written ends (~0: chunked, not known) */
  uint8_t caller_span[8];
  uint8_t hdr[RB_HEADER_MAX];
  uint64_t resp_owed;  /* RB_RESP_BODY */
  uint8_t resp;        /* rb_resp */
  uint8_t resp_pad[7];
  struct rb_chunk req_chunk; /* a chunked request body being read (server) or written (client) */
  uint64_t chunk_from;       /* client: where in the stream (pos) that body starts */
  struct rb_chunk resp_chunk; /* RB_RESP_CHUNKED */
};

/* Trampolines live in zones mapped within rel32 reach of the sites they serve. */
#define RB_ZONES 32
#define RB_ZONE_SIZE 65536u
#define RB_TRAMPOLINE_SIZE 64u
struct rb_zone {
  uint64_t base; /* 0: unused */
  uint32_t used; /* bytes of trampolines written */
  uint32_t pad;
};
enum rb_patch_state {
  RB_PATCH_NONE = 0,
  RB_PATCH_WRITING = 1, /* being rewritten (a fork child finishes it: the writer is not there) */
  RB_PATCH_DONE = 2,
  RB_PATCH_REFUSED = 3, /* refused by the engine, or the rewrite could not be made here */
};
struct rb_patched {
  uint64_t addr;       /* the syscall instruction (0: free slot) */
  uint32_t state;      /* rb_patch_state */
  uint32_t prot;
  uint64_t trampoline;
  uint64_t cave;       /* instructions shorter than 5 bytes */
  uint32_t len;        /* the rewritten instruction's length; it starts at addr - len */
  uint32_t pad;
};

struct rb_private {
  uint32_t magic;
  uint32_t pid;               /* the process this copy belongs to (a vfork child shares it) */
  uint32_t inject;            /* outbound connections start as RB_FD_CLIENT */
  uint32_t decide;            /* the stub decides trace context where it can (rb_conn, rb_thread) */
  uint64_t app_sigsys[4];     /* the program's own rt_sigaction(SIGSYS), answered as if applied */
  uint64_t clock_gettime;     /* the vDSO's __vdso_clock_gettime, or 0: the syscall */
  uint32_t sampler;           /* RB_SAMPLER_* */
  uint32_t next_req;          /* request tags */
  uint64_t ratio_below;       /* ratio samplers: sampled when (last 8 bytes of the trace id) >> 11 < this */
  uint64_t ids;               /* id generator state (a Weyl sequence, seeded by the engine) */
  /* The injection allow-list's networks (--inject-to), for outbound connections' peers; a peer
   * outside them may still be allowed by the request's Host, which the engine checks. */
  uint32_t allow_all;
  uint32_t allow_unix;        /* AF_UNIX peers (allowed where loopback is) */
  uint32_t allow_count;       /* entries in allow[] */
  uint32_t pad2;
  struct rb_net allow[RB_ALLOW_MAX];
  uint8_t fd_state[RB_FD_MAX];
  uint64_t lost[RB_FD_MAX][2]; /* bytes read [0] / written [1] whose events a full ring dropped */
  uint64_t quiet[RB_FD_MAX];   /* RB_FD_CLIENT: bytes the program may write without an upcall
                                  (RB_QUIET_UNTIL_READ: until it reads a byte on the descriptor) */
  struct rb_thread threads[RB_THREADS];
  struct rb_conn conns[RB_FD_MAX];
  /* Patched call sites of this address space (a fork child inherits the patched code with it). */
  uint32_t patch_lock;        /* one patcher at a time (try-lock: a busy one leaves the site for later) */
  uint32_t pad3;
  struct rb_zone zones[RB_ZONES];
  struct rb_patched patched[RB_SITES];
};
#define RB_QUIET_UNTIL_READ UINT64_MAX
/* The engine's samplers (its SamplerType). */
enum rb_sampler {
  RB_SAMPLER_ALWAYS_ON = 0,
  RB_SAMPLER_ALWAYS_OFF = 1,
  RB_SAMPLER_RATIO = 2,
  RB_SAMPLER_PARENT_ALWAYS_ON = 3,
  RB_SAMPLER_PARENT_ALWAYS_OFF = 4,
  RB_SAMPLER_PARENT_RATIO = 5,
};
#define RB_PRIVATE_SIZE (((sizeof(struct rb_private) + 4095) / 4096) * 4096)

/* Upcalls: the stub issues syscall RB_UPCALL_NR (no syscall of any kernel: from anywhere else it
 * fails with ENOSYS) from its upcall instruction; the filter turns it into a seccomp user
 * notification the engine answers (SECCOMP_RET_USER_NOTIF). args: (op, &rb_call, pid).
 * RB_UP_WRITE's rb_call lives in the ring, in the write's claimed event after the bytes the event
 * will carry (which the stub copies first): the engine reads and answers it in its own mapping of
 * the ring, with no copy into or out of the program. */
#define RB_UPCALL_NR 0x7262
enum rb_upcall_op {
  RB_UP_EXEC = 1,        /* about to execve: the engine attaches for the exec. 1: attached */
  RB_UP_WRITE = 2,       /* a write on an RB_FD_CLIENT descriptor: 1: issue call->nr/args instead,
                            whose bytes carry call->inject_len header bytes at call->inject_at;
                            2: the descriptor needs no more upcalls (record it); 0: write as asked.
                            With 0 and 1, call->quiet: the request body the program owes once
                            these bytes are sent, which cannot start a request head (so needs no
                            upcall; RB_QUIET_UNTIL_READ in a chunked body, whose end is not known) */
};
/* rb_call.resp: no request starts in these bytes; one starts whose response the stub may frame
 * (every earlier one is answered, and it is not CONNECT), a HEAD request or another; or the stub
 * cannot tell. */
enum rb_resp_answer { RB_RESP_ANSWER_NONE = 0, RB_RESP_ANSWER_ONE = 1, RB_RESP_ANSWER_OFF = 2, RB_RESP_ANSWER_HEAD = 3 };
#define RB_CALL_SCRATCH 2560
struct rb_call {
  int64_t nr;
  uint64_t args[6];
  uint64_t inject_at;  /* where the header is in the rewritten call's bytes */
  uint64_t inject_len; /* and its length */
  uint64_t quiet;      /* see RB_UP_WRITE */
  /* Also answered, so that the stub can decide the descriptor's next requests itself: */
  uint32_t boundary;   /* after these bytes and `quiet` more, the next byte starts a request */
  uint32_t peer_ok;    /* the peer's address may get trace context */
  uint32_t ctx_state;  /* the writing thread's context in the engine: 0 one the stub cannot carry
                          (tracestate, baggage), 1 none, 2 ctx_* */
  uint8_t ctx_flags;
  uint8_t ctx_head;    /* a request head ends in these bytes: its caller is the context above */
  uint8_t resp;        /* for the responses (rb_conn.resp), RB_RESP_ANSWER_* */
  uint8_t ctx_pad;
  uint8_t ctx_trace[16];
  uint8_t ctx_span[8];
  uint32_t chunk_at;   /* a chunked request body starts at this byte of the program's (~0: none) */
  uint32_t chunk_pad;
  uint64_t start_ns;
  uint64_t data;       /* where the stub copied the first data_len bytes the call asks to send */
  uint64_t data_len;
  uint64_t scratch_len; /* RB_CALL_SCRATCH and 16 bytes per iovec of the call and two more: the
                           scratch runs on past the struct, so a writev of any size can be rebuilt */
  uint8_t scratch[RB_CALL_SCRATCH]; /* the engine's header bytes, msghdr and iovecs */
};

#endif
