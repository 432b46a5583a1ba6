#include "engine/engine.h"

#include <fcntl.h>
#include <pthread.h>
#include <linux/close_range.h>
#include <linux/futex.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>
#include <sched.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <algorithm>

#include "syscall/seccomp.h"
#include "tracee/memory.h"

namespace rbinder {
namespace {

using syscall::Exit;
using syscall::Kind;
using syscall::kTracedSyscalls;

constexpr unsigned kPtraceOptions = PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACESECCOMP | PTRACE_O_TRACECLONE |
                                    PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC |
                                    PTRACE_O_EXITKILL;
// The timed work of the engine: handing spans to JS (the exporter batches them for seconds
// anyway), and in fast mode draining the rings, often only while they are busy. Every wake-up of
// an idle tracer costs tens of microseconds of CPU on a virtual machine.
constexpr std::chrono::milliseconds kFlushInterval{100};

// --export-priority idle: the threads that export (JS, V8's helpers, libuv's pool) get only the CPU
// time the program leaves unused, and give it up at once when the program wakes (the scheduler
// preempts SCHED_IDLE threads for any other). Threads they create later inherit it. Nothing can
// undo it without CAP_SYS_NICE, which is why the engine's own threads are left out, not raised.
void idle_other_threads(pid_t keep_a, pid_t keep_b, bool debug) {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return;
  while (dirent* entry = readdir(dir)) {
    const pid_t tid = static_cast<pid_t>(std::strtol(entry->d_name, nullptr, 10));
    if (tid <= 0 || tid == keep_a || tid == keep_b) continue;
    sched_param param{};
    if (sched_setscheduler(tid, SCHED_IDLE, &param) != 0 && debug)
      dprintf(2, "rbinder-engine: thread %d keeps its priority (%s)\n", tid, strerror(errno));
  }
  closedir(dir);
}
// Drain pacing, where the timer cannot wait on the rings' doorbells (kBellTimeout below): the
// kernel has no futex_waitv (before Linux 5.16), or there are more rings than it takes. A wake-up of an idle thread costs 20-50 us of CPU on a virtual
// machine (a bare nanosleep loop here: 38 us per wake at 10 ms), so the timer sleeps longer
// while drains find the rings nearly empty, and comes back at once when one was filling: the
// next sleep doubles (up to kMaxDrainInterval) after a drain of fewer than kQuietDrain slots, and
// drops to kMinDrainInterval after one of kBusyDrain or more. A ring has RB_RING_SLOTS (8192)
// slots: at the longest sleep a burst of up to ~400k slots a second fits before the next drain.
constexpr std::chrono::milliseconds kMinDrainInterval{2};
constexpr std::chrono::milliseconds kMaxDrainInterval{20};
constexpr size_t kBusyDrain = 256;
constexpr size_t kQuietDrain = 128;
// The timer's period without rings (ptrace mode: it only hands spans to JS), and its first sleep.
constexpr std::chrono::milliseconds kTimerTick{10};
// Where the kernel has futex_waitv (Linux 5.16+), the timer instead sleeps until a stub rings its
// ring's doorbell (RB_BELL_SLOTS filled, abi.h), spans are due to JS, or at most this long.
constexpr std::chrono::milliseconds kBellTimeout{250};
// Scratch memory per traced address space: kScratchSlots slots, one per thread with a rewritten
// syscall in flight. A slot holds the injected header, a msghdr and an iovec array.
constexpr size_t kScratchSlots = 64;
constexpr size_t kSlotSize = 32 * 1024;
constexpr Engine::SlotLayout kPtraceSlot{4096, kSlotSize};
// What the child reports when it cannot start the program.
constexpr int kStepSeccomp = 1;
constexpr int kStepExec = 2;

std::string errno_text(const char* call, int err) {
  const char* name = strerrorname_np(err);
  return std::string(call) + ": " + (name ? name : "E?") + " (" + strerror(err) + ")";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> split_nul(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t end = s.find('\0', start);
    if (end == std::string::npos) end = s.size();
    out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

bool is_socket_fd(pid_t pid, int fd) {
  char path[64], target[64];
  snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, fd);
  ssize_t n = readlink(path, target, sizeof(target) - 1);
  return n > 7 && std::strncmp(target, "socket:", 7) == 0;
}

}  // namespace

long TraceeBufferView::copy(uint64_t offset, void* local_buf, size_t len) {
  size_t copied = 0;
  uint64_t seg_start = 0;
  for (const auto& s : segments_) {
    if (copied == len) break;
    uint64_t seg_end = seg_start + s.len;
    if (offset + copied < seg_end) {
      uint64_t in_seg = offset + copied - seg_start;
      size_t n = static_cast<size_t>(std::min<uint64_t>(s.len - in_seg, len - copied));
      long got = read_tracee(tid_, s.base + in_seg, static_cast<uint8_t*>(local_buf) + copied, n);
      if (got < 0) return copied ? static_cast<long>(copied) : got;
      copied += static_cast<size_t>(got);
      if (static_cast<size_t>(got) < n) break;
    }
    seg_start = seg_end;
  }
  return static_cast<long>(copied);
}

Engine::Engine(EngineConfig config, BatchSink& sink)
    : config_(std::move(config)), sink_(sink), tracker_(*this, stats_.tracker, config_.tracker),
      batch_(std::make_unique<Batch>()), debug_(getenv("RBINDER_ENGINE_DEBUG") != nullptr),
      predict_(getenv("RBINDER_PTRACE_PREDICT") == nullptr || std::string(getenv("RBINDER_PTRACE_PREDICT")) != "0"),
      force_proc_net_(getenv("RBINDER_FORCE_PROC_NET") != nullptr && std::string(getenv("RBINDER_FORCE_PROC_NET")) != "0"),
      stub_context_(getenv("RBINDER_STUB_CONTEXT") == nullptr || std::string(getenv("RBINDER_STUB_CONTEXT")) != "0"),
      patch_call_sites_(getenv("RBINDER_PATCH_CALL_SITES") == nullptr || std::string(getenv("RBINDER_PATCH_CALL_SITES")) != "0") {
  // The engine keeps a copy of every tracked TCP socket: allow as many as the hard limit.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
}

pid_t Engine::start(std::string& error) {
  if (config_.launched) {
    // Nothing to attach to: the launcher detached before Node started, so any thread may run the
    // loop (ptrace is only used around later execs, from the loop's own thread).
    if (!adopt(error)) return -1;
    std::thread([this] { run(); }).detach();
    return root_pid_;
  }
  // The ptrace tracer is the thread that attached, so the loop must run on the thread that forks.
  std::thread([this] { run(); }).detach();
  std::unique_lock<std::mutex> lock(start_mutex_);
  start_cv_.wait(lock, [this] { return started_; });
  if (root_pid_ < 0) {
    error = start_error_;
    return -1;
  }
  return root_pid_;
}

void Engine::run() {
  pthread_setname_np(pthread_self(), "rbinder-engine");  // for top -H, perf and /proc/PID/task
  if (!config_.launched) spawn();
  if (root_pid_ > 0) {
    // Spans reach JS in batches: at most kBatchSpans, or whatever accumulated in kFlushInterval.
    // A separate thread does the timed work so the loop never waits for JS nor JS for it; in fast
    // mode it also drains the events the stubs put in the rings while no upcall came along.
    const pid_t engine_tid = gettid();
    std::thread([this, engine_tid] { timer_loop(engine_tid); }).detach();
    loop();
  }
  flush();
}

void Engine::timer_loop(pid_t engine_tid) {
  pthread_setname_np(pthread_self(), "rbinder-timer");
  if (config_.idle_export) idle_other_threads(engine_tid, gettid(), debug_);
  auto last_flush = std::chrono::steady_clock::now();
  std::chrono::milliseconds sleep = kTimerTick;
  bool bells = config_.fast;  // until the kernel says it cannot wait on them
  std::vector<std::shared_ptr<fast::SharedRegion>> live;
  for (;;) {
    if (config_.fast) {
      size_t slots;
      {
        std::lock_guard<std::mutex> lock(engine_mutex_);
        // Reset before the rings are listed: a ring added from now on rings it.
        __atomic_store_n(&timer_bell_, 0, __ATOMIC_SEQ_CST);
        slots = drain_all(bells ? &live : nullptr);
      }
      if (slots >= kBusyDrain) {
        sleep = kMinDrainInterval;
      } else if (slots < kQuietDrain) {
        sleep = std::min(sleep * 2, kMaxDrainInterval);
      }
    }
    auto now = std::chrono::steady_clock::now();
    if (now - last_flush >= kFlushInterval || batch_size_.load(std::memory_order_relaxed) >= kBatchSpans) {
      flush();
      last_flush = now;
    }
    // futex_waitv takes 128 words at most (the engine's own and 127 rings): beyond that, poll.
    if (bells && live.size() < FUTEX_WAITV_MAX) {
      // Spans waiting for JS set the deadline; otherwise only the rings' doorbells do.
      std::chrono::milliseconds timeout = kBellTimeout;
      if (batch_size_.load(std::memory_order_relaxed) > 0) {
        const auto due = std::chrono::duration_cast<std::chrono::milliseconds>(last_flush + kFlushInterval - now);
        timeout = std::clamp(due, std::chrono::milliseconds(1), kBellTimeout);
      }
      bells = wait_for_bells(live, timeout);
      live.clear();
      if (bells) continue;
    }
    live.clear();
    std::this_thread::sleep_for(sleep);
  }
}

bool Engine::wait_for_bells(const std::vector<std::shared_ptr<fast::SharedRegion>>& live, std::chrono::milliseconds timeout) {
  futex_waitv waiters[FUTEX_WAITV_MAX] = {};
  size_t n = 0;
  waiters[n++] = {0, reinterpret_cast<uint64_t>(&timer_bell_), FUTEX_32 | FUTEX_PRIVATE_FLAG, 0};
  // The rings are shared with the traced processes: shared futexes (no FUTEX_PRIVATE_FLAG).
  for (const auto& region : live) waiters[n++] = {0, reinterpret_cast<uint64_t>(&region->get()->bell), FUTEX_32, 0};
  timespec deadline{};
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  const long long ns = deadline.tv_nsec + std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
  deadline.tv_sec += static_cast<time_t>(ns / 1000000000);
  deadline.tv_nsec = static_cast<long>(ns % 1000000000);
  if (::syscall(SYS_futex_waitv, waiters, n, 0, &deadline, CLOCK_MONOTONIC) >= 0) return true;
  // Woken, timed out, a bell already rung (EAGAIN), or a signal: all mean "drain now".
  if (errno == ETIMEDOUT || errno == EAGAIN || errno == EINTR) return true;
  if (debug_) dprintf(2, "rbinder-engine: futex_waitv: %s; the timer polls the rings\n", strerror(errno));
  return false;
}

void Engine::spawn() {
  auto report = [this](pid_t pid, const std::string& err) {
    std::lock_guard<std::mutex> lock(start_mutex_);
    root_pid_ = pid;
    start_error_ = err;
    started_ = true;
    start_cv_.notify_all();
  };

  // Everything the child needs is prepared before fork: it may only make async-signal-safe calls.
  std::vector<sock_filter> filter = syscall::build_trace_filter();
  sock_fprog prog{static_cast<unsigned short>(filter.size()), filter.data()};
  std::vector<char*> argv, envp;
  for (auto& a : config_.argv) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : config_.env) envp.push_back(e.data());
  envp.push_back(nullptr);
  int go_pipe[2], err_pipe[2];
  if (pipe2(go_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    report(-1, errno_text("pipe2", errno));
    return;
  }

  pid_t pid = fork();
  if (pid < 0) {
    report(-1, errno_text("fork", errno));
    return;
  }
  if (pid == 0) {
    // Child. Node ignores SIGPIPE and SIGXFSZ; an ignored disposition survives exec, so undo it.
    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    // Node marks every descriptor it inherited close-on-exec; the program must inherit them as
    // rbinder did (stdio, systemd sockets, ...).
    for (int fd : config_.inherit_fds) fcntl(fd, F_SETFD, 0);
    char go = 0;
    while (read(go_pipe[0], &go, 1) < 0 && errno == EINTR) {
    }
    if (go != 'g') _exit(127);  // the tracer could not attach; it reports why
    // On failure the child tells the parent which step failed and why: {step, errno}.
    int report_to_parent[2] = {kStepSeccomp, 0};
    // Fast mode: nothing is traced before the first exec; the engine installs the trap filter
    // in the new image (no_new_privs lets an unprivileged process install it).
    // The detached program gets SIGTERM if rbinder dies (under ptrace, PTRACE_O_EXITKILL kills it).
    if (config_.fast) prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
    int err = config_.fast ? (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : -errno) : syscall::install_filter(prog);
    if (err == 0) {
      execve(config_.file.c_str(), argv.data(), envp.data());
      report_to_parent[0] = kStepExec;
      err = -errno;
    }
    report_to_parent[1] = -err;
    (void)!write(err_pipe[1], report_to_parent, sizeof(report_to_parent));
    _exit(-err == ENOENT ? 127 : 126);
  }

  close(go_pipe[0]);
  close(err_pipe[1]);
  exec_error_pipe_ = err_pipe[0];
  if (ptrace(PTRACE_SEIZE, pid, nullptr, reinterpret_cast<void*>(static_cast<uintptr_t>(kPtraceOptions))) != 0) {
    int e = errno;
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    close(go_pipe[1]);
    report(-1, errno_text("ptrace(PTRACE_SEIZE)", e) +
                   (e == EPERM ? " - ptrace is not permitted here (seccomp profile, yama ptrace_scope, or "
                                 "missing CAP_SYS_PTRACE)"
                               : ""));
    return;
  }
  auto process = std::make_shared<Process>();
  process->tgid = pid;
  process->ppid = getpid();
  process->pidfd = open_pidfd(pid);
  processes_[pid] = process;
  Thread root;
  root.tid = pid;
  root.process = process;
  root.fds = tracker_.new_fd_table();
  threads_.emplace(pid, std::move(root));
  (void)!write(go_pipe[1], "g", 1);
  close(go_pipe[1]);
  report(pid, "");
}

void Engine::loop() {
  for (;;) {
    if (listener_.valid()) {
      fast_loop();  // the program is set up for the fast path and no longer ptraced
      return;
    }
    int status = 0;
    pid_t tid = waitpid(-1, &status, __WALL);
    if (tid < 0) {
      if (errno == EINTR) continue;
      if (errno != ECHILD) fail(errno_text("waitpid", errno));
      return;
    }
    std::lock_guard<std::mutex> lock(engine_mutex_);
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      handle_exit(tid, status);
    } else if (WIFSTOPPED(status)) {
      handle_stop(tid, status);
    }
    // Handing spans to JS is the timer thread's job: the queue to JS takes a lock the JS thread
    // also takes, and at idle priority that thread may be kept waiting, which this one must not.
  }
}

void Engine::resume(pid_t tid, int sig) {
  // ESRCH: the tracee died meanwhile (e.g. killed); its exit is reported by waitpid.
  ptrace(PTRACE_CONT, tid, nullptr, reinterpret_cast<void*>(static_cast<uintptr_t>(sig)));
}

void Engine::resume_to_exit(pid_t tid) { ptrace(PTRACE_SYSCALL, tid, nullptr, nullptr); }

void Engine::handle_stop(pid_t tid, int status) {
  auto it = threads_.find(tid);
  if (it == threads_.end()) {
    // A new tracee whose parent's fork/clone event we have not seen yet: hold it until then.
    early_stops_[tid] = status;
    return;
  }
  Thread& t = it->second;
  const int sig = WSTOPSIG(status);
  const int event = status >> 16;
  if (debug_) {
    arch::Registers regs;
    regs.fetch(tid);
    dprintf(2, "rbinder-engine: stop tid=%d sig=%d event=%d nr=%ld rax=%ld\n", tid, sig, event, regs.syscall_nr(), regs.result());
  }
  if (sig == (SIGTRAP | 0x80)) {
    if (t.exec_setup_pending) {
      t.exec_setup_pending = false;
      setup_fast_path(t);
      return;
    }
    on_syscall_exit(t);
    resume(tid);
    return;
  }
  switch (event) {
    case PTRACE_EVENT_SECCOMP:
      on_syscall_entry(t);
      return;
    case PTRACE_EVENT_FORK:
    case PTRACE_EVENT_VFORK:
    case PTRACE_EVENT_CLONE:
      on_new_tracee(t, event);
      resume(tid);
      return;
    case PTRACE_EVENT_EXEC:
      on_exec(t);  // may re-key the thread
      return;
    case PTRACE_EVENT_STOP:
      if (t.awaiting_first_stop) {
        t.awaiting_first_stop = false;
        resume(tid);
      } else if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) {
        // Group-stop (job control): stay stopped until SIGCONT, as without a tracer.
        ptrace(PTRACE_LISTEN, tid, nullptr, nullptr);
      } else {
        resume(tid);
      }
      return;
    default:
      // Signal-delivery-stop: deliver the signal unchanged.
      resume(tid, sig);
      return;
  }
}

void Engine::handle_exit(pid_t tid, int status) {
  auto it = threads_.find(tid);
  if (it != threads_.end()) drop_thread(tid);
  early_stops_.erase(tid);
  if (tid == root_pid_ && !root_exited_) {
    root_exited_ = true;
    ExitInfo exit;
    if (WIFEXITED(status)) {
      exit.exited = true;
      exit.code = WEXITSTATUS(status);
    } else {
      exit.signal = WTERMSIG(status);
    }
    if (exec_error_pipe_ >= 0) {
      int report[2] = {0, 0};
      if (read(exec_error_pipe_, report, sizeof(report)) == static_cast<ssize_t>(sizeof(report))) {
        if (report[0] == kStepSeccomp) {
          exit.engine_error = errno_text("seccomp(SECCOMP_SET_MODE_FILTER)", report[1]);
        } else {
          exit.spawn_errno = report[1];
        }
      }
      close(exec_error_pipe_);
      exec_error_pipe_ = -1;
    }
    set_exit(exit);
  }
}

void Engine::drop_thread(pid_t tid) {
  auto it = threads_.find(tid);
  if (it == threads_.end()) return;
  Thread& t = it->second;
  tracker_.on_thread_exit(tid);
  // The last thread using an fd table takes its descriptors with it.
  if (t.fds && t.fds.use_count() == 1) tracker_.release_fd_table(*t.fds, now_ns());
  std::shared_ptr<Process> process = t.process;
  threads_.erase(it);
  if (process && process.use_count() == 2 && processes_.count(process->tgid)) {
    processes_.erase(process->tgid);  // only the map and this local held it
  }
}

void Engine::on_new_tracee(Thread& parent, int event) {
  unsigned long msg = 0;
  if (ptrace(PTRACE_GETEVENTMSG, parent.tid, nullptr, &msg) != 0) return;
  const pid_t child = static_cast<pid_t>(msg);
  uint64_t flags = 0;
  if (event == PTRACE_EVENT_CLONE) {
    arch::Registers regs;
    if (regs.fetch(parent.tid) == 0) {
      if (regs.syscall_nr() == SYS_clone3) {
        read_tracee(parent.tid, TraceeAddr{regs.arg(1)}, &flags, sizeof(flags));
      } else {
        flags = regs.arg(1);
      }
    }
  }
  if (event == PTRACE_EVENT_VFORK) flags |= CLONE_VM;
  Thread t;
  t.tid = child;
  t.awaiting_first_stop = true;
  if (flags & CLONE_THREAD) {
    t.process = parent.process;
  } else {
    auto process = std::make_shared<Process>();
    process->tgid = child;
    process->ppid = parent.process->tgid;
    process->pidfd = open_pidfd(child);
    const auto& parent_scratch = parent.process->scratch;
    if (parent_scratch && (flags & CLONE_VM)) {
      process->scratch = parent_scratch;  // same address space
    } else if (parent_scratch && parent_scratch->base) {
      // fork: the child has its own copy of the mapping at the same address.
      process->scratch = std::make_shared<Scratch>();
      process->scratch->base = parent_scratch->base;
      process->scratch->slot_used.assign(kScratchSlots, false);
    }
    processes_[child] = process;
    t.process = process;
  }
  t.fds = (flags & CLONE_FILES) ? parent.fds : tracker_.copy_fd_table(*parent.fds);
  adopt_thread(child, std::move(t));
}

void Engine::adopt_thread(pid_t tid, Thread&& t) {
  threads_[tid] = std::move(t);
  auto early = early_stops_.find(tid);
  if (early != early_stops_.end()) {
    int status = early->second;
    early_stops_.erase(early);
    handle_stop(tid, status);
  }
}

void Engine::on_exec(Thread& t) {
  const pid_t tid = t.tid;
  unsigned long former = 0;
  ptrace(PTRACE_GETEVENTMSG, tid, nullptr, &former);
  Thread* thread = &t;
  if (static_cast<pid_t>(former) != tid && threads_.count(static_cast<pid_t>(former))) {
    // A non-leader thread exec'd: it takes over the leader's tid; the old leader is gone.
    Thread moved = std::move(threads_[static_cast<pid_t>(former)]);
    threads_.erase(static_cast<pid_t>(former));
    tracker_.on_thread_exit(static_cast<pid_t>(former));
    moved.tid = tid;
    threads_[tid] = std::move(moved);
    thread = &threads_[tid];
  }
  // Other threads of the process are gone now.
  for (auto it = threads_.begin(); it != threads_.end();) {
    if (it->first != tid && it->second.process == thread->process) {
      tracker_.on_thread_exit(it->first);
      it = threads_.erase(it);
    } else {
      ++it;
    }
  }
  thread->fds = table_after_exec(tid, std::move(thread->fds));
  thread->process->announced = false;
  thread->process->scratch.reset();  // a new address space
  if (tid == root_pid_ && exec_error_pipe_ >= 0) {
    close(exec_error_pipe_);  // the program started: no spawn error can come any more
    exec_error_pipe_ = -1;
  }
  if (config_.fast) {
    // The new image's first instruction has not run: set the stub up at execve's exit stop,
    // where registers can be changed for good.
    thread->exec_setup_pending = true;
    resume_to_exit(tid);
    return;
  }
  resume(tid);
}

std::shared_ptr<FdTable> Engine::table_after_exec(pid_t tid, std::shared_ptr<FdTable> old) {
  // exec unshares the fd table and closes O_CLOEXEC descriptors: keep only the sockets still open.
  std::shared_ptr<FdTable> table = tracker_.copy_fd_table(*old);
  if (old.use_count() == 1) tracker_.release_fd_table(*old, now_ns());
  old.reset();
  std::vector<int> gone;
  table->for_each([&](int fd, const std::shared_ptr<Connection>&) {
    if (!is_socket_fd(tid, fd)) gone.push_back(fd);
  });
  for (int fd : gone) tracker_.on_close(*table, fd, now_ns());
  return table;
}

void Engine::on_syscall_entry(Thread& t) {
  arch::Registers regs;
  if (regs.fetch(t.tid) != 0) return;  // died under us
  const int index = syscall::traced_index(regs.syscall_nr());
  if (index < 0) {
    resume(t.tid);
    return;
  }
  stats_.entry_stops[static_cast<size_t>(index)]++;
  const auto& sc = kTracedSyscalls[index];
  FdTable& fds = *t.fds;
  const int fd = static_cast<int>(regs.arg(1));
  bool need_exit = false;
  PendingSyscall& p = t.pending;
  p = PendingSyscall{};
  switch (sc.kind) {
    case Kind::kRead:
    case Kind::kReadv:
    case Kind::kRecvmsg: {
      if (!tracker_.is_tracked(fds, fd)) break;
      // recv(MSG_PEEK) leaves the bytes for a later read: nothing to see yet.
      const uint64_t flags = sc.nr == SYS_recvfrom ? regs.arg(4) : sc.nr == SYS_recvmsg ? regs.arg(3) : 0;
      if (flags & MSG_PEEK) break;
      Connection& conn = *fds.get(fd);
      need_exit = (flags & MSG_WAITALL) || !predict_read(t, sc, regs, conn);
      break;
    }
    case Kind::kSendfile:
      need_exit = tracker_.is_tracked(fds, fd);
      break;
    case Kind::kWrite:
    case Kind::kWritev:
    case Kind::kSendmsg:
      need_exit = tracker_.is_tracked(fds, fd);
      if (need_exit && !tracker_.may_inject(fds, fd)) {
        need_exit = !predict_write(t, sc, regs, *fds.get(fd));
      } else if (need_exit) {
        std::vector<TraceeIovec> segments = write_segments(t, sc.kind, sc.nr, regs);
        TraceeBufferView view(t.tid, segments);
        const Tracker::Io io = io_now(t, fd, Direction::kWrite);
        Injection injection = tracker_.plan_injection(fds, io, view);
        if (!injection.active) break;
        p.index = index;
        for (int i = 0; i < 6; i++) p.args[static_cast<size_t>(i)] = regs.arg(i + 1);
        p.entry = io.entry;
        if (!t.process->scratch) t.process->scratch = std::make_shared<Scratch>();
        if (!t.process->scratch->base && !t.process->scratch->failed) {
          // First injection in this address space: map the scratch memory, then the program's
          // syscall is issued again and comes back here.
          if (start_scratch_mapping(t, regs)) {
            resume_to_exit(t.tid);
            return;
          }
          break;
        }
        p.injection = std::move(injection);
        p.app_segments = std::move(segments);
        if (!rewrite_write(t, regs, sc.kind, sc.nr)) {
          p.injection = Injection{};
          p.app_segments.clear();
        }
      }
      break;
    case Kind::kConnect:
      need_exit = read_tracee_sockaddr(t.tid, TraceeAddr{regs.arg(2)}, regs.arg(3), p.connect_domain,
                                       p.connect_peer) &&
                  (p.connect_domain == AF_INET || p.connect_domain == AF_INET6 || p.connect_domain == AF_UNIX);
      break;
    case Kind::kAccept:
      need_exit = true;
      break;
    case Kind::kClose: {
      const std::shared_ptr<Connection> conn = fds.get(fd);
      if (conn && !conn->opaque && conn->source_fd.valid() && conn->fd_refs == 1) {
        TcpProgress progress;
        const Tracker::Io io = io_now(t, fd, Direction::kRead);
        if (tcp_progress(conn->source_fd.get(), progress) == 0) settle_reads(t, *conn, progress, io);
      }
      tracker_.on_close(fds, fd, now_ns());
      break;
    }
    case Kind::kCloseRange: {
      const unsigned first = static_cast<unsigned>(regs.arg(1));
      const unsigned last = static_cast<unsigned>(regs.arg(2));
      const unsigned flags = static_cast<unsigned>(regs.arg(3));
      if (flags & CLOSE_RANGE_UNSHARE) t.fds = tracker_.copy_fd_table(fds);
      if (!(flags & CLOSE_RANGE_CLOEXEC)) {  // CLOEXEC only marks: exec checks what survived
        std::vector<int> in_range;
        t.fds->for_each([&](int f, const std::shared_ptr<Connection>&) {
          if (static_cast<unsigned>(f) >= first && static_cast<unsigned>(f) <= last) in_range.push_back(f);
        });
        for (int f : in_range) {
          tracker_.on_close(*t.fds, f, now_ns());
        }
      }
      break;
    }
    case Kind::kDup:
    case Kind::kFcntlDup:
      need_exit = tracker_.is_known(fds, fd);
      break;
    case Kind::kDup2:
      need_exit = tracker_.is_known(fds, fd) || tracker_.is_known(fds, static_cast<int>(regs.arg(2)));
      break;
  }
  if (p.mapping_scratch) {
    resume_to_exit(t.tid);  // the program's syscall is issued again once scratch memory is there
    return;
  }
  if (!need_exit || sc.exit == Exit::kNever) {
    resume(t.tid);
    return;
  }
  if (p.index < 0) {
    p.index = index;
    for (int i = 0; i < 6; i++) p.args[static_cast<size_t>(i)] = regs.arg(i + 1);
    p.entry = now_ns();
  }
  resume_to_exit(t.tid);
}

void Engine::on_syscall_exit(Thread& t) {
  PendingSyscall& p = t.pending;
  if (p.index < 0) return;
  const int index = p.index;
  p.index = -1;
  stats_.exit_stops[static_cast<size_t>(index)]++;
  if (p.mapping_scratch) {
    finish_scratch_mapping(t);
    return;
  }
  arch::Registers regs;
  if (regs.fetch(t.tid) != 0) return;
  const long result = regs.result();
  const auto& sc = kTracedSyscalls[index];
  FdTable& fds = *t.fds;
  const int fd = static_cast<int>(p.args[0]);
  Tracker::Io io;
  io.tid = t.tid;
  io.pid = t.process->tgid;
  io.fd = fd;
  io.result = result;
  io.entry = p.entry;
  io.exit = now_ns();
  auto segments_of = [&](uint64_t iov, uint64_t count) {
    std::vector<TraceeIovec> segs;
    if (count > kMaxIovecs || read_tracee_iovecs(t.tid, TraceeAddr{iov}, count, segs) != 0) segs.clear();
    return segs;
  };
  auto msghdr_segments = [&](uint64_t addr) {
    msghdr msg{};
    if (read_tracee(t.tid, TraceeAddr{addr}, &msg, sizeof(msg)) != static_cast<long>(sizeof(msg)))
      return std::vector<TraceeIovec>{};
    return segments_of(reinterpret_cast<uint64_t>(msg.msg_iov), msg.msg_iovlen);
  };
  if (p.rewritten) {
    io.direction = Direction::kWrite;
    finish_rewritten_write(t, io);
    return;
  }
  switch (sc.kind) {
    case Kind::kRead:
    case Kind::kWrite: {
      io.direction = sc.kind == Kind::kRead ? Direction::kRead : Direction::kWrite;
      TraceeBufferView view(t.tid, {TraceeIovec{TraceeAddr{p.args[1]}, result > 0 ? static_cast<uint64_t>(result) : 0}});
      tracker_.on_io(fds, io, view);
      break;
    }
    case Kind::kReadv:
    case Kind::kWritev:
    case Kind::kRecvmsg:
    case Kind::kSendmsg: {
      io.direction = (sc.kind == Kind::kReadv || sc.kind == Kind::kRecvmsg) ? Direction::kRead : Direction::kWrite;
      std::vector<TraceeIovec> segs;
      if (result > 0) {
        segs = (sc.kind == Kind::kReadv || sc.kind == Kind::kWritev) ? segments_of(p.args[1], p.args[2])
                                                                     : msghdr_segments(p.args[1]);
      }
      TraceeBufferView view(t.tid, std::move(segs));
      tracker_.on_io(fds, io, view);
      break;
    }
    case Kind::kSendfile:
      tracker_.on_sendfile(fds, io);
      break;
    case Kind::kConnect:
      if (result == 0 || result == -EINPROGRESS) new_connection(t, fd, Side::kClient, &p);
      break;
    case Kind::kAccept:
      if (result >= 0) new_connection(t, static_cast<int>(result), Side::kServer, nullptr);
      break;
    case Kind::kDup:
    case Kind::kDup2:
    case Kind::kFcntlDup:
      if (result >= 0) {
        tracker_.on_dup(fds, fd, static_cast<int>(result), io.exit);
      }
      break;
    case Kind::kClose:
    case Kind::kCloseRange:
      break;
  }
}

void Engine::new_connection(Thread& t, int fd, Side side, const PendingSyscall* connect) {
  SocketInfo info;
  OwnedFd borrowed;
  if (!t.process->pidfd.valid()) t.process->pidfd = open_pidfd(t.process->tgid);
  if (force_proc_net_ || borrow_socket(t.process->pidfd.get(), fd, info, borrowed) != 0) {
    // pidfd_getfd refused (container seccomp profiles without CAP_SYS_PTRACE): /proc has the
    // addresses; without a copy of the socket there is no prediction (exit stops instead).
    borrowed = OwnedFd();
    if (describe_socket_from_proc(t.process->tgid, fd, info) != 0) return;
  }
  if (info.type != SOCK_STREAM) return;
  if (info.domain != AF_INET && info.domain != AF_INET6 && info.domain != AF_UNIX) return;
  if (connect && info.peer.address.empty()) info.peer = connect->connect_peer;  // still connecting
  tracker_.on_connection(*t.fds, fd, side, t.process->tgid, info, now_ns());
  if (predict_ && info.domain != AF_UNIX) t.fds->get(fd)->source_fd = std::move(borrowed);
}

std::vector<TraceeIovec> Engine::write_segments(Thread& t, Kind kind, long nr, const arch::Registers& regs) {
  std::vector<TraceeIovec> segs;
  switch (kind) {
    case Kind::kWrite:  // write(fd, buf, len), sendto(fd, buf, len, ...)
      segs.push_back(TraceeIovec{TraceeAddr{regs.arg(2)}, regs.arg(3)});
      break;
    case Kind::kWritev:
      if (regs.arg(3) <= kMaxIovecs) read_tracee_iovecs(t.tid, TraceeAddr{regs.arg(2)}, regs.arg(3), segs);
      break;
    case Kind::kSendmsg: {
      msghdr msg{};
      if (read_tracee(t.tid, TraceeAddr{regs.arg(2)}, &msg, sizeof(msg)) == static_cast<long>(sizeof(msg)) &&
          msg.msg_iovlen <= kMaxIovecs)
        read_tracee_iovecs(t.tid, TraceeAddr{reinterpret_cast<uint64_t>(msg.msg_iov)}, msg.msg_iovlen, segs);
      break;
    }
    default:
      break;
  }
  (void)nr;
  return segs;
}

bool Engine::start_scratch_mapping(Thread& t, const arch::Registers& regs) {
  PendingSyscall& p = t.pending;
  p.original = regs;
  arch::Registers mmap_call = regs;
  mmap_call.set_syscall_nr(SYS_mmap);
  mmap_call.set_arg(1, 0);
  mmap_call.set_arg(2, kScratchSlots * kSlotSize);
  mmap_call.set_arg(3, PROT_READ | PROT_WRITE);
  mmap_call.set_arg(4, MAP_PRIVATE | MAP_ANONYMOUS);
  mmap_call.set_arg(5, static_cast<uint64_t>(-1));
  mmap_call.set_arg(6, 0);
  if (mmap_call.store(t.tid) != 0) {
    t.process->scratch->failed = true;
    return false;
  }
  p.mapping_scratch = true;
  return true;
}

void Engine::finish_scratch_mapping(Thread& t) {
  PendingSyscall& p = t.pending;
  p.mapping_scratch = false;
  arch::Registers regs;
  if (regs.fetch(t.tid) != 0) return;
  Scratch& scratch = *t.process->scratch;
  const long result = regs.result();
  if (result < 0 && result > -4096) {
    scratch.failed = true;  // the program goes on untouched, only without injection
  } else {
    scratch.base = TraceeAddr{static_cast<uint64_t>(result)};
    scratch.slot_used.assign(kScratchSlots, false);
  }
  // Issue the program's own syscall again: back to the syscall instruction with its number.
  arch::Registers again = p.original;
  again.set_result(p.original.syscall_nr());
  again.set_instruction_pointer(p.original.instruction_pointer() - arch::kSyscallInsnLength);
  again.store(t.tid);
  p = PendingSyscall{};
}

int Engine::Scratch::acquire() {
  for (size_t i = 0; i < slot_used.size(); i++) {
    if (!slot_used[i]) {
      slot_used[i] = true;
      return static_cast<int>(i);
    }
  }
  return -1;
}

void Engine::Scratch::release(int slot) {
  if (slot >= 0 && static_cast<size_t>(slot) < slot_used.size()) slot_used[static_cast<size_t>(slot)] = false;
}

TraceeAddr Engine::Scratch::slot_address(int slot) const { return base + static_cast<uint64_t>(slot) * kSlotSize; }

bool Engine::rewrite_write(Thread& t, arch::Registers& regs, Kind kind, long nr) {
  PendingSyscall& p = t.pending;
  Scratch& scratch = *t.process->scratch;
  const int slot = scratch.acquire();
  if (slot < 0) return false;
  arch::Registers rewritten = regs;
  TraceeWrites writes;
  if (!point_write_at_slot(t, kind, nr, kPtraceSlot, scratch.slot_address(slot), rewritten, writes) || !writes.flush(t.tid) ||
      rewritten.store(t.tid) != 0) {
    scratch.release(slot);
    return false;
  }
  p.original = regs;
  p.rewritten = true;
  p.slot = slot;
  return true;
}

bool Engine::point_write_at_slot(Thread& t, Kind kind, long nr, const SlotLayout& layout, TraceeAddr base,
                                 arch::Registers& rewritten, TraceeWrites& writes) {
  const PendingSyscall& p = t.pending;
  const Injection& inj = p.injection;
  const arch::Registers regs = rewritten;
  const TraceeAddr header_at = base;
  const TraceeAddr msghdr_at = base + layout.msghdr_at;
  const TraceeAddr iovecs_at = base + layout.iovecs_at;
  if (inj.header.size() > layout.header_max) return false;

  // [program bytes before the insertion point][header][program bytes after it]
  std::vector<iovec> iov;
  iovec header_iov{reinterpret_cast<void*>(header_at.value), inj.header.size()};
  uint64_t pos = 0;
  bool inserted = false;
  for (const TraceeIovec& seg : p.app_segments) {
    if (!inserted && inj.offset <= pos + seg.len) {
      uint64_t before = inj.offset - pos;
      if (before > 0) iov.push_back(iovec{reinterpret_cast<void*>(seg.base.value), before});
      iov.push_back(header_iov);
      inserted = true;
      if (seg.len > before) iov.push_back(iovec{reinterpret_cast<void*>((seg.base + before).value), seg.len - before});
    } else if (seg.len > 0) {
      iov.push_back(iovec{reinterpret_cast<void*>(seg.base.value), seg.len});
    }
    pos += seg.len;
  }
  if (!inserted) iov.push_back(header_iov);
  if (iov.size() > kMaxIovecs || iov.size() > layout.max_iovecs) return false;
  writes.add(header_at, inj.header.data(), inj.header.size());
  writes.add(iovecs_at, iov.data(), iov.size() * sizeof(iovec));
  if (kind == Kind::kWrite && nr == SYS_write) {
    rewritten.set_syscall_nr(SYS_writev);
    rewritten.set_arg(2, iovecs_at.value);
    rewritten.set_arg(3, iov.size());
  } else if (kind == Kind::kWritev) {
    rewritten.set_arg(2, iovecs_at.value);
    rewritten.set_arg(3, iov.size());
  } else {
    // sendto(fd, buf, len, flags, addr, addrlen) and sendmsg(fd, msg, flags) become sendmsg with
    // a msghdr of ours; sendmsg keeps the program's name and control data.
    msghdr msg{};
    if (kind == Kind::kSendmsg) {
      if (read_tracee(t.tid, TraceeAddr{regs.arg(2)}, &msg, sizeof(msg)) != static_cast<long>(sizeof(msg))) return false;
    } else {
      msg.msg_name = reinterpret_cast<void*>(regs.arg(5));
      msg.msg_namelen = static_cast<socklen_t>(regs.arg(6));
      rewritten.set_arg(3, regs.arg(4));  // flags
    }
    msg.msg_iov = reinterpret_cast<iovec*>(iovecs_at.value);
    msg.msg_iovlen = iov.size();
    writes.add(msghdr_at, &msg, sizeof(msg));
    rewritten.set_syscall_nr(SYS_sendmsg);
    rewritten.set_arg(2, msghdr_at.value);
  }
  return true;
}

void Engine::finish_rewritten_write(Thread& t, Tracker::Io& io) {
  // The program sees its own syscall, its own registers, and the count of its own bytes.
  // An interrupted call (-ERESTART*) is restarted by the kernel as the program issued it.
  arch::Registers restored = t.pending.original;
  restored.set_result(complete_rewritten_write(t, io));
  restored.store(t.tid);
}

long Engine::complete_rewritten_write(Thread& t, Tracker::Io& io) {
  PendingSyscall& p = t.pending;
  const long result = io.result;
  const uint64_t header_len = p.injection.header.size();
  const uint64_t at = p.injection.offset;
  uint64_t header_sent = 0;
  if (result >= 0) {
    const SentSplit split = split_sent(static_cast<uint64_t>(result), at, header_len);
    header_sent = split.header;
    io.result = static_cast<long>(split.app);
  }
  if (t.process->scratch) t.process->scratch->release(p.slot);
  FdTable& fds = *t.fds;
  tracker_.injection_done(fds, io.fd, p.injection, header_sent);
  TraceeBufferView view(t.tid, p.app_segments);
  tracker_.on_io(fds, io, view);
  p.rewritten = false;
  p.injection = Injection{};
  p.app_segments.clear();
  p.slot = -1;
  return io.result;
}

namespace {

// The part of a view after its first `skip` bytes.
class SkippedView final : public DataView {
 public:
  SkippedView(DataView& inner, uint64_t skip) : inner_(inner), skip_(skip < inner.size() ? skip : inner.size()) {}
  uint64_t size() const override { return inner_.size() - skip_; }
  long copy(uint64_t offset, void* buf, size_t len) override { return inner_.copy(skip_ + offset, buf, len); }

 private:
  DataView& inner_;
  uint64_t skip_;
};

// Bytes waiting in a socket's receive queue, `ahead` bytes in, copied with MSG_PEEK only when the
// parser asks (body bytes of known length are skipped and never copied).
class QueuedBytes final : public DataView {
 public:
  QueuedBytes(int fd, uint64_t ahead, uint64_t n) : fd_(fd), ahead_(ahead), n_(n) {}
  uint64_t size() const override { return n_; }
  long copy(uint64_t offset, void* buf, size_t len) override {
    constexpr uint64_t kMaxPeek = 4 << 20;
    const uint64_t need = ahead_ + offset + len;
    if (need > kMaxPeek) return -EFBIG;
    if (peeked_ < need) {
      if (buffer_.size() < need) buffer_.resize(need);
      long got = peek_socket(fd_, buffer_.data(), need);
      if (got < 0) return got;
      peeked_ = static_cast<size_t>(got);
    }
    if (peeked_ <= ahead_ + offset) return 0;
    size_t n = std::min<size_t>(len, peeked_ - static_cast<size_t>(ahead_ + offset));
    std::memcpy(buf, buffer_.data() + ahead_ + offset, n);
    return static_cast<long>(n);
  }

 private:
  int fd_;
  uint64_t ahead_;
  uint64_t n_;
  size_t peeked_ = 0;  // valid bytes in buffer_
  static thread_local std::vector<uint8_t> buffer_;  // reused across reads (engine thread only)
};

thread_local std::vector<uint8_t> QueuedBytes::buffer_;

}  // namespace

Tracker::Io Engine::io_now(const Thread& t, int fd, Direction direction) const {
  Tracker::Io io;
  io.tid = t.tid;
  io.pid = t.process->tgid;
  io.fd = fd;
  io.direction = direction;
  io.entry = io.exit = now_ns();
  return io;
}

void Engine::read_segments(Thread& t, Kind kind, const arch::Registers& regs, std::vector<TraceeIovec>& segs) {
  segs.clear();
  if (kind == Kind::kRead) {
    segs.push_back(TraceeIovec{TraceeAddr{regs.arg(2)}, regs.arg(3)});
  } else if (kind == Kind::kReadv) {
    if (regs.arg(3) > kMaxIovecs || read_tracee_iovecs(t.tid, TraceeAddr{regs.arg(2)}, regs.arg(3), segs) != 0)
      segs.clear();
  } else {
    msghdr msg{};
    if (read_tracee(t.tid, TraceeAddr{regs.arg(2)}, &msg, sizeof(msg)) != static_cast<long>(sizeof(msg)) ||
        msg.msg_iovlen > kMaxIovecs ||
        read_tracee_iovecs(t.tid, TraceeAddr{reinterpret_cast<uint64_t>(msg.msg_iov)}, msg.msg_iovlen, segs) != 0)
      segs.clear();
  }
}

void Engine::settle_reads(Thread& t, Connection& conn, const TcpProgress& progress, const Tracker::Io& at) {
  if (!conn.have_in_base) return;
  const uint64_t consumed = progress.consumed - conn.in_base;
  if (consumed <= conn.in_parsed) return;
  // The last read took more than was queued when it was predicted (bytes arrived in between):
  // they are in its buffer, right after the predicted ones.
  const uint64_t extra = consumed - conn.in_parsed;
  Tracker::Io io = at;
  io.direction = Direction::kRead;
  uint64_t capacity = 0;
  for (const auto& seg : conn.last_read) capacity += seg.len;
  if (!conn.last_read.empty() && conn.last_read_predicted + extra <= capacity) {
    TraceeBufferView buffer(conn.last_read_tid, conn.last_read);
    SkippedView beyond(buffer, conn.last_read_predicted);
    io.result = static_cast<long>(extra);
    conn.last_read_predicted += extra;
    tracker_.on_io(*t.fds, io, beyond);
  } else {
    tracker_.on_unseen(*t.fds, io, extra);
  }
}

bool Engine::predict_read(Thread& t, const syscall::TracedSyscall& sc, const arch::Registers& regs, Connection& conn) {
  if (!conn.source_fd.valid()) return false;
  // Responses are read while the server is still writing them: bytes arriving between the
  // prediction and the read are common, and when they end the response the client may never read
  // that connection again (it exits, or the connection sits idle in a pool), so they would never
  // be settled. Client-side reads take their exit stop; requests (server side) are predicted.
  if (conn.side == Side::kClient) return false;
  TcpProgress progress;
  if (tcp_progress(conn.source_fd.get(), progress) != 0) return false;
  if (!conn.have_in_base) {
    // Every earlier read took its exit stop, so the parser has seen exactly what was consumed.
    conn.in_base = progress.consumed - conn.in_parsed;
    conn.have_in_base = true;
  }
  Tracker::Io io = io_now(t, static_cast<int>(regs.arg(1)), Direction::kRead);
  settle_reads(t, conn, progress, io);
  if (conn.opaque) return true;
  const uint64_t consumed = progress.consumed - conn.in_base;
  const uint64_t ahead = conn.in_parsed > consumed ? conn.in_parsed - consumed : 0;  // parsed, not read yet
  const uint64_t queued = progress.queued_in;
  if (queued == 0) {
    conn.last_read.clear();
    if (progress.peer_closed) {
      io.result = 0;  // the read will return 0: end of stream
      QueuedBytes none(conn.source_fd.get(), 0, 0);
      tracker_.on_io(*t.fds, io, none);
      return true;
    }
    // Nothing queued: the read waits (blocking) or returns EAGAIN (non-blocking) — unless bytes
    // arrive before it runs, which for a non-blocking read (Go reads before it polls) is often a
    // whole new request. Watch its exit either way.
    return false;
  }
  read_segments(t, sc.kind, regs, conn.last_read);  // reuses the vector's storage
  uint64_t capacity = 0;
  for (const auto& seg : conn.last_read) capacity += seg.len;
  if (capacity == 0) return false;
  const uint64_t will_read = std::min(capacity, queued);
  conn.last_read_tid = t.tid;
  conn.last_read_predicted = will_read;
  if (will_read <= ahead) return true;
  QueuedBytes view(conn.source_fd.get(), ahead, will_read - ahead);
  io.result = static_cast<long>(will_read - ahead);
  tracker_.on_io(*t.fds, io, view);
  return true;
}

bool Engine::predict_write(Thread& t, const syscall::TracedSyscall& sc, const arch::Registers& regs, Connection& conn) {
  if (!conn.source_fd.valid()) return false;
  TcpProgress progress;
  if (tcp_progress(conn.source_fd.get(), progress) != 0) return false;
  if (!conn.have_out_base) {
    conn.out_base = progress.accepted - conn.out_parsed;
    conn.have_out_base = true;
  }
  Tracker::Io io = io_now(t, static_cast<int>(regs.arg(1)), Direction::kWrite);
  settle_reads(t, conn, progress, io);  // a response read beyond its prediction ends first
  if (conn.opaque) return true;
  const uint64_t accepted = progress.accepted - conn.out_base;
  if (accepted > conn.out_parsed) {
    tracker_.on_unseen(*t.fds, io, accepted - conn.out_parsed);
    if (conn.opaque) return true;
  }
  // A write the kernel took only part of is written again: its tail was parsed already.
  const uint64_t resent = conn.out_parsed > accepted ? conn.out_parsed - accepted : 0;
  TraceeBufferView whole(t.tid, write_segments(t, sc.kind, sc.nr, regs));
  SkippedView fresh(whole, resent);
  if (fresh.size() == 0) return true;
  io.result = static_cast<long>(fresh.size());
  tracker_.on_io(*t.fds, io, fresh);
  return true;
}

void Engine::emit_span(SpanRecord&& span) {
  auto it = processes_.find(span.pid);
  if (it != processes_.end() && !it->second->announced) announce(*it->second);
  std::lock_guard<std::mutex> lock(batch_mutex_);
  batch_->spans.push_back(std::move(span));
  batch_size_.store(batch_->spans.size(), std::memory_order_relaxed);
}

void Engine::announce(Process& p) {
  ProcessInfo info;
  info.pid = p.tgid;
  info.ppid = p.ppid;
  char buf[4096];
  std::string exe_link = "/proc/" + std::to_string(p.tgid) + "/exe";
  ssize_t n = readlink(exe_link.c_str(), buf, sizeof(buf) - 1);
  if (n > 0) info.executable_path.assign(buf, static_cast<size_t>(n));
  info.command_args = split_nul(read_file("/proc/" + std::to_string(p.tgid) + "/cmdline"));
  info.fast = p.region != nullptr;
  std::lock_guard<std::mutex> lock(batch_mutex_);
  batch_->processes.push_back(std::move(info));
  p.announced = true;
}

void Engine::flush() {
  // Batches JS has not taken yet: from kShedBatches on, new traces are shed until it is down to a
  // quarter of that (with --export-priority idle and the CPUs busy, JS may not run for seconds).
  const size_t backlog = sink_.backlog();
  if (backlog >= kShedBatches) {
    tracker_.set_shedding(Tracker::kBatchBacklog, true);
  } else if (backlog <= kShedBatches / 4) {
    tracker_.set_shedding(Tracker::kBatchBacklog, false);
  }
  std::lock_guard<std::mutex> in_order(flush_mutex_);
  std::unique_ptr<Batch> ready;
  {
    std::lock_guard<std::mutex> lock(batch_mutex_);
    if (batch_->spans.empty() && batch_->processes.empty() && !batch_->exit) return;
    ready = std::move(batch_);
    batch_ = std::make_unique<Batch>();
    batch_size_.store(0, std::memory_order_relaxed);
  }
  size_t n = ready->spans.size();
  if (sink_.deliver(std::move(ready))) {
    stats_.spans_emitted += n;
  } else {
    stats_.spans_dropped += n;
  }
}

void Engine::set_exit(const ExitInfo& exit) {
  {
    std::lock_guard<std::mutex> lock(batch_mutex_);
    batch_->exit = exit;
  }
  flush();
}

void Engine::fail(const std::string& message) {
  // The engine cannot go on: without it every trapped syscall would fail with ENOSYS, so the
  // program goes down with it (PTRACE_O_EXITKILL does the rest when this thread ends).
  if (root_pid_ > 0) kill(root_pid_, SIGKILL);
  ExitInfo exit;
  exit.signal = SIGKILL;
  exit.engine_error = message;
  root_exited_ = true;
  set_exit(exit);
}

}  // namespace rbinder
