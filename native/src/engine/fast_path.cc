#include "engine/fast_path.h"

#include <fcntl.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstring>

#include "stub_blob.h"
#include "tracee/memory.h"
#include "tracee/vdso.h"

namespace rbinder::fast {
namespace {

// The syscalls the stub handles unconditionally; fcntl, rt_sigprocmask and clone trap only for
// some arguments (build_trap_filter).
constexpr long kTrapped[] = {SYS_read,   SYS_write,  SYS_readv,   SYS_writev,  SYS_recvfrom,    SYS_sendto,
                             SYS_recvmsg, SYS_sendmsg, SYS_accept, SYS_accept4, SYS_connect,     SYS_close,
                             SYS_close_range, SYS_dup, SYS_dup2,   SYS_dup3,    SYS_execve,      SYS_execveat,
                             SYS_fork,    SYS_rt_sigaction, SYS_sendfile};
constexpr uint32_t kTrapData = 0x7262;  // si_errno of the stub's own traps (stub.c RB_TRAP_DATA)

// Scratch space in the stub's code page, written before it is made read-only.
constexpr uint64_t kNameAt = 0x8000;
constexpr uint64_t kSigactionAt = 0x8100;
constexpr uint64_t kProgAt = 0x8200;
constexpr uint64_t kFilterAt = 0x8240;
// Not in glibc's headers: the kernel flag saying sa_restorer is set (x86-64).
constexpr uint64_t kSaRestorer = 0x04000000;

struct KernelSigaction {
  uint64_t handler;
  uint64_t flags;
  uint64_t restorer;
  uint64_t mask;
};


std::string errno_name(long e) {
  const char* n = strerrorname_np(static_cast<int>(e));
  return n ? n : "E?";
}

// A new image stopped at execve's exit stop has no syscall instruction we know of yet: runs
// `calls` through one planted at its entry point, then puts the original bytes back. Returns 0,
// or -errno when the entry point could not be patched.
template <typename F>
long at_entry_point(pid_t tid, std::vector<int>& pending, F calls) {
  arch::Registers regs;
  if (regs.fetch(tid) != 0) return -ESRCH;
  const uint64_t entry = regs.instruction_pointer();
  errno = 0;
  const long word = ptrace(PTRACE_PEEKTEXT, tid, reinterpret_cast<void*>(entry), nullptr);
  if (errno != 0) return -errno;
  const long planted = (word & ~0xffffL) | 0x050f;  // "syscall"
  if (ptrace(PTRACE_POKETEXT, tid, reinterpret_cast<void*>(entry), reinterpret_cast<void*>(planted)) != 0) return -errno;
  {
    SyscallInjector inj(tid, entry);
    calls(inj);
    pending.insert(pending.end(), inj.pending_signals().begin(), inj.pending_signals().end());
  }
  ptrace(PTRACE_POKETEXT, tid, reinterpret_cast<void*>(entry), reinterpret_cast<void*>(word));
  return 0;
}

// Maps a fresh shared region at RB_SHARED_ADDR in the tracee and in the engine.
std::unique_ptr<SharedRegion> map_region(pid_t tid, SyscallInjector& inj, std::string& error) {
  long memfd = inj.call(SYS_memfd_create, RB_STUB_ADDR + kNameAt, MFD_CLOEXEC);
  if (memfd < 0) {
    error = "memfd_create: " + errno_name(-memfd);
    return nullptr;
  }
  auto close_in_tracee = [&] { inj.call(SYS_close, static_cast<uint64_t>(memfd)); };
  long r = inj.call(SYS_ftruncate, static_cast<uint64_t>(memfd), RB_SHARED_SIZE);
  if (r < 0) {
    close_in_tracee();
    error = "ftruncate: " + errno_name(-r);
    return nullptr;
  }
  r = inj.call(SYS_mmap, RB_SHARED_ADDR, RB_SHARED_SIZE, PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_FIXED_NOREPLACE, static_cast<uint64_t>(memfd), 0);
  if (r != static_cast<long>(RB_SHARED_ADDR)) {
    close_in_tracee();
    error = "mmap(shared region): " + (r < 0 ? errno_name(-r) : std::string("moved"));
    return nullptr;
  }
  OwnedFd local = copy_fd(open_pidfd(tid).get(), static_cast<int>(memfd));
  close_in_tracee();
  if (!local.valid()) {
    error = "pidfd_getfd(memfd): " + errno_name(errno);
    return nullptr;
  }
  void* mapped = mmap(nullptr, RB_SHARED_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, local.get(), 0);
  if (mapped == MAP_FAILED) {
    error = "mmap(engine side): " + errno_name(errno);
    return nullptr;
  }
  auto* shared = static_cast<rb_shared*>(mapped);
  shared->magic = RB_MAGIC;
  shared->version = RB_VERSION;
  return std::make_unique<SharedRegion>(std::move(local), shared);
}

}  // namespace

uint64_t fast_syscall_return_ip() { return RB_STUB_ADDR + stub::kFastInsn + arch::kSyscallInsnLength; }
uint64_t upcall_return_ip() { return RB_STUB_ADDR + stub::kUpcallInsn + arch::kSyscallInsnLength; }
uint64_t trap_return_ip() { return RB_STUB_ADDR + stub::kTrap + 1; }
// The stub's own syscall instruction: the trap filter lets it through (a later image inherits it).
uint64_t gadget_ip() { return RB_STUB_ADDR + stub::kFastInsn; }

namespace {

// A classic-BPF program with named jump targets, resolved at the end.
class Bpf {
 public:
  void stmt(uint16_t code, uint32_t k) { code_.push_back(sock_filter{code, 0, 0, k}); }
  void load(uint32_t offset) { stmt(BPF_LD | BPF_W | BPF_ABS, offset); }
  void ret(uint32_t action) { stmt(BPF_RET | BPF_K, action); }
  // if (A op k) goto t else goto f; an empty name falls through.
  void jump(uint16_t op, uint32_t k, const std::string& t, const std::string& f) {
    fixups_.push_back({code_.size(), t, f});
    code_.push_back(sock_filter{static_cast<uint16_t>(BPF_JMP | op | BPF_K), 0, 0, k});
  }
  void label(const std::string& name) { labels_.push_back({name, code_.size()}); }
  // if (64-bit syscall argument i == 0) goto t else goto f.
  void if_arg_zero(int i, const std::string& t, const std::string& f) {
    const uint32_t lo = static_cast<uint32_t>(offsetof(seccomp_data, args) + 8 * i);
    load(lo);
    jump(BPF_JEQ, 0, "", f);
    load(lo + 4);
    jump(BPF_JEQ, 0, t, f);
  }
  std::vector<sock_filter> done() {
    for (const Fixup& f : fixups_) {
      code_[f.at].jt = offset(f.at, f.t);
      code_[f.at].jf = offset(f.at, f.f);
    }
    return code_;
  }

 private:
  struct Fixup {
    size_t at;
    std::string t, f;
  };
  uint8_t offset(size_t from, const std::string& name) const {
    if (name.empty()) return 0;
    for (const auto& [n, at] : labels_)
      if (n == name) {
        if (at - from - 1 > 255) break;
        return static_cast<uint8_t>(at - from - 1);
      }
    std::fprintf(stderr, "rbinder: BPF jump from %zu to \"%s\" cannot be encoded\n", from, name.c_str());
    std::abort();
  }
  std::vector<sock_filter> code_;
  std::vector<Fixup> fixups_;
  std::vector<std::pair<std::string, size_t>> labels_;
};

uint32_t arg_lo(int i) { return static_cast<uint32_t>(offsetof(seccomp_data, args) + 8 * i); }

}  // namespace

std::vector<sock_filter> build_trap_filter() {
  const uint32_t ip_lo = offsetof(seccomp_data, instruction_pointer);
  const uint32_t ip_hi = ip_lo + 4;
  const uint64_t fast = fast_syscall_return_ip(), upcall = upcall_return_ip();
  static_assert((RB_STUB_ADDR >> 32) == ((RB_STUB_ADDR + RB_STUB_CODE_SIZE) >> 32), "one high half for the stub");
  Bpf b;
  // The syscall number decides first, and every syscall the stub does not handle is allowed on
  // arch and number alone: the kernel then caches that verdict and skips this filter for them
  // (seccomp's action cache), which is most of the program's syscalls.
  b.load(offsetof(seccomp_data, arch));
  b.jump(BPF_JEQ, arch::kAuditArch, "", "allow");
  b.load(offsetof(seccomp_data, nr));
  for (long nr : kTrapped) b.jump(BPF_JEQ, static_cast<uint32_t>(nr), "trapped", "");
  b.jump(BPF_JEQ, SYS_fcntl, "fcntl", "");
  b.jump(BPF_JEQ, SYS_rt_sigprocmask, "sigmask", "");
  b.jump(BPF_JEQ, SYS_clone, "clone", "");
  b.jump(BPF_JEQ, RB_UPCALL_NR, "upcall", "allow");
  // Allowed from the stub's own syscall instruction, trapped from anywhere else.
  auto from_stub = [&](const std::string& label, const std::string& otherwise) {
    b.label(label);
    b.load(ip_hi);
    b.jump(BPF_JEQ, static_cast<uint32_t>(fast >> 32), "", otherwise);
    b.load(ip_lo);
    b.jump(BPF_JEQ, static_cast<uint32_t>(fast), "allow", otherwise);
  };
  from_stub("trapped", "trap");
  from_stub("fcntl", "fcntl_cmd");
  from_stub("sigmask", "sigmask_how");
  from_stub("clone", "clone_flags");
  b.label("upcall");  // the stub's upcall instruction; the number is no syscall anywhere else
  b.load(ip_hi);
  b.jump(BPF_JEQ, static_cast<uint32_t>(upcall >> 32), "", "allow");
  b.load(ip_lo);
  b.jump(BPF_JEQ, static_cast<uint32_t>(upcall), "notify", "allow");
  b.label("fcntl_cmd");  // only the commands that make a descriptor
  b.load(arg_lo(1));
  b.jump(BPF_JEQ, F_DUPFD, "trap", "");
  b.jump(BPF_JEQ, F_DUPFD_CLOEXEC, "trap", "allow");
  b.label("sigmask_how");  // anything that may block SIGSYS: not SIG_UNBLOCK, not a query
  b.load(arg_lo(0));
  b.jump(BPF_JEQ, SIG_UNBLOCK, "allow", "");
  b.if_arg_zero(1, "allow", "trap");  // no set: a query
  b.label("clone_flags");  // fork-like only: no shared memory, no new stack (the stub returns on it)
  b.load(arg_lo(0));
  b.jump(BPF_JSET, CLONE_VM, "allow", "");
  b.if_arg_zero(1, "trap", "allow");
  b.label("allow");
  b.ret(SECCOMP_RET_ALLOW);
  b.label("trap");
  b.ret(SECCOMP_RET_TRAP | kTrapData);
  b.label("notify");
  b.ret(SECCOMP_RET_USER_NOTIF);
  return b.done();
}

SharedRegion::~SharedRegion() {
  if (shared_) munmap(shared_, RB_SHARED_SIZE);
}

SyscallInjector::SyscallInjector(pid_t tid, uint64_t gadget) : tid_(tid), gadget_(gadget) {
  ok_ = saved_.fetch(tid) == 0;
}

SyscallInjector::~SyscallInjector() {
  if (ok_) saved_.store(tid_);
}

long SyscallInjector::call(long nr, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6) {
  if (!ok_) return -EIO;
  arch::Registers regs = saved_;
  regs.set_syscall_nr(-1);
  regs.set_result(nr);
  regs.set_instruction_pointer(gadget_);
  regs.set_arg(1, a1);
  regs.set_arg(2, a2);
  regs.set_arg(3, a3);
  regs.set_arg(4, a4);
  regs.set_arg(5, a5);
  regs.set_arg(6, a6);
  if (regs.store(tid_) != 0) return -EIO;
  // Syscall stops, not single steps: stepping over a syscall instruction queues a SIGTRAP that
  // would reach the program once it runs detached.
  bool entered = false;
  int deliver = 0;
  for (int stops = 0; stops < 16; stops++) {
    if (ptrace(PTRACE_SYSCALL, tid_, nullptr, reinterpret_cast<void*>(static_cast<uintptr_t>(deliver))) != 0) return -EIO;
    deliver = 0;
    int status = 0;
    if (waitpid(tid_, &status, __WALL) != tid_ || !WIFSTOPPED(status)) {
      ok_ = false;  // gone
      return -EIO;
    }
    if ((status >> 16) != 0) continue;  // a seccomp or other event stop on the way
    const int sig = WSTOPSIG(status);
    if (sig == (SIGTRAP | 0x80)) {
      if (!entered) {
        entered = true;
        continue;
      }
      arch::Registers after;
      if (after.fetch(tid_) != 0) return -EIO;
      return after.result();
    }
    // A signal arrived before the syscall ran: keep it for when the program resumes.
    pending_.push_back(sig);
  }
  return -EIO;
}

long install_filter_at_entry(pid_t tid, const std::vector<sock_filter>& filter, std::vector<int>& pending) {
  arch::Registers regs;
  if (regs.fetch(tid) != 0) return -ESRCH;
  // Below the red zone: the new image has not touched its stack yet.
  const uint64_t filter_at = ((regs.stack_pointer() - 4096 - filter.size() * sizeof(sock_filter)) & ~15ull);
  const uint64_t prog_at = filter_at - 16;
  struct {
    uint64_t len;
    uint64_t filter;
  } prog{filter.size(), filter_at};
  if (write_tracee(tid, TraceeAddr{filter_at}, filter.data(), filter.size() * sizeof(sock_filter)) !=
          static_cast<long>(filter.size() * sizeof(sock_filter)) ||
      write_tracee(tid, TraceeAddr{prog_at}, &prog, sizeof(prog)) != static_cast<long>(sizeof(prog)))
    return -EFAULT;
  long r = 0;
  const long patched = at_entry_point(tid, pending, [&](SyscallInjector& inj) {
    r = inj.call(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog_at);
  });
  return patched != 0 ? patched : r;
}

std::unique_ptr<SharedRegion> setup_after_exec(pid_t tid, bool first, const PrivateInit& init, OwnedFd& listener,
                                               std::string& error, std::vector<int>& pending) {
  long mapped = -EIO, mapped_private = -EIO;
  const long patched = at_entry_point(tid, pending, [&](SyscallInjector& inj) {
    // The stub: writable and executable only until the setup ends (then read+execute).
    mapped = inj.call(SYS_mmap, RB_STUB_ADDR, RB_STUB_CODE_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, static_cast<uint64_t>(-1), 0);
    mapped_private = inj.call(SYS_mmap, RB_PRIVATE_ADDR, RB_PRIVATE_SIZE, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, static_cast<uint64_t>(-1), 0);
  });
  if (patched != 0) {
    error = "patching the entry point: " + errno_name(-patched);
    return nullptr;
  }
  if (mapped != static_cast<long>(RB_STUB_ADDR) || mapped_private != static_cast<long>(RB_PRIVATE_ADDR)) {
    const long bad = mapped != static_cast<long>(RB_STUB_ADDR) ? mapped : mapped_private;
    error = "mmap(stub at fixed address): " + (bad < 0 ? errno_name(-bad) : std::string("placed elsewhere"));
    return nullptr;
  }

  // The stub, and the data the remaining injected syscalls point at, while the page is writable.
  static const char kName[] = "rbinder-fast-path";
  // SA_NODEFER: the handler's own syscalls never trap, and the program's syscalls issued from it
  // must see the program's signal mask, not one with SIGSYS added (/proc/self/status shows it).
  const KernelSigaction act{RB_STUB_ADDR + stub::kSigsysHandler, SA_SIGINFO | SA_ONSTACK | SA_NODEFER | kSaRestorer,
                            RB_STUB_ADDR + stub::kRestorer, 0};
  const std::vector<sock_filter> filter = build_trap_filter();
  struct {
    uint64_t len;
    uint64_t filter;
  } prog{filter.size(), RB_STUB_ADDR + kFilterAt};
  // Only the fields before the per-descriptor tables are written (the tables start zeroed). The
  // whole struct is ~10 MB, too large for a stack: its head is built in a buffer of its own size.
  constexpr size_t kHeadSize = offsetof(rb_private, fd_state);
  alignas(rb_private) uint8_t head_bytes[kHeadSize] = {};
  rb_private& head = *reinterpret_cast<rb_private*>(head_bytes);
  head.magic = RB_MAGIC;
  head.pid = static_cast<uint32_t>(init.pid);
  head.inject = init.inject ? 1 : 0;
  head.decide = init.decide ? 1 : 0;
  head.sampler = init.sampler;
  head.ratio_below = init.ratio_below;
  head.ids = init.ids;
  head.allow_all = init.allow_all;
  head.allow_unix = init.allow_unix;
  head.allow_count = init.allow_count;
  std::memcpy(head.allow, init.allow.data(), sizeof(head.allow));
  head.clock_gettime = tracee_vdso_clock_gettime(tid);
  bool written =
      write_tracee(tid, TraceeAddr{RB_STUB_ADDR}, stub::kCode, sizeof(stub::kCode)) == static_cast<long>(sizeof(stub::kCode)) &&
      write_tracee(tid, TraceeAddr{RB_STUB_ADDR + kNameAt}, kName, sizeof(kName)) == static_cast<long>(sizeof(kName)) &&
      write_tracee(tid, TraceeAddr{RB_STUB_ADDR + kSigactionAt}, &act, sizeof(act)) == static_cast<long>(sizeof(act)) &&
      write_tracee(tid, TraceeAddr{RB_STUB_ADDR + kProgAt}, &prog, sizeof(prog)) == static_cast<long>(sizeof(prog)) &&
      write_tracee(tid, TraceeAddr{RB_STUB_ADDR + kFilterAt}, filter.data(), filter.size() * sizeof(sock_filter)) ==
          static_cast<long>(filter.size() * sizeof(sock_filter)) &&
      write_tracee(tid, TraceeAddr{RB_PRIVATE_ADDR}, head_bytes, kHeadSize) ==
          static_cast<long>(offsetof(rb_private, fd_state));
  for (const auto& [fd, state] : init.fds) {
    const uint8_t byte = static_cast<uint8_t>(state);
    if (fd >= 0 && fd < RB_FD_MAX)
      written = written && write_tracee(tid, TraceeAddr{RB_PRIVATE_ADDR + offsetof(rb_private, fd_state) + static_cast<uint64_t>(fd)},
                                        &byte, 1) == 1;
  }
  if (!written) {
    error = "writing the stub";
    return nullptr;
  }
  SyscallInjector inj(tid, gadget_ip());
  auto done = [&](std::unique_ptr<SharedRegion> r) {
    pending.insert(pending.end(), inj.pending_signals().begin(), inj.pending_signals().end());
    return r;
  };
  std::unique_ptr<SharedRegion> region = map_region(tid, inj, error);
  if (!region) {
    inj.call(SYS_munmap, RB_STUB_ADDR, RB_STUB_CODE_SIZE);
    inj.call(SYS_munmap, RB_PRIVATE_ADDR, RB_PRIVATE_SIZE);
    return done(nullptr);
  }
  long r = inj.call(SYS_rt_sigaction, SIGSYS, RB_STUB_ADDR + kSigactionAt, 0, 8);
  if (r == 0) r = inj.call(SYS_mprotect, RB_STUB_ADDR, RB_STUB_CODE_SIZE, PROT_READ | PROT_EXEC);
  if (r != 0) {
    error = "installing the SIGSYS handler: " + errno_name(-r);
    return done(nullptr);
  }
  if (first) {
    // Last: from here on the process's socket syscalls trap into the stub, in every descendant.
    const long fd = inj.call(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, RB_STUB_ADDR + kProgAt);
    if (fd < 0) {
      error = "installing the trap filter: " + errno_name(-fd);
      return done(nullptr);
    }
    listener = copy_fd(open_pidfd(tid).get(), static_cast<int>(fd));
    const int saved = errno;
    inj.call(SYS_close, static_cast<uint64_t>(fd));
    if (!listener.valid()) {
      error = "pidfd_getfd(seccomp listener): " + errno_name(saved);
      return done(nullptr);
    }
  }
  return done(std::move(region));
}

}  // namespace rbinder::fast
