/* The contract between the in-process stub (stub.c, freestanding C mapped into every traced
 * process) and the engine: fixed addresses, the shared region's layout and the ring protocol.
 * C, so both sides compile it. See docs/fast-path.md. */
#ifndef RBINDER_STUB_ABI_H
#define RBINDER_STUB_ABI_H

#include <stdint.h>

/* Where the stub lives in every traced address space: far from where loaders, heaps and mmap
 * put things on x86-64 (42 TiB). Mapped with MAP_FIXED_NOREPLACE; if taken, that process stays
 * on ptrace stops. */
#define RB_STUB_ADDR 0x2a0000000000ULL
#define RB_STUB_CODE_SIZE 0x10000ULL
#define RB_SHARED_ADDR (RB_STUB_ADDR + RB_STUB_CODE_SIZE)

#define RB_MAGIC 0x72626e64u /* "rbnd" */
#define RB_VERSION 1u

#define RB_FD_MAX 65536
#define RB_RING_SLOTS 2048u
#define RB_SLOT_SIZE 2048u
#define RB_EVENT_MAX_DATA (16u * RB_SLOT_SIZE - (uint32_t)sizeof(struct rb_event))

/* Per-descriptor routing, written by the engine, read by the stub's SIGSYS handler. */
enum rb_fd_state {
  RB_FD_PASS = 0,   /* not a tracked connection: issue the syscall, record nothing */
  RB_FD_RECORD = 1, /* tracked connection: issue it and append the bytes to the ring */
  RB_FD_TRACE = 2,  /* issue it from the traced instruction: the engine handles it (injection) */
};

/* One ring event; `slots` consecutive slots, data follows the header. */
struct rb_event {
  uint64_t seq;       /* written last: (index of first slot) + 1 once the event is complete */
  uint32_t slots;     /* slots the event occupies (a padding event when nr == -1) */
  uint32_t tid;
  int32_t fd;
  int32_t nr;         /* syscall number, -1 for padding */
  int64_t result;     /* the syscall's result: bytes moved, or -errno */
  uint64_t flags;     /* recv/send flags where the syscall has them */
  uint64_t start_ns;  /* CLOCK_REALTIME at the trap */
  uint64_t end_ns;    /* and after the syscall */
  uint64_t total;     /* bytes the syscall moved (== result when > 0) */
  uint32_t data_len;  /* bytes copied below (<= total) */
  uint32_t pad;
};

struct rb_shared {
  uint32_t magic;
  uint32_t version;
  uint64_t reserve;   /* next free slot index, claimed by producers with compare-and-swap */
  uint64_t consumed;  /* first slot the engine has not consumed */
  uint64_t dropped;   /* events lost to a full ring */
  uint64_t traps;     /* SIGSYS handler runs */
  uint64_t pad[3];
  uint8_t fd_state[RB_FD_MAX];
  uint8_t ring[RB_RING_SLOTS * RB_SLOT_SIZE] __attribute__((aligned(64)));
};

#define RB_SHARED_SIZE (((sizeof(struct rb_shared) + 4095) / 4096) * 4096)

#endif
