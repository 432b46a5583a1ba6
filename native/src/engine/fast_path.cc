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
#include <cstddef>
#include <cstring>

#include "stub_blob.h"
#include "tracee/memory.h"

namespace rbinder::fast {
namespace {

constexpr long kHotSyscalls[] = {SYS_read,    SYS_write,    SYS_readv,   SYS_writev,
                                 SYS_recvfrom, SYS_sendto, SYS_recvmsg, SYS_sendmsg};

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

sock_filter stmt(uint16_t code, uint32_t k) { return sock_filter{code, 0, 0, k}; }
sock_filter jump(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) { return sock_filter{code, jt, jf, k}; }

std::string errno_name(long e) {
  const char* n = strerrorname_np(static_cast<int>(e));
  return n ? n : "E?";
}

// Maps a fresh shared region at RB_SHARED_ADDR in the tracee (MAP_FIXED replaces one inherited
// from a parent) and in the engine.
std::unique_ptr<SharedRegion> map_region(pid_t tid, SyscallInjector& inj, bool replace, std::string& error) {
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
               MAP_SHARED | (replace ? MAP_FIXED : MAP_FIXED_NOREPLACE), static_cast<uint64_t>(memfd), 0);
  if (r != static_cast<long>(RB_SHARED_ADDR)) {
    close_in_tracee();
    error = "mmap(shared region): " + (r < 0 ? errno_name(-r) : std::string("moved"));
    return nullptr;
  }
  OwnedFd pidfd = open_pidfd(tid);
  OwnedFd local(pidfd.valid() ? static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), memfd, 0)) : -1);
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
  std::memset(static_cast<void*>(shared), 0, offsetof(rb_shared, ring));  // a child's region starts empty
  shared->magic = RB_MAGIC;
  shared->version = RB_VERSION;
  return std::make_unique<SharedRegion>(std::move(local), shared);
}

}  // namespace

uint64_t fast_syscall_return_ip() { return RB_STUB_ADDR + stub::kFastInsn + arch::kSyscallInsnLength; }
uint64_t traced_syscall_return_ip() { return RB_STUB_ADDR + stub::kTracedInsn + arch::kSyscallInsnLength; }
uint64_t gadget_ip() { return RB_STUB_ADDR + stub::kGadget; }

bool is_hot_syscall(long nr) {
  for (long hot : kHotSyscalls)
    if (hot == nr) return true;
  return false;
}

std::vector<sock_filter> build_trap_filter() {
  // arch check; IP is one of the stub's two instructions -> allow; hot -> trap; else allow.
  const uint32_t ip_lo = offsetof(seccomp_data, instruction_pointer);
  const uint32_t ip_hi = ip_lo + 4;
  const uint64_t fast = fast_syscall_return_ip(), traced = traced_syscall_return_ip();
  std::vector<sock_filter> f;
  f.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
  f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, arch::kAuditArch, 1, 0));
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  f.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, ip_hi));
  f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(fast >> 32), 0, 4));
  f.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, ip_lo));
  f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(fast), 1, 0));
  f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(traced), 0, 1));
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  f.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
  const size_t n = sizeof(kHotSyscalls) / sizeof(kHotSyscalls[0]);
  for (size_t i = 0; i < n; i++) {
    // jump to "trap" (after the remaining JEQs and the allow)
    f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(kHotSyscalls[i]), static_cast<uint8_t>(n - i), 0));
  }
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_TRAP));
  return f;
}

SharedRegion::~SharedRegion() {
  if (shared_) munmap(shared_, RB_SHARED_SIZE);
}

void SharedRegion::set_fd_state(int fd, rb_fd_state state) {
  if (fd >= 0 && fd < RB_FD_MAX) __atomic_store_n(&shared_->fd_state[fd], static_cast<uint8_t>(state), __ATOMIC_RELEASE);
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
  for (int attempt = 0; attempt < 8; attempt++) {
    if (ptrace(PTRACE_SINGLESTEP, tid_, nullptr, nullptr) != 0) return -EIO;
    int status = 0;
    if (waitpid(tid_, &status, __WALL) != tid_ || !WIFSTOPPED(status)) {
      ok_ = false;  // gone
      return -EIO;
    }
    // Our own filter traces some syscalls (rt_sigaction of SIGSYS): step on through that stop.
    if ((status >> 16) == PTRACE_EVENT_SECCOMP) continue;
    arch::Registers after;
    if (after.fetch(tid_) != 0) return -EIO;
    if (after.instruction_pointer() == gadget_ + arch::kSyscallInsnLength) return after.result();
    // A signal arrived before the instruction ran: keep it for later and step again.
    const int sig = WSTOPSIG(status) & 0x7f;
    if (sig != SIGTRAP && (status >> 16) == 0) pending_.push_back(sig);
  }
  return -EIO;
}

std::unique_ptr<SharedRegion> setup_after_exec(pid_t tid, std::string& error, std::vector<int>& pending) {
  arch::Registers regs;
  if (regs.fetch(tid) != 0) {
    error = "cannot read registers";
    return nullptr;
  }
  // The new image has no syscall instruction we know of yet: plant one at its entry point for
  // the one mmap that brings the stub, then put the original bytes back.
  const uint64_t entry = regs.instruction_pointer();
  errno = 0;
  const long word = ptrace(PTRACE_PEEKTEXT, tid, reinterpret_cast<void*>(entry), nullptr);
  if (errno != 0) {
    error = "peek at entry point: " + errno_name(errno);
    return nullptr;
  }
  const long planted = (word & ~0xffffL) | 0x050f;  // "syscall"
  if (ptrace(PTRACE_POKETEXT, tid, reinterpret_cast<void*>(entry), reinterpret_cast<void*>(planted)) != 0) {
    error = "poke at entry point: " + errno_name(errno);
    return nullptr;
  }
  long mapped;
  {
    SyscallInjector inj(tid, entry);
    // Writable and executable only until the setup ends (then read+execute).
    mapped = inj.call(SYS_mmap, RB_STUB_ADDR, RB_STUB_CODE_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, static_cast<uint64_t>(-1), 0);
    pending.insert(pending.end(), inj.pending_signals().begin(), inj.pending_signals().end());
  }
  ptrace(PTRACE_POKETEXT, tid, reinterpret_cast<void*>(entry), reinterpret_cast<void*>(word));
  if (mapped != static_cast<long>(RB_STUB_ADDR)) {
    error = "mmap(stub at fixed address): " + (mapped < 0 ? errno_name(-mapped) : std::string("placed elsewhere"));
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
  if (write_tracee(tid, TraceeAddr{RB_STUB_ADDR}, stub::kCode, sizeof(stub::kCode)) != static_cast<long>(sizeof(stub::kCode)) ||
      write_tracee(tid, TraceeAddr{RB_STUB_ADDR + kNameAt}, kName, sizeof(kName)) != static_cast<long>(sizeof(kName)) ||
      write_tracee(tid, TraceeAddr{RB_STUB_ADDR + kSigactionAt}, &act, sizeof(act)) != static_cast<long>(sizeof(act)) ||
      write_tracee(tid, TraceeAddr{RB_STUB_ADDR + kProgAt}, &prog, sizeof(prog)) != static_cast<long>(sizeof(prog)) ||
      write_tracee(tid, TraceeAddr{RB_STUB_ADDR + kFilterAt}, filter.data(), filter.size() * sizeof(sock_filter)) !=
          static_cast<long>(filter.size() * sizeof(sock_filter))) {
    error = "writing the stub";
    return nullptr;
  }
  SyscallInjector inj(tid, gadget_ip());
  auto done = [&](std::unique_ptr<SharedRegion> r) {
    pending.insert(pending.end(), inj.pending_signals().begin(), inj.pending_signals().end());
    return r;
  };
  std::unique_ptr<SharedRegion> region = map_region(tid, inj, false, error);
  if (!region) {
    inj.call(SYS_munmap, RB_STUB_ADDR, RB_STUB_CODE_SIZE);
    return done(nullptr);
  }
  long r = inj.call(SYS_rt_sigaction, SIGSYS, RB_STUB_ADDR + kSigactionAt, 0, 8);
  if (r == 0) r = inj.call(SYS_mprotect, RB_STUB_ADDR, RB_STUB_CODE_SIZE, PROT_READ | PROT_EXEC);
  // Last: from here on the process's hot syscalls trap into the stub.
  if (r == 0) r = inj.call(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, RB_STUB_ADDR + kProgAt);
  if (r != 0) {
    error = "installing the SIGSYS handler and filter: " + errno_name(-r);
    return done(nullptr);
  }
  return done(std::move(region));
}

std::unique_ptr<SharedRegion> remap_for_child(pid_t tid, std::string& error, std::vector<int>& pending) {
  SyscallInjector inj(tid, gadget_ip());
  std::unique_ptr<SharedRegion> region = map_region(tid, inj, true, error);
  pending.insert(pending.end(), inj.pending_signals().begin(), inj.pending_signals().end());
  return region;
}

}  // namespace rbinder::fast
