// The ptrace event source: spawns the program under the seccomp filter, runs the one waitpid loop,
// follows threads, forks and execs, and turns syscall stops into Tracker calls.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "arch/registers.h"
#include "engine/call_sites.h"
#include "engine/fast_path.h"
#include "engine/tracker.h"
#include "syscall/table.h"
#include "tracee/memory.h"

namespace rbinder {

// The bytes of a read/write-family syscall in the tracee's memory, as a list of segments.
// The bytes of a read/write-family syscall in the tracee's memory, as a list of segments.
class TraceeBufferView final : public DataView {
 public:
  TraceeBufferView(pid_t tid, std::vector<TraceeIovec> segments) : tid_(tid), segments_(std::move(segments)) {
    for (const auto& s : segments_) size_ += s.len;
  }
  uint64_t size() const override { return size_; }
  long copy(uint64_t offset, void* local_buf, size_t len) override;

 private:
  pid_t tid_;
  std::vector<TraceeIovec> segments_;
  uint64_t size_ = 0;
};

struct ProcessInfo {
  pid_t pid = 0;
  pid_t ppid = 0;
  std::string executable_path;
  std::vector<std::string> command_args;
  bool fast = false;  // its syscalls go through the fast path's stub (else ptrace stops)
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
  // Batches delivered and not yet taken by the other side.
  virtual size_t backlog() const { return 0; }
};

// A program the launcher (native/src/launcher/) started and set up for the fast path before Node
// booted: the engine adopts it instead of spawning one.
struct LaunchedProgram {
  pid_t pid = -1;
  int listener_fd = -1;  // the trap filter's user-notification listener
  int region_fd = -1;    // the memfd of the first image's shared region
};

struct EngineConfig {
  std::string file;               // resolved path of the program
  std::vector<std::string> argv;  // argv[0] included
  std::vector<std::string> env;   // "K=V"
  std::vector<int> inherit_fds;   // descriptors rbinder inherited, passed on to the program
  bool fast = false;              // --mode fast: the in-process stub where it can be set up
  // --export-priority idle: once the program runs, every thread of this process but the engine's
  // own two (the loop the program waits for, and the timer that drains the rings) gets SCHED_IDLE.
  bool idle_export = false;
  std::optional<LaunchedProgram> launched;  // set: adopt it (fast mode); file/argv/env are unused
  TrackerConfig tracker;
};

struct EngineStats {
  TrackerStats tracker;
  std::array<std::atomic<uint64_t>, syscall::kTracedSyscallCount> entry_stops{};
  std::array<std::atomic<uint64_t>, syscall::kTracedSyscallCount> exit_stops{};
  std::atomic<uint64_t> spans_dropped{0};
  std::atomic<uint64_t> spans_emitted{0};
  std::atomic<uint64_t> fast_traps{0};        // syscalls the stub handled in-process, after a signal
  std::atomic<uint64_t> fast_direct{0};       // and through a patched call site, without a signal
  std::atomic<uint64_t> sites_approved{0};    // call sites the engine let the stub patch
  std::atomic<uint64_t> sites_refused{0};     // and refused (they keep trapping)
  std::atomic<uint64_t> fast_upcalls{0};      // round trips from the stub to the engine
  std::atomic<uint64_t> fast_events{0};       // ring events the engine consumed
  std::atomic<uint64_t> fast_event_bytes{0};  // the data they carried (mostly bytes read and written)
  std::atomic<uint64_t> fast_dropped{0};      // events lost to a full ring
  std::atomic<uint64_t> fast_processes{0};    // processes set up with the fast path
  std::atomic<uint64_t> fast_fallbacks{0};    // processes left on ptrace stops
};

class Engine final : public SpanSink {
 public:
  // Where a rewritten write's header, msghdr and iovecs go in a block of tracee memory of `size`
  // bytes: the header (at most `header_max` bytes) first, then a msghdr, then as many iovecs as fit.
  struct SlotLayout {
    constexpr SlotLayout(size_t header, size_t size)
        : header_max(header), msghdr_at(header), iovecs_at(header + 64), max_iovecs((size - header - 64) / sizeof(iovec)) {}
    size_t header_max, msghdr_at, iovecs_at, max_iovecs;
  };
  static constexpr size_t kBatchSpans = 512;  // spans handed to JS at once
  static constexpr size_t kShedBatches = 32;  // batches JS has not taken that start load shedding
  Engine(EngineConfig config, BatchSink& sink);
  // Starts the engine thread; returns the program's pid, or -errno with `error` set.
  pid_t start(std::string& error);
  EngineStats& stats() { return stats_; }
  // JS's span queue is (or is no longer) behind: new traces are shed meanwhile (Tracker).
  void set_export_behind(bool behind) { tracker_.set_shedding(Tracker::kExportQueue, behind); }
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
    // The fast path (the process is not ptraced): the ring its stub writes to (shared with the
    // fork children of its image) and its descriptor table.
    std::shared_ptr<fast::SharedRegion> region;
    std::shared_ptr<FdTable> fds;
    bool gone = false;  // exited: what it left in a ring is drained without waiting for it
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
  // The descriptor table after an exec in thread `tid`: unshared, close-on-exec sockets closed.
  std::shared_ptr<FdTable> table_after_exec(pid_t tid, std::shared_ptr<FdTable> old);
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
  // Lays out the injected header, iovecs (and msghdr) in the slot at `base` as `writes`, which
  // the caller flushes into the tracee, and points the syscall at them: `rewritten` holds the
  // syscall's registers and is changed to point at the slot.
  bool point_write_at_slot(Thread& t, syscall::Kind kind, long nr, const SlotLayout& layout, TraceeAddr base,
                           arch::Registers& rewritten, TraceeWrites& writes);
  void finish_rewritten_write(Thread& t, Tracker::Io& io);
  // Tells the tracker what a rewritten write sent; returns the count of the program's bytes.
  long complete_rewritten_write(Thread& t, Tracker::Io& io);
  std::vector<TraceeIovec> write_segments(Thread& t, syscall::Kind kind, long nr, const arch::Registers& regs);
  void announce(Process& p);
  void flush();
  void set_exit(const ExitInfo& exit);
  void fail(const std::string& message);

  // The fast path (detached.cc, docs/fast-path.md). The program runs under ptrace only until its
  // first exec, where the stub and the trap filter go in; then the engine detaches and serves
  // the filter's user notifications (upcalls) and drains the rings.
  void setup_fast_path(Thread& t);   // at the first image's execve exit stop (still ptraced)
  // Takes over the launched program (config_.launched); false with `error` set if it cannot.
  bool adopt(std::string& error);
  // A ring the engine drains from now on: its stub may patch call sites (RBINDER_PATCH_CALL_SITES).
  void region_ready(fast::SharedRegion& region);
  // The root process's state once its first image runs the stub (spawned or launched).
  void fast_root_ready(Process& process, std::shared_ptr<fast::SharedRegion> region, OwnedFd listener);
  fast::PrivateInit private_init(pid_t pid, const FdTable& fds) const;
  void fast_loop();
  void handle_notification();
  long fast_exec(pid_t tid, pid_t pid);     // RB_UP_EXEC
  long fast_write(pid_t tid, pid_t pid, uint64_t call_addr);  // RB_UP_WRITE
  // Waits for the exec of `tid` (attached) to end, sets the new image up, detaches.
  void finish_fast_exec(pid_t tid, pid_t pid);
  void fast_image_ready(pid_t tid, Process& process);
  void reap_children();
  void fast_process_gone(pid_t pid);
  void root_exited(int status);
  Process* fast_process(pid_t pid);
  Thread* fast_thread(pid_t tid, pid_t pid);
  size_t drain_region(fast::SharedRegion& region);
  void site_proposed(rb_shared& shared, const rb_event& e, const uint8_t* data);
  // Drains every ring, each up to its first event still being written; returns the most slots
  // consumed from one ring (how close the fullest ring came to full: the timer's pacing). Each
  // ring's doorbell is reset first; `live` (if given) gets every ring, for the timer to wait on.
  size_t drain_all(std::vector<std::shared_ptr<fast::SharedRegion>>* live = nullptr);
  // The timer's work, and its wait for a doorbell (a stub's, or timer_bell_) or the timeout, on
  // at most FUTEX_WAITV_MAX - 1 rings: false when the kernel cannot (no futex_waitv), and the
  // timer then polls.
  void timer_loop(pid_t engine_tid);
  bool wait_for_bells(const std::vector<std::shared_ptr<fast::SharedRegion>>& live, std::chrono::milliseconds timeout);

  EngineConfig config_;
  BatchSink& sink_;
  EngineStats stats_;
  Tracker tracker_;
  std::mutex engine_mutex_;  // the loop's stop handling vs the drainer thread
  std::mutex batch_mutex_;  // the loop fills batch_, the flusher thread may hand it over
  // Held from taking batch_ to handing it to the sink, so that batches reach JS in the order they
  // were taken: the timer's and the engine thread's flushes may overlap, and JS starts shutting
  // down at the batch with the exit, ignoring any that comes after it.
  std::mutex flush_mutex_;
  std::unique_ptr<Batch> batch_;
  std::atomic<size_t> batch_size_{0};
  const bool debug_;  // RBINDER_ENGINE_DEBUG: one stderr line per stop
  const bool predict_;  // RBINDER_PTRACE_PREDICT=0 turns the prediction off (exit stops always)
  // RBINDER_STUB_CONTEXT=0: the fast path's stub leaves every outbound request head to the engine.
  const bool stub_context_;
  // RBINDER_FORCE_PROC_NET=1 (tests): as if pidfd_getfd were refused: sockets described from /proc,
  // and no fast path (its shared memory and listener come through pidfd_getfd).
  const bool force_proc_net_;
  // RBINDER_PATCH_CALL_SITES=0: the stub never patches call sites (every socket syscall traps).
  const bool patch_call_sites_;
  fast::CallSites call_sites_;
  pid_t root_pid_ = -1;
  bool root_exited_ = false;
  int exec_error_pipe_ = -1;
  std::unordered_map<pid_t, Thread> threads_;
  std::unordered_map<pid_t, std::shared_ptr<Process>> processes_;
  std::unordered_map<pid_t, int> early_stops_;  // stops of new tracees seen before their parent's event
  // The fast path: the trap filter's notification listener (valid once the first image is set
  // up and detached), every ring, and what they counted so far.
  OwnedFd listener_;
  std::vector<std::weak_ptr<fast::SharedRegion>> regions_;
  // Rung (set to 1, woken) when a ring is added: the timer waits on the rings it knew of.
  uint32_t timer_bell_ = 0;
  // start() waits for the engine thread to have forked.
  std::mutex start_mutex_;
  std::condition_variable start_cv_;
  bool started_ = false;
  std::string start_error_;
};

}  // namespace rbinder
