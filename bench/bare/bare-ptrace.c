// bare-ptrace: the floor of seccomp+ptrace tracing. Runs a program under a seccomp filter that
// traps the same syscalls rbinder traces (native/src/syscall/table.h, fcntl only for
// F_DUPFD/F_DUPFD_CLOEXEC) and a ptrace loop that stops on them and does nothing else: no
// registers read, no memory read, no bookkeeping beyond counting stops.
//
//   bare-ptrace entry|entry-exit CMD [ARGS...]
//
// entry:      resume every seccomp stop with PTRACE_CONT (one stop per traced syscall).
// entry-exit: resume it with PTRACE_SYSCALL so the syscall-exit stop follows (two stops).
// With BARE_PTRACE_STATS=1 it prints {"enter":N,"exit":N} on stderr at exit. SIGTERM, SIGINT and
// SIGHUP are passed on to the program; the exit status is the program's (128+N if killed by N).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const long traced[] = {
    SYS_read,   SYS_recvfrom, SYS_readv, SYS_recvmsg, SYS_write,       SYS_sendto,
    SYS_writev, SYS_sendmsg,  SYS_sendfile, SYS_connect, SYS_accept,   SYS_accept4,
    SYS_close,  SYS_close_range, SYS_dup, SYS_dup2,    SYS_dup3,
};
#define NTRACED (sizeof traced / sizeof traced[0])

// Per-pid state: 0 unknown, 1 running, 2 inside a traced syscall (exit stop pending).
static unsigned char *state;
static long pid_max;
static volatile sig_atomic_t forward_sig;
static unsigned long long enter_stops, exit_stops;

static void on_signal(int sig) { forward_sig = sig; }

static void install_filter(void) {
  struct sock_filter f[NTRACED + 10];
  size_t n = 0;
  f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
  f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
  f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
  // Each JEQ jumps to the TRACE at the end: past the remaining JEQs, the fcntl checks and ALLOW.
  for (size_t i = 0; i < NTRACED; i++)
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, traced[i], (uint8_t)(NTRACED - i - 1 + 5), 0);
  // fcntl: only the commands that create a descriptor.
  f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_fcntl, 0, 3);
  f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1]));
  f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, F_DUPFD, 2, 0);
  f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, F_DUPFD_CLOEXEC, 1, 0);
  f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE);
  struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
    perror("bare-ptrace: seccomp");
    _exit(126);
  }
}

static void resume(pid_t pid, int request, int sig) {
  if (ptrace(request, pid, 0, (void *)(intptr_t)sig) != 0 && errno != ESRCH) perror("bare-ptrace: ptrace resume");
}

int main(int argc, char **argv) {
  if (argc < 3 || (strcmp(argv[1], "entry") != 0 && strcmp(argv[1], "entry-exit") != 0)) {
    fprintf(stderr, "usage: bare-ptrace entry|entry-exit CMD [ARGS...]\n");
    return 2;
  }
  const int with_exit = strcmp(argv[1], "entry-exit") == 0;
  FILE *pm = fopen("/proc/sys/kernel/pid_max", "r");
  if (!pm || fscanf(pm, "%ld", &pid_max) != 1) pid_max = 4194304;
  if (pm) fclose(pm);
  state = calloc((size_t)pid_max + 1, 1);

  pid_t child = fork();
  if (child < 0) return perror("bare-ptrace: fork"), 126;
  if (child == 0) {
    if (ptrace(PTRACE_TRACEME, 0, 0, 0) != 0) return perror("bare-ptrace: PTRACE_TRACEME"), 126;
    raise(SIGSTOP);
    install_filter();
    execvp(argv[2], argv + 2);
    perror("bare-ptrace: exec");
    _exit(127);
  }
  struct sigaction sa = {.sa_handler = on_signal};  // no SA_RESTART: waitpid returns EINTR
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);

  int status;
  if (waitpid(child, &status, 0) != child || !WIFSTOPPED(status)) return 126;
  long opts = PTRACE_O_TRACESECCOMP | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK |
              PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL | PTRACE_O_TRACESYSGOOD;
  if (ptrace(PTRACE_SETOPTIONS, child, 0, (void *)opts) != 0) return perror("bare-ptrace: PTRACE_SETOPTIONS"), 126;
  state[child] = 1;
  resume(child, PTRACE_CONT, 0);

  int exit_code = 0;
  for (;;) {
    if (forward_sig) {
      kill(child, forward_sig);
      forward_sig = 0;
    }
    pid_t pid = waitpid(-1, &status, __WALL);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;  // ECHILD: nothing left
    }
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      state[pid] = 0;
      if (pid == child) {
        exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      continue;
    }
    if (!WIFSTOPPED(status)) continue;
    const int sig = WSTOPSIG(status);
    const int event = status >> 16;
    if (event == PTRACE_EVENT_SECCOMP) {  // entry of a traced syscall
      enter_stops++;
      if (with_exit) {
        state[pid] = 2;
        resume(pid, PTRACE_SYSCALL, 0);
      } else {
        resume(pid, PTRACE_CONT, 0);
      }
    } else if (event != 0) {  // clone/fork/vfork/exec events
      resume(pid, state[pid] == 2 ? PTRACE_SYSCALL : PTRACE_CONT, 0);
    } else if (sig == (SIGTRAP | 0x80)) {  // syscall-exit stop (entry stops are not asked for)
      exit_stops++;
      state[pid] = 1;
      resume(pid, PTRACE_CONT, 0);
    } else if (sig == SIGSTOP && state[pid] == 0) {  // a new thread or child's first stop
      state[pid] = 1;
      resume(pid, PTRACE_CONT, 0);
    } else {  // a signal for the program: deliver it
      if (state[pid] == 0) state[pid] = 1;
      resume(pid, state[pid] == 2 ? PTRACE_SYSCALL : PTRACE_CONT, sig);
    }
  }
  const char *stats = getenv("BARE_PTRACE_STATS");
  if (stats && strcmp(stats, "1") == 0) fprintf(stderr, "{\"enter\":%llu,\"exit\":%llu}\n", enter_stops, exit_stops);
  return exit_code;
}
