// The ptrace event source: spawns the program under the seccomp filter, runs the one waitpid loop,
// follows threads, forks and execs, and turns syscall stops into Tracker calls.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "arch/registers.h"
#include "engine/fast_path.h"
#include "engine/tracker.h"
#include "syscall/table.h"
#include "tracee/memory.h"

namespace rbinder {

struct ProcessInfo {
  pid_t pid = 0;
  pid_t ppid = 0;
  std::string executable_path;
  std::vector<std::string> command_args;
};

struct ExitInfo {
  bool exited = false;  // true: `code` is valid; false: killed by `signal`
  int code = 0;
  int signal = 0;
  std::string engine_error;  // the engine failed; the program was killed with it
  int spawn_errno = 0;       // exec of the program failed with this errno
};

struct Batch {
  std::vector<ProcessInfo> processes;
  std::vector<SpanRecord> spans;
  std::optional<ExitInfo> exit;
};

// Receives batches on the engine thread; returns false when it could not take the batch.
class BatchSink {
 public:
  virtual ~BatchSink() = default;
  virtual bool deliver(std::unique_ptr<Batch> batch) = 0;
};

struct EngineConfig {
  std::string file;               // resolved path of the program
  std::vector<std::string> argv;  // argv[0] included
  std::vector<std::string> env;   // "K=V"
  std::vector<int> inherit_fds;   // descriptors rbinder inherited, passed on to the program
  bool fast = false;              // --mode fast: the in-process stub where it can be set up
  TrackerConfig tracker;
};

struct EngineStats {
  TrackerStats tracker;
  std::array<std::atomic<uint64_t>, syscall::kTracedSyscallCount> entry_stops{};
  std::array<std::atomic<uint64_t>, syscall::kTracedSyscallCount> exit_stops{};
  std::atomic<uint64_t> spans_dropped{0};
  std::atomic<uint64_t> spans_emitted{0};
  std::atomic<uint64_t> fast_traps{0};        // syscalls the stub handled in-process
  std::atomic<uint64_t> fast_events{0};       // ring events the engine consumed
  std::atomic<uint64_t> fast_dropped{0};      // events lost to a full ring
  std::atomic<uint64_t> fast_processes{0};    // processes set up with the fast path
  std::atomic<uint64_t> fast_fallbacks{0};    // processes left on ptrace stops
};

class Engine final : public SpanSink {
 public:
  Engine(EngineConfig config, BatchSink& sink);
  // Starts the engine thread; returns the program's pid, or -errno with `error` set.
  pid_t start(std::string& error);
  EngineStats& stats() { return stats_; }
  void emit_span(SpanRecord&& span) override;

 private:
  // Memory rbinder maps into a traced address space for injected header bytes and the iovec
  // arrays and msghdrs of rewritten syscalls: one slot per thread with a rewritten syscall in
  // flight, so the program's own memory is never written.
  struct Scratch {
    TraceeAddr base;
    bool failed = false;           // mmap failed: no injection in this address space
    std::vector<bool> slot_used;
    // A free slot, marked used, or -1 when all are taken.
    int acquire();
    void release(int slot);
    TraceeAddr slot_address(int slot) const;
  };
  struct Process {
    pid_t tgid = 0;
    pid_t ppid = 0;
    OwnedFd pidfd;
    bool announced = false;
    std::shared_ptr<Scratch> scratch;  // shared by the processes of one address space
    // The fast path: the engine's view of the process's shared region (shared by the processes
    // of one address space), what the stub reported so far, and the program's own wish for SIGSYS.
    std::shared_ptr<fast::SharedRegion> region;
    uint64_t traps_seen = 0, dropped_seen = 0;
    std::array<uint64_t, 4> app_sigsys_action{};
  };
  // A syscall between its entry and exit stops.
  struct PendingSyscall {
    int index = -1;  // into syscall::kTracedSyscalls
    std::array<uint64_t, 6> args{};
    TimeNs entry = 0;
    int connect_domain = 0;
    Endpoint connect_peer;
    bool emulated = false;  // skipped by the engine, which supplies the result at exit
    bool mask_rewritten = false;  // rt_sigprocmask pointed at a copy without SIGSYS
    std::array<uint64_t, 4> sigsys_previous{};  // rt_sigaction(SIGSYS): the action to report back
    // An injected mmap in place of the program's syscall, which is issued again afterwards.
    bool mapping_scratch = false;
    // The syscall was rewritten to carry injected header bytes.
    bool rewritten = false;
    arch::Registers original;  // registers at entry, restored at exit
    Injection injection;
    std::vector<TraceeIovec> app_segments;  // the program's own bytes
    int slot = -1;
  };
  struct Thread {
    pid_t tid = 0;
    std::shared_ptr<Process> process;
    std::shared_ptr<FdTable> fds;
    bool awaiting_first_stop = false;  // auto-attached, its initial PTRACE_EVENT_STOP not seen yet
    bool needs_own_region = false;     // a fork child of a fast-path process: remap at first stop
    bool exec_setup_pending = false;   // set up the fast path at execve's exit stop
    PendingSyscall pending;
  };

  void run();
  void spawn();
  void loop();
  void handle_stop(pid_t tid, int status);
  void handle_exit(pid_t tid, int status);
  void on_syscall_entry(Thread& t);
  void on_syscall_exit(Thread& t);
  void on_new_tracee(Thread& parent, int event);
  void on_exec(Thread& t);
  void adopt_thread(pid_t tid, Thread&& t);
  void drop_thread(pid_t tid);
  void resume(pid_t tid, int sig = 0);
  void resume_to_exit(pid_t tid);
  void new_connection(Thread& t, int fd, Side side, const PendingSyscall* connect);
  // The prediction (DESIGN section 2, "fewer stops"): on TCP connections the engine reads the
  // socket's progress counters and peeks at queued bytes through its own copy of the socket, so
  // a read or write is handled at its entry stop, without an exit stop. Each returns false when
  // the syscall needs its exit stop after all.
  bool predict_read(Thread& t, const syscall::TracedSyscall& sc, const arch::Registers& regs, Connection& conn);
  bool predict_write(Thread& t, const syscall::TracedSyscall& sc, const arch::Registers& regs, Connection& conn);
  // An I/O event of thread t on fd, happening now (entry and exit at once: a predicted syscall).
  Tracker::Io io_now(const Thread& t, int fd, Direction direction) const;
  // The buffer(s) of a read-family syscall, into `out` (cleared first).
  void read_segments(Thread& t, syscall::Kind kind, const arch::Registers& regs, std::vector<TraceeIovec>& out);
  // Bytes a predicted read took beyond its prediction are read from the program's buffer now.
  void settle_reads(Thread& t, Connection& conn, const TcpProgress& progress, const Tracker::Io& io);
  // Injection (DESIGN section 4). Each returns false when it could not be done (no harm done).
  bool start_scratch_mapping(Thread& t, const arch::Registers& regs);
  void finish_scratch_mapping(Thread& t);
  bool rewrite_write(Thread& t, arch::Registers& regs, syscall::Kind kind, long nr);
  // Writes the injected header, iovecs (and msghdr) into the slot at `base` and points the
  // stopped syscall at them.
  bool point_write_at_slot(Thread& t, const arch::Registers& regs, syscall::Kind kind, long nr, TraceeAddr base);
  void finish_rewritten_write(Thread& t, Tracker::Io& io);
  std::vector<TraceeIovec> write_segments(Thread& t, syscall::Kind kind, long nr, const arch::Registers& regs);
  void announce(Process& p);
  void flush();
  void set_exit(const ExitInfo& exit);
  // The fast path.
  void setup_fast_path(Thread& t);
  void give_child_own_region(Thread& t);
  void sync_fd(Thread& t, int fd);
  void sync_all_fds(Thread& t);
  void drain(Process& p);
  void drain_all();
  void emulate_sigsys_action(Thread& t, bool at_entry, const arch::Registers& regs);
  // Points argument 2 of the syscall at a copy of the program's `size`-byte struct whose signal
  // mask (at `mask_offset`) no longer blocks SIGSYS. Returns false when nothing had to change.
  bool unblock_sigsys(Thread& t, const arch::Registers& regs, size_t size, size_t mask_offset);
  void fail(const std::string& message);

  EngineConfig config_;
  BatchSink& sink_;
  EngineStats stats_;
  Tracker tracker_;
  std::mutex engine_mutex_;  // the loop's stop handling vs the drainer thread
  std::mutex batch_mutex_;  // the loop fills batch_, the flusher thread may hand it over
  std::unique_ptr<Batch> batch_;
  std::atomic<size_t> batch_size_{0};
  const bool debug_;  // RBINDER_ENGINE_DEBUG: one stderr line per stop
  const bool predict_;  // RBINDER_PTRACE_PREDICT=0 turns the prediction off (exit stops always)
  const bool force_proc_net_;  // RBINDER_FORCE_PROC_NET=1: describe sockets from /proc (tests)
  pid_t root_pid_ = -1;
  bool root_exited_ = false;
  int exec_error_pipe_ = -1;
  std::unordered_map<pid_t, Thread> threads_;
  std::unordered_map<pid_t, std::shared_ptr<Process>> processes_;
  std::unordered_map<pid_t, int> early_stops_;  // stops of new tracees seen before their parent's event

  // start() waits for the engine thread to have forked.
  std::mutex start_mutex_;
  std::condition_variable start_cv_;
  bool started_ = false;
  std::string start_error_;
};

}  // namespace rbinder
