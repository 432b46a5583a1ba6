// The vDSO lookup the fast path's stub relies on for its timestamps: the address must be a working
// clock_gettime in the process asked about (a wrong one would crash the stub in every program).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>

#include "tracee/vdso.h"

namespace rbinder {
namespace {

int64_t ns(const timespec& t) { return static_cast<int64_t>(t.tv_sec) * 1000000000LL + t.tv_nsec; }

TEST(Vdso, TheAddressFoundIsAWorkingClockGettime) {
  const uint64_t addr = tracee_vdso_clock_gettime(getpid());
  ASSERT_NE(addr, 0u);
  auto vdso_clock = reinterpret_cast<int (*)(clockid_t, timespec*)>(addr);
  timespec before{}, got{}, after{};
  clock_gettime(CLOCK_REALTIME, &before);
  ASSERT_EQ(vdso_clock(CLOCK_REALTIME, &got), 0);
  clock_gettime(CLOCK_REALTIME, &after);
  EXPECT_LE(ns(before), ns(got));
  EXPECT_LE(ns(got), ns(after));
}

TEST(Vdso, IsFoundInAnotherProcessFromItsOwnAuxv) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    pause();
    _exit(0);
  }
  const uint64_t theirs = tracee_vdso_clock_gettime(child);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  // A fork child has the parent's mappings: the same address.
  EXPECT_EQ(theirs, tracee_vdso_clock_gettime(getpid()));
}

TEST(Vdso, IsZeroForAProcessThatIsGone) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);
  EXPECT_EQ(tracee_vdso_clock_gettime(child), 0u);
}

}  // namespace
}  // namespace rbinder
