// The fast path's engine side once the program runs detached (docs/fast-path.md): the loop that
// answers the trap filter's user notifications (upcalls), attaches around exec, drains the rings
// into the Tracker, and follows processes by their pidfds.
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <optional>
#include <tuple>
#include <utility>

#include "engine/engine.h"
#include "syscall/seccomp.h"

namespace rbinder {
namespace {

using syscall::Kind;

// rb_call's scratch (rb_call::scratch_len bytes): the header, then a msghdr, then the iovecs.
constexpr size_t kCallHeaderMax = 1024;
constexpr size_t kCallHead = offsetof(rb_call, scratch);

// The program address [at, at + len) of the shared region (where the stub keeps an upcall's
// rb_call and the bytes it asks to send), as mapped here; nullptr if outside the ring.
uint8_t* in_ring(fast::SharedRegion& region, uint64_t at, uint64_t len) {
  const uint64_t ring = RB_SHARED_ADDR + offsetof(rb_shared, ring), size = sizeof(rb_shared::ring);
  if (at < ring || at - ring > size || len > size - (at - ring)) return nullptr;
  return region.get()->ring + (at - ring);
}

// A write's bytes: the first ones from the copy the stub put in the ring, the rest (a write
// larger than a ring event) from the program's memory.
class RingThenTracee final : public DataView {
 public:
  RingThenTracee(const uint8_t* copied, size_t n, TraceeBufferView& tracee) : ring_(copied, n, tracee.size()), copied_(n), tracee_(tracee) {}
  uint64_t size() const override { return tracee_.size(); }
  long copy(uint64_t offset, void* local_buf, size_t len) override {
    if (offset < copied_) return ring_.copy(offset, local_buf, std::min<size_t>(len, copied_ - offset));
    return tracee_.copy(offset, local_buf, len);
  }

 private:
  LocalBytes ring_;
  size_t copied_;
  TraceeBufferView& tracee_;
};

// How the one syscall table (syscall/table.h) classifies a syscall the stub reports.
std::optional<Kind> kind_of(long nr) {
  const int i = syscall::traced_index(nr);
  if (i < 0) return std::nullopt;
  return syscall::kTracedSyscalls[i].kind;
}
bool is_read(Kind k) { return k == Kind::kRead || k == Kind::kReadv || k == Kind::kRecvmsg; }
bool is_write(Kind k) { return k == Kind::kWrite || k == Kind::kWritev || k == Kind::kSendmsg; }

}  // namespace

fast::PrivateInit Engine::private_init(pid_t pid, const FdTable& fds) const {
  // What a new image's stub starts from: its process, and the connections that survived the exec.
  fast::PrivateInit init;
  init.pid = pid;
  init.inject = config_.tracker.inject;
  // The stub decides the plain cases itself when what it injects is `traceparent` alone.
  const uint32_t propagators = config_.tracker.propagation.propagators;
  init.decide = stub_context_ && config_.tracker.inject && (propagators & kTraceContext) &&
                (propagators & ~static_cast<uint32_t>(kTraceContext | kBaggage)) == 0;
  init.sampler = static_cast<uint32_t>(config_.tracker.sampler.type);
  const double ratio = config_.tracker.sampler.ratio;
  init.ratio_below = ratio >= 1.0 ? (1ull << 53) : ratio <= 0.0 ? 0 : static_cast<uint64_t>(std::ceil(ratio * 9007199254740992.0));
  if (getrandom(&init.ids, sizeof(init.ids), 0) != static_cast<ssize_t>(sizeof(init.ids))) init.ids = static_cast<uint64_t>(now_ns());
  const DestinationAllowList& allow = config_.tracker.inject_to;
  init.allow_all = allow.all() ? 1 : 0;
  init.allow_unix = allow.allows_peer("127.0.0.1") ? 1 : 0;
  const auto& networks = allow.networks();
  // More networks than the stub has room for: it matches none, and the engine decides each.
  init.allow_count = networks.size() <= RB_ALLOW_MAX ? static_cast<uint32_t>(networks.size()) : 0;
  for (uint32_t i = 0; i < init.allow_count; i++) {
    init.allow[i].family = static_cast<uint16_t>(networks[i].family);
    init.allow[i].prefix = static_cast<uint16_t>(networks[i].prefix);
    std::memcpy(init.allow[i].bytes, networks[i].bytes, 16);
  }
  fds.for_each([&](int fd, const std::shared_ptr<Connection>&) {
    if (tracker_.is_tracked(fds, fd)) init.fds.emplace_back(fd, tracker_.may_inject(fds, fd) ? RB_FD_CLIENT : RB_FD_RECORD);
  });
  return init;
}

void Engine::setup_fast_path(Thread& t) {
  const fast::PrivateInit init = private_init(t.process->tgid, *t.fds);
  std::string error;
  std::vector<int> pending;
  OwnedFd listener;
  std::shared_ptr<fast::SharedRegion> region;
  if (force_proc_net_) {
    error = "pidfd_getfd refused (RBINDER_FORCE_PROC_NET)";  // tests: as in a restrictive seccomp profile
  } else {
    region = fast::setup_after_exec(t.tid, true, init, listener, error, pending);
  }
  if (!region) {
    // Ptrace stops instead, for the whole tree: the filter the ptrace mode installs before exec.
    stats_.fast_fallbacks++;
    const long r = fast::install_filter_at_entry(t.tid, syscall::build_trace_filter(), pending);
    if (r != 0) {
      fail("the fast path could not be set up (" + error + ") and neither could ptrace stops: " + strerror(static_cast<int>(-r)));
      return;
    }
    dprintf(2, "rbinder: the fast path could not be set up (%s); tracing with ptrace stops instead\n", error.c_str());
    resume(t.tid, pending.empty() ? 0 : pending.front());
    return;
  }
  t.process->fds = t.fds;
  fast_root_ready(*t.process, std::move(region), std::move(listener));
  ptrace(PTRACE_DETACH, t.tid, nullptr, reinterpret_cast<void*>(static_cast<uintptr_t>(pending.empty() ? 0 : pending.front())));
}

void Engine::region_ready(fast::SharedRegion& region) {
  if (patch_call_sites_) __atomic_store_n(&region.get()->patch, 1, __ATOMIC_RELEASE);
  // The timer may be waiting on the other rings' doorbells only: it must wait on this one too.
  if (__atomic_exchange_n(&timer_bell_, 1, __ATOMIC_SEQ_CST) == 0) ::syscall(SYS_futex, &timer_bell_, FUTEX_WAKE_PRIVATE, 1);
}

void Engine::fast_root_ready(Process& process, std::shared_ptr<fast::SharedRegion> region, OwnedFd listener) {
  stats_.fast_processes++;
  process.region = region;
  regions_.push_back(region);
  region_ready(*region);
  listener_ = std::move(listener);
  // Linux 6.6+: an upcall hands the CPU straight to this thread and the answer straight back,
  // instead of two cross-CPU wake-ups (each a VM exit on a virtual machine). Older kernels: EINVAL.
  constexpr unsigned long kNotifSetFlags = _IOW('!', 4, uint64_t);  // SECCOMP_IOCTL_NOTIF_SET_FLAGS
  constexpr uint64_t kSyncWakeUp = 1;                                // SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
  const int sync = ioctl(listener_.get(), kNotifSetFlags, kSyncWakeUp);
  if (debug_) dprintf(2, "rbinder-engine: synchronous upcall wake-ups %s\n", sync == 0 ? "on" : strerror(errno));
}

bool Engine::adopt(std::string& error) {
  const LaunchedProgram& launched = *config_.launched;
  OwnedFd region_fd(launched.region_fd), listener(launched.listener_fd);
  // Inherited across Node's exec; nothing this process starts may inherit them in turn.
  fcntl(region_fd.get(), F_SETFD, FD_CLOEXEC);
  fcntl(listener.get(), F_SETFD, FD_CLOEXEC);
  auto refuse = [&](const std::string& why) {
    error = "adopting the launched program: " + why;
    kill(launched.pid, SIGKILL);  // it would wait for upcall answers that never come
    return false;
  };
  void* mapped = mmap(nullptr, RB_SHARED_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, region_fd.get(), 0);
  if (mapped == MAP_FAILED) return refuse(std::string("mmap(ring): ") + strerror(errno));
  auto* shared = static_cast<rb_shared*>(mapped);
  auto region = std::make_shared<fast::SharedRegion>(std::move(region_fd), shared);
  if (shared->magic != RB_MAGIC || shared->version != RB_VERSION) return refuse("the ring is not this version's");
  auto process = std::make_shared<Process>();
  process->tgid = launched.pid;
  process->ppid = getpid();
  process->pidfd = open_pidfd(launched.pid);
  if (!process->pidfd.valid()) return refuse(std::string("pidfd_open: ") + strerror(errno));
  process->fds = tracker_.new_fd_table();
  processes_[launched.pid] = process;
  Thread root;
  root.tid = launched.pid;
  root.process = process;
  root.fds = process->fds;
  threads_.emplace(launched.pid, std::move(root));
  config_.fast = true;
  root_pid_ = launched.pid;
  fast_root_ready(*process, std::move(region), std::move(listener));
  if (!config_.tracker.inject) {
    // The launcher cannot know the configuration: outbound connections of the first image start
    // recorded only, as the stub of a spawned program would have been told.
    const uint32_t off = 0;
    write_tracee(launched.pid, TraceeAddr{RB_PRIVATE_ADDR + offsetof(rb_private, inject)}, &off, sizeof(off));
  }
  // Nor whether, and how, its stub decides trace context: told now, `decide` last.
  const fast::PrivateInit init = private_init(launched.pid, *process->fds);
  const uint32_t decide = init.decide ? 1 : 0;
  auto put = [&](size_t at, const void* value, size_t len) {
    write_tracee(launched.pid, TraceeAddr{RB_PRIVATE_ADDR + at}, value, len);
  };
  put(offsetof(rb_private, sampler), &init.sampler, sizeof(init.sampler));
  put(offsetof(rb_private, ratio_below), &init.ratio_below, sizeof(init.ratio_below));
  put(offsetof(rb_private, ids), &init.ids, sizeof(init.ids));
  put(offsetof(rb_private, allow_all), &init.allow_all, sizeof(init.allow_all));
  put(offsetof(rb_private, allow_unix), &init.allow_unix, sizeof(init.allow_unix));
  put(offsetof(rb_private, allow_count), &init.allow_count, sizeof(init.allow_count));
  put(offsetof(rb_private, allow), init.allow.data(), sizeof(rb_net) * RB_ALLOW_MAX);
  put(offsetof(rb_private, decide), &decide, sizeof(decide));
  return true;
}

void Engine::fast_loop() {
  if (debug_) dprintf(2, "rbinder-engine: detached, serving upcalls\n");
  constexpr auto kReapInterval = std::chrono::milliseconds(100);
  auto last_reap = std::chrono::steady_clock::now();
  std::vector<pollfd> fds;
  std::vector<pid_t> pids;
  for (;;) {
    fds.clear();
    pids.clear();
    {
      std::lock_guard<std::mutex> lock(engine_mutex_);
      if (root_exited_ && processes_.empty()) return;
      fds.push_back(pollfd{listener_.get(), POLLIN, 0});
      for (auto& [pid, process] : processes_) {
        if (!process->pidfd.valid()) continue;
        fds.push_back(pollfd{process->pidfd.get(), POLLIN, 0});
        pids.push_back(pid);
      }
    }
    const int n = poll(fds.data(), fds.size(), 1000);
    if (n < 0 && errno != EINTR) {
      std::lock_guard<std::mutex> lock(engine_mutex_);
      fail(std::string("poll: ") + strerror(errno));
      return;
    }
    std::lock_guard<std::mutex> lock(engine_mutex_);
    if (fds[0].revents & POLLIN) handle_notification();
    bool ended = false;
    for (size_t i = 1; i < fds.size(); i++) {
      if (fds[i].revents & (POLLIN | POLLHUP)) {
        fast_process_gone(pids[i - 1]);
        ended = true;
      }
    }
    // A waitpid per upcall was ~4% of this thread under load. The processes that end are seen
    // through their pidfds; a child without one (it ended before its pidfd was opened) is reaped
    // by the periodic pass.
    const bool hangup = fds[0].revents & (POLLHUP | POLLERR);
    const auto now = std::chrono::steady_clock::now();
    if (ended || hangup || n == 0 || now - last_reap >= kReapInterval) {
      reap_children();
      last_reap = now;
    }
    if (hangup) {
      // No task uses the filter any more: the whole tree is gone.
      drain_all();
      std::vector<pid_t> left;
      for (auto& [pid, process] : processes_) left.push_back(pid);
      for (pid_t pid : left) fast_process_gone(pid);
      if (root_exited_) return;
    }
    // Spans go to JS from the timer thread only (see Engine::loop).
  }
}

void Engine::reap_children() {
  int status = 0;
  for (;;) {
    const pid_t pid = waitpid(-1, &status, WNOHANG | __WALL);
    if (pid <= 0) return;
    if (!WIFEXITED(status) && !WIFSIGNALED(status)) continue;  // nothing is attached here
    if (debug_) dprintf(2, "rbinder-engine: %d ended, status %#x\n", pid, status);
    fast_process_gone(pid);
    if (pid == root_pid_) handle_exit(pid, status);
  }
}

void Engine::handle_notification() {
  seccomp_notif req;
  std::memset(&req, 0, sizeof(req));
  if (ioctl(listener_.get(), SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) return;  // ENOENT: the caller died
  seccomp_notif_resp resp;
  std::memset(&resp, 0, sizeof(resp));
  resp.id = req.id;
  stats_.fast_upcalls++;
  const pid_t tid = static_cast<pid_t>(req.pid);
  const pid_t pid = static_cast<pid_t>(req.data.args[2]);
  long result = 0;
  if (debug_) dprintf(2, "rbinder-engine: upcall %llu from %d/%d\n", static_cast<unsigned long long>(req.data.args[0]), pid, tid);
  if (req.data.instruction_pointer != fast::upcall_return_ip()) {
    resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;  // not an upcall of the stub: let it run
  } else {
    // What the stub recorded before it asked comes first (a write's own event, claimed before its
    // upcall, and everything after it wait for the write to go out).
    drain_all();
    switch (req.data.args[0]) {
      case RB_UP_EXEC:
        result = fast_exec(tid, pid);
        break;
      case RB_UP_WRITE:
        result = fast_write(tid, pid, req.data.args[1]);
        break;
      default:
        result = -ENOSYS;
        break;
    }
    if (debug_) dprintf(2, "rbinder-engine: upcall answer %ld\n", result);
    if (result < 0) {
      resp.error = static_cast<int32_t>(result);
    } else {
      resp.val = result;
    }
  }
  if (ioctl(listener_.get(), SECCOMP_IOCTL_NOTIF_SEND, &resp) != 0) {
    if (req.data.args[0] == RB_UP_EXEC && result == 1) ptrace(PTRACE_DETACH, tid, nullptr, nullptr);
    return;  // the caller died meanwhile
  }
  if (resp.flags == 0 && req.data.args[0] == RB_UP_EXEC && result == 1) finish_fast_exec(tid, pid);
}

long Engine::fast_exec(pid_t tid, pid_t pid) {
  // The new image must get its stub before its first instruction: attach now, and the exec stops.
  constexpr unsigned kOptions = PTRACE_O_TRACEEXEC | PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL;
  if (ptrace(PTRACE_SEIZE, tid, nullptr, reinterpret_cast<void*>(static_cast<uintptr_t>(kOptions))) != 0) {
    const int e = errno;
    dprintf(2, "rbinder: cannot attach to process %d for its exec (%s): the exec is refused\n", pid, strerror(e));
    return -EPERM;
  }
  fast_process(pid);
  return 1;
}

void Engine::finish_fast_exec(pid_t tid, pid_t pid) {
  for (;;) {
    int status = 0;
    const pid_t w = waitpid(-1, &status, __WALL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      fast_process_gone(w);
      if (w == root_pid_) handle_exit(w, status);
      if (w == tid || w == pid) return;
      continue;
    }
    if (!WIFSTOPPED(status)) continue;
    const int sig = WSTOPSIG(status), event = status >> 16;
    if (event == PTRACE_EVENT_EXEC) {
      ptrace(PTRACE_SYSCALL, w, nullptr, nullptr);  // registers are final at execve's exit stop
    } else if (sig == (SIGTRAP | 0x80)) {
      Process* process = fast_process(pid);
      if (process) fast_image_ready(w, *process);
      return;
    } else if (sig == SIGTRAP && event == 0) {
      ptrace(PTRACE_DETACH, w, nullptr, nullptr);  // the stub's int3: the exec failed
      return;
    } else if (event != 0) {
      ptrace(PTRACE_CONT, w, nullptr, nullptr);
    } else {
      ptrace(PTRACE_CONT, w, nullptr, reinterpret_cast<void*>(static_cast<uintptr_t>(sig)));
    }
  }
}

void Engine::fast_image_ready(pid_t tid, Process& process) {
  drain_all();
  // The old image's threads are gone; the table is unshared and its close-on-exec sockets closed.
  for (auto it = threads_.begin(); it != threads_.end();) {
    if (it->second.process.get() == &process) {
      tracker_.on_thread_exit(it->first);
      it = threads_.erase(it);
    } else {
      ++it;
    }
  }
  process.fds = table_after_exec(tid, std::move(process.fds));
  process.announced = false;
  process.region.reset();
  const fast::PrivateInit init = private_init(process.tgid, *process.fds);
  std::string error;
  std::vector<int> pending;
  OwnedFd unused;
  std::shared_ptr<fast::SharedRegion> region = fast::setup_after_exec(tid, false, init, unused, error, pending);
  if (!region) {
    // The trap filter is inherited: without its stub this image dies at its first socket call.
    stats_.fast_fallbacks++;
    dprintf(2, "rbinder: the fast path could not be set up in process %d (%s); it is stopped\n", process.tgid,
            error.c_str());
    kill(tid, SIGKILL);
  } else {
    stats_.fast_processes++;
    process.region = region;
    regions_.push_back(region);
    region_ready(*region);
  }
  ptrace(PTRACE_DETACH, tid, nullptr, reinterpret_cast<void*>(static_cast<uintptr_t>(pending.empty() ? 0 : pending.front())));
}

Engine::Process* Engine::fast_process(pid_t pid) {
  auto it = processes_.find(pid);
  if (it != processes_.end()) {
    if (!it->second->fds) it->second->fds = tracker_.new_fd_table();
    return it->second.get();
  }
  if (pid <= 0) return nullptr;
  auto process = std::make_shared<Process>();
  process->tgid = pid;
  process->pidfd = open_pidfd(pid);
  if (!process->pidfd.valid()) return nullptr;  // gone already
  process->fds = tracker_.new_fd_table();
  processes_[pid] = process;
  return process.get();
}

Engine::Thread* Engine::fast_thread(pid_t tid, pid_t pid) {
  auto it = threads_.find(tid);
  if (it != threads_.end() && it->second.process && it->second.process->tgid == pid) return &it->second;
  auto p = processes_.find(pid);
  if (p == processes_.end() || !p->second->fds) return nullptr;
  if (it != threads_.end()) tracker_.on_thread_exit(tid);  // a recycled thread id
  Thread t;
  t.tid = tid;
  t.process = p->second;
  t.fds = p->second->fds;
  threads_[tid] = std::move(t);
  return &threads_[tid];
}

void Engine::fast_process_gone(pid_t pid) {
  auto it = processes_.find(pid);
  if (it == processes_.end()) return;
  std::shared_ptr<Process> process = it->second;
  process->gone = true;
  drain_all();
  for (auto t = threads_.begin(); t != threads_.end();) {
    if (t->second.process == process && t->first != root_pid_) {
      tracker_.on_thread_exit(t->first);
      t = threads_.erase(t);
    } else {
      ++t;
    }
  }
  if (pid == root_pid_) {
    auto root = threads_.find(root_pid_);
    if (root != threads_.end()) root->second.fds.reset();  // handle_exit drops the thread itself
  }
  if (process->fds && process->fds.use_count() == 1) tracker_.release_fd_table(*process->fds, now_ns());
  process->fds.reset();
  processes_.erase(it);
}

long Engine::fast_write(pid_t tid, pid_t pid, uint64_t call_addr) {
  Thread* t = fast_thread(tid, pid);
  if (!t || !t->process->region) return 0;
  fast::SharedRegion& region = *t->process->region;
  uint8_t* call = in_ring(region, call_addr, sizeof(rb_call));
  if (!call) return 0;
  rb_call head;
  std::memcpy(&head, call, kCallHead);  // the program may change it meanwhile: what is used is this copy
  if (head.scratch_len < RB_CALL_SCRATCH || !in_ring(region, call_addr, kCallHead + head.scratch_len)) head.scratch_len = RB_CALL_SCRATCH;
  const SlotLayout layout{kCallHeaderMax, head.scratch_len};
  FdTable& fds = *t->fds;
  const int fd = static_cast<int>(head.args[0]);
  if (!tracker_.may_inject(fds, fd)) return 2;  // the stub records this descriptor from now on
  arch::Registers regs;
  regs.set_syscall_nr(head.nr);
  for (int i = 0; i < 6; i++) regs.set_arg(i + 1, head.args[i]);
  const std::optional<Kind> kind = kind_of(head.nr);
  if (!kind || !is_write(*kind)) return 0;
  std::vector<TraceeIovec> segments = write_segments(*t, *kind, head.nr, regs);
  TraceeBufferView tracee(tid, segments);
  const uint8_t* copied = in_ring(region, head.data, head.data_len);
  RingThenTracee view(copied, copied ? head.data_len : 0, tracee);
  Tracker::Io io = io_now(*t, fd, Direction::kWrite);
  io.entry = head.start_ns;
  Injection injection = tracker_.plan_injection(fds, io, view);
  // The body still owed after these bytes needs no upcall (the stub applies it if they all go out),
  // and what the stub needs to decide the next requests on this descriptor itself.
  rb_call answer = head;
  std::tie(answer.quiet, answer.boundary) =
      injection.quiet_known ? std::pair(injection.quiet, injection.boundary) : tracker_.body_owed_after(fds, fd, view);
  answer.boundary = answer.boundary ? 1 : 0;
  answer.peer_ok = tracker_.peer_allowed(fds, fd) ? 1 : 0;
  answer.ctx_state = 1;
  answer.ctx_head = injection.head_found ? 1 : 0;
  std::optional<uint64_t> chunked_at;
  switch (tracker_.response_framing(fds, fd, view, chunked_at)) {
    case ResponseFraming::kNoRequest: answer.resp = RB_RESP_ANSWER_NONE; break;
    case ResponseFraming::kOne: answer.resp = RB_RESP_ANSWER_ONE; break;
    case ResponseFraming::kHead: answer.resp = RB_RESP_ANSWER_HEAD; break;
    case ResponseFraming::kUnknown: answer.resp = RB_RESP_ANSWER_OFF; break;
  }
  answer.chunk_at = chunked_at && *chunked_at < UINT32_MAX ? static_cast<uint32_t>(*chunked_at) : UINT32_MAX;
  if (const SpanContext* ctx = tracker_.thread_context(tid)) {
    answer.ctx_state = ctx->trace_state.empty() && ctx->baggage.empty() ? 2 : 0;
    std::memcpy(answer.ctx_trace, ctx->trace_id.data(), 16);
    std::memcpy(answer.ctx_span, ctx->span_id.data(), 8);
    answer.ctx_flags = ctx->flags;
  }
  constexpr size_t kAnswerAt = offsetof(rb_call, quiet), kAnswerLen = offsetof(rb_call, start_ns) - kAnswerAt;
  std::memcpy(call + kAnswerAt, reinterpret_cast<const uint8_t*>(&answer) + kAnswerAt, kAnswerLen);
  if (!injection.active) return 0;
  PendingSyscall& p = t->pending;
  p = PendingSyscall{};
  p.entry = head.start_ns;
  p.original = regs;
  p.injection = std::move(injection);
  p.app_segments = std::move(segments);
  arch::Registers rewritten = regs;
  TraceeWrites writes;
  if (!point_write_at_slot(*t, *kind, head.nr, layout, TraceeAddr{call_addr + kCallHead}, rewritten, writes)) {
    p = PendingSyscall{};
    return 0;
  }
  rb_call out = answer;
  out.nr = rewritten.syscall_nr();
  for (int i = 0; i < 6; i++) out.args[i] = rewritten.arg(i + 1);
  out.inject_at = p.injection.offset;
  out.inject_len = p.injection.header.size();
  // The header, the iovecs and this answer, into the rb_call in the ring.
  writes.add(TraceeAddr{call_addr}, &out, offsetof(rb_call, start_ns));
  if (!writes.flush_shared(TraceeAddr{call_addr}, call, kCallHead + head.scratch_len)) {
    p = PendingSyscall{};
    return 0;
  }
  p.rewritten = true;  // settled by the write's event (RB_EV_REWRITTEN)
  return 1;
}

// A call site the stub would patch: checked against its file (call_sites.h), answered in the
// shared table; the stub of each address space patches it at its next trap there.
void Engine::site_proposed(rb_shared& shared, const rb_event& e, const uint8_t* data) {
  if (e.fd < 0 || e.fd >= static_cast<int>(RB_SITES)) return;
  rb_site& slot = shared.sites[e.fd];
  const uint64_t site = static_cast<uint64_t>(e.result);
  if (__atomic_load_n(&slot.addr, __ATOMIC_ACQUIRE) != site) return;
  const fast::SiteVerdict v = call_sites_.check(static_cast<pid_t>(e.pid), site, data, e.data_len);
  if (debug_ || (!v.approved && getenv("RBINDER_DEBUG_CALL_SITES") != nullptr))
    dprintf(2, "rbinder-engine: call site %#lx (syscall %lu) in %u: %s\n", static_cast<unsigned long>(site),
            static_cast<unsigned long>(e.flags), e.pid, v.approved ? "approved" : v.reason.c_str());
  constexpr uint32_t kTries = 3;
  if (v.retry && slot.tries < kTries) {
    slot.tries++;
    __atomic_store_n(&slot.state, RB_SITE_NEW, __ATOMIC_RELEASE);  // the next trap there asks again
    return;
  }
  (v.approved ? stats_.sites_approved : stats_.sites_refused)++;
  slot.prot = v.prot;
  slot.zone = v.zone;
  slot.cave = v.cave;
  slot.len = v.len;
  slot.kind = v.kind;
  __atomic_store_n(&slot.state, v.approved ? RB_SITE_APPROVED : RB_SITE_REFUSED, __ATOMIC_RELEASE);
}

size_t Engine::drain_region(fast::SharedRegion& region) {
  rb_shared* shared = region.get();
  // Before draining: a producer that fills the ring again while this drain runs rings anew.
  __atomic_store_n(&shared->bell, 0, __ATOMIC_SEQ_CST);
  const uint64_t traps = __atomic_load_n(&shared->traps, __ATOMIC_RELAXED);
  const uint64_t direct = __atomic_load_n(&shared->direct, __ATOMIC_RELAXED);
  if (direct > region.direct_seen) stats_.fast_direct += direct - region.direct_seen;
  region.direct_seen = direct;
  const uint64_t dropped = __atomic_load_n(&shared->dropped, __ATOMIC_RELAXED);
  if (traps > region.traps_seen) stats_.fast_traps += traps - region.traps_seen;
  region.traps_seen = traps;
  if (dropped > region.dropped_seen) stats_.fast_dropped += dropped - region.dropped_seen;
  region.dropped_seen = dropped;
  // Traces the stub starts follow the engine's load shedding.
  const uint64_t shed = tracker_.shedding() ? 1 : 0;
  if (__atomic_load_n(&shared->shed, __ATOMIC_RELAXED) != shed) __atomic_store_n(&shared->shed, shed, __ATOMIC_RELAXED);
  return region.drain([&](const rb_event& e, const uint8_t* data) {
    stats_.fast_events++;
    stats_.fast_event_bytes += e.data_len;
    if (debug_)
      dprintf(2, "rbinder-engine: event pid=%u tid=%u nr=%d fd=%d result=%ld len=%u\n", e.pid, e.tid, e.nr, e.fd,
              static_cast<long>(e.result), e.data_len);
    if (e.nr == RB_EV_SITE) {
      site_proposed(*shared, e, data);
      return;
    }
    if (e.nr == RB_EV_FORK) {
      const pid_t child = static_cast<pid_t>(e.result), parent = static_cast<pid_t>(e.flags);
      auto pp = processes_.find(parent);
      if (processes_.count(child) || pp == processes_.end() || !pp->second->fds) return;
      auto process = std::make_shared<Process>();
      process->tgid = child;
      process->ppid = parent;
      process->pidfd = open_pidfd(child);
      if (!process->pidfd.valid()) return;  // it has ended already
      process->region = pp->second->region;
      process->fds = tracker_.copy_fd_table(*pp->second->fds);
      processes_[child] = process;
      return;
    }
    Thread* t = fast_thread(static_cast<pid_t>(e.tid), static_cast<pid_t>(e.pid));
    if (!t) return;
    FdTable& fds = *t->fds;
    const long nr = e.nr;
    const std::optional<Kind> kind = kind_of(nr);
    if (kind && (is_read(*kind) || is_write(*kind))) {
      if ((nr == SYS_recvfrom || nr == SYS_recvmsg) && (e.flags & MSG_PEEK)) return;
      Tracker::Io io;
      io.tid = t->tid;
      io.pid = t->process->tgid;
      io.fd = e.fd;
      io.direction = is_read(*kind) ? Direction::kRead : Direction::kWrite;
      io.result = static_cast<long>(e.result);
      io.entry = e.start_ns;
      io.exit = e.end_ns;
      if (e.flags & RB_EV_LOST) {
        tracker_.on_unseen(fds, io, e.total);  // a full ring dropped these bytes' events
        return;
      }
      LocalBytes view(data, e.data_len, e.total);  // the bytes the ring event carries
      Decided decided;
      if (e.dec.kind != RB_DEC_NONE) {
        std::memcpy(decided.trace_id.data(), e.dec.trace, 16);
        std::memcpy(decided.span_id.data(), e.dec.span, 8);
        std::memcpy(decided.parent.data(), e.dec.parent, 8);
        decided.has_parent = e.dec.has_parent != 0;
        decided.flags = e.dec.flags;
        decided.shed = e.dec.shed != 0;
        if (e.dec.kind == RB_DEC_SERVER && io.direction == Direction::kRead) io.server = &decided;
        if (e.dec.kind == RB_DEC_CLIENT && io.direction == Direction::kWrite) tracker_.client_decided(fds, io.fd, t->tid, decided);
      }
      PendingSyscall& p = t->pending;
      if ((e.flags & RB_EV_REWRITTEN) && p.rewritten && p.original.arg(1) == static_cast<uint64_t>(e.fd)) {
        // The write fast_write rewrote: how much of the header went out, then the program's bytes.
        tracker_.injection_done(fds, io.fd, p.injection, (e.flags >> RB_EV_HEADER_SHIFT) & 0xffff);
        p = PendingSyscall{};
      }
      tracker_.on_io(fds, io, view);
    } else if (kind == Kind::kSendfile) {
      // Bytes sendfile sent from a file, as a count: body, to the tracker (as at a ptrace stop).
      Tracker::Io io;
      io.tid = t->tid;
      io.pid = t->process->tgid;
      io.fd = e.fd;
      io.direction = Direction::kWrite;
      io.result = static_cast<long>(e.result);
      io.entry = e.start_ns;
      io.exit = e.end_ns;
      if (e.flags & RB_EV_LOST)
        tracker_.on_unseen(fds, io, e.total);
      else
        tracker_.on_sendfile(fds, io);
    } else if (nr == SYS_accept || nr == SYS_accept4 || nr == SYS_connect) {
      const size_t local_len = (e.flags >> 16) & 0xffff, peer_len = e.flags & 0xffff;
      if (local_len + peer_len > e.data_len) return;
      SocketInfo info;
      info.type = SOCK_STREAM;
      int peer_domain = 0;
      if (!decode_sockaddr(data, local_len, info.domain, info.local)) return;
      if (peer_len) decode_sockaddr(data + local_len, peer_len, peer_domain, info.peer);
      tracker_.on_connection(fds, e.fd, nr == SYS_connect ? Side::kClient : Side::kServer, t->process->tgid, info,
                             e.start_ns);
    } else if (nr == SYS_close) {
      tracker_.on_close(fds, e.fd, e.end_ns);
    } else if (nr == SYS_dup || nr == SYS_dup2 || nr == SYS_dup3 || nr == SYS_fcntl) {
      tracker_.on_dup(fds, e.fd, static_cast<int>(e.result), e.end_ns);
    }
  }, [&](pid_t pid) {
    auto it = processes_.find(pid);
    return it == processes_.end() || it->second->gone;
  });
}

size_t Engine::drain_all(std::vector<std::shared_ptr<fast::SharedRegion>>* live) {
  size_t fullest = 0;
  for (auto it = regions_.begin(); it != regions_.end();) {
    if (std::shared_ptr<fast::SharedRegion> region = it->lock()) {
      fullest = std::max(fullest, drain_region(*region));
      if (live) live->push_back(std::move(region));
      ++it;
    } else {
      it = regions_.erase(it);
    }
  }
  return fullest;
}

}  // namespace rbinder
