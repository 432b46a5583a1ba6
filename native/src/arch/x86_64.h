// x86-64 syscall registers: nr in orig_rax, args in rdi rsi rdx r10 r8 r9, result in rax.
#pragma once

#include <linux/audit.h>
#include <sys/ptrace.h>
#include <sys/user.h>

#include <cerrno>
#include <cstdint>

namespace rbinder::arch {

constexpr uint32_t kAuditArch = AUDIT_ARCH_X86_64;
// x32 syscalls share the arch value and set this bit; the filter lets them through untraced.
constexpr uint32_t kX32SyscallBit = 0x40000000;
// Length of the `syscall` instruction: rewinding the instruction pointer by it at a syscall stop
// makes the tracee issue the syscall again.
constexpr uint64_t kSyscallInsnLength = 2;

class Registers {
 public:
  // Fetches the registers of a stopped tracee. Returns 0 or -errno.
  int fetch(pid_t tid) {
    return ptrace(PTRACE_GETREGS, tid, nullptr, &regs_) == 0 ? 0 : -errno;
  }
  // Writes them back. Returns 0 or -errno.
  int store(pid_t tid) const {
    return ptrace(PTRACE_SETREGS, tid, nullptr, &regs_) == 0 ? 0 : -errno;
  }

  long syscall_nr() const { return static_cast<long>(regs_.orig_rax); }
  // Syscall argument 1..6.
  uint64_t arg(int i) const {
    switch (i) {
      case 1: return regs_.rdi;
      case 2: return regs_.rsi;
      case 3: return regs_.rdx;
      case 4: return regs_.r10;
      case 5: return regs_.r8;
      default: return regs_.r9;
    }
  }
  void set_arg(int i, uint64_t v) {
    switch (i) {
      case 1: regs_.rdi = v; break;
      case 2: regs_.rsi = v; break;
      case 3: regs_.rdx = v; break;
      case 4: regs_.r10 = v; break;
      case 5: regs_.r8 = v; break;
      default: regs_.r9 = v; break;
    }
  }
  void set_syscall_nr(long nr) { regs_.orig_rax = static_cast<uint64_t>(nr); }
  // Result at syscall exit: >= 0, or -errno.
  long result() const { return static_cast<long>(regs_.rax); }
  void set_result(long v) { regs_.rax = static_cast<uint64_t>(v); }
  uint64_t instruction_pointer() const { return regs_.rip; }
  void set_instruction_pointer(uint64_t v) { regs_.rip = v; }
  uint64_t stack_pointer() const { return regs_.rsp; }

 private:
  user_regs_struct regs_{};
};

}  // namespace rbinder::arch
