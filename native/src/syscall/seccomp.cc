#include "syscall/seccomp.h"

#include <fcntl.h>
#include <signal.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>

#include "arch/registers.h"
#include "syscall/table.h"

namespace rbinder::syscall {
namespace {

constexpr uint32_t kNrOffset = offsetof(seccomp_data, nr);
constexpr uint32_t kArchOffset = offsetof(seccomp_data, arch);
// Low 32 bits of argument i (little-endian).
constexpr uint32_t arg_offset(int i) { return offsetof(seccomp_data, args) + 8 * static_cast<uint32_t>(i); }

sock_filter stmt(uint16_t code, uint32_t k) { return sock_filter{code, 0, 0, k}; }
sock_filter jump(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) { return sock_filter{code, jt, jf, k}; }

}  // namespace

std::vector<sock_filter> build_trace_filter() {
  // Layout (jumps are relative, forward only):
  //   check arch; load nr; x32 -> allow
  //   one JEQ per traced syscall -> trace (fcntl -> its argument check)
  //   allow
  //   fcntl block: cmd is F_DUPFD or F_DUPFD_CLOEXEC -> trace, else allow
  //   trace
  std::vector<sock_filter> f;
  f.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, kArchOffset));
  f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, arch::kAuditArch, 1, 0));
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  f.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, kNrOffset));
  f.push_back(jump(BPF_JMP | BPF_JGE | BPF_K, arch::kX32SyscallBit, 0, 1));
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));

  const size_t n = kTracedSyscallCount;
  const size_t first_jeq = f.size();
  const size_t allow_at = first_jeq + n;
  const size_t fcntl_block_at = allow_at + 1;
  const size_t fcntl_block_len = 4;  // load cmd, jeq, jeq, allow
  const size_t trace_at = fcntl_block_at + fcntl_block_len;
  for (size_t i = 0; i < n; i++) {
    size_t here = first_jeq + i;
    size_t target = kTracedSyscalls[i].kind == Kind::kFcntlDup ? fcntl_block_at : trace_at;
    f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(kTracedSyscalls[i].nr),
                     static_cast<uint8_t>(target - here - 1), 0));
  }
  f.push_back(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  // fcntl block
  f.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, arg_offset(1)));
  f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, F_DUPFD, 2, 0));
  f.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, F_DUPFD_CLOEXEC, 1, 0));
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
