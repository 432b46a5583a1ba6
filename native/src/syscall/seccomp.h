// The seccomp filter the traced program runs under: SECCOMP_RET_TRACE for the syscalls in
// syscall/table.h, SECCOMP_RET_ALLOW for everything else.
#pragma once

#include <linux/filter.h>

#include <vector>

namespace rbinder::syscall {

// The filter of ptrace mode (the fast path's is fast::build_trap_filter).
std::vector<sock_filter> build_trace_filter();

// Installs a filter in the calling process (PR_SET_NO_NEW_PRIVS first). Async-signal-safe: it is
// called in the forked child. Returns 0 or -errno.
int install_filter(const sock_fprog& prog);

}  // namespace rbinder::syscall
