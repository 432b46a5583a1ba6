// rbinder-launch: what bin/rbinder runs. Node needs ~70 ms to boot on these machines and the
// OpenTelemetry SDK more; a program started by the Node tracer waits for all of that. So when the
// command line is one rbinder surely accepts in fast mode (launcher/plan.h), this starts the
// program itself, sets its fast path up at its first exec (the same code the engine uses), lets it
// run detached, and only then execs Node, which adopts the program through RBINDER_LAUNCHED
// (its pid, the seccomp listener and the ring's memfd, inherited). Upcalls the program makes
// meanwhile (an exec, an outbound write) wait in the kernel until the engine answers them.
// Otherwise it execs Node as before, with the descriptors the program must inherit recorded in
// RBINDER_INHERITED_FDS (Node marks inherited descriptors close-on-exec).
//
//   rbinder-launch NODE MAIN_JS [rbinder arguments...]
//   rbinder-launch --plan [rbinder arguments...]     prints the decision as JSON (tests)
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "engine/fast_path.h"
#include "launcher/plan.h"

extern char** environ;

namespace rbinder::launcher {
namespace {

bool debug() { return getenv("RBINDER_ENGINE_DEBUG") != nullptr; }

bool is_executable(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && !S_ISDIR(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

int print_plan(const std::vector<std::string>& args) {
  const LaunchPlan plan = plan_launch(args, [](const char* n) -> const char* { return getenv(n); }, is_executable);
  std::string out = "{\"launch\":" + std::string(plan.launch ? "true" : "false");
  if (plan.launch) {
    out += ",\"file\":" + json_string(plan.file) + ",\"command\":[";
    for (size_t i = plan.command_at; i < args.size(); i++) out += (i > plan.command_at ? "," : "") + json_string(args[i]);
    out += "]";
  } else {
    out += ",\"reason\":" + json_string(plan.reason);
  }
  printf("%s}\n", out.c_str());
  return 0;
}

struct Started {
  pid_t pid = -1;
  int listener = -1;  // the trap filter's user-notification listener, inheritable
  int region = -1;    // the ring's memfd, inheritable
  std::unique_ptr<fast::SharedRegion> ring;  // the launcher's own view of it (gone at exec)
};

// Starts `file` with `argv` under PTRACE_SEIZE, sets the fast path up at its exec's exit stop
// (before the program's first instruction) and detaches. On failure the program is gone (it ran
// nothing of its own) and `error` says why.
bool start_fast(const std::string& file, char* const* argv, Started& out, std::string& error) {
  int go[2];
  if (pipe2(go, O_CLOEXEC) != 0) {
    error = std::string("pipe2: ") + strerror(errno);
    return false;
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    error = std::string("fork: ") + strerror(errno);
    return false;
  }
  if (pid == 0) {
    // The program inherits rbinder's descriptors, signal dispositions and mask as they are.
    close(go[1]);
    char c = 0;
    while (read(go[0], &c, 1) < 0 && errno == EINTR) {
    }
    if (c != 'g') _exit(127);
    // Until Node has booted and forwards signals, a SIGTERM to rbinder ends it without passing
    // it on; the program then gets SIGTERM this way (and likewise if rbinder ever dies later).
    if (prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) != 0 || getppid() != parent) _exit(126);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(126);
    execve(file.c_str(), argv, environ);
    _exit(errno == ENOENT ? 127 : 126);
  }
  close(go[0]);
  constexpr unsigned kOptions = PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL;
  auto abandon = [&](std::string why) {
    error = std::move(why);
    kill(pid, SIGKILL);
    while (waitpid(pid, nullptr, __WALL) < 0 && errno == EINTR) {
    }
    return false;
  };
  if (ptrace(PTRACE_SEIZE, pid, nullptr, reinterpret_cast<void*>(static_cast<uintptr_t>(kOptions))) != 0) {
    const int e = errno;
    close(go[1]);
    return abandon(std::string("ptrace(PTRACE_SEIZE): ") + strerror(e));
  }
  (void)!write(go[1], "g", 1);
  close(go[1]);

  std::vector<int> pending;  // signals that arrived after the exec, delivered when it runs
  bool exec_seen = false;
  for (;;) {
    int status = 0;
    if (waitpid(pid, &status, __WALL) < 0) {
      if (errno == EINTR) continue;
      return abandon(std::string("waitpid: ") + strerror(errno));
    }
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      error = "the program did not start";  // its exec failed: Node finds and reports why
      return false;
    }
    const int sig = WSTOPSIG(status), event = status >> 16;
    if (event == PTRACE_EVENT_EXEC) {
      exec_seen = true;
      ptrace(PTRACE_SYSCALL, pid, nullptr, nullptr);  // registers are final at execve's exit stop
    } else if (exec_seen && sig == (SIGTRAP | 0x80)) {
      break;
    } else if (event != 0) {
      ptrace(exec_seen ? PTRACE_SYSCALL : PTRACE_CONT, pid, nullptr, nullptr);
    } else if (exec_seen) {
      pending.push_back(sig);
      ptrace(PTRACE_SYSCALL, pid, nullptr, nullptr);
    } else {
      ptrace(PTRACE_CONT, pid, nullptr, reinterpret_cast<void*>(static_cast<uintptr_t>(sig)));
    }
  }

  fast::PrivateInit init;
  init.pid = pid;
  init.inject = true;  // the engine turns it off on adoption if the configuration says so
  OwnedFd listener;
  std::unique_ptr<fast::SharedRegion> region = fast::setup_after_exec(pid, true, init, listener, error, pending);
  if (!region) return abandon("the fast path could not be set up: " + error);
  out.pid = pid;
  out.listener = fcntl(listener.get(), F_DUPFD, 3);
  out.region = fcntl(region->memfd(), F_DUPFD, 3);
  if (out.listener < 0 || out.region < 0) return abandon(std::string("fcntl(F_DUPFD): ") + strerror(errno));
  out.ring = std::move(region);
  ptrace(PTRACE_DETACH, pid, nullptr, reinterpret_cast<void*>(static_cast<uintptr_t>(pending.empty() ? 0 : pending.front())));
  return true;
}

// Booting Node and the tracer takes ~150 ms of CPU, which a starting program competes with (a JVM
// uses both CPUs of a small machine to start). So Node boots once the program has started: when
// it has used under kIdleTicks of CPU in the last kIdleWindow, or needs the engine (an upcall is
// waiting, the ring is a quarter full), or has ended — and after kMaxBootDelay at the latest.
// Meanwhile the launcher passes rbinder's signals on, as Node will.
constexpr int kPollMs = 10;
constexpr int kIdleWindowMs = 50;
constexpr long kIdleTicks = 1;  // of 10 ms: under 20% of one CPU over the window
constexpr int kMaxBootDelayMs = 1000;

pid_t g_program = -1;
bool g_foreground = false;

void forward_signal(int sig) {
  // A terminal sends SIGINT, SIGQUIT and SIGWINCH to its whole foreground group, the program too.
  if (g_foreground && (sig == SIGINT || sig == SIGQUIT || sig == SIGWINCH)) return;
  if (g_program > 0) kill(g_program, sig);
}

// utime + stime of the whole process, in clock ticks; -1 when it is gone.
long cpu_ticks(pid_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE* f = fopen(path, "re");
  if (!f) return -1;
  char buf[1024];
  const size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  const char* p = strrchr(buf, ')');  // the command name may hold spaces and parentheses
  unsigned long utime = 0, stime = 0;
  char state = 0;
  if (!p || sscanf(p + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &state, &utime, &stime) != 3) return -1;
  if (state == 'Z' || state == 'X') return -1;
  return static_cast<long>(utime + stime);
}

// Returns why Node should boot now (for the debug log).
const char* wait_for_program_start(const Started& started) {
  g_program = started.pid;
  const pid_t fg = tcgetpgrp(STDIN_FILENO);
  g_foreground = fg > 0 && fg == getpgrp();
  struct sigaction act {};
  act.sa_handler = forward_signal;
  sigemptyset(&act.sa_mask);
  act.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH}) sigaction(sig, &act, nullptr);
  const OwnedFd pidfd = open_pidfd(started.pid);
  std::vector<long> ticks;  // one sample per poll
  for (int waited = 0; waited < kMaxBootDelayMs; waited += kPollMs) {
    pollfd fds[2] = {{started.listener, POLLIN, 0}, {pidfd.get(), POLLIN, 0}};
    const int n = poll(fds, pidfd.valid() ? 2 : 1, kPollMs);
    if (n > 0 && (fds[0].revents & POLLIN)) return "an upcall is waiting";
    if (n > 0 && (fds[1].revents & POLLIN)) return "the program ended";
    const rb_shared* ring = started.ring->get();
    const uint64_t used = __atomic_load_n(&ring->reserve, __ATOMIC_RELAXED) - __atomic_load_n(&ring->consumed, __ATOMIC_RELAXED);
    if (used > RB_RING_SLOTS / 4) return "the ring is filling";
    const long now = cpu_ticks(started.pid);
    if (now < 0) return "the program ended";
    ticks.push_back(now);
    constexpr size_t kWindow = kIdleWindowMs / kPollMs;
    if (ticks.size() > kWindow && now - ticks[ticks.size() - 1 - kWindow] <= kIdleTicks) return "the program is idle";
  }
  return "the longest wait";
}

// The descriptors open without close-on-exec, as "fd:inode" pairs (tracer/src/spawn.ts).
std::string inherited_fds() {
  std::string out;
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return out;
  const int own = dirfd(dir);
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const int fd = atoi(e->d_name);
    if (fd == own) continue;
    const int flags = fcntl(fd, F_GETFD);
    struct stat st;
    if (flags < 0 || (flags & FD_CLOEXEC) || fstat(fd, &st) != 0) continue;
    if (!out.empty()) out += ' ';
    out += std::to_string(fd) + ":" + std::to_string(st.st_ino);
  }
  closedir(dir);
  return out;
}

// The tracer's own V8 flags (RBINDER_NODE_FLAGS replaces them). Under load the tracer's live heap
// is ~16 MB, mostly spans in flight, but V8's defaults (semi-spaces up to 16 MB, the old space
// allowed to grow up to 4x between full collections) took its RSS to ~180 MB on hello world;
// with the first two ~115 MB, for CPU per request within the noise (docs/benchmarks.md, "Tracer
// memory"). --single-threaded: no V8 worker threads (GC, compilers) — the JS thread does that
// work itself, at the same export priority. Same CPU per span, 7-15 MB less RSS (their stacks,
// arenas and concurrent-marking buffers), and no wake-up of a worker per GC task, each costing
// tens of microseconds on a VM (docs/benchmarks.md, "Fewer wake-ups"). --no-memory-reducer: V8's
// memory reducer takes a tracer whose program makes a few hundred requests a second for an idle
// isolate and runs a full collection after full collection to shrink a heap that is already
// small; on the chain benchmark that was 40% of the tracers' JavaScript CPU (docs/benchmarks.md,
// "No memory reducer").
constexpr const char* kNodeFlags = "--max-semi-space-size=4 --heap-growing-percent=25 --single-threaded --no-memory-reducer";

std::vector<std::string> node_flags() {
  const char* set = getenv("RBINDER_NODE_FLAGS");
  std::istringstream words(set ? set : kNodeFlags);
  return {std::istream_iterator<std::string>(words), std::istream_iterator<std::string>()};
}

// `program`: a launched program, killed if Node cannot run (nothing would answer its upcalls).
// NODE_OPTIONS belongs to the program (a --require of its own agent, its heap size): the tracer's
// Node runs without it and passes it on in RBINDER_PROGRAM_NODE_OPTIONS to a program it starts
// itself (tracer/src/spawn.ts); a launched program already has its environment.
[[noreturn]] void exec_node(const char* node, const char* main_js, const std::vector<std::string>& args, pid_t program) {
  unsetenv("RBINDER_PROGRAM_NODE_OPTIONS");
  if (const char* options = getenv("NODE_OPTIONS")) {
    if (program < 0) setenv("RBINDER_PROGRAM_NODE_OPTIONS", options, 1);
    unsetenv("NODE_OPTIONS");
  }
  const std::vector<std::string> flags = node_flags();
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(node));
  for (const std::string& f : flags) argv.push_back(const_cast<char*>(f.c_str()));
  argv.push_back(const_cast<char*>(main_js));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execvp(node, argv.data());
  const int e = errno;
  if (program > 0) kill(program, SIGKILL);
  fprintf(stderr, "rbinder: cannot run %s: %s\n", node, strerror(e));
  _exit(127);
}

int run(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--plan") == 0) return print_plan(std::vector<std::string>(argv + 2, argv + argc));
  if (argc < 3) {
    fprintf(stderr, "usage: rbinder-launch NODE MAIN_JS [rbinder arguments...]\n");
    return 2;
  }
  const char* node = argv[1];
  const char* main_js = argv[2];
  const std::vector<std::string> args(argv + 3, argv + argc);
  const LaunchPlan plan = plan_launch(args, [](const char* n) -> const char* { return getenv(n); }, is_executable);
  unsetenv("RBINDER_LAUNCHED");
  if (plan.launch) {
    std::vector<char*> program_argv;
    for (size_t i = plan.command_at; i < args.size(); i++) program_argv.push_back(const_cast<char*>(args[i].c_str()));
    program_argv.push_back(nullptr);
    Started started;
    std::string error;
    if (start_fast(plan.file, program_argv.data(), started, error)) {
      const std::string launched = std::to_string(started.pid) + "," + std::to_string(started.listener) + "," +
                                   std::to_string(started.region);
      setenv("RBINDER_LAUNCHED", launched.c_str(), 1);
      if (debug()) fprintf(stderr, "rbinder-launch: started %d, set up for the fast path\n", started.pid);
      const char* why = wait_for_program_start(started);
      if (debug()) fprintf(stderr, "rbinder-launch: Node boots now: %s\n", why);
      unsetenv("RBINDER_INHERITED_FDS");
      exec_node(node, main_js, args, started.pid);
    }
    // Node starts the program instead, and reports whatever went wrong here in its own words.
    if (debug()) fprintf(stderr, "rbinder-launch: not launched: %s\n", error.c_str());
  } else if (debug()) {
    fprintf(stderr, "rbinder-launch: left to Node: %s\n", plan.reason.c_str());
  }
  setenv("RBINDER_INHERITED_FDS", inherited_fds().c_str(), 1);
  exec_node(node, main_js, args, -1);
}

}  // namespace
}  // namespace rbinder::launcher

int main(int argc, char** argv) { return rbinder::launcher::run(argc, argv); }
