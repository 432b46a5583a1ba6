// The fast path's engine side (docs/fast-path.md): mapping the stub and the shared region into a
// traced process with syscalls injected through ptrace, the per-process SIGSYS filter, and the
// engine's view of the shared region (descriptor routing, the event ring).
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "arch/registers.h"
#include "stub/abi.h"
#include "tracee/sockets.h"

namespace rbinder::fast {

// Absolute addresses in every traced process.
uint64_t fast_syscall_return_ip();    // just after the stub's own syscall instruction
uint64_t upcall_return_ip();          // just after its upcall instruction
uint64_t trap_return_ip();            // just after its int3 (a failed exec)
uint64_t gadget_ip();

// The filter the first image installs (every later one inherits it): the socket, descriptor,
// fork, exec and signal-mask syscalls trap (SECCOMP_RET_TRAP) unless they come from the stub's
// own instruction; the stub's upcall instruction becomes a user notification.
std::vector<sock_filter> build_trap_filter();

// The engine's mapping of one process's shared region.
class SharedRegion {
 public:
  SharedRegion(OwnedFd memfd, rb_shared* mapped) : memfd_(std::move(memfd)), shared_(mapped) {}
  ~SharedRegion();
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;
  rb_shared* get() const { return shared_; }
  int memfd() const { return memfd_.get(); }
  uint64_t traps_seen = 0, direct_seen = 0, dropped_seen = 0;  // the engine's counts so far

  // Calls f(const rb_event&, const uint8_t* data) for each complete event in order and marks them
  // consumed. Stops at the first event still being written, unless dead(pid) says its writer is
  // gone (killed in the stub, e.g. by another thread's exit_group): that one is skipped. Returns
  // the ring slots consumed (an event takes one slot per RB_SLOT_SIZE bytes).
  template <typename F, typename Dead>
  size_t drain(F f, Dead dead) {
    const uint64_t first = __atomic_load_n(&shared_->consumed, __ATOMIC_RELAXED);
    for (;;) {
      const uint64_t at = __atomic_load_n(&shared_->consumed, __ATOMIC_RELAXED);
      if (at == __atomic_load_n(&shared_->reserve, __ATOMIC_ACQUIRE)) return static_cast<size_t>(at - first);
      const auto* e = reinterpret_cast<const rb_event*>(shared_->ring + (at % RB_RING_SLOTS) * RB_SLOT_SIZE);
      bool complete = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE) == at + 1;
      if (!complete) {
        if (__atomic_load_n(&e->claim, __ATOMIC_ACQUIRE) != at + 1 || !dead(static_cast<pid_t>(e->pid)))
          return static_cast<size_t>(at - first);
        __atomic_store_n(&shared_->consumed, at + (e->slots == 0 ? 1 : e->slots), __ATOMIC_RELEASE);
        continue;
      }
      const uint32_t slots = e->slots == 0 ? 1 : e->slots;
      if (e->nr >= 0) f(*e, reinterpret_cast<const uint8_t*>(e + 1));
      __atomic_store_n(&shared_->consumed, at + slots, __ATOMIC_RELEASE);
    }
  }

 private:
  OwnedFd memfd_;
  rb_shared* shared_;
};

// Runs syscalls inside a stopped tracee: registers pointed at a syscall instruction, resumed to
// its entry and exit stops. The tracee's registers are restored when the injector goes away.
class SyscallInjector {
 public:
  SyscallInjector(pid_t tid, uint64_t gadget);
  ~SyscallInjector();
  bool ok() const { return ok_; }
  // Returns the syscall's result (>= 0 or -errno), or -EIO when the tracee could not be stepped.
  long call(long nr, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0, uint64_t a4 = 0, uint64_t a5 = 0,
            uint64_t a6 = 0);
  // Signals that arrived while stepping, to deliver when the tracee resumes.
  const std::vector<int>& pending_signals() const { return pending_; }

 private:
  pid_t tid_;
  uint64_t gadget_;
  bool ok_ = false;
  arch::Registers saved_;
  std::vector<int> pending_;
};

// Installs `filter` in a process stopped at execve's exit stop, through a syscall planted at its
// entry point and the program on its stack: how a program the fast path cannot be set up in goes
// on under ptrace stops. Returns 0 or -errno.
long install_filter_at_entry(pid_t tid, const std::vector<sock_filter>& filter, std::vector<int>& pending_signals);

// What setup_after_exec writes into the new image's private region.
struct PrivateInit {
  pid_t pid = 0;
  bool inject = false;
  bool decide = false;        // the stub decides trace context where it can (rb_private.decide)
  uint32_t sampler = 0;       // rb_sampler
  uint64_t ratio_below = 0;   // rb_private.ratio_below
  uint64_t ids = 0;           // the stub's id generator seed
  // rb_private's allow_* fields: the injection allow-list's networks.
  uint32_t allow_all = 0, allow_unix = 0, allow_count = 0;
  std::array<rb_net, RB_ALLOW_MAX> allow{};
  std::vector<std::pair<int, rb_fd_state>> fds;  // connections that survived the exec
};

// Maps the stub, a new shared region and the private region into a process stopped at execve's
// exit stop (the new image's first instruction not run yet) and installs the SIGSYS handler.
// `first`: also install the trap filter, whose user-notification listener is returned in
// `listener` (the engine's copy). Returns the engine's mapping, or nullptr with `error` set.
std::unique_ptr<SharedRegion> setup_after_exec(pid_t tid, bool first, const PrivateInit& init, OwnedFd& listener,
                                               std::string& error, std::vector<int>& pending_signals);

}  // namespace rbinder::fast
