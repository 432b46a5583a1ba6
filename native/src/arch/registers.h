// Syscall register access for a stopped tracee, behind one interface per architecture.
// x86-64 is implemented; aarch64 goes in arch/aarch64.h with the same members.
#pragma once

#include <cstdint>
#include <sys/types.h>

#include "tracee/address.h"

#if defined(__x86_64__)
#include "arch/x86_64.h"
#else
#error "rbinder: unsupported architecture (x86-64 is implemented; add arch/<arch>.h)"
#endif
