#include "syscall/seccomp.h"

#include <fcntl.h>
#include <signal.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>

#include "arch/registers.h"
#include "engine/fast_path.h"
#include "syscall/table.h"

namespace rbinder::syscall {
namespace {

constexpr uint32_t kNrOffset = offsetof(seccomp_data, nr);
constexpr uint32_t kArchOffset = offsetof(seccomp_data, arch);
constexpr uint32_t kIpOffset = offsetof(seccomp_data, instruction_pointer);
// Low 32 bits of argument i (little-endian).
constexpr uint32_t arg_offset(int i) { return offsetof(seccomp_data, args) + 8 * static_cast<uint32_t>(i); }

sock_filter stmt(uint16_t code, uint32_t k) { return sock_filter{code, 0, 0, k}; }
sock_filter jump(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) { return sock_filter{code, jt, jf, k}; }

}  // namespace

std::vector<sock_filter> build_trace_filter(bool fast) {
  // Layout (jumps are relative, forward only):
  //   check arch; the fast path stub's own syscall instruction -> allow; load nr; x32 -> allow
  //   one JEQ per traced syscall -> trace (fcntl, rt_sigaction -> their argument checks)
  //   allow
  //   fcntl block: cmd is F_DUPFD or F_DUPFD_CLOEXEC -> trace, else allow
  //   rt_sigaction block: signal is SIGSYS (fast mode: any signal) -> trace, else allow
  //   trace
  const uint64_t stub_ip = fast::fast_syscall_return_ip();
  std::vector<sock_filter> f;
  f.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, kArchOffset));
  f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, arch::kAuditArch, 1, 0));
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  f.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, kIpOffset + 4));
  f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(stub_ip >> 32), 0, 3));
  f.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, kIpOffset));
  f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(stub_ip), 0, 1));
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  f.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, kNrOffset));
  f.push_back(jump(BPF_JMP | BPF_JGE | BPF_K, arch::kX32SyscallBit, 0, 1));
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));

  std::vector<TracedSyscall> traced;
  for (const TracedSyscall& sc : kTracedSyscalls)
    if (fast || sc.kind != Kind::kSigmask) traced.push_back(sc);
  const size_t n = traced.size();
  const size_t first_jeq = f.size();
  const size_t allow_at = first_jeq + n;
  const size_t fcntl_block_at = allow_at + 1;
  const size_t fcntl_block_len = 4;  // load cmd, jeq, jeq, allow
  const size_t sigaction_block_at = fcntl_block_at + fcntl_block_len;
  const size_t sigaction_block_len = 3;  // load signal, jeq, allow
  const size_t trace_at = sigaction_block_at + sigaction_block_len;
  for (size_t i = 0; i < n; i++) {
    size_t here = first_jeq + i;
    size_t target = traced[i].kind == Kind::kFcntlDup       ? fcntl_block_at
                    : traced[i].kind == Kind::kSigsysAction ? sigaction_block_at
                                                            : trace_at;
    f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(traced[i].nr),
                     static_cast<uint8_t>(target - here - 1), 0));
  }
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  // fcntl block
  f.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, arg_offset(1)));
  f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, F_DUPFD, 2 + sigaction_block_len, 0));
  f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, F_DUPFD_CLOEXEC, 1 + sigaction_block_len, 0));
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  // rt_sigaction block: SIGSYS itself; in fast mode every signal (a handler's mask must not
  // block SIGSYS either)
  f.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, arg_offset(0)));
  f.push_back(fast ? stmt(BPF_JMP | BPF_JA, 1) : jump(BPF_JMP | BPF_JEQ | BPF_K, SIGSYS, 1, 0));
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  // trace
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_TRACE));
  return f;
}

int install_filter(const sock_fprog& prog) {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) return -errno;
  return 0;
}

}  // namespace rbinder::syscall
