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
  TrackerConfig tracker;
};

struct EngineStats {
  TrackerStats tracker;
  std::array<std::atomic<uint64_t>, syscall::kTracedSyscallCount> entry_stops{};
  std::array<std::atomic<uint64_t>, syscall::kTracedSyscallCount> exit_stops{};
  std::atomic<uint64_t> spans_dropped{0};
  std::atomic<uint64_t> spans_emitted{0};
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
  };
  struct Process {
    pid_t tgid = 0;
    pid_t ppid = 0;
    OwnedFd pidfd;
    bool announced = false;
    std::shared_ptr<Scratch> scratch;  // shared by the processes of one address space
  };
  // A syscall between its entry and exit stops.
  struct PendingSyscall {
    int index = -1;  // into syscall::kTracedSyscalls
    std::array<uint64_t, 6> args{};
    TimeNs entry = 0;
    int connect_domain = 0;
    Endpoint connect_peer;
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
  uint64_t buffer_capacity(Thread& t, syscall::Kind kind, const arch::Registers& regs);
  // Injection (DESIGN section 4). Each returns false when it could not be done (no harm done).
  bool start_scratch_mapping(Thread& t, const arch::Registers& regs);
  void finish_scratch_mapping(Thread& t);
  bool rewrite_write(Thread& t, arch::Registers& regs, syscall::Kind kind, long nr);
  void finish_rewritten_write(Thread& t, Tracker::Io& io);
  std::vector<TraceeIovec> write_segments(Thread& t, syscall::Kind kind, long nr, const arch::Registers& regs);
  void announce(Process& p);
  void flush();
  void set_exit(const ExitInfo& exit);
  void fail(const std::string& message);

  EngineConfig config_;
  BatchSink& sink_;
  EngineStats stats_;
  Tracker tracker_;
  std::mutex batch_mutex_;  // the loop fills batch_, the flusher thread may hand it over
  std::unique_ptr<Batch> batch_;
  std::atomic<size_t> batch_size_{0};
  const bool debug_;  // RBINDER_ENGINE_DEBUG: one stderr line per stop
  const bool predict_;  // RBINDER_PTRACE_PREDICT=0 turns the prediction off (exit stops always)
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
