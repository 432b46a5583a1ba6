/* The in-process half of the fast path: a SIGSYS handler that rbinder maps at RB_STUB_ADDR in
 * every traced process before its image runs. The seccomp filter traps the socket syscalls
 * (SECCOMP_RET_TRAP) unless they come from this stub's own syscall instruction. The handler
 * issues the program's syscall itself, keeps the per-descriptor routing the process's descriptor
 * table implies (accept, connect, dup, close, fork are all seen here), and appends what moved on
 * tracked connections to the shared ring the engine drains. The process is not ptraced while it
 * runs: the few decisions only the engine can make (header injection, exec) are upcalls, seccomp
 * user notifications the engine answers. Freestanding: no libc, no writable data of its own (its
 * state is in the private and shared regions), no floating point. Built by
 * native/scripts/build-stub.sh into a flat blob the engine maps. */
#include "abi.h"
#include "head.h"

#define EINTR 4
#define EAGAIN 11
#define EINVAL 22
#define EPERM 1
#define EINPROGRESS 115
#define SIGSYS 31
#define SYS_READ 0
#define SYS_WRITE 1
#define SYS_CLOSE 3
#define SYS_RT_SIGACTION 13
#define SYS_RT_SIGPROCMASK 14
#define SYS_READV 19
#define SYS_WRITEV 20
#define SYS_DUP 32
#define SYS_DUP2 33
#define SYS_GETPID 39
#define SYS_SENDFILE 40
#define SYS_CONNECT 42
#define SYS_ACCEPT 43
#define SYS_SENDTO 44
#define SYS_RECVFROM 45
#define SYS_SENDMSG 46
#define SYS_RECVMSG 47
#define SYS_GETSOCKNAME 51
#define SYS_GETPEERNAME 52
#define SYS_GETSOCKOPT 55
#define SYS_CLONE 56
#define SYS_FORK 57
#define SYS_EXECVE 59
#define SYS_FCNTL 72
#define SYS_GETTID 186
#define SYS_FUTEX 202
#define FUTEX_WAKE 1
#define SYS_TGKILL 234
#define SYS_CLOCK_GETTIME 228
#define SYS_ACCEPT4 288
#define SYS_DUP3 292
#define SYS_EXECVEAT 322
#define SYS_CLOSE_RANGE 436
#define SYS_SECCOMP_CODE 1
#define RB_TRAP_DATA 0x7262 /* SECCOMP_RET_TRAP's data: si_errno of our own traps */

typedef unsigned long size_t;

/* Kernel ABI layouts (x86-64), as delivered to an SA_SIGINFO handler. */
struct rb_siginfo {
  int si_signo, si_errno, si_code, pad;
  void* call_addr; /* _sigsys */
  int syscall;
  unsigned arch;
};
struct rb_sigcontext {
  uint64_t r8, r9, r10, r11, r12, r13, r14, r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip;
  uint64_t eflags, segs, err, trapno, oldmask, cr2, fpstate, reserved[8];
};
struct rb_ucontext {
  unsigned long uc_flags;
  void* uc_link;
  void* ss_sp;
  int ss_flags;
  size_t ss_size;
  struct rb_sigcontext mc;
  uint64_t sigmask;
};
struct rb_iovec {
  const uint8_t* base;
  size_t len;
};
struct rb_msghdr {
  void* name;
  unsigned namelen;
  struct rb_iovec* iov;
  size_t iovlen;
};
struct rb_timespec {
  long sec, nsec;
};

long rb_syscall_fast(long nr, long a1, long a2, long a3, long a4, long a5, long a6);
long rb_syscall_upcall(long nr, long a1, long a2, long a3, long a4, long a5, long a6);
void rb_trap(void);
void rb_direct(void);
void rb_direct_go(void);

/* The two syscall instructions: the filter allows the first for everything (the fast path, and the
 * syscalls the engine injects while setting a new image up) and turns the second into a user
 * notification (an upcall). rb_trap stops the
 * thread for the engine (int3) when it must detach after an exec that failed. */
__asm__(
    ".section .text.entry,\"ax\",@progbits\n"
    ".globl rb_syscall_fast\n"
    "rb_syscall_fast:\n"
    "  mov %rdi, %rax\n  mov %rsi, %rdi\n  mov %rdx, %rsi\n  mov %rcx, %rdx\n"
    "  mov %r8, %r10\n  mov %r9, %r8\n  mov 8(%rsp), %r9\n"
    ".globl rb_fast_insn\n"
    "rb_fast_insn:\n  syscall\n  ret\n"
    ".globl rb_syscall_upcall\n"
    "rb_syscall_upcall:\n"
    "  mov %rdi, %rax\n  mov %rsi, %rdi\n  mov %rdx, %rsi\n  mov %rcx, %rdx\n"
    "  mov %r8, %r10\n  mov %r9, %r8\n  mov 8(%rsp), %r9\n"
    ".globl rb_upcall_insn\n"
    "rb_upcall_insn:\n  syscall\n  ret\n"
    ".globl rb_restorer\n"
    "rb_restorer:\n  mov $15, %eax\n  syscall\n  hlt\n"
    ".globl rb_trap\n"
    "rb_trap:\n  int3\n  ret\n"
    /* A patched call site's trampoline calls here with the syscall's registers (rax = nr, args in
     * rdi rsi rdx r10 r8 r9), after stepping over the red zone. Like the syscall instruction it
     * stands for, it keeps every register but rax (the result), rcx and r11, and the flags. A
     * syscall rb_direct_c does not handle returns to the trampoline's other exit (13 bytes on:
     * past its lea and jmp), which runs the original syscall instruction with the same registers. */
    ".globl rb_direct\n"
    "rb_direct:\n"
    "  push %rbp\n  mov %rsp, %rbp\n  pushfq\n"
    "  push %rdi\n  push %rsi\n  push %rdx\n  push %r10\n  push %r8\n  push %r9\n  push %rax\n  push $0\n"
    "  mov %rsp, %rdi\n  and $-16, %rsp\n  cld\n  call rb_direct_c\n"
    "  cmpq $0, -72(%rbp)\n  je 1f\n  addq $13, 8(%rbp)\n"
    "1:\n  lea -56(%rbp), %rsp\n"
    "  pop %r9\n  pop %r8\n  pop %r10\n  pop %rdx\n  pop %rsi\n  pop %rdi\n"
    "  popfq\n  pop %rbp\n  ret\n"
    /* The same from a Go site (RB_SITE_GO), whose trampoline leaves no red zone: the goroutine
     * stack may have only a few hundred bytes left, so this uses 64 of them (the flags, three
     * registers and sigaltstack's answer) to find the thread's signal stack, and runs rb_direct's
     * body there. sigaltstack is not trapped (nor filtered: seccomp's cache allows it). A thread
     * with no signal stack, or already on it (a signal handler), declines: the trampoline's other
     * exit runs the original syscall instruction, which traps. */
    ".globl rb_direct_go\n"
    "rb_direct_go:\n"
    /* Syscalls patchable() does not list (Go's epoll_pwait, fcntl, ... take this site too) are
     * declined before sigaltstack costs them a syscall: a bit mask of the numbers below 64, and
     * accept4 (288). A number missing here would only trap; one too many, be declined by C. */
    "  pushfq\n  cmp $288, %rax\n  je 3f\n  cmp $63, %rax\n  ja 4f\n"
    "  movabs $0xfc000018000b, %r11\n  bt %rax, %r11\n  jnc 4f\n"
    "3:\n  push %rax\n  push %rdi\n  push %rsi\n  sub $24, %rsp\n"
    "  xor %edi, %edi\n  mov %rsp, %rsi\n  mov $131, %eax\n  syscall\n" /* sigaltstack(NULL, &ss) */
    "  test %rax, %rax\n  jnz 2f\n"
    "  testl $3, 8(%rsp)\n  jnz 2f\n" /* ss_flags: SS_ONSTACK | SS_DISABLE */
    "  mov (%rsp), %r11\n  add 16(%rsp), %r11\n  and $-16, %r11\n" /* its top: ss_sp + ss_size */
    "  add $24, %rsp\n  pop %rsi\n  pop %rdi\n  pop %rax\n"
    "  mov %rsp, %rcx\n  mov %r11, %rsp\n  push %rcx\n" /* the goroutine stack: [flags][return] */
    "  push %rbp\n  mov %rsp, %rbp\n"
    "  push %rdi\n  push %rsi\n  push %rdx\n  push %r10\n  push %r8\n  push %r9\n  push %rax\n  push $0\n"
    "  mov %rsp, %rdi\n  and $-16, %rsp\n  cld\n  call rb_direct_c\n"
    "  mov 8(%rbp), %rcx\n  cmpq $0, -64(%rbp)\n  je 1f\n  addq $13, 8(%rcx)\n"
    "1:\n  lea -48(%rbp), %rsp\n"
    "  pop %r9\n  pop %r8\n  pop %r10\n  pop %rdx\n  pop %rsi\n  pop %rdi\n"
    "  pop %rbp\n  pop %rsp\n  popfq\n  ret\n"
    "2:\n  add $24, %rsp\n  pop %rsi\n  pop %rdi\n  pop %rax\n"
    "4:\n  addq $13, 8(%rsp)\n  popfq\n  ret\n"
    ".text\n");

#define SH ((struct rb_shared*)RB_SHARED_ADDR)
#define PRIV ((struct rb_private*)RB_PRIVATE_ADDR)

static long sys(long nr, long a1, long a2, long a3) { return rb_syscall_fast(nr, a1, a2, a3, 0, 0, 0); }

/* Through the vDSO when the engine found it: a syscall here costs about half a microsecond in a
 * busy program, and an event takes two timestamps. */
static uint64_t now_ns(void) {
  struct rb_timespec ts;
  if (PRIV->clock_gettime)
    ((long (*)(long, struct rb_timespec*))PRIV->clock_gettime)(0 /* CLOCK_REALTIME */, &ts);
  else
    sys(SYS_CLOCK_GETTIME, 0 /* CLOCK_REALTIME */, (long)&ts, 0);
  return (uint64_t)ts.sec * 1000000000ull + (uint64_t)ts.nsec;
}

/* Who is trapping, looked up once per trap and only when an event is recorded. */
struct rb_who {
  uint32_t tid; /* 0 until looked up */
  int mine;     /* 0 until looked up, then 1 or -1 */
};

static uint32_t tid_of(struct rb_who* w) {
  if (w->tid == 0) w->tid = (uint32_t)sys(SYS_GETTID, 0, 0, 0);
  return w->tid;
}

/* This process owns the private region (a vfork child shares its parent's until it execs, and
 * must not change the parent's routing). Its main thread needs no getpid: its tid is the pid, and
 * a vfork child's tid is its own new pid. Other threads ask each time. (Caching their tids would
 * need to know when a thread exits, and trapping exit is not safe: musl's detached threads exit
 * after unmapping their own stack, where the kernel would have to put the signal frame.) */
static int mine(struct rb_who* w) {
  if (w->mine == 0) {
    uint32_t tid = tid_of(w);
    w->mine = tid == PRIV->pid || (uint32_t)sys(SYS_GETPID, 0, 0, 0) == PRIV->pid ? 1 : -1;
  }
  return w->mine > 0;
}

static void copy_bytes(uint8_t* dst, const uint8_t* src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = src[i];
}

static uint8_t state_of(long fd) {
  return (fd >= 0 && fd < RB_FD_MAX) ? PRIV->fd_state[fd] : (uint8_t)RB_FD_PASS;
}

/* Claims room for an event with `data` bytes; NULL when the ring is full (counted, never waits). */
static struct rb_event* reserve(uint32_t data, uint64_t* seq) {
  uint32_t slots = (uint32_t)((sizeof(struct rb_event) + data + RB_SLOT_SIZE - 1) / RB_SLOT_SIZE);
  uint64_t at, pad, next;
  for (;;) {
    at = __atomic_load_n(&SH->reserve, __ATOMIC_RELAXED);
    /* An event never wraps: the slots left before the end become a padding event. */
    pad = (at % RB_RING_SLOTS) + slots > RB_RING_SLOTS ? RB_RING_SLOTS - (at % RB_RING_SLOTS) : 0;
    next = at + pad + slots;
    if (next - __atomic_load_n(&SH->consumed, __ATOMIC_ACQUIRE) > RB_RING_SLOTS) {
      __atomic_add_fetch(&SH->dropped, 1, __ATOMIC_RELAXED);
      return 0;
    }
    if (__atomic_compare_exchange_n(&SH->reserve, &at, next, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) break;
  }
  if (pad) {
    struct rb_event* p = (struct rb_event*)(SH->ring + (at % RB_RING_SLOTS) * RB_SLOT_SIZE);
    p->slots = (uint32_t)pad;
    p->nr = -1;
    __atomic_store_n(&p->seq, at + 1, __ATOMIC_RELEASE);
    at += pad;
  }
  struct rb_event* e = (struct rb_event*)(SH->ring + (at % RB_RING_SLOTS) * RB_SLOT_SIZE);
  e->slots = slots;
  e->pid = PRIV->pid;
  e->dec.kind = RB_DEC_NONE;
  __atomic_store_n(&e->claim, at + 1, __ATOMIC_RELEASE);
  *seq = at + 1;
  return e;
}

/* Makes the event visible to the engine, and rings its doorbell once the ring holds RB_BELL_SLOTS
 * (abi.h): once per drain at most, so a busy ring costs one futex call per RB_BELL_SLOTS slots. */
static void publish(struct rb_event* e, uint64_t seq) {
  __atomic_store_n(&e->seq, seq, __ATOMIC_RELEASE);
  if (seq - __atomic_load_n(&SH->consumed, __ATOMIC_RELAXED) >= RB_BELL_SLOTS && __atomic_load_n(&SH->bell, __ATOMIC_RELAXED) == 0 &&
      __atomic_exchange_n(&SH->bell, 1, __ATOMIC_ACQ_REL) == 0)
    sys(SYS_FUTEX, (long)&SH->bell, FUTEX_WAKE, 1); /* not FUTEX_PRIVATE: the engine maps it too */
}

static void fill(struct rb_who* w, struct rb_event* e, long nr, long fd, long result, uint64_t flags, uint64_t start, uint64_t total) {
  e->tid = tid_of(w);
  e->pid = PRIV->pid;
  e->fd = (int32_t)fd;
  e->nr = (int32_t)nr;
  e->result = result;
  e->flags = flags;
  e->start_ns = start;
  e->end_ns = now_ns();
  e->total = total;
}

/* Copies `max` bytes of the syscall's buffer(s), starting `skip` bytes in. */
/* The buffers of a read- or write-family call, as iovecs (a single buffer in *single). */
static const struct rb_iovec* io_vector(long nr, long a2, long a3, struct rb_iovec* single, size_t* count) {
  if (nr == SYS_READ || nr == SYS_WRITE || nr == SYS_RECVFROM || nr == SYS_SENDTO) {
    single->base = (const uint8_t*)a2;
    single->len = (size_t)a3;
    *count = 1;
    return single;
  }
  if (nr == SYS_READV || nr == SYS_WRITEV) {
    *count = (size_t)a3;
    return (const struct rb_iovec*)a2;
  }
  *count = ((const struct rb_msghdr*)a2)->iovlen;
  return ((const struct rb_msghdr*)a2)->iov;
}

static uint32_t gather(long nr, long a2, long a3, uint64_t skip, uint8_t* dst, uint32_t max) {
  struct rb_iovec single;
  size_t iovcnt;
  const struct rb_iovec* iov = io_vector(nr, a2, a3, &single, &iovcnt);
  uint32_t copied = 0;
  for (size_t i = 0; i < iovcnt && copied < max; i++) {
    size_t n = iov[i].len;
    if (skip >= n) {
      skip -= n;
      continue;
    }
    n -= skip;
    if (n > max - copied) n = max - copied;
    copy_bytes(dst + copied, iov[i].base + skip, n);
    skip = 0;
    copied += (uint32_t)n;
  }
  return copied;
}

static uint64_t io_flags(long nr, long a3, long a4) {
  return (nr == SYS_RECVFROM || nr == SYS_SENDTO) ? (uint64_t)a4 : (nr == SYS_RECVMSG || nr == SYS_SENDMSG) ? (uint64_t)a3 : 0;
}

static int is_write_nr(long nr) {
  return nr == SYS_WRITE || nr == SYS_WRITEV || nr == SYS_SENDTO || nr == SYS_SENDMSG || nr == SYS_SENDFILE;
}

/* Bytes on fd whose events a full ring dropped are reported (as a count) before any later event
 * of that direction: the engine then skips body bytes of known length, or stops parsing. Returns
 * 0 while the ring is still full (the caller's bytes are lost too). */
/* An event that carries a count of n bytes moved and none of them; 0 when the ring is full. */
static int count_event(struct rb_who* w, long nr, long fd, uint64_t n, uint64_t flags, uint64_t start) {
  uint64_t seq;
  struct rb_event* e = reserve(0, &seq);
  if (!e) return 0;
  fill(w, e, nr, fd, (long)n, flags, start, n);
  e->data_len = 0;
  publish(e, seq);
  return 1;
}

static int report_lost(struct rb_who* w, long nr, long fd, uint64_t start) {
  uint64_t* lost = &PRIV->lost[fd][is_write_nr(nr)];
  if (*lost == 0) return 1;
  if (!count_event(w, nr, fd, *lost, RB_EV_LOST, start)) return 0;
  *lost = 0;
  return 1;
}

static void lose(long nr, long fd, uint64_t n) {
  if (fd >= 0 && fd < RB_FD_MAX) PRIV->lost[fd][is_write_nr(nr)] += n;
}

/* Where no byte of a call is known to be body (frame_response, server_read). */
#define RB_NO_BODY (~0ull)

/* The ranges of a call that go as counts: all bytes from body_from on (RB_NO_BODY: none). */
static void segs_from(struct rb_segs* s, uint64_t body_from) {
  s->n = 0;
  if (body_from != RB_NO_BODY) segs_add(s, body_from, ~0ull);
}

/* Ranges shorter than this are copied with the bytes around them (chunk data in small chunks). */
#define RB_COUNT_MIN 1024

/* What a read or write moved from byte `done` on, in events of at most RB_EVENT_MAX_DATA bytes.
 * The ranges in *s (null: none) are body whose framing a head or chunk line gave, which the
 * engine skips unread: an event carries each one's count alone (a multi-MB upload or download
 * then takes a slot per call, not its bytes). Of the rest, at most RB_IO_COPY_MAX bytes are
 * copied; what is beyond goes as lost bytes. */
static void record_io(struct rb_who* w, long nr, long fd, long result, long a2, long a3, long a4, uint64_t start, uint64_t done,
                      const struct rb_decision* d, const struct rb_segs* s) {
  if (result == -EAGAIN || result == -EINTR || !mine(w)) return;
  uint64_t moved = result > 0 ? (uint64_t)result : 0;
  if (!report_lost(w, nr, fd, start)) {
    lose(nr, fd, moved - done);
    return;
  }
  uint64_t copied = 0;
  uint32_t k = 0, ranges = s ? s->n : 0;
  for (;;) {
    while (k < ranges && s->to[k] <= done) k++;
    uint64_t copy_end = k < ranges && s->from[k] < moved ? (s->from[k] > done ? s->from[k] : done) : moved;
    int capped = copied + (copy_end - done) > RB_IO_COPY_MAX;
    if (capped) copy_end = done + (RB_IO_COPY_MAX - copied);
    copied += copy_end - done;
    while (done < copy_end || moved == 0) { /* a call that moved nothing still has its event (EOF, errors) */
      uint64_t left = copy_end - done;
      uint32_t n = left < RB_EVENT_MAX_DATA ? (uint32_t)left : RB_EVENT_MAX_DATA;
      uint64_t seq;
      struct rb_event* e = reserve(n, &seq);
      if (!e) {
        lose(nr, fd, moved - done);
        return;
      }
      fill(w, e, nr, fd, result > 0 ? (long)n : result, io_flags(nr, a3, a4), start, n);
      e->data_len = n ? gather(nr, a2, a3, done, (uint8_t*)(e + 1), n) : 0;
      if (d && d->kind) {
        copy_bytes((uint8_t*)&e->dec, (const uint8_t*)d, sizeof(*d)); /* the head is in the first event */
        d = 0;
      }
      publish(e, seq);
      done += n;
      if (moved == 0) return;
    }
    if (capped) {
      lose(nr, fd, moved - done); /* reported right behind what was copied */
      break;
    }
    if (done >= moved) break;
    uint64_t end = s->to[k] < moved ? s->to[k] : moved;
    if (!count_event(w, nr, fd, end - done, io_flags(nr, a3, a4), start)) {
      lose(nr, fd, moved - done);
      return;
    }
    done = end;
  }
  report_lost(w, nr, fd, start); /* what was not copied, right behind what was */
}

/* The bytes a write-family call is asked to send. */
static uint64_t write_len(long nr, long a2, long a3) {
  const struct rb_iovec* iov;
  size_t iovcnt;
  if (nr == SYS_WRITE || nr == SYS_SENDTO) return (uint64_t)a3;
  if (nr == SYS_WRITEV) {
    iov = (const struct rb_iovec*)a2;
    iovcnt = (size_t)a3;
  } else {
    iov = ((const struct rb_msghdr*)a2)->iov;
    iovcnt = ((const struct rb_msghdr*)a2)->iovlen;
  }
  uint64_t total = 0;
  for (size_t i = 0; i < iovcnt && i < 1024; i++) total += iov[i].len;
  return total;
}

/* A write on a tracked connection claims its event before the bytes go out: a response read on
 * another thread, after the peer got them, must come later in the ring than this write. NULL when
 * the ring is full (the caller counts the bytes lost) or a vfork child is writing (*owner = 0). */
struct rb_claim {
  struct rb_event* e;
  uint64_t seq;
  uint32_t first;    /* data bytes the event has room for; 0: it only counts them (a body the
                        engine skips by its length) */
  uint32_t gathered; /* of them, copied into it before the write (client_write) */
  int owner;
};

/* Claims the event of a write asked to send `asked` bytes, copying at most `copy` of them, with
 * `extra` bytes of room after the data (8-aligned) for an upcall's rb_call. */
static void claim_write(struct rb_who* w, struct rb_claim* c, long nr, long fd, uint64_t asked, uint32_t copy, uint32_t extra,
                        uint64_t start) {
  c->first = asked < copy ? (uint32_t)asked : copy;
  c->gathered = 0;
  c->owner = mine(w);
  c->e = c->owner && report_lost(w, nr, fd, start) ? reserve(extra ? ((c->first + 7) & ~7u) + extra : c->first, &c->seq) : 0;
}

/* Completes a claimed write: `result` is what the program is told; `flags` marks a rewritten one;
 * the ranges in *s (null: none) go as counts (record_io). A claim of no bytes (c->first == 0)
 * is for a call that starts with such a range. */
static long finish_framed_write(struct rb_who* w, struct rb_claim* c, long nr, long a1, long a2, long a3, long a4, uint64_t start,
                                long result, uint64_t flags, const struct rb_segs* s) {
  struct rb_event* e = c->e;
  if (!e) {
    if (c->owner && result > 0) lose(nr, a1, (uint64_t)result);
    return result;
  }
  if (result <= 0) {
    if (flags) {
      fill(w, e, nr, a1, result, io_flags(nr, a3, a4) | flags, start, 0); /* the engine still settles the header */
      e->data_len = 0;
    } else {
      e->nr = -1; /* nothing went out: the engine skips it */
    }
    publish(e, c->seq);
    return result;
  }
  uint64_t n;
  if (c->first == 0) { /* a count (a write asked to send 0 bytes moved none: above); without ranges, all of it */
    n = s && s->n && s->from[0] == 0 && s->to[0] < (uint64_t)result ? s->to[0] : (uint64_t)result;
    fill(w, e, nr, a1, (long)n, io_flags(nr, a3, a4) | flags, start, n);
    e->data_len = 0;
  } else {
    n = (uint64_t)result < c->first ? (uint64_t)result : c->first;
    fill(w, e, nr, a1, (long)n, io_flags(nr, a3, a4) | flags, start, n);
    e->data_len = c->gathered ? (n < c->gathered ? (uint32_t)n : c->gathered) : gather(nr, a2, a3, 0, (uint8_t*)(e + 1), (uint32_t)n);
  }
  publish(e, c->seq);
  if ((uint64_t)result > n) record_io(w, nr, a1, result, a2, a3, a4, start, n, 0, s);
  return result;
}

static long finish_write(struct rb_who* w, struct rb_claim* c, long nr, long a1, long a2, long a3, long a4, uint64_t start,
                         long result, uint64_t flags) {
  return finish_framed_write(w, c, nr, a1, a2, a3, a4, start, result, flags, 0);
}

/* Claims a write's event for the bytes before the first of the ranges it plans to send as counts
 * (*s, from the bytes asked; none at all when it starts with one): finish_framed_write then
 * completes it with the ranges of what went out. */
static void claim_framed(struct rb_who* w, struct rb_claim* c, long nr, long fd, uint64_t asked, const struct rb_segs* s,
                         uint64_t start) {
  uint64_t copy = s->n && s->from[0] < RB_EVENT_MAX_DATA ? s->from[0] : RB_EVENT_MAX_DATA;
  claim_write(w, c, nr, fd, asked, (uint32_t)copy, 0, start);
}

static long recorded_write(struct rb_who* w, long nr, long a1, long a2, long a3, long a4, long a5, long a6, uint64_t asked,
                           uint32_t copy, uint64_t start) {
  struct rb_claim c;
  claim_write(w, &c, nr, a1, asked, copy, 0, start);
  long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
  return finish_write(w, &c, nr, a1, a2, a3, a4, start, result, 0);
}

static void record_simple(struct rb_who* w, long nr, long fd, long result, uint64_t flags) {
  uint64_t seq;
  struct rb_event* e = reserve(0, &seq);
  if (!e) return;
  fill(w, e, nr, fd, result, flags, now_ns(), 0);
  e->data_len = 0;
  publish(e, seq);
}

/* A TCP or AF_UNIX stream socket: the connections rbinder parses. */
static int stream_socket(long fd, uint8_t* local, unsigned* local_len) {
  int type = 0;
  unsigned len = sizeof(type);
  if (rb_syscall_fast(SYS_GETSOCKOPT, fd, 1 /* SOL_SOCKET */, 3 /* SO_TYPE */, (long)&type, (long)&len, 0) != 0 ||
      type != 1 /* SOCK_STREAM */)
    return 0;
  *local_len = 128;
  if (sys(SYS_GETSOCKNAME, fd, (long)local, (long)local_len) != 0 || *local_len < 2) return 0;
  uint16_t family = (uint16_t)(local[0] | (local[1] << 8));
  return family == 1 || family == 2 || family == 10;
}

/* The injection allow-list's networks hold the peer (a sockaddr): what the engine's
 * DestinationAllowList::allows_peer says, for the stub to decide requests on it. */
static int peer_allowed(const uint8_t* peer, unsigned len) {
  if (PRIV->allow_all) return 1;
  if (len < 2) return 0;
  uint16_t family = (uint16_t)(peer[0] | (peer[1] << 8));
  if (family == 1 /* AF_UNIX */) return PRIV->allow_unix != 0;
  const uint8_t* addr = family == 2 && len >= 8 ? peer + 4 : family == 10 && len >= 24 ? peer + 8 : 0;
  if (!addr) return 0;
  for (uint32_t i = 0; i < PRIV->allow_count && i < RB_ALLOW_MAX; i++) {
    const struct rb_net* n = &PRIV->allow[i];
    if (n->family != family) continue;
    uint32_t full = n->prefix / 8u, rest = n->prefix % 8u, k = 0;
    while (k < full && n->bytes[k] == addr[k]) k++;
    if (k < full) continue;
    if (rest && ((n->bytes[full] ^ addr[full]) & (0xff << (8 - rest)) & 0xff)) continue;
    return 1;
  }
  return 0;
}

/* A new connection on fd: its state, and an event with both addresses. */
static void new_connection(struct rb_who* w, long nr, long fd, uint8_t state, const uint8_t* peer_hint, unsigned peer_hint_len,
                           uint64_t start) {
  uint8_t local[128], peer[128];
  unsigned local_len = 0, peer_len = sizeof(peer);
  if (fd < 0 || fd >= RB_FD_MAX || !mine(w) || !stream_socket(fd, local, &local_len)) return;
  if (sys(SYS_GETPEERNAME, fd, (long)peer, (long)&peer_len) != 0 || peer_len < 2) {
    peer_len = 0;
    if (peer_hint && peer_hint_len <= sizeof(peer)) {
      copy_bytes(peer, peer_hint, peer_hint_len); /* connect still in progress */
      peer_len = peer_hint_len;
    }
  }
  if (local_len > sizeof(local)) local_len = sizeof(local);
  if (peer_len > sizeof(peer)) peer_len = sizeof(peer);
  PRIV->fd_state[fd] = state;
  PRIV->quiet[fd] = 0;
  struct rb_conn* cn = &PRIV->conns[fd];
  cn->side = nr == SYS_CONNECT ? RB_SIDE_CLIENT : RB_SIDE_SERVER;
  cn->sync = RB_SYNC_HEAD;
  cn->peer_ok = nr == SYS_CONNECT && peer_allowed(peer, peer_len);
  cn->hdr_len = cn->hdr_sent = 0;
  cn->tid = cn->req = 0;
  cn->caller = 2;
  cn->owed = cn->pos = cn->hdr_at = cn->msg_end = 0;
  cn->resp = RB_RESP_IDLE;
  cn->resp_owed = 0;
  cn->req_chunk.state = cn->resp_chunk.state = RB_CH_OFF;
  cn->chunk_from = 0;
  uint64_t seq;
  struct rb_event* e = reserve(local_len + peer_len, &seq);
  if (!e) return;
  fill(w, e, nr, fd, fd, ((uint64_t)local_len << 16) | peer_len, start, 0);
  copy_bytes((uint8_t*)(e + 1), local, local_len);
  copy_bytes((uint8_t*)(e + 1) + local_len, peer, peer_len);
  e->data_len = local_len + peer_len;
  publish(e, seq);
}

static void forget_context(uint32_t tid);

/* The stub stops following fd's requests (close, dup): the engine ends or keeps the exchanges in
 * flight, and the contexts they touch are no longer known here. */
static void unsync(long fd, int gone) {
  struct rb_conn* cn = &PRIV->conns[fd];
  if (cn->tid) forget_context(cn->tid);
  cn->sync = RB_SYNC_NONE;
  cn->resp = RB_RESP_OFF; /* a second descriptor would move the stream past this one's count */
  cn->req_chunk.state = RB_CH_OFF;
  if (gone) {
    cn->side = RB_SIDE_UNKNOWN;
    cn->tid = 0;
    cn->hdr_len = cn->hdr_sent = 0;
  }
}

static void closed(struct rb_who* w, long fd) {
  if (state_of(fd) == RB_FD_PASS || !mine(w)) return;
  uint64_t now = now_ns();
  report_lost(w, SYS_READ, fd, now);
  report_lost(w, SYS_WRITE, fd, now);
  PRIV->fd_state[fd] = RB_FD_PASS;
  PRIV->lost[fd][0] = PRIV->lost[fd][1] = 0;
  PRIV->quiet[fd] = 0;
  unsync(fd, 1);
  record_simple(w, SYS_CLOSE, fd, 0, 0);
}

/* The program's handler for SIGSYS that did not come from our filter. */
static void forward(int sig, struct rb_siginfo* info, void* context) {
  uint64_t handler = PRIV->app_sigsys[0];
  if (handler > 1) {
    ((void (*)(int, struct rb_siginfo*, void*))handler)(sig, info, context);
  } else if (handler == 0) {
    uint64_t dfl[4] = {0, 0, 0, 0};
    rb_syscall_fast(SYS_RT_SIGACTION, SIGSYS, (long)dfl, 0, 8, 0, 0);
    rb_syscall_fast(SYS_TGKILL, sys(SYS_GETPID, 0, 0, 0), sys(SYS_GETTID, 0, 0, 0), SIGSYS, 0, 0, 0);
  }
}

/* ---- Trace context decided in the stub (docs/fast-path.md, "Trace context in the stub") ----
 * The engine's correlation rule (docs/propagation.md) run here for the plain cases, so that a
 * request written on an outbound connection gets its header without an upcall: a request head
 * read whole on an accepted connection becomes the reading thread's context, with ids drawn here
 * and handed to the engine in the event; a request head written whole on an outbound connection
 * gets `traceparent` before its blank line. Whatever the stub cannot follow (a head split over
 * reads, a response read, a thread's context restored or cleared by the engine) makes the thread's
 * context unknown here, and its next outbound request asks the engine as before; the answer
 * brings the engine's context back. */

static uint32_t ids_pid_mix(void) { return PRIV->pid * 0x9e3779b9u; }

/* 64 random-looking bits: a Weyl sequence through the SplitMix64 finalizer, with the pid mixed in
 * (a fork child continues its parent's sequence). Unique, not secret, like the engine's ids. */
static uint64_t next_id(void) {
  uint64_t z = __atomic_add_fetch(&PRIV->ids, 0x9e3779b97f4a7c15ull, __ATOMIC_RELAXED) ^ ((uint64_t)ids_pid_mix() << 32);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void put64(uint8_t* out, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) out[i] = (uint8_t)v;
}

static void new_span_id(uint8_t* out) {
  uint64_t v;
  do v = next_id();
  while (v == 0);
  put64(out, v);
}

static void new_trace_id(uint8_t* out) {
  put64(out, next_id());
  uint64_t low;
  do low = next_id();
  while (low == 0);
  put64(out + 8, low);
}

/* The engine's Sampler::sample, with the ratio as an integer bound. parent_flags < 0: a root. */
static int sampled(int parent_flags, const uint8_t* trace) {
  uint64_t v = 0;
  for (int i = 8; i < 16; i++) v = v << 8 | trace[i];
  int ratio = (v >> 11) < PRIV->ratio_below;
  switch (PRIV->sampler) {
    case RB_SAMPLER_ALWAYS_ON: return 1;
    case RB_SAMPLER_ALWAYS_OFF: return 0;
    case RB_SAMPLER_RATIO: return ratio;
    case RB_SAMPLER_PARENT_ALWAYS_ON: return parent_flags >= 0 ? parent_flags & 1 : 1;
    case RB_SAMPLER_PARENT_ALWAYS_OFF: return parent_flags >= 0 ? parent_flags & 1 : 0;
    default: return parent_flags >= 0 ? parent_flags & 1 : ratio;
  }
}

/* A trace that starts here: sampled as the engine's sample_root would (shedding included). */
static uint8_t root_flags(const uint8_t* trace, struct rb_decision* d) {
  if (!sampled(-1, trace)) return 0;
  if (__atomic_load_n(&SH->shed, __ATOMIC_RELAXED)) {
    d->shed = 1;
    return 0;
  }
  return 1;
}

/* A span's ids and sampled flag: a child of (trace, span, flags) when has_parent, else a new trace. */
static void draw_span(struct rb_decision* d, int has_parent, const uint8_t* trace, const uint8_t* span, uint8_t flags) {
  d->shed = 0;
  d->has_parent = has_parent ? 1 : 0;
  if (has_parent) {
    copy_bytes(d->trace, trace, 16);
    copy_bytes(d->parent, span, 8);
    d->flags = (uint8_t)sampled(flags, d->trace);
  } else {
    new_trace_id(d->trace);
    d->flags = root_flags(d->trace, d);
  }
  new_span_id(d->span);
}

/* The thread's context: set by its owner, made unknown by anyone (gen). */
static struct rb_thread* thread_slot(uint32_t tid) { return &PRIV->threads[tid % RB_THREADS]; }

static void forget_context(uint32_t tid) {
  struct rb_thread* t = thread_slot(tid);
  if (__atomic_load_n(&t->tid, __ATOMIC_ACQUIRE) == tid) __atomic_add_fetch(&t->gen, 1, __ATOMIC_SEQ_CST);
}

/* Sets the calling thread's context (has == 0: none), as of generation `gen`. */
static void set_context(uint32_t tid, uint32_t gen, int has, const uint8_t* trace, const uint8_t* span, uint8_t flags,
                        uint32_t req) {
  struct rb_thread* t = thread_slot(tid);
  if (__atomic_exchange_n(&t->busy, 1, __ATOMIC_ACQUIRE)) return; /* a trap nested in our own update */
  t->has = (uint32_t)has;
  t->req = req;
  t->flags = flags;
  if (has) {
    copy_bytes(t->trace, trace, 16);
    copy_bytes(t->span, span, 8);
  }
  __atomic_store_n(&t->valid_gen, gen, __ATOMIC_RELEASE);
  __atomic_store_n(&t->busy, 0, __ATOMIC_RELEASE);
}

/* The generation a context set now would belong to (taking the slot over if another thread has it:
 * whatever that thread knew is then unknown). */
static uint32_t context_gen(uint32_t tid) {
  struct rb_thread* t = thread_slot(tid);
  if (__atomic_load_n(&t->tid, __ATOMIC_ACQUIRE) != tid) {
    __atomic_store_n(&t->tid, tid, __ATOMIC_RELEASE);
    __atomic_add_fetch(&t->gen, 1, __ATOMIC_SEQ_CST);
  }
  return __atomic_load_n(&t->gen, __ATOMIC_SEQ_CST);
}

/* Copies the calling thread's context; 0 when the stub does not know it. */
static int get_context(uint32_t tid, struct rb_thread* out) {
  struct rb_thread* t = thread_slot(tid);
  if (__atomic_load_n(&t->tid, __ATOMIC_ACQUIRE) != tid) return 0;
  if (__atomic_exchange_n(&t->busy, 1, __ATOMIC_ACQUIRE)) return 0;
  uint32_t gen = __atomic_load_n(&t->gen, __ATOMIC_SEQ_CST);
  int ok = __atomic_load_n(&t->valid_gen, __ATOMIC_ACQUIRE) == gen;
  if (ok) {
    out->has = t->has;
    out->req = t->req;
    out->flags = t->flags;
    copy_bytes(out->trace, t->trace, 16);
    copy_bytes(out->span, t->span, 8);
  }
  __atomic_store_n(&t->busy, 0, __ATOMIC_RELEASE);
  return ok;
}


/* The first bytes a call reads or writes (its first non-empty buffer) and their length. */
static const uint8_t* first_bytes(long nr, long a2, long a3, uint64_t* len) {
  struct rb_iovec single;
  size_t count;
  const struct rb_iovec* iov = io_vector(nr, a2, a3, &single, &count);
  for (size_t i = 0; i < count && i < 1024; i++) {
    if (iov[i].len == 0) continue;
    *len = iov[i].len;
    return iov[i].base;
  }
  *len = 0;
  return 0;
}

/* Walks the call's bytes [from, to) through the chunk framing in *c, adding chunk data to *out
 * (when not null). Returns where the walk stopped: `to`, or where the body ended or the stub
 * stopped following it. */
static uint64_t walk_call(struct rb_chunk* c, long nr, long a2, long a3, uint64_t from, uint64_t to, struct rb_segs* out) {
  struct rb_iovec single;
  size_t count;
  const struct rb_iovec* iov = io_vector(nr, a2, a3, &single, &count);
  uint64_t off = 0;
  for (size_t i = 0; i < count && i < 1024 && off < to && chunk_following(c); i++) {
    uint64_t n = iov[i].len, lo = from > off ? from - off : 0;
    if (lo < n) {
      uint64_t hi = to - off < n ? to - off : n;
      uint64_t walked = chunk_walk(c, iov[i].base + lo, hi - lo, off + lo, out);
      if (walked < hi - lo) return off + lo + walked;
    }
    off += n;
  }
  return off < to ? off : to;
}

/* ---- Response framing (docs/fast-path.md, "Bodies as counts") ----
 * What the stub knows of the bytes of one call on a connection's response stream. */
struct rb_resp_plan {
  uint8_t kind;       /* RB_RESP_OFF: nothing; RB_RESP_BODY: a length; RB_RESP_CHUNKED: chunks */
  uint8_t head;       /* a response head starts the call */
  uint64_t body_from; /* where its body starts in the call */
  uint64_t end;       /* RB_RESP_BODY: where the response ends, from the call's first byte */
};

/* Where `len` bytes read or written on cn's response stream go (for a write, before it: len is
 * what it asks to send). Anything it does not follow turns the connection's framing off. */
static void frame_response(struct rb_conn* cn, long nr, long a2, long a3, uint64_t len, struct rb_resp_plan* p) {
  p->kind = RB_RESP_OFF;
  p->head = 0;
  p->body_from = 0;
  if (len == 0 || cn->resp == RB_RESP_OFF) return;
  if (cn->resp == RB_RESP_BODY && len <= cn->resp_owed) {
    p->kind = RB_RESP_BODY;
    p->end = cn->resp_owed;
    return;
  }
  if (cn->resp == RB_RESP_CHUNKED) {
    p->kind = RB_RESP_CHUNKED;
    return;
  }
  if (cn->resp == RB_RESP_WAIT || cn->resp == RB_RESP_WAIT_HEAD) {
    uint64_t first_len;
    const uint8_t* first = first_bytes(nr, a2, a3, &first_len);
    struct rb_head h;
    parse_response_head(first, first_len < len ? first_len : len, &h);
    uint64_t body = cn->resp == RB_RESP_WAIT_HEAD && h.end && h.plain ? 0 : response_body(&h);
    p->head = 1;
    p->body_from = h.end;
    if (body != RB_NO_LENGTH && h.end + body >= len) {
      p->kind = RB_RESP_BODY;
      p->end = h.end + body;
      return;
    }
    if (cn->resp == RB_RESP_WAIT && h.end && h.plain && h.chunked) {
      p->kind = RB_RESP_CHUNKED;
      return;
    }
  }
  /* Bytes no request asked for, the end of one response and more, a head split over calls, an
   * interim or close-delimited response: the engine follows those. */
  cn->resp = RB_RESP_OFF;
}

/* The call's ranges of body that go as counts (into *s), once `moved` of its bytes went; with
 * `commit`, the connection's framing moves past them (without, a write's plan is only looked at
 * before it is issued). */
static void response_segs(struct rb_conn* cn, const struct rb_resp_plan* p, long nr, long a2, long a3, uint64_t moved,
                          struct rb_segs* s, int commit) {
  s->n = 0;
  if (p->kind == RB_RESP_OFF || moved == 0) return;
  if (moved < p->body_from) { /* a head sent in part: the rest starts a call of its own */
    if (commit) cn->resp = RB_RESP_OFF;
    return;
  }
  if (p->kind == RB_RESP_BODY) {
    segs_from(s, p->body_from);
    segs_keep_long(s, RB_COUNT_MIN, moved);
    if (!commit) return;
    cn->resp_owed = p->end - moved;
    cn->resp = cn->resp_owed ? RB_RESP_BODY : RB_RESP_IDLE;
    return;
  }
  struct rb_chunk ahead = cn->resp_chunk, *c = commit ? &cn->resp_chunk : &ahead;
  if (p->head) c->state = RB_CH_SIZE;
  uint64_t at = walk_call(c, nr, a2, a3, p->body_from, moved, s);
  segs_keep_long(s, RB_COUNT_MIN, moved);
  if (!commit) return;
  if (c->state == RB_CH_DONE && at == moved)
    cn->resp = RB_RESP_IDLE;
  else if (chunk_following(c) && at == moved)
    cn->resp = RB_RESP_CHUNKED;
  else
    cn->resp = RB_RESP_OFF; /* a trailer field, chunk lines the stub does not read, or bytes past the end */
}

/* A request whose head the stub or the engine read is on its way: its response is framed when it
 * is the only one asked for. `next`: RB_RESP_WAIT, RB_RESP_WAIT_HEAD (a HEAD request), or
 * RB_RESP_OFF (one whose response the stub does not frame, as CONNECT's). */
static void request_sent(struct rb_conn* cn, uint8_t next) {
  cn->resp = cn->resp == RB_RESP_IDLE ? next : RB_RESP_OFF;
}

/* A read of `n` bytes on an accepted connection: follows the request framing and, where a request
 * head starts here and ends in this read, decides the SERVER span (into *d) and makes it the
 * reading thread's context. Whatever it cannot follow makes that context unknown. Puts into *s
 * the bytes read that are request body of a length its head or its chunks gave. */
static void server_read(struct rb_who* w, long nr, long fd, long a2, long a3, uint64_t n, struct rb_decision* d, struct rb_segs* s) {
  struct rb_conn* c = &PRIV->conns[fd];
  uint32_t tid = tid_of(w);
  s->n = 0;
  if (c->sync == RB_SYNC_BODY) {
    if (n <= c->owed) {
      c->owed -= n;
      if (c->owed == 0) c->sync = RB_SYNC_HEAD;
      segs_from(s, 0);
      return;
    }
    c->sync = RB_SYNC_NONE; /* a request pipelined right behind a body */
  }
  if (chunk_following(&c->req_chunk)) { /* more of a chunked body */
    uint64_t at = walk_call(&c->req_chunk, nr, a2, a3, 0, n, s);
    segs_keep_long(s, RB_COUNT_MIN, n);
    if (c->req_chunk.state == RB_CH_DONE && at == n) c->sync = RB_SYNC_HEAD; /* the next byte starts a request */
    if (at == n) return;
    c->req_chunk.state = RB_CH_OFF; /* a request behind the body, or chunk framing the stub does not follow */
    forget_context(tid);
    c->resp = RB_RESP_OFF;
    return;
  }
  c->tid = tid; /* whose context the response's end clears (req 0: a request the stub did not decide) */
  c->req = 0;
  if (c->sync != RB_SYNC_HEAD) {
    forget_context(tid);
    c->resp = RB_RESP_OFF;
    return;
  }
  uint64_t len;
  const uint8_t* first = first_bytes(nr, a2, a3, &len);
  if (!first) return;
  if (len > n) len = n;
  struct rb_head h;
  parse_head(first, len, &h);
  uint64_t body = h.chunked ? 0 : h.length == RB_NO_LENGTH ? 0 : h.length;
  c->sync = RB_SYNC_NONE;
  int whole = h.end != 0 && h.plain;
  if (whole && h.chunked) {
    c->req_chunk.state = RB_CH_SIZE;
    uint64_t at = walk_call(&c->req_chunk, nr, a2, a3, h.end, n, s);
    whole = at == n && c->req_chunk.state != RB_CH_OFF;
    segs_keep_long(s, RB_COUNT_MIN, n);
  }
  if (!whole || (!h.chunked && h.end + body < n)) {
    c->req_chunk.state = RB_CH_OFF;
    forget_context(tid); /* split over reads, pipelined, or something to leave to the engine */
    c->resp = RB_RESP_OFF;
    return;
  }
  request_sent(c, h.head ? RB_RESP_WAIT_HEAD : RB_RESP_WAIT);
  if (h.chunked) {
    if (c->req_chunk.state == RB_CH_DONE) c->sync = RB_SYNC_HEAD; /* the whole body came with its head */
  } else {
    c->owed = h.end + body - n;
    c->sync = c->owed ? RB_SYNC_BODY : RB_SYNC_HEAD;
    segs_from(s, h.end < n ? h.end : RB_NO_BODY); /* body read with its head */
    segs_keep_long(s, RB_COUNT_MIN, n);
  }
  if (h.carried || (h.tp && !h.tp_ok) || !PRIV->decide) {
    forget_context(tid);
    return;
  }
  uint32_t gen = context_gen(tid);
  d->kind = RB_DEC_SERVER;
  draw_span(d, h.tp, h.trace, h.span, h.flags);
  uint32_t req = __atomic_add_fetch(&PRIV->next_req, 1, __ATOMIC_RELAXED);
  c->tid = tid;
  c->req = req;
  set_context(tid, gen, 1, d->trace, d->span, d->flags, req);
}

/* A response read on an outbound connection: at its end the engine gives the request's writer back
 * the context it had when writing. That changes nothing while the writer's context is still that
 * one (a handler making calls one after another); otherwise the stub cannot tell when. */
static void response_read(struct rb_conn* cn) {
  if (cn->caller == 0) return; /* nothing to give back */
  struct rb_thread ctx;
  int same = cn->caller == 1 && get_context(cn->tid, &ctx) && ctx.has;
  for (int i = 0; same && i < 8; i++) same = ctx.span[i] == cn->caller_span[i];
  if (!same) forget_context(cn->tid);
}

/* A response written on an accepted connection: once the engine has seen its end, the thread that
 * read the request loses its context if it is still that request's. The stub does not follow
 * response framing, so that context is unknown from the first response byte on. */
static void server_write(long fd) {
  struct rb_conn* c = &PRIV->conns[fd];
  struct rb_thread ctx;
  if (c->tid && (!get_context(c->tid, &ctx) || ctx.req == c->req || ctx.req == 0)) forget_context(c->tid);
}

/* `n` bytes went out on fd by sendfile, which only a body can carry: the stub's framing moves past
 * them where they are body it expects, and stops following the connection where they are not. */
static void sent_from_file(long fd, uint64_t n) {
  struct rb_conn* cn = &PRIV->conns[fd];
  if (cn->side == RB_SIDE_SERVER) {
    if (cn->resp == RB_RESP_BODY && n <= cn->resp_owed) {
      cn->resp_owed -= n;
      if (cn->resp_owed == 0) cn->resp = RB_RESP_IDLE;
    } else if (cn->resp == RB_RESP_CHUNKED && cn->resp_chunk.state == RB_CH_DATA && n <= cn->resp_chunk.left) {
      cn->resp_chunk.left -= n;
      if (cn->resp_chunk.left == 0) cn->resp_chunk.state = RB_CH_DATA_END;
    } else {
      cn->resp = RB_RESP_OFF;
    }
  } else if (cn->side == RB_SIDE_CLIENT) {
    uint64_t quiet = PRIV->quiet[fd];
    if (quiet != RB_QUIET_UNTIL_READ && n <= quiet) {
      PRIV->quiet[fd] = quiet - n;
    } else if (quiet == RB_QUIET_UNTIL_READ && cn->req_chunk.state == RB_CH_DATA && n <= cn->req_chunk.left) {
      cn->req_chunk.left -= n;
      if (cn->req_chunk.left == 0) cn->req_chunk.state = RB_CH_DATA_END;
    } else {
      cn->req_chunk.state = RB_CH_OFF;
      if (quiet != RB_QUIET_UNTIL_READ) PRIV->quiet[fd] = 0;
      cn->sync = RB_SYNC_NONE;
      cn->resp = RB_RESP_OFF;
    }
    cn->pos += n;
  }
}

/* A write on an accepted connection: a response's body of known length goes to the engine as a
 * count (the head is copied). */
static long response_write(struct rb_who* w, struct rb_conn* cn, long nr, long a1, long a2, long a3, long a4, long a5, long a6,
                           uint64_t start) {
  uint64_t asked = write_len(nr, a2, a3);
  struct rb_resp_plan p;
  struct rb_segs s;
  frame_response(cn, nr, a2, a3, asked, &p);
  response_segs(cn, &p, nr, a2, a3, asked, &s, 0); /* where the first count would start */
  struct rb_claim c;
  claim_framed(w, &c, nr, a1, asked, &s, start);
  long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
  response_segs(cn, &p, nr, a2, a3, result > 0 ? (uint64_t)result : 0, &s, 1);
  return finish_framed_write(w, &c, nr, a1, a2, a3, a4, start, result, 0, &s);
}

static const char kHex[] = "0123456789abcdef";

static void put_hex(uint8_t* out, const uint8_t* in, int n) {
  for (int i = 0; i < n; i++) {
    out[2 * i] = (uint8_t)kHex[in[i] >> 4];
    out[2 * i + 1] = (uint8_t)kHex[in[i] & 15];
  }
}

/* "traceparent: 00-<trace>-<span>-<flags>\r\n": 70 bytes. */
static uint16_t traceparent_line(uint8_t* out, const struct rb_decision* d) {
  const char* name = "traceparent: 00-";
  uint16_t at = 0;
  while (name[at]) {
    out[at] = (uint8_t)name[at];
    at++;
  }
  put_hex(out + at, d->trace, 16);
  at += 32;
  out[at++] = '-';
  put_hex(out + at, d->span, 8);
  at += 16;
  out[at++] = '-';
  put_hex(out + at, &d->flags, 1);
  at += 2;
  out[at++] = '\r';
  out[at++] = '\n';
  return at;
}

#define RB_STUB_IOV_MAX 16

/* Issues the write with `len` bytes of `extra` put in at byte `at` of the program's bytes (at <= the
 * bytes asked); *header gets how many of them went out. Returns the program's bytes sent, or -errno.
 * At most RB_STUB_IOV_MAX of the program's iovecs go in one call: a call with more is sent in
 * part, as the kernel itself may, and the program writes the rest again. */
static long write_with(long nr, long a1, long a2, long a3, long a4, long a5, long a6, uint64_t at, const uint8_t* extra,
                       uint64_t len, uint64_t* header) {
  struct rb_iovec single, out[RB_STUB_IOV_MAX + 2];
  size_t count, k = 0, used = 0;
  const struct rb_iovec* iov = io_vector(nr, a2, a3, &single, &count);
  uint64_t off = 0;
  int placed = 0;
  *header = 0;
  for (size_t i = 0; i < count && used < RB_STUB_IOV_MAX; i++, used++) {
    uint64_t n = iov[i].len;
    if (!placed && at <= off + n) {
      uint64_t head = at - off;
      if (head) out[k++] = (struct rb_iovec){iov[i].base, head};
      out[k++] = (struct rb_iovec){extra, len};
      if (n - head) out[k++] = (struct rb_iovec){iov[i].base + head, n - head};
      placed = 1;
    } else if (n) {
      out[k++] = iov[i];
    }
    off += n;
  }
  if (!placed && used == count) { /* at == all the bytes asked */
    out[k++] = (struct rb_iovec){extra, len};
    placed = 1;
  }
  long sent;
  if (nr == SYS_WRITE || nr == SYS_WRITEV) {
    sent = rb_syscall_fast(SYS_WRITEV, a1, (long)out, (long)k, 0, 0, 0);
  } else {
    /* The kernel's msghdr: name, namelen, iov, iovlen, control, controllen, flags. */
    uint64_t msg[7] = {(uint64_t)a5, (uint64_t)(unsigned)a6, (uint64_t)out, k, 0, 0, 0};
    long flags = a4;
    if (nr == SYS_SENDMSG) {
      const uint64_t* m = (const uint64_t*)a2;
      msg[0] = m[0];
      msg[1] = m[1];
      msg[4] = m[4];
      msg[5] = m[5];
      flags = a3;
    }
    sent = rb_syscall_fast(SYS_SENDMSG, a1, (long)msg, flags, 0, 0, 0);
  }
  if (sent <= 0 || !placed) return sent;
  if ((uint64_t)sent > at) {
    *header = (uint64_t)sent <= at + len ? (uint64_t)sent - at : len;
    sent -= (long)*header;
  }
  return sent;
}

/* `app` of the program's bytes went out on an outbound connection from stream position cn->pos
 * (not yet counted): the chunked request body among them moves the connection's chunk cursor, and
 * its chunk data goes into *out (when not null), as ranges of the call. */
static void client_chunks(struct rb_conn* cn, long nr, long a2, long a3, uint64_t app, struct rb_segs* out) {
  if (!chunk_following(&cn->req_chunk) || app == 0) return;
  uint64_t from = cn->chunk_from > cn->pos ? cn->chunk_from - cn->pos : 0;
  if (from < app) walk_call(&cn->req_chunk, nr, a2, a3, from, app, out);
}

/* After a write the stub put (part of) a header in: where the request stream is. */
static void after_own_write(long fd, struct rb_conn* cn) {
  if (cn->hdr_len) {
    PRIV->quiet[fd] = 0; /* the rest of the header goes first, in the next write */
    cn->sync = RB_SYNC_NONE;
  } else if (cn->msg_end == RB_NO_LENGTH) {
    PRIV->quiet[fd] = RB_QUIET_UNTIL_READ; /* a chunked body: it ends before the response is read */
    cn->sync = RB_SYNC_NONE;
  } else {
    PRIV->quiet[fd] = cn->pos < cn->msg_end ? cn->msg_end - cn->pos : 0;
    cn->sync = cn->pos <= cn->msg_end ? RB_SYNC_HEAD : RB_SYNC_NONE; /* past it: a second request in one write */
    if (cn->pos > cn->msg_end) cn->resp = RB_RESP_OFF;
  }
}

/* A write carrying (the rest of) the header in cn->hdr, at stream position cn->hdr_at. */
static long write_own_header(struct rb_who* w, struct rb_claim* c, struct rb_conn* cn, long nr, long a1, long a2, long a3,
                             long a4, long a5, long a6, uint64_t asked, uint64_t start) {
  uint64_t at = cn->hdr_at - cn->pos, header = 0;
  if (at > asked) at = asked; /* cannot be: the program writes on from what it was told went out */
  long app = write_with(nr, a1, a2, a3, a4, a5, a6, at, cn->hdr + cn->hdr_sent, cn->hdr_len - cn->hdr_sent, &header);
  if (c->e && c->e->dec.kind == RB_DEC_CLIENT) {
    if (app <= 0 && header == 0) {
      c->e->dec.kind = RB_DEC_NONE; /* nothing went out: the next try decides again */
      cn->hdr_len = 0;
      cn->sync = RB_SYNC_HEAD;
      if (cn->resp == RB_RESP_WAIT || cn->resp == RB_RESP_WAIT_HEAD) cn->resp = RB_RESP_IDLE; /* decide_write made it so */
      cn->req_chunk.state = RB_CH_OFF;
      return finish_write(w, c, nr, a1, a2, a3, a4, start, app, 0);
    }
    c->e->dec.header_sent = (uint16_t)header;
  }
  cn->hdr_sent = (uint16_t)(cn->hdr_sent + header);
  if (cn->hdr_sent >= cn->hdr_len) cn->hdr_len = cn->hdr_sent = 0;
  if (app > 0) {
    client_chunks(cn, nr, a2, a3, (uint64_t)app, 0);
    cn->pos += (uint64_t)app;
  }
  after_own_write(a1, cn);
  return finish_write(w, c, nr, a1, a2, a3, a4, start, app, 0);
}

/* A request head at the start of a write on an outbound connection, decided here (its bytes are
 * in the claimed event). 0: left to the engine. */
static int decide_write(struct rb_who* w, struct rb_claim* c, struct rb_conn* cn, long nr, long a1, long a2, long a3, long a4,
                        long a5, long a6, uint64_t asked, uint64_t start, long* result) {
  /* More iovecs than the stub rebuilds in one call: the engine rebuilds any number (a blocking
   * socket's write must not come back short). */
  struct rb_iovec single;
  size_t count;
  io_vector(nr, a2, a3, &single, &count);
  if (count > RB_STUB_IOV_MAX) return 0;
  struct rb_head h;
  parse_head((const uint8_t*)(c->e + 1), c->gathered, &h);
  /* The program's own context, a blank line that is a bare LF: the engine's (rarer) cases. */
  if (h.end == 0 || !h.plain || !h.crlf || h.context) return 0;
  struct rb_thread ctx;
  uint32_t tid = tid_of(w);
  if (!get_context(tid, &ctx)) return 0;
  struct rb_decision* d = &c->e->dec;
  draw_span(d, ctx.has, ctx.trace, ctx.span, ctx.flags);
  d->kind = RB_DEC_CLIENT;
  cn->caller = ctx.has ? 1 : 0;
  copy_bytes(cn->caller_span, ctx.span, 8);
  cn->hdr_len = traceparent_line(cn->hdr, d);
  cn->hdr_sent = 0;
  cn->hdr_at = cn->pos + h.end - 2; /* before the blank line */
  cn->msg_end = h.chunked ? RB_NO_LENGTH : cn->pos + h.end + (h.length == RB_NO_LENGTH ? 0 : h.length);
  request_sent(cn, h.head ? RB_RESP_WAIT_HEAD : RB_RESP_WAIT);
  cn->req_chunk.state = h.chunked ? RB_CH_SIZE : RB_CH_OFF;
  cn->chunk_from = cn->pos + h.end;
  d->header_len = cn->hdr_len;
  d->header_sent = 0;
  *result = write_own_header(w, c, cn, nr, a1, a2, a3, a4, a5, a6, asked, start);
  return 1;
}

/* A write on an outbound connection. A request head at a known start is decided here when the
 * thread's context is known (decide_write); otherwise the engine may rewrite it to carry a header
 * (one upcall). Its event is claimed first, so the engine plans with everything before it in the
 * ring; the rewritten write's outcome goes into that event, with how much of the header went out.
 * The bytes go into the event before the upcall and the rb_call after them, so the engine reads
 * both, and writes its answer, in shared memory. */
static long client_write(struct rb_who* w, long nr, long a1, long a2, long a3, long a4, long a5, long a6) {
  uint64_t start = now_ns();
  struct rb_conn* cn = &PRIV->conns[a1];
  uint64_t quiet = PRIV->quiet[a1], asked = write_len(nr, a2, a3);
  if (cn->hdr_len && mine(w)) {
    struct rb_claim c;
    claim_write(w, &c, nr, a1, asked, RB_EVENT_MAX_DATA, 0, start);
    return write_own_header(w, &c, cn, nr, a1, a2, a3, a4, a5, a6, asked, start);
  }
  if (quiet == RB_QUIET_UNTIL_READ && chunk_following(&cn->req_chunk) && mine(w)) {
    /* A chunked body: its chunk data goes as counts, its chunk lines are copied. Where the first
     * count starts decides what the event claimed before the call carries. */
    struct rb_chunk ahead = cn->req_chunk;
    struct rb_segs s;
    s.n = 0;
    uint64_t from = cn->chunk_from > cn->pos ? cn->chunk_from - cn->pos : 0;
    if (from < asked) walk_call(&ahead, nr, a2, a3, from, asked, &s);
    segs_keep_long(&s, RB_COUNT_MIN, asked);
    struct rb_claim c;
    claim_framed(w, &c, nr, a1, asked, &s, start);
    long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
    s.n = 0;
    if (result > 0) {
      client_chunks(cn, nr, a2, a3, (uint64_t)result, &s);
      segs_keep_long(&s, RB_COUNT_MIN, (uint64_t)result);
      cn->pos += (uint64_t)result;
    }
    return finish_framed_write(w, &c, nr, a1, a2, a3, a4, start, result, 0, &s);
  }
  if (quiet && asked <= quiet) {
    /* Body the engine said the request still owes: it cannot start a head, no upcall. Of a known
     * length, the engine skips it by its count: its bytes are not copied either. */
    long result = recorded_write(w, nr, a1, a2, a3, a4, a5, a6, asked, quiet != RB_QUIET_UNTIL_READ ? 0 : RB_EVENT_MAX_DATA, start);
    if (result > 0) {
      if (quiet != RB_QUIET_UNTIL_READ) PRIV->quiet[a1] = quiet - (uint64_t)result;
      cn->pos += (uint64_t)result;
    }
    return result;
  }
  PRIV->quiet[a1] = 0;
  int at_head = quiet == 0 && cn->sync == RB_SYNC_HEAD && cn->peer_ok && PRIV->decide;
  cn->sync = RB_SYNC_NONE;
  /* Room for the rebuilt iovec array: the program's and two more (IOV_MAX at most: more fails). */
  uint64_t iovecs = nr == SYS_WRITEV ? (uint64_t)a3 : nr == SYS_SENDMSG ? (uint64_t)((const struct rb_msghdr*)a2)->iovlen : 1;
  uint32_t more = (uint32_t)((iovecs < 1024 ? iovecs : 1024) + 2) * (uint32_t)sizeof(struct rb_iovec);
  struct rb_claim c;
  uint32_t extra = (uint32_t)sizeof(struct rb_call) + more;
  claim_write(w, &c, nr, a1, asked, RB_EVENT_MAX_DATA - extra - 8, extra, start);
  if (!c.e) {
    cn->resp = RB_RESP_OFF; /* a request may start in these bytes, unseen */
    cn->req_chunk.state = RB_CH_OFF;
    return finish_write(w, &c, nr, a1, a2, a3, a4, start, rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6), 0);
  }
  uint32_t tid = tid_of(w);
  cn->tid = tid; /* the engine gives the writer its context back once the response is read */
  uint8_t* data = (uint8_t*)(c.e + 1);
  c.gathered = gather(nr, a2, a3, 0, data, c.first);
  long decided;
  if (at_head && decide_write(w, &c, cn, nr, a1, a2, a3, a4, a5, a6, asked, start, &decided)) return decided;
  uint32_t gen = context_gen(tid);
  struct rb_call* call = (struct rb_call*)(data + ((c.first + 7) & ~7u));
  call->nr = nr;
  call->args[0] = (uint64_t)a1, call->args[1] = (uint64_t)a2, call->args[2] = (uint64_t)a3;
  call->args[3] = (uint64_t)a4, call->args[4] = (uint64_t)a5, call->args[5] = (uint64_t)a6;
  call->inject_at = call->inject_len = call->quiet = 0;
  call->boundary = call->peer_ok = call->ctx_state = 0;
  call->resp = RB_RESP_ANSWER_OFF; /* unless the engine answers */
  call->chunk_at = UINT32_MAX;
  call->start_ns = start;
  call->data = (uint64_t)data;
  call->data_len = c.gathered;
  call->scratch_len = RB_CALL_SCRATCH + more;
  long verdict = rb_syscall_upcall(RB_UPCALL_NR, RB_UP_WRITE, (long)call, PRIV->pid, 0, 0, 0);
  if (verdict == 2) {
    PRIV->fd_state[a1] = RB_FD_RECORD; /* nothing to inject any more */
    cn->resp = RB_RESP_OFF;           /* nor requests followed */
    cn->req_chunk.state = RB_CH_OFF;
    return finish_write(w, &c, nr, a1, a2, a3, a4, start, rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6), 0);
  }
  /* What the engine knows, for the stub's own decisions on this descriptor from now on. */
  cn->peer_ok = (uint8_t)(call->peer_ok && verdict >= 0);
  if (call->ctx_state && verdict >= 0) set_context(tid, gen, call->ctx_state == 2, call->ctx_trace, call->ctx_span, call->ctx_flags, 0);
  if (call->ctx_head || verdict < 0) {
    cn->caller = verdict < 0 || call->ctx_state == 0 ? 2 : call->ctx_state == 2 ? 1 : 0;
    copy_bytes(cn->caller_span, call->ctx_span, 8);
  }
  long app;
  uint64_t header = 0, len = 0;
  if (verdict != 1) {
    app = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
  } else {
    long sent = rb_syscall_fast(call->nr, (long)call->args[0], (long)call->args[1], (long)call->args[2], (long)call->args[3],
                                (long)call->args[4], (long)call->args[5]);
    /* The program's bytes and the header's among those sent (the engine's split_sent). */
    uint64_t at = call->inject_at;
    len = call->inject_len;
    app = sent;
    if (sent > 0 && (uint64_t)sent > at) {
      header = (uint64_t)sent <= at + len ? (uint64_t)sent - at : len;
      app = sent - (long)header;
    }
  }
  if (verdict >= 0 && (app > 0 || header > 0) && call->resp != RB_RESP_ANSWER_NONE) {
    request_sent(cn, call->resp == RB_RESP_ANSWER_ONE ? RB_RESP_WAIT : call->resp == RB_RESP_ANSWER_HEAD ? RB_RESP_WAIT_HEAD : RB_RESP_OFF);
    /* Where its chunked body starts, if it has one: the stub follows its chunks from there. */
    cn->req_chunk.state = call->chunk_at != UINT32_MAX ? RB_CH_SIZE : RB_CH_OFF;
    cn->chunk_from = cn->pos + call->chunk_at;
  }
  /* Sent whole: what follows is as the engine saw it. Otherwise the next write asks again. */
  if (verdict >= 0 && app >= 0 && (uint64_t)app == asked && header == len) {
    PRIV->quiet[a1] = call->quiet;
    cn->sync = call->boundary ? RB_SYNC_HEAD : RB_SYNC_NONE;
  }
  if (app > 0) {
    client_chunks(cn, nr, a2, a3, (uint64_t)app, 0);
    cn->pos += (uint64_t)app;
  }
  return finish_write(w, &c, nr, a1, a2, a3, a4, start, app, verdict == 1 ? RB_EV_REWRITTEN | (header << RB_EV_HEADER_SHIFT) : 0);
}

/* ---- Patched call sites (docs/fast-path.md, "Patched call sites") ----
 * A trap costs the program a signal frame built and torn down by the kernel (~4 us in a busy
 * server). Once the engine has checked that the instruction before a trapping syscall instruction
 * is a real one of its function (an ELF symbol, a linear decode of it, no branch into its middle)
 * and can run elsewhere unchanged (abi.h, "Call sites"), it becomes a jump to a trampoline that
 * runs it, calls rb_direct and jumps back behind the syscall instruction: one of 5 bytes or more
 * becomes `jmp rel32`; a shorter one `jmp rel8` to a `jmp rel32` in dead padding the engine chose
 * (the cave). The syscall instruction itself stays, so code jumping straight to it still traps. */

#define SYS_MMAP 9
#define SYS_MPROTECT 10
#define PROT_READ 1
#define PROT_WRITE 2
#define PROT_EXEC 4
#define MAP_PRIVATE 2
#define MAP_ANONYMOUS 0x20
#define MAP_FIXED_NOREPLACE 0x100000
#define RB_SITE_CONTEXT 16 /* bytes before a syscall instruction sent with its proposal */

/* The syscalls a trampoline may carry: handled without the signal's context, and hot (rb_direct_go
 * has the same list as a bit mask). */
static int patchable(long nr) {
  switch (nr) {
    case SYS_READ: case SYS_WRITE: case SYS_READV: case SYS_WRITEV: case SYS_RECVFROM: case SYS_SENDTO:
    case SYS_RECVMSG: case SYS_SENDMSG: case SYS_ACCEPT: case SYS_ACCEPT4: case SYS_CONNECT: case SYS_CLOSE:
      return 1;
    default:
      return 0;
  }
}

static uint32_t site_hash(uint64_t addr) { return (uint32_t)((addr * 0x9e3779b97f4a7c15ull) >> 54) % RB_SITES; }

/* The shared verdict slot of a site, claimed if it has none; NULL when the table is full. */
static struct rb_site* shared_site(uint64_t addr) {
  uint32_t h = site_hash(addr);
  for (uint32_t i = 0; i < RB_SITES; i++) {
    struct rb_site* s = &SH->sites[(h + i) % RB_SITES];
    uint64_t seen = __atomic_load_n(&s->addr, __ATOMIC_ACQUIRE);
    if (seen == 0) {
      uint64_t expected = 0;
      if (__atomic_compare_exchange_n(&s->addr, &expected, addr, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return s;
      seen = expected;
    }
    if (seen == addr) return s;
  }
  return 0;
}

/* This address space's record of a site, if it has one (read only: any thread may look). */
static const struct rb_patched* known_site(uint64_t addr) {
  uint32_t h = site_hash(addr);
  for (uint32_t i = 0; i < RB_SITES; i++) {
    const struct rb_patched* p = &PRIV->patched[(h + i) % RB_SITES];
    if (p->addr == addr || p->addr == 0) return p->addr ? p : 0;
  }
  return 0;
}

/* This address space's record of a site, made if it has none (under patch_lock). */
static struct rb_patched* private_site(uint64_t addr) {
  uint32_t h = site_hash(addr);
  for (uint32_t i = 0; i < RB_SITES; i++) {
    struct rb_patched* p = &PRIV->patched[(h + i) % RB_SITES];
    if (p->addr == addr) return p;
    if (p->addr == 0) {
      p->addr = addr;
      p->state = RB_PATCH_NONE;
      return p;
    }
  }
  return 0;
}

static uint64_t distance(uint64_t a, uint64_t b) { return a > b ? a - b : b - a; }

/* Within reach of a rel32 jump from the site and back, whole zone included. */
static int reachable(uint64_t zone, uint64_t site) {
  return distance(zone, site) < 0x7ff00000ull && distance(zone + RB_ZONE_SIZE, site) < 0x7ff00000ull;
}

static void store8(uint64_t at, uint8_t v) { __asm__ volatile("movb %0, (%1)" ::"q"(v), "r"(at) : "memory"); }
static void store16(uint64_t at, uint16_t v) { __asm__ volatile("movw %0, (%1)" ::"r"(v), "r"(at) : "memory"); }

/* Room for one trampoline within reach of the site: in a zone this process has, or in a new one
 * mapped where the engine found free space. 0: none. */
static uint64_t trampoline_slot(uint64_t site, uint64_t hint) {
  struct rb_zone* free_zone = 0;
  for (uint32_t i = 0; i < RB_ZONES; i++) {
    struct rb_zone* z = &PRIV->zones[i];
    if (z->base == 0) {
      if (!free_zone) free_zone = z;
      continue;
    }
    if (z->used + RB_TRAMPOLINE_SIZE <= RB_ZONE_SIZE && reachable(z->base, site)) {
      uint64_t at = z->base + z->used;
      z->used += RB_TRAMPOLINE_SIZE;
      return at;
    }
  }
  if (!free_zone || hint == 0 || (hint & 4095) || !reachable(hint, site)) return 0;
  long at = rb_syscall_fast(SYS_MMAP, (long)hint, RB_ZONE_SIZE, PROT_READ | PROT_EXEC,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (at != (long)hint) return 0; /* taken meanwhile (an old kernel may place it elsewhere: left unused) */
  free_zone->base = hint;
  free_zone->used = RB_TRAMPOLINE_SIZE;
  return hint;
}

static void put_rel32(uint8_t* at, uint64_t from_next, uint64_t to) {
  uint32_t rel = (uint32_t)(to - from_next);
  for (int i = 0; i < 4; i++) at[i] = (uint8_t)(rel >> (8 * i));
}

/* The trampoline: the site's own instruction (it may set eax); lea -128(%rsp),%rsp (the red
 * zone); movabs $rb_direct,%r11; call *%r11; lea 128(%rsp),%rsp; jmp behind the syscall
 * instruction; and the exit for a syscall rb_direct declines: lea 128(%rsp),%rsp; jmp to the
 * syscall instruction. A Go site's (RB_SITE_GO) is the same with leas of 0 (Go keeps nothing
 * below its stack pointer) and rb_direct_go. Written while its zone is writable. */
static void write_trampoline(uint64_t at, uint64_t sys, uint32_t len, uint32_t kind) {
  uint8_t* t = (uint8_t*)at;
  const uint8_t red_zone = kind == RB_SITE_GO ? 0x00 : 0x80;
  const uint8_t below[5] = {0x48, 0x8d, 0x64, 0x24, (uint8_t)(0x100 - red_zone)};
  static const uint8_t call[3] = {0x41, 0xff, 0xd3};
  const uint8_t above[8] = {0x48, 0x8d, 0xa4, 0x24, red_zone, 0x00, 0x00, 0x00};
  uint64_t entry;
  /* RIP-relative: the blob is linked at 0 and runs at RB_STUB_ADDR (a plain &rb_direct may be
   * resolved by the linker to its link-time address). */
  if (kind == RB_SITE_GO)
    __asm__("lea rb_direct_go(%%rip), %0" : "=r"(entry));
  else
    __asm__("lea rb_direct(%%rip), %0" : "=r"(entry));
  uint32_t n = 0;
  copy_bytes(t, (const uint8_t*)(sys - len), len), n += len;
  copy_bytes(t + n, below, 5), n += 5;
  t[n++] = 0x49, t[n++] = 0xbb;
  for (int i = 0; i < 8; i++) t[n++] = (uint8_t)(entry >> (8 * i));
  copy_bytes(t + n, call, 3), n += 3;
  copy_bytes(t + n, above, 8), n += 8; /* the return address: the declined exit is 13 bytes on */
  t[n++] = 0xe9;
  put_rel32(t + n, at + n + 4, sys + 2), n += 4;
  copy_bytes(t + n, above, 8), n += 8;
  t[n++] = 0xe9;
  put_rel32(t + n, at + n + 4, sys), n += 4;
  for (; n < RB_TRAMPOLINE_SIZE; n++) t[n] = 0xcc;
}

static long protect(uint64_t page, uint32_t prot) { return rb_syscall_fast(SYS_MPROTECT, (long)page, 4096, prot, 0, 0, 0); }

/* Writes the jump over the site's instruction, the way JITs patch code other threads may be
 * running. A 5-byte `mov` in three stores: `jmp .` over its first two bytes (a thread arriving
 * now waits there), the jump's last three bytes, then its first two. A 2-byte `xor`: its cave's
 * `jmp rel32` first (dead bytes, nobody runs them), then `jmp rel8` in one store. Signals are
 * blocked by the caller, or a handler reaching the site on this thread would wait for itself.
 * 0: a page could not be written. */
static int rewrite_site(struct rb_patched* p) {
  uint64_t site = p->addr - p->len, page = site & ~4095ull;
  if (p->len < 5) {
    uint64_t cave_page = p->cave & ~4095ull;
    uint8_t jump[5];
    jump[0] = 0xe9;
    put_rel32(jump + 1, p->cave + 5, p->trampoline);
    if (protect(cave_page, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) return 0;
    for (int i = 0; i < 5; i++) store8(p->cave + (uint64_t)i, jump[i]);
    if (cave_page != page) {
      protect(cave_page, p->prot);
      if (protect(page, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) return 0;
    }
    store16(site, (uint16_t)(0xeb | (((p->cave - (site + 2)) & 0xff) << 8)));
    protect(page, p->prot);
    p->state = RB_PATCH_DONE;
    return 1;
  }
  uint8_t rel[4];
  put_rel32(rel, site + 5, p->trampoline);
  if (protect(page, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) return 0;
  p->state = RB_PATCH_WRITING;
  store16(site, 0xfeeb);
  store8(site + 2, rel[1]);
  store8(site + 3, rel[2]);
  store8(site + 4, rel[3]);
  store16(site, (uint16_t)(0xe9 | (rel[0] << 8)));
  protect(page, p->prot);
  p->state = RB_PATCH_DONE;
  return 1;
}

static int patch_site(struct rb_patched* p, const struct rb_site* s) {
  uint32_t len = s->len;
  uint64_t site = p->addr - len;
  /* The engine's answer, checked where a mistake would write the wrong bytes: the instruction is
   * in the syscall's page, its first two bytes in one cache line, a cave within a short jump. */
  if (len < 2 || len > 15 || (site >> 12) != (p->addr >> 12) || (site & 63) == 63 ||
      (s->kind != RB_SITE_C && s->kind != RB_SITE_GO) ||
      (len < 5 && (s->cave == 0 || distance(s->cave, site + 2) > 120)))
    return 0;
  uint64_t slot = trampoline_slot(site, s->zone);
  if (!slot) return 0;
  uint64_t zone_page = slot & ~4095ull;
  if (protect(zone_page, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) return 0;
  write_trampoline(slot, p->addr, len, s->kind);
  protect(zone_page, PROT_READ | PROT_EXEC);
  p->trampoline = slot;
  p->prot = s->prot;
  p->cave = s->cave;
  p->len = len;
  uint64_t all = ~(1ull << (SIGSYS - 1)), old = 0;
  rb_syscall_fast(SYS_RT_SIGPROCMASK, 0 /* SIG_BLOCK */, (long)&all, (long)&old, 8, 0, 0);
  int done = rewrite_site(p);
  rb_syscall_fast(SYS_RT_SIGPROCMASK, 2 /* SIG_SETMASK */, (long)&old, 0, 8, 0, 0);
  return done;
}

/* After a trap: is its call site one to patch, and may it be patched yet? call_addr is behind
 * the syscall instruction. */
static void consider_site(uint64_t call_addr, long nr) {
  uint64_t sys = call_addr - 2;
  if (!patchable(nr) || (call_addr & 4095) < 2) return;
  /* Decided here already (refused, or patched but reached by a jump straight to the syscall):
   * nothing to do, and no syscall spent finding out. */
  const struct rb_patched* known = known_site(sys);
  if (known && known->state != RB_PATCH_NONE) return;
  struct rb_who who = {0};
  if (!mine(&who)) return; /* a vfork child shares the parent's code: the parent patches it */
  uint32_t unlocked = 0;
  if (!__atomic_compare_exchange_n(&PRIV->patch_lock, &unlocked, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return;
  struct rb_patched* p = private_site(sys);
  struct rb_site* s = p && p->state == RB_PATCH_NONE ? shared_site(sys) : 0;
  if (s) {
    uint32_t state = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
    if (state == RB_SITE_NEW &&
        __atomic_compare_exchange_n(&s->state, &state, RB_SITE_ASKED, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      uint32_t before = (sys & 4095) < RB_SITE_CONTEXT ? (uint32_t)(sys & 4095) : RB_SITE_CONTEXT;
      uint64_t seq;
      struct rb_event* e = reserve(before, &seq);
      if (e) {
        fill(&who, e, RB_EV_SITE, (long)(s - SH->sites), (long)sys, (uint64_t)nr, now_ns(), 0);
        copy_bytes((uint8_t*)(e + 1), (const uint8_t*)(sys - before), before);
        e->data_len = before;
        publish(e, seq);
      } else {
        __atomic_store_n(&s->state, RB_SITE_NEW, __ATOMIC_RELEASE); /* ring full: ask again later */
      }
    } else if (state == RB_SITE_REFUSED) {
      p->state = RB_PATCH_REFUSED;
    } else if (state == RB_SITE_APPROVED) {
      p->state = patch_site(p, s) ? RB_PATCH_DONE : RB_PATCH_REFUSED;
    }
  }
  __atomic_store_n(&PRIV->patch_lock, 0, __ATOMIC_RELEASE);
}

/* In a fork child: a site another thread of the parent was rewriting has no writer here. */
static void finish_patches_after_fork(void) {
  for (uint32_t i = 0; i < RB_SITES; i++)
    if (PRIV->patched[i].state == RB_PATCH_WRITING) rewrite_site(&PRIV->patched[i]);
  PRIV->patch_lock = 0;
}

static long handle(long nr, long a1, long a2, long a3, long a4, long a5, long a6, struct rb_ucontext* uc) {
  const uint64_t sigsys_bit = 1ull << (SIGSYS - 1);
  struct rb_who who = {0};
  struct rb_who* w = &who;
  switch (nr) {
    case SYS_READ:
    case SYS_READV:
    case SYS_RECVFROM:
    case SYS_RECVMSG:
    case SYS_WRITE:
    case SYS_WRITEV:
    case SYS_SENDTO:
    case SYS_SENDMSG: {
      uint8_t state = state_of(a1);
      if (state == RB_FD_PASS) return rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
      int write = is_write_nr(nr);
      if (write && state == RB_FD_CLIENT) return client_write(w, nr, a1, a2, a3, a4, a5, a6);
      uint64_t start = now_ns();
      struct rb_conn* cn = &PRIV->conns[a1];
      if (write) {
        if (cn->side == RB_SIDE_SERVER && mine(w)) {
          server_write(a1);
          return response_write(w, cn, nr, a1, a2, a3, a4, a5, a6, start);
        }
        return recorded_write(w, nr, a1, a2, a3, a4, a5, a6, write_len(nr, a2, a3), RB_EVENT_MAX_DATA, start);
      }
      long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
      struct rb_decision d;
      d.kind = RB_DEC_NONE;
      struct rb_segs body;
      body.n = 0;
      if (result > 0 && !((nr == SYS_RECVFROM || nr == SYS_RECVMSG) && (io_flags(nr, a3, a4) & 2 /* MSG_PEEK */)) && mine(w)) {
        if (cn->side == RB_SIDE_SERVER) {
          server_read(w, nr, a1, a2, a3, (uint64_t)result, &d, &body);
        } else if (cn->side == RB_SIDE_CLIENT) {
          /* A response: the engine gives its writer back the context it had, at the response's end. */
          if (cn->tid) response_read(cn);
          if (PRIV->quiet[a1] == RB_QUIET_UNTIL_READ) PRIV->quiet[a1] = 0;
          struct rb_resp_plan p;
          frame_response(cn, nr, a2, a3, (uint64_t)result, &p);
          response_segs(cn, &p, nr, a2, a3, (uint64_t)result, &body, 1);
        } else {
          forget_context(tid_of(w));
        }
      }
      record_io(w, nr, a1, result, a2, a3, a4, start, 0, &d, &body);
      return result;
    }
    case SYS_ACCEPT:
    case SYS_ACCEPT4: {
      uint64_t start = now_ns();
      long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
      if (result >= 0) {
        closed(w, result); /* a number we still thought in use */
        new_connection(w, nr, result, RB_FD_RECORD, 0, 0, start);
      }
      return result;
    }
    case SYS_CONNECT: {
      uint64_t start = now_ns();
      long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
      if ((result == 0 || result == -EINPROGRESS) && state_of(a1) == RB_FD_PASS)
        new_connection(w, nr, a1, PRIV->inject ? RB_FD_CLIENT : RB_FD_RECORD, (const uint8_t*)a2, (unsigned)a3, start);
      return result;
    }
    case SYS_SENDFILE: {
      /* Body bytes from a file (Go's net/http and Java's transferTo serve files so): their count. */
      if (state_of(a1) == RB_FD_PASS) return rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
      uint64_t start = now_ns();
      long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
      if (result > 0 && mine(w)) {
        sent_from_file(a1, (uint64_t)result);
        if (!report_lost(w, nr, a1, start) || !count_event(w, nr, a1, (uint64_t)result, 0, start)) lose(nr, a1, (uint64_t)result);
      }
      return result;
    }
    case SYS_CLOSE: {
      long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
      if (result == 0 || result == -EINTR) closed(w, a1); /* Linux frees the number either way */
      return result;
    }
    case SYS_CLOSE_RANGE: {
      long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
      if (result == 0 && !(a3 & 4 /* CLOSE_RANGE_CLOEXEC: exec decides */)) {
        uint64_t last = (uint64_t)(unsigned)a2 < RB_FD_MAX - 1 ? (uint64_t)(unsigned)a2 : RB_FD_MAX - 1;
        for (uint64_t fd = (unsigned)a1; fd <= last; fd++)
          if (PRIV->fd_state[fd] != RB_FD_PASS) closed(w, (long)fd);
      }
      return result;
    }
    case SYS_DUP:
    case SYS_DUP2:
    case SYS_DUP3:
    case SYS_FCNTL: {
      long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
      if (result >= 0 && result < RB_FD_MAX && result != a1 &&
          (state_of(a1) != RB_FD_PASS || PRIV->fd_state[result] != RB_FD_PASS) && mine(w)) {
        PRIV->fd_state[result] = state_of(a1);
        /* Two descriptors of one connection: each one's count would miss the other's writes. */
        PRIV->quiet[result] = 0;
        if (state_of(a1) == RB_FD_CLIENT) PRIV->quiet[a1] = 0;
        unsync(result, 1);
        if (state_of(a1) != RB_FD_PASS) {
          unsync(a1, 0);
          PRIV->conns[result].side = PRIV->conns[a1].side;
        }
        record_simple(w, nr, a1, result, 0);
      }
      return result;
    }
    case SYS_CLONE:
    case SYS_FORK: {
      /* Only fork-like clones trap (no CLONE_VM, no new stack): the child returns here on its
       * copy of this stack, with its own copy of the private region. */
      uint32_t parent = PRIV->pid;
      long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
      if (result == 0) {
        PRIV->pid = (uint32_t)sys(SYS_GETPID, 0, 0, 0);
        w->tid = 0; /* this is the child's own thread now */
        w->mine = 0;
        finish_patches_after_fork();
        record_simple(w, RB_EV_FORK, -1, PRIV->pid, parent);
      } else if (result > 0) {
        record_simple(w, RB_EV_FORK, -1, result, parent);
      }
      return result;
    }
    case SYS_EXECVE:
    case SYS_EXECVEAT: {
      /* Its own pid, not PRIV->pid: a vfork child (posix_spawn, Go's os/exec, Python's
       * subprocess) shares the parent's private region, and the new image is the child's. */
      long attached = rb_syscall_upcall(RB_UPCALL_NR, RB_UP_EXEC, 0, sys(SYS_GETPID, 0, 0, 0), 0, 0, 0);
      if (attached != 1) return attached < 0 ? attached : -EPERM; /* the new image would die at its first trap */
      long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
      rb_trap(); /* it failed: the engine detaches */
      return result;
    }
    case SYS_RT_SIGACTION: {
      if (a1 == SIGSYS) {
        /* The stub's handler stays; the program's is remembered and answered as if applied. */
        if (a4 != 8) return -EINVAL;
        uint64_t previous[4];
        copy_bytes((uint8_t*)previous, (const uint8_t*)PRIV->app_sigsys, sizeof(previous));
        if (a2) copy_bytes((uint8_t*)PRIV->app_sigsys, (const uint8_t*)a2, sizeof(previous));
        if (a3) copy_bytes((uint8_t*)a3, (const uint8_t*)previous, sizeof(previous));
        return 0;
      }
      /* A handler's mask must not block SIGSYS: the kernel applies it while the handler runs. */
      if (a2 && (((const uint64_t*)a2)[3] & sigsys_bit)) {
        uint64_t copy[4];
        copy_bytes((uint8_t*)copy, (const uint8_t*)a2, sizeof(copy));
        copy[3] &= ~sigsys_bit;
        return rb_syscall_fast(nr, a1, (long)copy, a3, a4, a5, a6);
      }
      return rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
    }
    case SYS_RT_SIGPROCMASK: {
      /* The mask the program gets back after this handler is the one in its saved context: apply
       * the change (the kernel checks it), then put the result there, SIGSYS left out (a blocked
       * trap signal makes the kernel reset the handler and kill the process). */
      long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
      if (result != 0) return result;
      uint64_t now = 0;
      rb_syscall_fast(SYS_RT_SIGPROCMASK, 0 /* SIG_BLOCK */, 0, (long)&now, 8, 0, 0);
      if (now & sigsys_bit) rb_syscall_fast(SYS_RT_SIGPROCMASK, 1 /* SIG_UNBLOCK */, (long)&sigsys_bit, 0, 8, 0, 0);
      uc->sigmask = now & ~sigsys_bit;
      return 0;
    }
    default:
      return rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
  }
}

void rb_sigsys(int sig, struct rb_siginfo* info, void* context) {
  struct rb_ucontext* uc = (struct rb_ucontext*)context;
  struct rb_sigcontext* r = &uc->mc;
  if (info->si_code != SYS_SECCOMP_CODE || info->si_errno != RB_TRAP_DATA) {
    forward(sig, info, context);
    return;
  }
  __atomic_add_fetch(&SH->traps, 1, __ATOMIC_RELAXED);
  r->rax = (uint64_t)handle(info->syscall, (long)r->rdi, (long)r->rsi, (long)r->rdx, (long)r->r10, (long)r->r8,
                            (long)r->r9, uc);
  if (SH->patch) consider_site((uint64_t)info->call_addr, info->syscall);
}

/* From a patched call site (rb_direct): the same handling, without a signal, for the syscalls
 * patchable() lists (none needs the signal's saved context). f: [0] set to 1 to decline (any other
 * syscall a generic site such as libc's syscall() makes: it runs the original instruction), [1]
 * the syscall, [2..7] r9 r8 r10 rdx rsi rdi. */
long rb_direct_c(uint64_t* f) {
  long nr = (long)f[1];
  if (!patchable(nr)) {
    f[0] = 1;
    return nr;
  }
  __atomic_add_fetch(&SH->direct, 1, __ATOMIC_RELAXED);
  return handle(nr, (long)f[7], (long)f[6], (long)f[5], (long)f[4], (long)f[3], (long)f[2], 0);
}
