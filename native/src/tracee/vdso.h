// The vDSO's clock_gettime for the fast path's stub: a timestamp without a syscall.
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace rbinder {

// Address of __vdso_clock_gettime in process `pid` (just exec'd, stopped), or 0 when it has no
// vDSO or its vDSO is not the image this process has (then the stub makes the syscall).
uint64_t tracee_vdso_clock_gettime(pid_t pid);

}  // namespace rbinder
