/* The contract between the in-process stub (stub.c, freestanding C mapped into every traced
 * process) and the engine: fixed addresses, the regions' layouts, the ring protocol and the
 * upcalls. C, so both sides compile it. See docs/fast-path.md. */
#ifndef RBINDER_STUB_ABI_H
#define RBINDER_STUB_ABI_H

#include <stdint.h>

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
#define RB_VERSION 4u

#define RB_FD_MAX 65536
#define RB_RING_SLOTS 8192u
#define RB_SLOT_SIZE 1024u
#define RB_EVENT_MAX_DATA (64u * RB_SLOT_SIZE - (uint32_t)sizeof(struct rb_event))
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
};

struct rb_shared {
  uint32_t magic;
  uint32_t version;
  uint64_t reserve;   /* next free slot index, claimed by producers with compare-and-swap */
  uint64_t consumed;  /* first slot the engine has not consumed */
  uint64_t dropped;   /* events lost to a full ring */
  uint64_t traps;     /* SIGSYS handler runs */
  uint64_t pad[3];
  uint8_t ring[RB_RING_SLOTS * RB_SLOT_SIZE] __attribute__((aligned(64)));
};
#define RB_SHARED_SIZE (((sizeof(struct rb_shared) + 4095) / 4096) * 4096)

struct rb_private {
  uint32_t magic;
  uint32_t pid;               /* the process this copy belongs to (a vfork child shares it) */
  uint32_t inject;            /* outbound connections start as RB_FD_CLIENT */
  uint32_t pad;
  uint64_t app_sigsys[4];     /* the program's own rt_sigaction(SIGSYS), answered as if applied */
  uint64_t clock_gettime;     /* the vDSO's __vdso_clock_gettime, or 0: the syscall */
  uint8_t fd_state[RB_FD_MAX];
  uint64_t lost[RB_FD_MAX][2]; /* bytes read [0] / written [1] whose events a full ring dropped */
  uint64_t quiet[RB_FD_MAX];   /* RB_FD_CLIENT: bytes the program may write without an upcall
                                  (RB_QUIET_UNTIL_READ: until it reads a byte on the descriptor) */
};
#define RB_QUIET_UNTIL_READ UINT64_MAX
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
#define RB_CALL_SCRATCH 2560
struct rb_call {
  int64_t nr;
  uint64_t args[6];
  uint64_t inject_at;  /* where the header is in the rewritten call's bytes */
  uint64_t inject_len; /* and its length */
  uint64_t quiet;      /* see RB_UP_WRITE */
  uint64_t start_ns;
  uint64_t data;       /* where the stub copied the first data_len bytes the call asks to send */
  uint64_t data_len;
  uint64_t scratch_len; /* RB_CALL_SCRATCH and 16 bytes per iovec of the call and two more: the
                           scratch runs on past the struct, so a writev of any size can be rebuilt */
  uint8_t scratch[RB_CALL_SCRATCH]; /* the engine's header bytes, msghdr and iovecs */
};

#endif
