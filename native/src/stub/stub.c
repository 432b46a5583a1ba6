/* The in-process half of the fast path: a SIGSYS handler that rbinder maps at RB_STUB_ADDR in
 * every traced process. The seccomp filter traps the hot socket syscalls (SECCOMP_RET_TRAP)
 * unless they come from this stub's own syscall instruction; the handler issues the program's
 * syscall itself and, for tracked connections, appends what moved to the shared ring that the
 * engine drains. Freestanding: no libc, no writable data (all state is in the shared region), no
 * floating point. Built by native/scripts/build-stub.sh into a flat blob the engine maps. */
#include "abi.h"

#define EAGAIN 11
#define EINTR 4
#define SYS_READ 0
#define SYS_WRITE 1
#define SYS_READV 19
#define SYS_WRITEV 20
#define SYS_SENDTO 44
#define SYS_RECVFROM 45
#define SYS_SENDMSG 46
#define SYS_RECVMSG 47
#define SYS_GETTID 186
#define SYS_CLOCK_GETTIME 228

typedef unsigned long size_t;

/* Kernel ABI layouts (x86-64), as delivered to an SA_SIGINFO handler. */
struct rb_siginfo {
  int si_signo, si_errno, si_code, pad;
  void* call_addr;  /* _sigsys */
  int syscall;
  unsigned arch;
};
struct rb_sigcontext {
  uint64_t r8, r9, r10, r11, r12, r13, r14, r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip;
};
struct rb_ucontext {
  unsigned long uc_flags;
  void* uc_link;
  void* ss_sp;
  int ss_flags;
  size_t ss_size;
  struct rb_sigcontext mc;
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
long rb_syscall_traced(long nr, long a1, long a2, long a3, long a4, long a5, long a6);

/* The two syscall instructions: the filters allow the first for everything (the fast path), and
 * send the second to the tracer (SECCOMP_RET_TRACE) for descriptors the engine handles itself.
 * rb_gadget is where the engine points the tracee to run syscalls it injects. */
__asm__(
    ".section .text.entry,\"ax\",@progbits\n"
    ".globl rb_syscall_fast\n"
    "rb_syscall_fast:\n"
    "  mov %rdi, %rax\n  mov %rsi, %rdi\n  mov %rdx, %rsi\n  mov %rcx, %rdx\n"
    "  mov %r8, %r10\n  mov %r9, %r8\n  mov 8(%rsp), %r9\n"
    ".globl rb_fast_insn\n"
    "rb_fast_insn:\n  syscall\n  ret\n"
    ".globl rb_syscall_traced\n"
    "rb_syscall_traced:\n"
    "  mov %rdi, %rax\n  mov %rsi, %rdi\n  mov %rdx, %rsi\n  mov %rcx, %rdx\n"
    "  mov %r8, %r10\n  mov %r9, %r8\n  mov 8(%rsp), %r9\n"
    ".globl rb_traced_insn\n"
    "rb_traced_insn:\n  syscall\n  ret\n"
    ".globl rb_restorer\n"
    "rb_restorer:\n  mov $15, %eax\n  syscall\n  hlt\n"
    ".globl rb_gadget\n"
    "rb_gadget:\n  syscall\n  int3\n"
    ".text\n");

static uint64_t now_ns(void) {
  struct rb_timespec ts;
  rb_syscall_fast(SYS_CLOCK_GETTIME, 0 /* CLOCK_REALTIME */, (long)&ts, 0, 0, 0, 0);
  return (uint64_t)ts.sec * 1000000000ull + (uint64_t)ts.nsec;
}

static void copy_bytes(uint8_t* dst, const uint8_t* src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = src[i];
}

/* Copies up to `max` bytes of the syscall's buffer(s) into dst; returns the count. */
static uint32_t gather(long nr, long a2, long a3, uint8_t* dst, uint32_t max) {
  const struct rb_iovec* iov;
  size_t iovcnt;
  struct rb_iovec single;
  if (nr == SYS_READ || nr == SYS_WRITE || nr == SYS_RECVFROM || nr == SYS_SENDTO) {
    single.base = (const uint8_t*)a2;
    single.len = (size_t)a3;
    iov = &single;
    iovcnt = 1;
  } else if (nr == SYS_READV || nr == SYS_WRITEV) {
    iov = (const struct rb_iovec*)a2;
    iovcnt = (size_t)a3;
  } else {
    const struct rb_msghdr* msg = (const struct rb_msghdr*)a2;
    iov = msg->iov;
    iovcnt = msg->iovlen;
  }
  uint32_t copied = 0;
  for (size_t i = 0; i < iovcnt && copied < max; i++) {
    size_t n = iov[i].len;
    if (n > max - copied) n = max - copied;
    copy_bytes(dst + copied, iov[i].base, n);
    copied += (uint32_t)n;
  }
  return copied;
}

static void record(struct rb_shared* sh, long nr, int fd, long result, long a2, long a3, long a4, uint64_t start,
                   uint64_t end) {
  uint64_t moved = result > 0 ? (uint64_t)result : 0;
  uint32_t want = moved < RB_EVENT_MAX_DATA ? (uint32_t)moved : RB_EVENT_MAX_DATA;
  uint32_t slots = (uint32_t)((sizeof(struct rb_event) + want + RB_SLOT_SIZE - 1) / RB_SLOT_SIZE);
  uint64_t at, pad, next;
  for (;;) {
    at = __atomic_load_n(&sh->reserve, __ATOMIC_RELAXED);
    /* An event never wraps: the slots left before the end become a padding event. */
    pad = (at % RB_RING_SLOTS) + slots > RB_RING_SLOTS ? RB_RING_SLOTS - (at % RB_RING_SLOTS) : 0;
    next = at + pad + slots;
    if (next - __atomic_load_n(&sh->consumed, __ATOMIC_ACQUIRE) > RB_RING_SLOTS) {
      __atomic_add_fetch(&sh->dropped, 1, __ATOMIC_RELAXED);  /* full: never wait */
      return;
    }
    if (__atomic_compare_exchange_n(&sh->reserve, &at, next, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) break;
  }
  if (pad) {
    struct rb_event* p = (struct rb_event*)(sh->ring + (at % RB_RING_SLOTS) * RB_SLOT_SIZE);
    p->slots = (uint32_t)pad;
    p->nr = -1;
    __atomic_store_n(&p->seq, at + 1, __ATOMIC_RELEASE);
    at += pad;
  }
  struct rb_event* e = (struct rb_event*)(sh->ring + (at % RB_RING_SLOTS) * RB_SLOT_SIZE);
  e->slots = slots;
  e->tid = (uint32_t)rb_syscall_fast(SYS_GETTID, 0, 0, 0, 0, 0, 0);
  e->fd = fd;
  e->nr = (int32_t)nr;
  e->result = result;
  e->flags = (nr == SYS_RECVFROM || nr == SYS_SENDTO) ? (uint64_t)a4
             : (nr == SYS_RECVMSG || nr == SYS_SENDMSG) ? (uint64_t)a3
                                                        : 0;
  e->start_ns = start;
  e->end_ns = end;
  e->total = moved;
  e->data_len = want ? gather(nr, a2, a3, (uint8_t*)(e + 1), want) : 0;
  __atomic_store_n(&e->seq, at + 1, __ATOMIC_RELEASE);
}

void rb_sigsys(int sig, struct rb_siginfo* info, void* context) {
  (void)sig;
  struct rb_ucontext* uc = (struct rb_ucontext*)context;
  struct rb_sigcontext* r = &uc->mc;
  struct rb_shared* sh = (struct rb_shared*)RB_SHARED_ADDR;
  long nr = info->syscall;
  long a1 = (long)r->rdi, a2 = (long)r->rsi, a3 = (long)r->rdx, a4 = (long)r->r10, a5 = (long)r->r8,
       a6 = (long)r->r9;
  __atomic_add_fetch(&sh->traps, 1, __ATOMIC_RELAXED);
  int fd = (int)a1;
  uint8_t state = (fd >= 0 && fd < RB_FD_MAX) ? __atomic_load_n(&sh->fd_state[fd], __ATOMIC_ACQUIRE) : RB_FD_PASS;
  if (state == RB_FD_TRACE) {
    r->rax = (uint64_t)rb_syscall_traced(nr, a1, a2, a3, a4, a5, a6);
    return;
  }
  uint64_t start = state == RB_FD_RECORD ? now_ns() : 0;
  long result = rb_syscall_fast(nr, a1, a2, a3, a4, a5, a6);
  r->rax = (uint64_t)result;
  if (state == RB_FD_RECORD && result != -EAGAIN && result != -EINTR) {
    record(sh, nr, fd, result, a2, a3, a4, start, now_ns());
  }
}
