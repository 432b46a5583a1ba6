// The fast path's engine side (docs/fast-path.md): mapping the stub and the shared region into a
// traced process with syscalls injected through ptrace, the per-process SIGSYS filter, and the
// engine's view of the shared region (descriptor routing, the event ring).
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "arch/registers.h"
#include "stub/abi.h"
#include "tracee/sockets.h"

namespace rbinder::fast {

// Absolute addresses in every traced process.
uint64_t fast_syscall_return_ip();    // just after the stub's untraced syscall instruction
uint64_t traced_syscall_return_ip();  // just after its traced one
uint64_t gadget_ip();

// The syscalls the SIGSYS filter traps (and the stub issues).
bool is_hot_syscall(long nr);

// The filter added to a process once its stub is in place: hot syscalls trap unless they come
// from the stub's own instructions.
std::vector<sock_filter> build_trap_filter();

// The engine's mapping of one process's shared region.
class SharedRegion {
 public:
  SharedRegion(OwnedFd memfd, rb_shared* mapped) : memfd_(std::move(memfd)), shared_(mapped) {}
  ~SharedRegion();
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;
  rb_shared* get() const { return shared_; }
  void set_fd_state(int fd, rb_fd_state state);

  // Calls f(const rb_event&, const uint8_t* data) for each complete event in order and marks them
  // consumed. Stops at the first event still being written.
  template <typename F>
  size_t drain(F f) {
    size_t n = 0;
    for (;;) {
      const uint64_t at = __atomic_load_n(&shared_->consumed, __ATOMIC_RELAXED);
      if (at == __atomic_load_n(&shared_->reserve, __ATOMIC_ACQUIRE)) return n;
      const auto* e = reinterpret_cast<const rb_event*>(shared_->ring + (at % RB_RING_SLOTS) * RB_SLOT_SIZE);
      if (__atomic_load_n(&e->seq, __ATOMIC_ACQUIRE) != at + 1) return n;  // reserved, not written yet
      const uint32_t slots = e->slots == 0 ? 1 : e->slots;
      if (e->nr >= 0) {
        f(*e, reinterpret_cast<const uint8_t*>(e + 1));
        n++;
      }
      __atomic_store_n(&shared_->consumed, at + slots, __ATOMIC_RELEASE);
    }
  }

 private:
  OwnedFd memfd_;
  rb_shared* shared_;
};

// Runs syscalls inside a stopped tracee: registers pointed at a syscall instruction, one
// PTRACE_SINGLESTEP each. The tracee's registers are restored when the injector goes away.
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

// Maps the stub and a new shared region into a process stopped at its exec event (the program's
// first instruction not run yet), installs the SIGSYS handler and the trap filter.
// Returns the engine's mapping, or nullptr with `error` set (the process then stays on ptrace).
std::unique_ptr<SharedRegion> setup_after_exec(pid_t tid, std::string& error, std::vector<int>& pending_signals);

// A fork child shares its parent's region through MAP_SHARED: give it its own, at the same
// address. `tid` is stopped (its first stop).
std::unique_ptr<SharedRegion> remap_for_child(pid_t tid, std::string& error, std::vector<int>& pending_signals);

}  // namespace rbinder::fast
